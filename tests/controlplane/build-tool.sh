#!/usr/bin/env bash
# Builds a Go command-line tool pinned in tests/controlplane/<tool>/go.mod
# (a `tool` directive; go.sum is committed) from Go modules fetched through
# the Go module proxy, the way build-kustomize.sh builds kustomize, and
# caches the binary under
#   ${KUBESINK_CACHE:-~/.cache/kubesink}/<tool>/<version>/bin/<tool>
# keyed by the version go.mod pins. When the binary is already there nothing
# is built. Tools: helm (helm.sh/helm/v3, the chart tests) and umoci
# (github.com/opencontainers/umoci, scripts/image.sh).
#
# Usage: build-tool.sh TOOL [--print-dir]
#   Prints the bin directory as the last line of stdout; progress goes to
#   stderr. With --print-dir it only prints the directory (no build).
#
# Environment: KUBESINK_CACHE (default ~/.cache/kubesink; XDG_CACHE_HOME
# is honoured), the usual Go variables (GOPROXY, GOMODCACHE, GOCACHE, ...).
set -euo pipefail

main() {
    local here tool gomod package module version cache_root key_dir bin_dir staging start ldflags
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    tool=${1:-}
    case $tool in
        helm | umoci) ;;
        *)
            echo "build-tool.sh: unknown tool '${tool}' (helm or umoci)" >&2
            exit 2
            ;;
    esac
    gomod="$here/$tool/go.mod"

    # The package of the `tool` directive, and the module providing it.
    package=$(awk '$1 == "tool" && $2 != "(" { print $2; exit }' "$gomod")
    case $tool in
        helm) module=helm.sh/helm/v3 ;;
        umoci) module=github.com/opencontainers/umoci ;;
    esac
    if [[ -z $package || $package != "$module"* ]]; then
        echo "build-tool.sh: $gomod has no tool directive for a package of $module" >&2
        exit 1
    fi
    version=$(awk -v m="$module" '
        $1 == "require" && $2 == m { print $3; exit }
        $1 == m && $2 ~ /^v/      { print $2; exit }' "$gomod")
    if [[ -z $version ]]; then
        echo "build-tool.sh: $gomod does not require $module" >&2
        exit 1
    fi

    cache_root=${KUBESINK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubesink}
    key_dir="$cache_root/$tool/$version"
    bin_dir="$key_dir/bin"

    if [[ ${2:-} == --print-dir ]]; then
        echo "$bin_dir"
        exit 0
    fi

    built() { [[ -x $bin_dir/$tool ]]; }

    if built; then
        echo "$bin_dir"
        exit 0
    fi

    if ! command -v go > /dev/null; then
        echo "build-tool.sh: the Go toolchain (go) is not on PATH; it is needed to build" \
            "$tool $version" >&2
        exit 1
    fi

    mkdir -p "$key_dir"
    # Several test processes may start at once: one builds, the others wait.
    exec 9> "$key_dir/.build.lock"
    flock 9
    if built; then
        echo "$bin_dir"
        exit 0
    fi

    staging=$(mktemp -d "$key_dir/.bin.XXXXXX")
    trap 'rm -rf "${staging:-}"' EXIT
    chmod 755 "$staging"

    export GOTOOLCHAIN=local
    export CGO_ENABLED=0
    # go.sum is committed: refuse to change go.mod/go.sum during a build.
    export GOFLAGS="-mod=readonly -buildvcs=false"

    # What each project's own release build stamps in (its Makefile).
    ldflags="-s -w"
    case $tool in
        helm)
            local k8s major minor
            # Helm's Makefile: the Kubernetes version `helm template` and
            # `helm lint` assume is client-go's vA.B.C read as (A+1).B.
            k8s=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")
            k8s=${k8s#v}
            major=$((${k8s%%.*} + 1))
            minor=${k8s#*.}
            minor=${minor%%.*}
            ldflags+=" -X helm.sh/helm/v3/internal/version.version=$version"
            ldflags+=" -X helm.sh/helm/v3/internal/version.metadata="
            ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
            for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
                ldflags+=" -X $pkg.k8sVersionMajor=$major -X $pkg.k8sVersionMinor=$minor"
            done
            ;;
    esac

    start=$(date +%s)
    echo "build-tool.sh: building $tool $version" >&2
    (cd "$here/$tool" && go build -trimpath -ldflags="$ldflags" -o "$staging/$tool" "$package")
    rm -rf "$bin_dir"
    mv "$staging" "$bin_dir"
    echo "build-tool.sh: built $tool in $(($(date +%s) - start))s into $bin_dir" >&2
    echo "$bin_dir"
}

main "$@"

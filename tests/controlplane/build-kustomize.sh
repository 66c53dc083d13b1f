#!/usr/bin/env bash
# Builds kustomize (sigs.k8s.io/kustomize/kustomize/v5) from Go modules
# fetched through the Go module proxy, the way build.sh builds the control
# plane, and caches the binary under
#   ${KUBESINK_CACHE:-~/.cache/kubesink}/kustomize/<version>/bin/kustomize
# keyed by the version pinned in kustomize/go.mod (a `tool` directive; go.sum
# is committed). When the binary is already there nothing is built.
#
# Usage: build-kustomize.sh [--print-dir]
#   Prints the bin directory as the last line of stdout; progress goes to
#   stderr. With --print-dir it only prints the directory (no build).
#
# Environment: KUBESINK_CACHE (default ~/.cache/kubesink; XDG_CACHE_HOME
# is honoured), the usual Go variables (GOPROXY, GOMODCACHE, ...).
set -euo pipefail

main() {
    local here module version cache_root key_dir bin_dir staging start
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    module=sigs.k8s.io/kustomize/kustomize/v5

    version=$(awk -v m="$module" '
        $1 == "require" && $2 == m { print $3; exit }
        $1 == m && $2 ~ /^v/      { print $2; exit }' "$here/kustomize/go.mod")
    if [[ -z $version ]]; then
        echo "build-kustomize.sh: $here/kustomize/go.mod does not require $module" >&2
        exit 1
    fi

    cache_root=${KUBESINK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubesink}
    key_dir="$cache_root/kustomize/$version"
    bin_dir="$key_dir/bin"

    if [[ ${1:-} == --print-dir ]]; then
        echo "$bin_dir"
        exit 0
    fi

    built() { [[ -x $bin_dir/kustomize ]]; }

    if built; then
        echo "$bin_dir"
        exit 0
    fi

    if ! command -v go > /dev/null; then
        echo "build-kustomize.sh: the Go toolchain (go) is not on PATH; it is needed to build" \
            "kustomize $version" >&2
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

    start=$(date +%s)
    echo "build-kustomize.sh: building kustomize $version" >&2
    (cd "$here/kustomize" && go build -trimpath -ldflags='-s -w' -o "$staging/kustomize" "$module")
    rm -rf "$bin_dir"
    mv "$staging" "$bin_dir"
    echo "build-kustomize.sh: built in $(($(date +%s) - start))s into $bin_dir" >&2
    echo "$bin_dir"
}

main "$@"

#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver and etcd) from Go modules
# fetched through the Go module proxy, and caches the binaries under
#   ${KUBESINK_CACHE:-~/.cache/kubesink}/controlplane/<k8s>-<etcd>/bin/
# keyed by the versions pinned in kube-apiserver/go.mod and etcd/go.mod.
# When both binaries are already there nothing is built.
#
# Usage: build.sh [--print-dir]
#   Prints the bin directory as the last line of stdout; progress goes to
#   stderr. With --print-dir it only prints the directory (no build).
#
# Environment: KUBESINK_CACHE (default ~/.cache/kubesink; XDG_CACHE_HOME
# is honoured), the usual Go variables (GOPROXY, GOMODCACHE, ...).
set -euo pipefail

main() {
    local here k8s_version etcd_version cache_root key_dir bin_dir k8s_minor k8s_major k8s_ldflags start
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

    # The version a go.mod requires for a module ("require M v" or inside a block).
    required_version() {
        local gomod=$1 module=$2 version
        version=$(awk -v m="$module" '
            $1 == "require" && $2 == m { print $3; exit }
            $1 == m && $2 ~ /^v/      { print $2; exit }' "$gomod")
        if [[ -z $version ]]; then
            echo "build.sh: $gomod does not require $module" >&2
            exit 1
        fi
        echo "$version"
    }

    k8s_version=$(required_version "$here/kube-apiserver/go.mod" k8s.io/kubernetes)
    etcd_version=$(required_version "$here/etcd/go.mod" go.etcd.io/etcd/server/v3)

    cache_root=${KUBESINK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubesink}
    key_dir="$cache_root/controlplane/${k8s_version}-${etcd_version}"
    bin_dir="$key_dir/bin"

    if [[ ${1:-} == --print-dir ]]; then
        echo "$bin_dir"
        exit 0
    fi

    built() { [[ -x $bin_dir/kube-apiserver && -x $bin_dir/etcd ]]; }

    if built; then
        echo "$bin_dir"
        exit 0
    fi

    if ! command -v go > /dev/null; then
        echo "build.sh: the Go toolchain (go) is not on PATH; it is needed to build" \
            "kube-apiserver $k8s_version and etcd $etcd_version" >&2
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
    trap 'rm -rf "$staging"' EXIT
    chmod 755 "$staging"

    export GOTOOLCHAIN=local
    export CGO_ENABLED=0
    # go.sum is committed: refuse to change go.mod/go.sum during a build.
    export GOFLAGS="-mod=readonly -buildvcs=false"

    # What `/version` reports, as Kubernetes' own build sets it
    # (hack/lib/version.sh); the module build would say v0.0.0-master otherwise.
    k8s_minor=${k8s_version#v*.}
    k8s_minor=${k8s_minor%%.*}
    k8s_major=${k8s_version#v}
    k8s_major=${k8s_major%%.*}
    k8s_ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$k8s_major"
        k8s_ldflags+=" -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
    done

    start=$(date +%s)
    echo "build.sh: building etcd $etcd_version" >&2
    (cd "$here/etcd" && go build -trimpath -ldflags='-s -w' -o "$staging/etcd" .)
    echo "build.sh: building kube-apiserver $k8s_version" >&2
    (cd "$here/kube-apiserver" && go build -trimpath -ldflags="$k8s_ldflags" -o "$staging/kube-apiserver" .)
    rm -rf "$bin_dir"
    mv "$staging" "$bin_dir"
    echo "build.sh: built in $(($(date +%s) - start))s into $bin_dir" >&2
    echo "$bin_dir"
}

main "$@"

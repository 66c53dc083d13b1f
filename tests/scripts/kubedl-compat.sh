#!/usr/bin/env bash
# Builds tests/kubedl-compat (a small Go program running KubeDL v0.5.0's own
# storage code: its mysql backend, dmo models and converters) from Go
# modules fetched through the Go module proxy, and caches the binary under
#   ${KUBESINK_CACHE:-~/.cache/kubesink}/kubedl-compat/<kubedl version>-<go.sum hash>/kubedl-compat
# keyed by the KubeDL version pinned in go.mod and the hash of go.sum and
# main.go. When the binary is already there nothing is built.
#
# Usage: kubedl-compat.sh
#   Prints the binary's path as the last line of stdout; progress goes to
#   stderr.
#
# Environment: KUBESINK_CACHE (default ~/.cache/kubesink; XDG_CACHE_HOME
# is honoured), the usual Go variables (GOPROXY, GOMODCACHE, GOCACHE, ...).
# The Go toolchain on PATH is used as is (GOTOOLCHAIN=local).
set -euo pipefail

main() {
    local here src version key cache_root dir bin start
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    src="$here/../kubedl-compat"

    version=$(awk '$1 == "github.com/alibaba/kubedl" && $2 ~ /^v/ { print $2; exit }
                   $1 == "require" && $2 == "github.com/alibaba/kubedl" { print $3; exit }' "$src/go.mod")
    if [[ -z $version ]]; then
        echo "kubedl-compat.sh: $src/go.mod does not require github.com/alibaba/kubedl" >&2
        exit 1
    fi
    key=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)

    cache_root=${KUBESINK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubesink}
    dir="$cache_root/kubedl-compat/${version}-${key}"
    bin="$dir/kubedl-compat"
    if [[ -x $bin ]]; then
        echo "$bin"
        exit 0
    fi
    if ! command -v go > /dev/null; then
        echo "kubedl-compat.sh: the Go toolchain (go) is not on PATH; it is needed to build" \
            "the KubeDL $version compatibility program" >&2
        exit 1
    fi

    mkdir -p "$dir"
    # Several test processes may start at once: one builds, the others wait.
    exec 9> "$dir/.build.lock"
    flock 9
    if [[ -x $bin ]]; then
        echo "$bin"
        exit 0
    fi

    staging=$(mktemp -d "$dir/.bin.XXXXXX")
    trap 'rm -rf "$staging"' EXIT
    export GOTOOLCHAIN=local
    export CGO_ENABLED=0
    # go.sum is committed: refuse to change go.mod/go.sum during a build.
    export GOFLAGS="-mod=readonly -buildvcs=false"
    start=$(date +%s)
    echo "kubedl-compat.sh: building the KubeDL $version compatibility program" >&2
    (cd "$src" && go build -trimpath -ldflags='-s -w' -o "$staging/kubedl-compat" .)
    mv "$staging/kubedl-compat" "$bin"
    echo "kubedl-compat.sh: built in $(($(date +%s) - start))s into $bin" >&2
    echo "$bin"
}

main "$@"

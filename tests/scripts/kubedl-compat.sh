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

GO_BUILD_SCRIPT=kubedl-compat.sh
# shellcheck source=../controlplane/go-build.sh
. "$(dirname "${BASH_SOURCE[0]}")/../controlplane/go-build.sh"

main() {
    local here src version key dir bin
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    src="$here/../kubedl-compat"

    version=$(go_required_version "$src/go.mod" github.com/alibaba/kubedl)
    key=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)
    dir="$(go_cache_root)/kubedl-compat/${version}-${key}"
    bin="$dir/kubedl-compat"

    built() { [[ -x $bin ]]; }
    build() {
        (cd "$src" && go build -trimpath -ldflags='-s -w' -o "$1/kubedl-compat" .)
        mv "$1/kubedl-compat" "$bin"
    }
    go_build_once "$dir" "the KubeDL $version compatibility program into $bin" built build
    echo "$bin"
}

main "$@"

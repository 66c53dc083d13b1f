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

GO_BUILD_SCRIPT=build-kustomize.sh
# shellcheck source=go-build.sh
. "$(dirname "${BASH_SOURCE[0]}")/go-build.sh"

main() {
    local here module version key_dir bin_dir
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    module=sigs.k8s.io/kustomize/kustomize/v5

    version=$(go_required_version "$here/kustomize/go.mod" "$module")
    key_dir="$(go_cache_root)/kustomize/$version"
    bin_dir="$key_dir/bin"

    if [[ ${1:-} == --print-dir ]]; then
        echo "$bin_dir"
        exit 0
    fi

    built() { [[ -x $bin_dir/kustomize ]]; }
    build() {
        (cd "$here/kustomize" && go build -trimpath -ldflags='-s -w' -o "$1/kustomize" "$module")
        rm -rf "$bin_dir"
        mv "$1" "$bin_dir"
    }
    go_build_once "$key_dir" "kustomize $version into $bin_dir" built build
    echo "$bin_dir"
}

main "$@"

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

GO_BUILD_SCRIPT=build.sh
# shellcheck source=go-build.sh
. "$(dirname "${BASH_SOURCE[0]}")/go-build.sh"

main() {
    local here k8s_version etcd_version key_dir bin_dir
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

    k8s_version=$(go_required_version "$here/kube-apiserver/go.mod" k8s.io/kubernetes)
    etcd_version=$(go_required_version "$here/etcd/go.mod" go.etcd.io/etcd/server/v3)
    key_dir="$(go_cache_root)/controlplane/${k8s_version}-${etcd_version}"
    bin_dir="$key_dir/bin"

    if [[ ${1:-} == --print-dir ]]; then
        echo "$bin_dir"
        exit 0
    fi

    built() { [[ -x $bin_dir/kube-apiserver && -x $bin_dir/etcd ]]; }
    build() {
        local staging=$1 k8s_minor k8s_major k8s_ldflags pkg
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
        echo "build.sh: building etcd $etcd_version" >&2
        (cd "$here/etcd" && go build -trimpath -ldflags='-s -w' -o "$staging/etcd" .)
        echo "build.sh: building kube-apiserver $k8s_version" >&2
        (cd "$here/kube-apiserver" && go build -trimpath -ldflags="$k8s_ldflags" -o "$staging/kube-apiserver" .)
        rm -rf "$bin_dir"
        mv "$staging" "$bin_dir"
    }
    go_build_once "$key_dir" "kube-apiserver $k8s_version and etcd $etcd_version into $bin_dir" built build
    echo "$bin_dir"
}

main "$@"

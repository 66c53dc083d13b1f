# Sourced (not run) by build.sh, build-kustomize.sh and
# ../scripts/kubedl-compat.sh: what building a Go program from pinned
# modules into kubesink's cache takes. Each function names the calling
# script ($GO_BUILD_SCRIPT) in its messages.

# go_required_version GOMOD MODULE: prints the version GOMOD requires of
# MODULE (`require M v`, or a line of a require block); fails naming both
# when it requires none.
go_required_version() {
    local gomod=$1 module=$2 version
    version=$(awk -v m="$module" '
        $1 == "require" && $2 == m { print $3; exit }
        $1 == m && $2 ~ /^v/      { print $2; exit }' "$gomod")
    if [[ -z $version ]]; then
        echo "$GO_BUILD_SCRIPT: $gomod does not require $module" >&2
        return 1
    fi
    echo "$version"
}

# go_cache_root: KUBESINK_CACHE, else kubesink/ under XDG_CACHE_HOME or
# ~/.cache.
go_cache_root() {
    echo "${KUBESINK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubesink}"
}

# go_build_once KEY_DIR WHAT IS_BUILT BUILD: unless the command IS_BUILT
# succeeds, builds WHAT (words for the messages) by running the command
# `BUILD STAGING`, STAGING being a fresh directory in KEY_DIR, with Go set
# for a reproducible build from committed go.sum files. Several test
# processes may start at once: under a lock on KEY_DIR one builds, the
# others wait and find it built. BUILD moves what it built into place;
# STAGING is removed afterwards (and when the script exits). Call it with
# `set -e` in force (not in a condition), so that a failed step stops the
# build.
go_build_once() {
    local key_dir=$1 what=$2 is_built=$3 build=$4 start
    "$is_built" && return 0
    if ! command -v go > /dev/null; then
        echo "$GO_BUILD_SCRIPT: the Go toolchain (go) is not on PATH; it is needed to build" \
            "$what" >&2
        return 1
    fi
    mkdir -p "$key_dir"
    exec 9> "$key_dir/.build.lock"
    flock 9
    if "$is_built"; then
        exec 9>&-
        return 0
    fi
    GO_BUILD_STAGING=$(mktemp -d "$key_dir/.staging.XXXXXX")
    trap 'rm -rf "${GO_BUILD_STAGING:-}"' EXIT
    chmod 755 "$GO_BUILD_STAGING"
    start=$(date +%s)
    echo "$GO_BUILD_SCRIPT: building $what" >&2
    (
        set -e
        export GOTOOLCHAIN=local CGO_ENABLED=0
        # go.sum is committed: refuse to change go.mod/go.sum during a build.
        export GOFLAGS="-mod=readonly -buildvcs=false"
        "$build" "$GO_BUILD_STAGING"
    )
    rm -rf "$GO_BUILD_STAGING"
    exec 9>&-
    echo "$GO_BUILD_SCRIPT: built $what in $(($(date +%s) - start))s" >&2
}

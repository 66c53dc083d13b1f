#!/usr/bin/env bash
# Builds the Python webhook sink into a WebAssembly component with
# componentize-py (pinned below, installed from PyPI into a cached venv), or
# runs its unit tests on the machine's CPython.
#
#   bash sinks/webhook-py/build.sh          # build; prints the size line
#   bash sinks/webhook-py/build.sh test     # unit tests (python3 -m unittest)
#
# Output: <target>/wasm32-wasip2/guest/kubesink_sink_webhook_py.wasm, next to
# the Rust sinks (<target> is $CARGO_TARGET_DIR, else ./target). A build is
# skipped when the sources, the WIT and the componentize-py version are
# those of the last build (their digest is kept next to the .wasm).
# The venv lives in ${KUBESINK_CACHE:-~/.cache/kubesink}/venv-componentize-py-<version>.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
WORLD=kubesink:sink/http-sink-world

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
say() { echo "webhook-py/build.sh: $*" >&2; }

target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
out_dir="$target/wasm32-wasip2/guest"
work="$out_dir/webhook-py"
wasm="$out_dir/kubesink_sink_webhook_py.wasm"

cache="${KUBESINK_CACHE:-${HOME:?neither KUBESINK_CACHE nor HOME is set}/.cache/kubesink}"
venv="$cache/venv-componentize-py-$COMPONENTIZE_PY_VERSION"
cpy="$venv/bin/componentize-py"

command -v python3 >/dev/null 2>&1 || { say "error: python3 not found (needed to install componentize-py)"; exit 1; }
command -v flock >/dev/null 2>&1 || { say "error: flock not found (util-linux)"; exit 1; }

# Concurrent runs (parallel tests) wait for each other: one lock for the
# shared venv, one for this target directory's build folder.
mkdir -p "$cache" "$work"
exec 8>"$cache/.venv-componentize-py.lock"
flock 8
exec 9>"$work/.lock"
flock 9

# Idempotent: reuse the venv when it has the pinned version.
if [ "$("$cpy" --version 2>/dev/null || true)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
    say "installing componentize-py $COMPONENTIZE_PY_VERSION into $venv"
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION" >&2
    [ "$("$cpy" --version)" = "componentize-py $COMPONENTIZE_PY_VERSION" ] || { say "error: componentize-py did not install"; exit 1; }
fi
flock -u 8

if [ "${1:-build}" = test ]; then
    # The generated bindings are plain Python: the pure modules and their
    # tests run on CPython against the same types the component sees.
    rm -rf "$work/bindings"
    "$cpy" -q -d "$root/wit" -w "$WORLD" bindings "$work/bindings" >&2
    cd "$here"
    PYTHONPATH="$work/bindings:$here" PYTHONDONTWRITEBYTECODE=1 exec python3 -m unittest discover -s tests -v
fi
[ "${1:-build}" = build ] || { say "usage: build.sh [build|test]"; exit 2; }

# Only the sink's own modules go into the component: componentize-py bundles
# every module under its python path (and, without a venv, the system's
# site-packages), so stage them and point VIRTUAL_ENV at an empty one.
sources=("$here/app.py" "$here"/webhook_sink/*.py)
digest="$(
    {
        echo "componentize-py $COMPONENTIZE_PY_VERSION $WORLD"
        sha256sum "${sources[@]}" "$root"/wit/*.wit "$root"/wit/deps/*.wit | sed "s|$root/||"
    } | sha256sum | cut -d' ' -f1
)"
if [ -f "$wasm" ] && [ "$(cat "$wasm.sha256-inputs" 2>/dev/null || true)" = "$digest" ]; then
    say "up to date"
else
    rm -rf "$work/src" "$work/empty-venv"
    mkdir -p "$work/src/webhook_sink" "$work/empty-venv/lib/python3/site-packages"
    cp "$here/app.py" "$work/src/"
    cp "$here"/webhook_sink/*.py "$work/src/webhook_sink/"
    VIRTUAL_ENV="$work/empty-venv" "$cpy" -q -d "$root/wit" -w "$WORLD" componentize -p "$work/src" app -o "$wasm.tmp" >&2
    mv "$wasm.tmp" "$wasm"
    echo "$digest" > "$wasm.sha256-inputs"
fi

size="$(stat -c %s "$wasm")"
printf '%-24s %9d bytes  %6d KiB  %s\n' "webhook-py" "$size" "$(( (size + 1023) / 1024 ))" "$wasm"

#!/usr/bin/env bash
# Builds the bundled sinks (every Rust component crate in sinks/*/: mysql,
# sls, webhook, kafka, not the library sinks/packed; and every other
# sinks/*/build.sh: webhook-py) and the test guests
# as wasm32-wasip2 components with the `guest` profile and prints their
# sizes. The runtime finds them in <target>/wasm32-wasip2/guest/.
#
#   scripts/guests.sh            every sink and test guest
#   scripts/guests.sh PKG...     only these Rust packages (e.g.
#                                kubesink-sink-mysql: what `just demo` runs)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pkgs=()
if [ "$#" -gt 0 ]; then
    cargo build --target wasm32-wasip2 --profile guest "${@/#/--package=}"
    out="${CARGO_TARGET_DIR:-target}/wasm32-wasip2/guest"
    for p in "$@"; do
        wasm="$out/${p//-/_}.wasm"
        [ -f "$wasm" ] || { echo "guests.sh: $p built no $wasm" >&2; exit 1; }
        printf '%-24s %9d bytes  %s\n' "$p" "$(stat -c %s "$wasm")" "$wasm"
    done
    exit 0
fi
for manifest in sinks/*/Cargo.toml; do
    [ -f "$manifest" ] || continue
    grep -q '"cdylib"' "$manifest" || continue
    name="$(sed -n 's/^name *= *"\([^"]*\)".*/\1/p' "$manifest" | head -n 1)"
    [ -n "$name" ] || { echo "guests.sh: no package name in $manifest" >&2; exit 1; }
    pkgs+=("$name")
done
[ "${#pkgs[@]}" -gt 0 ] || { echo "guests.sh: no Rust sinks under sinks/" >&2; exit 1; }
# The test guests (tests/guests/*: spin, balloon, crash, noisy, counter,
# hoarder, hostile, packed-v1), so the e2e tests find them built; tests/guests/common,
# the macros they share, is a library, not a component.
for manifest in tests/guests/*/Cargo.toml; do
    [ -f "$manifest" ] || continue
    grep -q '"cdylib"' "$manifest" || continue
    name="$(sed -n 's/^name *= *"\([^"]*\)".*/\1/p' "$manifest" | head -n 1)"
    [ -n "$name" ] || { echo "guests.sh: no package name in $manifest" >&2; exit 1; }
    pkgs+=("$name")
done

args=()
for p in "${pkgs[@]}"; do args+=(-p "$p"); done
cargo build --target wasm32-wasip2 --profile guest "${args[@]}"

out="${CARGO_TARGET_DIR:-target}/wasm32-wasip2/guest"
for p in "${pkgs[@]}"; do
    wasm="$out/${p//-/_}.wasm"
    [ -f "$wasm" ] || { echo "guests.sh: $p built no $wasm" >&2; exit 1; }
    size="$(stat -c %s "$wasm")"
    printf '%-24s %9d bytes  %6d KiB  %s\n' "$p" "$size" "$(( (size + 1023) / 1024 ))" "$wasm"
done

# Sinks in other languages: each folder under sinks/ with a build.sh and no
# Cargo.toml builds itself into $out and prints its size line
# (sinks/webhook-py: Python, componentize-py from PyPI into a cached venv).
for script in sinks/*/build.sh; do
    [ -f "$script" ] || continue
    [ -f "$(dirname "$script")/Cargo.toml" ] && continue
    bash "$script"
done

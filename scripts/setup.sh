#!/usr/bin/env bash
# Idempotent machine setup every recipe needs: the Rust toolchain's wasm
# target for guests, and rustfmt/clippy for `lint` (not with `--wasm`).
# Quick when all is there.
set -euo pipefail

say() { echo "setup.sh: $*" >&2; }

command -v cargo >/dev/null 2>&1 || [ ! -f "$HOME/.cargo/env" ] || . "$HOME/.cargo/env"
command -v cargo >/dev/null 2>&1 || { say "error: cargo not found: install Rust with rustup (https://rustup.rs)"; exit 1; }
command -v rustup >/dev/null 2>&1 || { say "error: rustup not found: kubesink's guests need \`rustup target add wasm32-wasip2\`"; exit 1; }

installed="$(rustup target list --installed)"
if ! grep -qx wasm32-wasip2 <<<"$installed"; then
    say "adding the Rust target wasm32-wasip2"
    rustup target add wasm32-wasip2 >&2
fi

# `--wasm`: only the wasm target (what building and running needs).
[ "${1:-}" = --wasm ] && exit 0

components="$(rustup component list --installed)"
for c in rustfmt clippy; do
    if ! grep -q "^$c" <<<"$components"; then
        say "adding the Rust component $c"
        rustup component add "$c" >&2
    fi
done

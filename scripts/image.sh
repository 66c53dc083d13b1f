#!/usr/bin/env bash
# Builds kubesink's OCI image without a container engine: the kubesink
# binary and the bundled sinks (mysql, sls, webhook, kafka) in one layer on an empty base,
# written as an OCI image layout by umoci (github.com/opencontainers/umoci,
# built from Go modules by tests/controlplane/build-tool.sh). Prints the
# layout, the tag and the image's size.
#
# The image (what deploy/Dockerfile describes, distroless-style):
#   /usr/local/bin/kubesink           entrypoint; CMD run
#   /usr/share/kubesink/sinks/*.wasm  where `module: builtin:NAME` is found
#   /etc/passwd, /etc/group           root and nonroot (65532)
#   /etc/ssl/certs/ca-certificates.crt  this machine's CA bundle, if any
#   /tmp (1777), /home/nonroot, /var/cache/kubesink (65532)
#   the dynamic libraries the binary links (none for the static build)
# user 65532:65532, KUBESINK_CACHE_DIR=/var/cache/kubesink/components,
# port 8080/tcp.
#
# Usage: scripts/image.sh [--binary PATH] [--sinks DIR] [--out DIR] [--tag TAG]
#   --binary  a kubesink binary to ship (default: build the release binary
#             for x86_64-unknown-linux-musl, static)
#   --sinks   a directory with kubesink_sink_mysql.wasm,
#             kubesink_sink_sls.wasm, kubesink_sink_webhook.wasm and
#             kubesink_sink_kafka.wasm
#             (default: build them, profile guest)
#   --out     the OCI layout (default: <target>/image/kubesink-oci; replaced)
#   --tag     the tag (default: v<workspace version>)
# The last line of stdout is `<layout>:<tag>`.
#
# Environment: CARGO_TARGET_DIR, KUBESINK_UMOCI (a prebuilt umoci),
# SOURCE_DATE_EPOCH (file times in the layer; default: the last commit's).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() {
    echo "image.sh: $*" >&2
    exit 1
}

binary="" sinks="" out="" tag=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        --sinks) sinks=${2:?--sinks needs a directory}; shift 2 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --tag) tag=${2:?--tag needs a value}; shift 2 ;;
        *) die "unknown argument '$1' (see the usage at the top of scripts/image.sh)" ;;
    esac
done

target=${CARGO_TARGET_DIR:-target}
version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)
[[ -n $version ]] || die "no version in Cargo.toml"
tag=${tag:-v$version}
out=${out:-$target/image/kubesink-oci}
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2> /dev/null || echo 0)}

# The C parts of the dependencies (ring, SQLite, librdkafka) need a musl C
# compiler: x86_64-linux-musl-gcc, else Debian's musl-gcc (package
# musl-tools, installed here when missing). The cc crate (ring, SQLite)
# takes it from CC_<target>; librdkafka's own configure script (rdkafka-sys)
# only reads CC, so CC names it too and HOST_CC keeps the C code of build
# scripts on the host compiler.
musl_cc() {
    export HOST_CC="${HOST_CC:-cc}"
    if command -v x86_64-linux-musl-gcc > /dev/null; then
        export CC=x86_64-linux-musl-gcc
        return
    fi
    if ! command -v musl-gcc > /dev/null; then
        local sudo=()
        if [[ $(id -u) -ne 0 ]]; then
            command -v sudo > /dev/null || die "no musl C compiler and no sudo: install musl-tools"
            sudo=(sudo -n)
        fi
        echo "image.sh: installing musl-tools (musl-gcc) from Debian's packages" >&2
        "${sudo[@]}" apt-get update -qq >&2 || die "apt-get update failed"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >&2 \
            || die "apt-get install musl-tools failed"
    fi
    export CC_x86_64_unknown_linux_musl=musl-gcc CC=musl-gcc
}

if [[ -z $binary ]]; then
    echo "image.sh: building kubesink (release, x86_64-unknown-linux-musl, static)" >&2
    rustup target list --installed 2> /dev/null | grep -qx x86_64-unknown-linux-musl \
        || rustup target add x86_64-unknown-linux-musl >&2
    musl_cc
    cargo build --locked --release --target x86_64-unknown-linux-musl -p kubesink --bin kubesink >&2
    binary=$target/x86_64-unknown-linux-musl/release/kubesink
fi
if [[ -z $sinks ]]; then
    echo "image.sh: building the bundled sinks (wasm32-wasip2, profile guest)" >&2
    cargo build --locked --target wasm32-wasip2 --profile guest \
        -p kubesink-sink-mysql -p kubesink-sink-sls -p kubesink-sink-webhook \
        -p kubesink-sink-kafka >&2
    sinks=$target/wasm32-wasip2/guest
fi
[[ -x $binary ]] || die "$binary is not an executable"
for wasm in kubesink_sink_mysql.wasm kubesink_sink_sls.wasm kubesink_sink_webhook.wasm \
    kubesink_sink_kafka.wasm; do
    [[ -f $sinks/$wasm ]] || die "$sinks has no $wasm"
done

if [[ -n ${KUBESINK_UMOCI:-} ]]; then
    umoci=$KUBESINK_UMOCI
else
    umoci="$(bash tests/controlplane/build-tool.sh umoci | tail -n 1)/umoci"
fi
[[ -x $umoci ]] || die "umoci ($umoci) is not an executable"

work=$(mktemp -d "${TMPDIR:-/tmp}/kubesink-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/usr/local/bin" "$root/usr/share/kubesink/sinks" "$root/etc/ssl/certs" \
    "$root/tmp" "$root/home/nonroot" "$root/var/cache/kubesink"
install -m 0755 "$binary" "$root/usr/local/bin/kubesink"
install -m 0644 "$sinks/kubesink_sink_mysql.wasm" "$sinks/kubesink_sink_sls.wasm" \
    "$sinks/kubesink_sink_webhook.wasm" "$sinks/kubesink_sink_kafka.wasm" \
    "$root/usr/share/kubesink/sinks/"
printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' > "$root/etc/passwd"
printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' > "$root/etc/group"
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    install -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi

# A dynamically linked binary (e.g. the glibc build the tests reuse): its
# interpreter and libraries, at the paths it looks them up by.
libs=()
if ldd "$binary" > "$work/ldd" 2>&1; then
    mapfile -t libs < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' "$work/ldd" | sort -u)
fi
for lib in "${libs[@]}"; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
    chmod 0755 "$root$lib"
done
if [[ ${#libs[@]} -gt 0 ]]; then
    echo "image.sh: $binary is dynamically linked; added ${#libs[@]} libraries" >&2
fi

# One layer: root-owned files, 65532's directories, fixed times and order.
chmod 1777 "$root/tmp"
chmod 0755 "$root/home/nonroot" "$root/var/cache/kubesink"
(
    cd "$root"
    tar --create --file "$work/layer.tar" --sort=name --numeric-owner --owner=0 --group=0 \
        --mtime="@$epoch" --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        --exclude=./home/nonroot --exclude=./var/cache/kubesink .
    tar --append --file "$work/layer.tar" --numeric-owner --owner=65532 --group=65532 \
        --mtime="@$epoch" --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        --no-recursion ./home/nonroot ./var/cache/kubesink
)

rm -rf "$out"
mkdir -p "$(dirname "$out")"
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
"$umoci" init --layout "$out"
"$umoci" new --image "$out:$tag"
"$umoci" raw add-layer --image "$out:$tag" --history.created "$created" \
    --history.created_by "scripts/image.sh" "$work/layer.tar"
"$umoci" config --image "$out:$tag" --created "$created" \
    --os linux --architecture amd64 \
    --config.user 65532:65532 \
    --config.entrypoint /usr/local/bin/kubesink --config.cmd run \
    --config.env PATH=/usr/local/bin:/usr/bin:/bin \
    --config.env KUBESINK_CACHE_DIR=/var/cache/kubesink/components \
    --config.exposedports 8080/tcp \
    --config.workingdir /home/nonroot \
    --config.label org.opencontainers.image.title=kubesink \
    --config.label "org.opencontainers.image.version=$version" \
    --no-history
"$umoci" gc --layout "$out"

layer_bytes=$(stat -c %s "$work/layer.tar")
blob_bytes=$(du -sb "$out/blobs" | cut -f1)
printf 'image.sh: %s:%s  %d KiB compressed (blobs), %d KiB uncompressed layer; binary %d KiB\n' \
    "$out" "$tag" $(((blob_bytes + 1023) / 1024)) $(((layer_bytes + 1023) / 1024)) \
    $((($(stat -c %s "$binary") + 1023) / 1024)) >&2
echo "$out:$tag"

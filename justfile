# kubesink's entry points. Without `just` installed, run them as
# `scripts/just <recipe>` (it installs a pinned `just` first).
# Logic lives in scripts/ (building and setup) and tests/scripts/ (test
# services, the suite, the benchmarks); recipes stay short.

set shell := ["bash", "-euo", "pipefail", "-c"]

# What `demo` runs `kubesink` with (no config: ./kubesink.db via the bundled mysql sink).
demo_args := "replay tests/fixtures/kubedl/watch.json"

# List the recipes.
default:
    @{{ just_executable() }} --justfile {{ justfile() }} --list

# Install what every recipe needs (wasm32-wasip2 target, rustfmt, clippy); idempotent.
setup:
    bash scripts/setup.sh

# Build the bundled sinks (sinks/*) for wasm32-wasip2 and print their sizes.
guests: setup
    bash scripts/guests.sh

# Build the sinks and the kubesink binary.
build: guests
    cargo build -p kubesink

# Replay the KubeDL fixture into ./kubesink.db and print what was persisted. Builds only what it runs: the mysql sink and kubesink.
demo:
    bash scripts/setup.sh --wasm
    bash scripts/guests.sh kubesink-sink-mysql
    cargo run -q -p kubesink -- {{ demo_args }}

# Start the private test MariaDB (127.0.0.1:3307) if it is not running; print its URL.
mariadb:
    bash tests/scripts/mariadb.sh start

# Stop the private test MariaDB.
mariadb-stop:
    bash tests/scripts/mariadb.sh stop

# Start the private test PostgreSQL (127.0.0.1:5433) if it is not running; print its URL.
postgres:
    bash tests/scripts/postgres.sh start

# Stop the private test PostgreSQL.
postgres-stop:
    bash tests/scripts/postgres.sh stop

# Start the private test Kafka broker (single-node KRaft, jars from Maven Central) and print KUBESINK_TEST_KAFKA_BROKERS=...
kafka:
    bash tests/scripts/kafka.sh start

# Stop the private test Kafka broker (its data stays).
kafka-stop:
    bash tests/scripts/kafka.sh stop

# rustfmt check and clippy (warnings are errors) over the whole workspace.
lint: setup
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Lint, then the whole test suite (unit and e2e) with MariaDB and PostgreSQL running; ARGS go to `cargo test`.
[positional-arguments]
test *ARGS: lint guests
    bash tests/scripts/test.sh "$@"

# Start a real control plane (etcd + kube-apiserver, built on first use); prints KUBECONFIG=<path>; runs until Ctrl-C.
cluster:
    tests/controlplane/build.sh > /dev/null
    cargo run -q -p kubesink-tests --bin kubesink-cluster

# Run the SLS emulator for demos on 127.0.0.1:9000 (SLS_EMULATOR_LISTEN, SLS_PROJECT, SLS_LOG_STORE, SLS_KEY_ID, SLS_KEY_SECRET override); prints the SLS_* settings for kubesink; runs until Ctrl-C.
sls-emulator:
    cargo run -q -p kubesink-tests --bin sls-emulator

# Build the bundled sinks and write them, gzipped, as ConfigMap kubesink-sinks to OUT (default deploy/generated/sinks-configmap.yaml); prints sizes and digests.
configmap OUT="deploy/generated/sinks-configmap.yaml": setup
    bash scripts/configmap.sh {{ OUT }}

# Build kubesink's OCI image without a container engine (static musl release binary + bundled sinks, umoci) into <target>/image/kubesink-oci; prints its size. ARGS: see scripts/image.sh.
[positional-arguments]
image *ARGS: setup
    bash scripts/image.sh "$@"

# Benchmarks (issue 7): starts MariaDB, the SLS emulator and a control plane itself, writes docs/benchmarks.md. BENCH_SCALE=0.01 for a quick check; BENCH_ONLY=mysql,replay,sls,calls,memory,latency,idle,restart picks scenarios (the rows of the others are kept).
bench: setup
    bash tests/scripts/bench.sh

#!/usr/bin/env bash
# kubesink's benchmarks (issue 7): builds what they need, runs the
# criterion bench of host→guest call costs, then `kubesink-bench`, which
# starts MariaDB, the SLS emulator and a control plane itself, runs every
# scenario and writes docs/benchmarks.md (also printed).
#
#   tests/scripts/bench.sh                 everything at the issue's sizes
#   BENCH_SCALE=0.01 tests/scripts/bench.sh   a quick check of the harness
#   BENCH_ONLY=mysql,sls tests/scripts/bench.sh   some scenarios
#
# Environment: BENCH_SCALE (1), BENCH_ONLY (all: mysql,replay,sls,calls,
# memory,latency,idle,livecpu,restart; `load`, which only loads the data
# for a callgrind baseline, runs only when named; rows of scenarios not
# run are kept from the report),
# BENCH_IDLE_SECS (300 × scale, at least 60), BENCH_IDLE_SETTLE_SECS (60),
# BENCH_IDLE_BASELINE (another kubesink binary measured idle alongside),
# BENCH_MARIADB_ARGS, BENCH_MYSQL_PORT (3308), BENCH_MEMORY_PODS, BENCH_RATE (500), BENCH_LATENCY_SECS,
# BENCH_OUT (docs/benchmarks.md), BENCH_PROFILE (cargo profile, default
# release: the figures are for the build users run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

export BENCH_PROFILE="${BENCH_PROFILE:-release}"
profile="$BENCH_PROFILE"
say() { echo "bench.sh: $*" >&2; }

# A MariaDB server of the benchmarks' own (its own port and data under
# ~/.cache/kubesink/bench), sized as a database server is, not as the
# tests' small one: BENCH_MARIADB_ARGS (server options) overrides.
if [ -z "${KUBESINK_TEST_MYSQL_URL:-}" ]; then
    export BENCH_MARIADB_ARGS="${BENCH_MARIADB_ARGS:---innodb-buffer-pool-size=2G --innodb-log-file-size=1G}"
    line="$(KUBESINK_CACHE="$HOME/.cache/kubesink/bench" KUBESINK_TEST_MYSQL_PORT="${BENCH_MYSQL_PORT:-3308}" \
        KUBESINK_MARIADB_ARGS="$BENCH_MARIADB_ARGS" bash tests/scripts/mariadb.sh start)"
    export "${line?}"
    export BENCH_MYSQLD_PID_FILE="$HOME/.cache/kubesink/bench/mariadb/mysqld.pid"
fi

say "building the sink components (wasm32-wasip2, profile guest)"
bash scripts/guests.sh >&2

say "building kubesink, kubesink-gen and kubesink-bench (profile $profile)"
# One invocation, so that the three share one feature resolution.
cargo build --profile "$profile" -p kubesink -p kubesink-tests -p kubesink-bench --bins

only="${BENCH_ONLY:-mysql,replay,sls,calls,memory,latency,idle,livecpu,restart}"
if [[ ",$only," == *",calls,"* ]]; then
    say "criterion: host→guest call costs"
    cargo bench --profile "$profile" -p kubesink-bench --bench host_call -- --noplot >&2
fi

case "$profile" in
    dev)
        dir=debug
        say "warning: profile dev leaves kubesink, its sinks' native builds and this harness unoptimized; its figures are not comparable with the report's"
        ;;
    *) dir="$profile" ;;
esac
if [ -z "${BENCH_COMMAND:-}" ]; then
    BENCH_COMMAND="BENCH_SCALE=${BENCH_SCALE:-1}"
    for v in BENCH_ONLY BENCH_IDLE_SECS BENCH_IDLE_SETTLE_SECS BENCH_PROFILE; do
        [ -n "${!v:-}" ] && [ "$v:${!v}" != "BENCH_PROFILE:release" ] && BENCH_COMMAND+=" $v=${!v}"
    done
    BENCH_COMMAND+=" just bench"
fi
export BENCH_COMMAND
exec "${CARGO_TARGET_DIR:-target}/$dir/kubesink-bench"

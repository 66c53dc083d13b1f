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
# memory,latency), BENCH_MEMORY_PODS, BENCH_RATE (500), BENCH_LATENCY_SECS,
# BENCH_OUT (docs/benchmarks.md), BENCH_PROFILE (cargo profile, default dev).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

profile="${BENCH_PROFILE:-dev}"
say() { echo "bench.sh: $*" >&2; }

if [ -z "${KUBESINK_TEST_MYSQL_URL:-}" ]; then
    line="$(bash tests/scripts/mariadb.sh start)"
    export "${line?}"
fi

say "building the sink components (wasm32-wasip2, profile guest)"
bash tests/scripts/guests.sh >&2

say "building kubesink, kubesink-gen and kubesink-bench (profile $profile)"
# One invocation, so that the three share one feature resolution.
cargo build --profile "$profile" -p kubesink -p kubesink-tests -p kubesink-bench --bins

only="${BENCH_ONLY:-mysql,replay,sls,calls,memory,latency}"
if [[ ",$only," == *",calls,"* ]]; then
    say "criterion: host→guest call costs"
    cargo bench --profile "$profile" -p kubesink-bench --bench host_call -- --noplot >&2
fi

case "$profile" in
    dev) dir=debug ;;
    *) dir="$profile" ;;
esac
export BENCH_COMMAND="${BENCH_COMMAND:-BENCH_SCALE=${BENCH_SCALE:-1} just bench}"
exec "target/$dir/kubesink-bench"

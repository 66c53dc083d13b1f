#!/usr/bin/env bash
# The whole test suite: starts the test MariaDB and PostgreSQL (unless
# KUBESINK_TEST_MYSQL_URL / KUBESINK_TEST_POSTGRES_URL already name a server)
# and the test Kafka broker (unless KUBESINK_TEST_KAFKA_BROKERS names one),
# exports their addresses, then `cargo test --workspace`.
# --no-fail-fast: every test binary runs and prints its summary.
# Extra arguments go to `cargo test` (e.g. `-- --nocapture`, a test filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if [ -z "${KUBESINK_TEST_MYSQL_URL:-}" ]; then
    line="$(bash tests/scripts/mariadb.sh start)"
    export "${line?}"
fi
echo "test.sh: KUBESINK_TEST_MYSQL_URL=${KUBESINK_TEST_MYSQL_URL/\/\/*@/\/\/***@}" >&2
if [ -z "${KUBESINK_TEST_POSTGRES_URL:-}" ]; then
    line="$(bash tests/scripts/postgres.sh start)"
    export "${line?}"
fi
echo "test.sh: KUBESINK_TEST_POSTGRES_URL=${KUBESINK_TEST_POSTGRES_URL/\/\/*@/\/\/***@}" >&2
if [ -z "${KUBESINK_TEST_KAFKA_BROKERS:-}" ]; then
    line="$(bash tests/scripts/kafka.sh start)"
    export "${line?}"
fi
echo "test.sh: KUBESINK_TEST_KAFKA_BROKERS=$KUBESINK_TEST_KAFKA_BROKERS" >&2

exec cargo test --workspace --no-fail-fast "$@"

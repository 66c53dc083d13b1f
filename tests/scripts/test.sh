#!/usr/bin/env bash
# The whole test suite: starts the test MariaDB (unless KUBESINK_TEST_MYSQL_URL
# already names a server), exports its URL, then `cargo test --workspace`.
# --no-fail-fast: every test binary runs and prints its summary.
# Extra arguments go to `cargo test` (e.g. `-- --nocapture`, a test filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if [ -z "${KUBESINK_TEST_MYSQL_URL:-}" ]; then
    line="$(bash tests/scripts/mariadb.sh start)"
    export "${line?}"
fi
echo "test.sh: KUBESINK_TEST_MYSQL_URL=${KUBESINK_TEST_MYSQL_URL/\/\/*@/\/\/***@}" >&2

exec cargo test --workspace --no-fail-fast "$@"

#!/usr/bin/env bash
# A private PostgreSQL server for kubesink's tests.
#
#   tests/scripts/postgres.sh [start]  install if missing, start if not running,
#                                      print KUBESINK_TEST_POSTGRES_URL=... on stdout
#   tests/scripts/postgres.sh stop     shut the private server down
#   tests/scripts/postgres.sh status   exit 0 if it answers, 1 if not
#
# stdout carries only the
# `KUBESINK_TEST_POSTGRES_URL=postgres://user:pass@host:port/db` line (so
# `export "$(tests/scripts/postgres.sh)"` works); progress and errors go to
# stderr. The server binaries (`initdb`, `pg_ctl`, `postgres`) are taken from
# PATH or /usr/lib/postgresql/*/bin; when there are none, Debian's
# `postgresql` package is installed with apt-get. No init system is needed:
# the server runs in the background with its data dir, socket and log under
# ${KUBESINK_CACHE:-~/.cache/kubesink}/postgres/, listening on 127.0.0.1 only,
# on port ${KUBESINK_TEST_POSTGRES_PORT:-5433}, with a `kubesink` role
# (password `kubesink`, superuser: the tests create and drop databases) and
# database. Running it again reuses a server that answers. Several callers
# at once are serialized by a lock file.
#
# PostgreSQL refuses to run as root. As root, the server runs as the
# `postgres` account Debian's package creates (KUBESINK_POSTGRES_OS_USER
# names another), which owns the data dir; since root's home is usually
# closed to other users, the server is given the one capability
# CAP_DAC_READ_SEARCH (as an ambient capability, through setpriv) so that it
# can reach its data dir there. As any other user it runs as that user.
set -euo pipefail

cmd="${1:-start}"
port="${KUBESINK_TEST_POSTGRES_PORT:-5433}"
base="${KUBESINK_CACHE:-$HOME/.cache/kubesink}/postgres"
data="$base/data"
log="$base/postgres.log"
user=kubesink
pass=kubesink
db=kubesink
url="postgres://$user:$pass@127.0.0.1:$port/$db"

say() { echo "postgres.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

find_bin() { # the named server binary on PATH or in Debian's versioned folder
    local n="$1" d
    if command -v "$n" >/dev/null 2>&1; then command -v "$n"; return 0; fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
        [ -x "$d/$n" ] && { echo "$d/$n"; return 0; }
    done
    return 1
}

install_packages() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "the PostgreSQL server is not installed and this user is not root (no sudo either): install postgresql"
        sudo=(sudo -n)
    fi
    say "installing postgresql from Debian's packages"
    "${sudo[@]}" apt-get update -qq >&2 || die "apt-get update failed"
    # Debian's package may create and start a cluster of its own (port 5432);
    # it is left alone: the tests use only the binaries.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        postgresql >&2 || die "apt-get install postgresql failed"
}

resolve_bins() {
    initdb="$(find_bin initdb)" || return 1
    pg_ctl="$(find_bin pg_ctl)" || return 1
    server="$(find_bin postgres)" || return 1
    psql="$(find_bin psql)" || return 1
}

# How the server's commands run: as this user, or (as root) as the account
# that owns the data dir.
run_as=()
resolve_user() {
    if [ "$(id -u)" -ne 0 ]; then
        return 0
    fi
    local os_user="${KUBESINK_POSTGRES_OS_USER:-postgres}"
    getent passwd "$os_user" >/dev/null || die "running as root, and there is no '$os_user' account to run PostgreSQL as (it refuses root): create it or set KUBESINK_POSTGRES_OS_USER"
    command -v setpriv >/dev/null 2>&1 || die "running as root needs setpriv (util-linux) to start PostgreSQL as '$os_user'"
    run_as=(setpriv --reuid="$os_user" --regid="$(id -g "$os_user")" --init-groups
        --inh-caps=+dac_read_search --ambient-caps=+dac_read_search --)
    os_owner="$os_user"
}

# The server answers as the test role over TCP, as the tests will.
answers() {
    PGPASSWORD="$pass" PGCONNECT_TIMEOUT=2 "$psql" -X -q -h 127.0.0.1 -p "$port" -U "$user" -d "$db" \
        -c 'SELECT 1' >/dev/null 2>&1
}

# The server answers at all (on its own socket, as the superuser initdb made).
superuser_answers() {
    "${run_as[@]}" "$psql" -X -q -h "$base" -p "$port" -U postgres -d postgres \
        -c 'SELECT 1' >/dev/null 2>&1
}

log_tail() { [ -f "$log" ] && { say "last lines of $log:"; tail -n 30 "$log" >&2; }; return 0; }

start_server() {
    if [ ! -s "$data/PG_VERSION" ]; then
        say "initializing a data dir in $data"
        rm -rf "$data" && mkdir -p "$data"
        if [ -n "${os_owner:-}" ]; then chown "$os_owner:" "$data"; fi
        chmod 700 "$data"
        # Local superuser `postgres` (trust on the socket only); the test role
        # logs in over TCP with a password.
        "${run_as[@]}" "$initdb" -D "$data" -U postgres --auth-local=trust \
            --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$base/initdb.log" 2>&1 \
            || { cat "$base/initdb.log" >&2; die "initdb failed for $data"; }
    fi
    if [ -n "${os_owner:-}" ]; then chown "$os_owner:" "$base"; fi
    say "starting $server on 127.0.0.1:$port (log: $log)"
    # pg_ctl detaches the server from our stdio, so callers reading our
    # stdout are not held open.
    "${run_as[@]}" "$pg_ctl" -D "$data" -l "$log" -w -t 60 -o \
        "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$base' -c max_connections=300 -c fsync=off -c shared_buffers=64MB" \
        start >&2 9>&- || { log_tail; die "$server did not start (port $port taken?)"; }
}

ensure_role() {
    "${run_as[@]}" "$psql" -X -q -v ON_ERROR_STOP=1 -h "$base" -p "$port" -U postgres -d postgres >/dev/null <<SQL \
        || die "could not create role $user and database $db on the server at $base"
SELECT 'CREATE ROLE $user LOGIN SUPERUSER' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$user') \gexec
ALTER ROLE $user PASSWORD '$pass';
SELECT 'CREATE DATABASE $db OWNER $user' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db') \gexec
SQL
}

case "$cmd" in
start)
    resolve_bins || { install_packages; resolve_bins || die "postgresql installed but initdb/pg_ctl/postgres/psql not found"; }
    resolve_user
    mkdir -p "$base"
    exec 9>"$base/lock"
    flock 9
    if superuser_answers; then
        say "reusing the server on 127.0.0.1:$port"
    else
        start_server
    fi
    ensure_role
    answers || { log_tail; die "role $user cannot log in over TCP at 127.0.0.1:$port (is another server on that port? set KUBESINK_TEST_POSTGRES_PORT)"; }
    say "ready: PGPASSWORD=$pass psql -h 127.0.0.1 -p $port -U $user $db"
    echo "KUBESINK_TEST_POSTGRES_URL=$url"
    ;;
stop)
    resolve_bins || die "no PostgreSQL installed"
    resolve_user
    if [ -s "$data/postmaster.pid" ]; then
        "${run_as[@]}" "$pg_ctl" -D "$data" -m fast -w stop >&2 && say "stopped"
    else
        say "not running"
    fi
    ;;
status)
    resolve_bins || die "no PostgreSQL installed"
    answers && say "running on 127.0.0.1:$port" || { say "not running"; exit 1; }
    ;;
*)
    die "unknown command '$cmd' (start, stop, status)"
    ;;
esac

#!/usr/bin/env bash
# A private MariaDB server for kubesink's tests, run as the current user.
#
#   tests/scripts/mariadb.sh [start]   install if missing, start if not running,
#                                      print KUBESINK_TEST_MYSQL_URL=... on stdout
#   tests/scripts/mariadb.sh stop      shut the private server down
#   tests/scripts/mariadb.sh status    exit 0 if it answers, 1 if not
#
# stdout carries only the `KUBESINK_TEST_MYSQL_URL=mysql://user:pass@host:port`
# line (so `export "$(tests/scripts/mariadb.sh)"` works); progress and
# errors go to stderr. No init system is needed: the server runs in the
# background with its data dir, socket, pid file and log under
# ${KUBESINK_CACHE:-~/.cache/kubesink}/mariadb/, listening on 127.0.0.1 only,
# on port ${KUBESINK_TEST_MYSQL_PORT:-3307}. Running it again reuses a server
# that answers. Several callers at once are serialized by a lock file.
# KUBESINK_MARIADB_ARGS adds server options (words, e.g.
# `--innodb-buffer-pool-size=2G`), taken when the server starts.
set -euo pipefail

cmd="${1:-start}"
port="${KUBESINK_TEST_MYSQL_PORT:-3307}"
base="${KUBESINK_CACHE:-$HOME/.cache/kubesink}/mariadb"
data="$base/data"
sock="$base/mysqld.sock"
pidf="$base/mysqld.pid"
log="$base/mysqld.log"
me="$(id -un)"
user=kubesink
pass=kubesink
url="mysql://$user:$pass@127.0.0.1:$port"

say() { echo "mariadb.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

# Debian puts the server in /usr/sbin, which a non-root PATH may lack.
PATH="$PATH:/usr/sbin:/sbin"

find_bin() { # first of the given names on PATH
    local n
    for n in "$@"; do
        if command -v "$n" >/dev/null 2>&1; then command -v "$n"; return 0; fi
    done
    return 1
}

install_packages() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "mariadb-server is not installed and this user is not root (no sudo either): install mariadb-server and mariadb-client"
        sudo=(sudo -n)
    fi
    say "installing mariadb-server and mariadb-client from Debian's packages"
    "${sudo[@]}" apt-get update -qq >&2 || die "apt-get update failed"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        mariadb-server mariadb-client >&2 \
        || die "apt-get install mariadb-server mariadb-client failed"
}

resolve_bins() {
    server="$(find_bin mariadbd mysqld)" || return 1
    client="$(find_bin mariadb mysql)" || return 1
    admin="$(find_bin mariadb-admin mysqladmin)" || return 1
    installdb="$(find_bin mariadb-install-db mysql_install_db)" || return 1
}

# The server answers on its socket (as the OS user, unix_socket auth).
answers() { "$admin" --no-defaults --socket="$sock" --user="$me" --connect-timeout=2 ping >/dev/null 2>&1; }

# The test user can log in over TCP, as the tests will.
tcp_ok() {
    "$client" --no-defaults --protocol=TCP --host=127.0.0.1 --port="$port" \
        --user="$user" --password="$pass" --connect-timeout=2 -e 'SELECT 1' >/dev/null 2>&1
}

server_pid() { [ -s "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null && cat "$pidf"; }

log_tail() { [ -f "$log" ] && { say "last lines of $log:"; tail -n 30 "$log" >&2; }; return 0; }

start_server() {
    if [ ! -d "$data/mysql" ]; then
        say "initializing a data dir in $data"
        rm -rf "$data" && mkdir -p "$data"
        "$installdb" --no-defaults --datadir="$data" --user="$me" \
            --auth-root-authentication-method=socket --skip-test-db >"$base/install-db.log" 2>&1 \
            || { cat "$base/install-db.log" >&2; die "mariadb-install-db failed for $data"; }
    fi
    rm -f "$sock" "$pidf"
    say "starting $server on 127.0.0.1:$port (log: $log)"
    # Detached from our stdio, so callers reading our stdout are not held open.
    setsid "$server" --no-defaults --datadir="$data" --user="$me" \
        --bind-address=127.0.0.1 --port="$port" --socket="$sock" --pid-file="$pidf" \
        --log-error="$log" --skip-name-resolve --innodb-buffer-pool-size=128M \
        --max-connections=500 ${KUBESINK_MARIADB_ARGS:-} </dev/null >>"$log" 2>&1 9>&- &
    local starter=$! i
    for i in $(seq 1 120); do
        answers && return 0
        # The server forks nothing: if the process we started is gone, it failed.
        kill -0 "$starter" 2>/dev/null || server_pid >/dev/null \
            || { log_tail; die "$server exited during startup (port $port taken?)"; }
        sleep 0.5
    done
    log_tail
    die "$server did not answer on $sock within 60 s"
}

ensure_user() {
    "$client" --no-defaults --socket="$sock" --user="$me" -e "
        CREATE USER IF NOT EXISTS '$user'@'127.0.0.1' IDENTIFIED BY '$pass';
        CREATE USER IF NOT EXISTS '$user'@'localhost' IDENTIFIED BY '$pass';
        GRANT ALL PRIVILEGES ON *.* TO '$user'@'127.0.0.1' WITH GRANT OPTION;
        GRANT ALL PRIVILEGES ON *.* TO '$user'@'localhost' WITH GRANT OPTION;" \
        || die "could not create user $user on the server at $sock"
}

case "$cmd" in
start)
    resolve_bins || { install_packages; resolve_bins || die "mariadb-server installed but mariadbd/mariadb/mariadb-admin/mariadb-install-db not found"; }
    mkdir -p "$base"
    exec 9>"$base/lock"
    flock 9
    if answers; then
        say "reusing the server on $sock"
    elif pid="$(server_pid)"; then
        # Started by someone else a moment ago: give it time to answer.
        for _ in $(seq 1 120); do answers && break; sleep 0.5; done
        answers || { log_tail; die "server pid $pid in $pidf does not answer on $sock"; }
    else
        start_server
    fi
    ensure_user
    tcp_ok || { log_tail; die "user $user cannot log in over TCP at 127.0.0.1:$port (is another server on that port? set KUBESINK_TEST_MYSQL_PORT)"; }
    say "ready: mariadb --no-defaults -h 127.0.0.1 -P $port -u $user -p$pass   (or: mariadb --no-defaults -S $sock -u $me)"
    echo "KUBESINK_TEST_MYSQL_URL=$url"
    ;;
stop)
    resolve_bins || die "no MariaDB installed"
    if answers; then
        "$admin" --no-defaults --socket="$sock" --user="$me" shutdown && say "stopped"
    else
        say "not running"
    fi
    ;;
status)
    resolve_bins || die "no MariaDB installed"
    answers && say "running on $sock and 127.0.0.1:$port" || { say "not running"; exit 1; }
    ;;
*)
    die "unknown command '$cmd' (start, stop, status)"
    ;;
esac

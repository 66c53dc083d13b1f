#!/usr/bin/env bash
# A private single-node Apache Kafka broker (KRaft: broker and controller in
# one JVM) for kubesink's tests, run as the current user.
#
#   tests/scripts/kafka.sh [start]   install if missing, start if not running,
#                                    print KUBESINK_TEST_KAFKA_BROKERS=... on stdout
#   tests/scripts/kafka.sh stop      stop the broker (SIGTERM: a clean shutdown
#                                    that flushes its logs), keep its data
#   tests/scripts/kafka.sh status    exit 0 if it answers, 1 if not
#   tests/scripts/kafka.sh reset     stop it and delete its data
#
# stdout carries only the `KUBESINK_TEST_KAFKA_BROKERS=127.0.0.1:PORT` line
# (so `export "$(tests/scripts/kafka.sh)"` works); progress and errors go to
# stderr. The broker's jars come from Maven Central (org.apache.kafka:kafka_2.13
# $KAFKA_VERSION and its runtime dependencies, fetched by `mvn
# dependency:copy-dependencies` from a generated pom) into
# ${KUBESINK_CACHE:-~/.cache/kubesink}/kafka/<version>/libs; needs Java 17+
# and Maven (installed from Debian's packages when missing and root).
# The data dir, config, pid file and log are under
# ${KUBESINK_CACHE:-~/.cache/kubesink}/kafka/<version>/run/, the broker listens
# on 127.0.0.1:${KUBESINK_TEST_KAFKA_PORT:-19092} (its controller on the next
# port); KUBESINK_KAFKA_RUN picks another run directory (a test's private
# broker, with its own port). Starting again reuses a broker that answers and
# keeps the data dir, so a test can stop and start it mid-stream. Callers are
# serialized by a lock.
set -euo pipefail

cmd="${1:-start}"
version="${KUBESINK_KAFKA_VERSION:-4.1.1}"
log4j_version=2.24.3
port="${KUBESINK_TEST_KAFKA_PORT:-19092}"
cport=$((port + 1))
base="${KUBESINK_CACHE:-$HOME/.cache/kubesink}/kafka/$version"
libs="$base/libs"
run="${KUBESINK_KAFKA_RUN:-$base/run}"
data="$run/data"
props="$run/server.properties"
pidf="$run/kafka.pid"
log="$run/server.log"

say() { echo "kafka.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

install_packages() { # Debian packages named in "$@"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "$* not installed and this user is not root (no sudo either): install them"
        sudo=(sudo -n)
    fi
    say "installing $* from Debian's packages"
    "${sudo[@]}" apt-get update -qq >&2 || die "apt-get update failed"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 \
        || die "apt-get install $* failed"
}

ensure_tools() {
    command -v java >/dev/null 2>&1 || install_packages openjdk-17-jre-headless
    command -v mvn >/dev/null 2>&1 || install_packages maven
}

# The broker's jars, once per version.
ensure_jars() {
    [ -f "$libs/.complete" ] && return 0
    ensure_tools
    say "fetching Apache Kafka $version (org.apache.kafka:kafka_2.13) and its dependencies from Maven Central into $libs"
    local pom="$base/pom.xml"
    mkdir -p "$base"
    cat >"$pom" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>kubesink.test</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$version</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$log4j_version</version>
    </dependency>
  </dependencies>
</project>
POM
    rm -rf "$libs"
    # (Maven 3.8 prints colour resets even in batch mode: stripped.)
    if ! mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$libs" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >&2; then
        die "mvn could not fetch kafka_2.13 $version"
    fi
    [ -f "$libs/kafka_2.13-$version.jar" ] || die "kafka_2.13-$version.jar missing from $libs"
    touch "$libs/.complete"
}

java_opts=(-Xms256m -Xmx512m -XX:+UseSerialGC -Dkafka.logs.dir="$run"
    -Dlog4j2.configurationFile="$run/log4j2.properties" -cp "$libs/*")

write_config() {
    mkdir -p "$run"
    cat >"$props" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$data
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
    cat >"$run/log4j2.properties" <<'LOG'
rootLogger.level=INFO
rootLogger.appenderRef.f.ref=F
appender.f.type=File
appender.f.name=F
appender.f.fileName=${sys:kafka.logs.dir}/server.log
appender.f.layout.type=PatternLayout
appender.f.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=INFO
logger.state.name=state.change.logger
logger.state.level=WARN
LOG
}

format_storage() {
    [ -f "$data/meta.properties" ] && return 0
    say "formatting a KRaft log dir in $data"
    local id
    id="$(java "${java_opts[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    [ -n "$id" ] || die "kafka-storage random-uuid printed nothing"
    java "${java_opts[@]}" kafka.tools.StorageTool format -t "$id" -c "$props" >"$run/format.log" 2>&1 \
        || { cat "$run/format.log" >&2; die "formatting $data failed"; }
}

# The broker accepts TCP connections on its port.
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

server_pid() { [ -s "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null && cat "$pidf"; }

log_tail() { [ -f "$log" ] && { say "last lines of $log:"; tail -n 30 "$log" >&2; }; return 0; }

start_server() {
    write_config
    format_storage
    # A fresh log per start: its "Kafka Server started" line is this start's.
    [ -f "$log" ] && mv -f "$log" "$log.1"
    say "starting Kafka $version on 127.0.0.1:$port (log: $log)"
    # Detached from our stdio, so callers reading our stdout are not held open.
    setsid java "${java_opts[@]}" kafka.Kafka "$props" \
        </dev/null >>"$run/stdout.log" 2>&1 9>&- &
    echo $! >"$pidf"
    local i
    for i in $(seq 1 240); do
        if grep -q "Kafka Server started" "$log" 2>/dev/null && answers; then
            return 0
        fi
        server_pid >/dev/null || {
            log_tail
            tail -n 20 "$run/stdout.log" >&2 || true
            die "the broker exited during startup (port $port or $cport taken?)"
        }
        sleep 0.25
    done
    log_tail
    die "the broker did not start within 60 s"
}

stop_server() {
    local pid i
    pid="$(server_pid)" || { say "not running"; return 0; }
    kill -TERM "$pid"
    for i in $(seq 1 240); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidf"; say "stopped"; return 0; }
        sleep 0.25
    done
    die "the broker (pid $pid) did not stop within 60 s"
}

lock() { mkdir -p "$base"; exec 9>"$base/lock"; flock 9; }

case "$cmd" in
start)
    lock
    ensure_jars
    if server_pid >/dev/null && answers; then
        say "reusing the broker on 127.0.0.1:$port"
    elif answers; then
        die "something else listens on 127.0.0.1:$port: set KUBESINK_TEST_KAFKA_PORT"
    else
        start_server
    fi
    say "ready: 127.0.0.1:$port"
    echo "KUBESINK_TEST_KAFKA_BROKERS=127.0.0.1:$port"
    ;;
stop)
    lock
    stop_server
    ;;
status)
    if server_pid >/dev/null && answers; then
        say "running on 127.0.0.1:$port"
    else
        say "not running"
        exit 1
    fi
    ;;
reset)
    lock
    stop_server
    rm -rf "$run"
    say "data removed"
    ;;
*)
    die "unknown command '$cmd' (start, stop, status, reset)"
    ;;
esac

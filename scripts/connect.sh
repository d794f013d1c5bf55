#!/usr/bin/env bash
# Runs a Kafka Connect worker in standalone mode with the Debezium PostgreSQL connector, on
# loopback, for the real-services test suite and for trying Debezium locally. Needs Java 17+ and
# Maven; the jars (connect-runtime, Debezium) are resolved from Maven Central through
# scripts/connect/pom.xml into a cache outside the repository.
#
#   scripts/connect.sh start CONNECTOR.properties...   start a worker running these connectors
#   scripts/connect.sh stop | restart | status | pid
#   scripts/connect.sh fetch                            only resolve the jars (CI does it early)
#
# Offsets are kept in the state dir, so a restart resumes where the worker stopped. restart keeps
# the connectors it was started with.
#
# Environment: CACHEWIRE_CONNECT_BROKERS (default 127.0.0.1:19092), CACHEWIRE_CONNECT_PORT (REST,
# default 18083), CACHEWIRE_STATE_DIR (default /tmp/cachewire-services), CACHEWIRE_CACHE_DIR
# (default ~/.cache/cachewire).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
brokers="${CACHEWIRE_CONNECT_BROKERS:-127.0.0.1:19092}"
port="${CACHEWIRE_CONNECT_PORT:-18083}"
state="${CACHEWIRE_STATE_DIR:-/tmp/cachewire-services}/connect-$port"
cache="${CACHEWIRE_CACHE_DIR:-$HOME/.cache/cachewire}"
jars="$cache/connect-$(sha256sum "$root/scripts/connect/pom.xml" | cut -c1-12)"
pidfile="$state/connect.pid"
log="$state/connect.log"

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

fetch_jars() {
  if [ -f "$jars/.complete" ]; then return; fi
  command -v mvn >/dev/null || { echo "connect.sh: Maven (mvn) is needed to fetch the jars" >&2; exit 1; }
  echo "connect.sh: resolving Kafka Connect and Debezium jars into $jars"
  rm -rf "$jars"; mkdir -p "$jars"
  mvn -q -B -f "$root/scripts/connect/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$jars"
  touch "$jars/.complete"
}

start() {
  if running; then echo "connect.sh: already running (pid $(cat "$pidfile"))"; return; fi
  [ $# -gt 0 ] || { echo "connect.sh: start needs connector .properties files" >&2; exit 2; }
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "connect.sh: port $port is already in use; set CACHEWIRE_CONNECT_PORT" >&2; exit 1
  fi
  command -v java >/dev/null || { echo "connect.sh: Java 17+ is needed" >&2; exit 1; }
  fetch_jars
  rm -rf "$state/connectors"; mkdir -p "$state/connectors"
  for f in "$@"; do cp "$f" "$state/connectors/"; done
  launch
}

launch() { # runs the worker with the connectors in $state/connectors
  cat > "$state/worker.properties" <<PROPS
bootstrap.servers=$brokers
listeners=http://127.0.0.1:$port
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
offset.storage.file.filename=$state/offsets
offset.flush.interval.ms=500
plugin.discovery=only_scan
PROPS
  cat > "$state/log4j2.properties" <<'PROPS'
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = org.apache.kafka
logger.kafka.level = warn
logger.connect.name = org.apache.kafka.connect.runtime
logger.connect.level = info
PROPS
  echo "connect.sh: starting Kafka Connect (REST 127.0.0.1:$port, Kafka $brokers, log $log)"
  nohup java -Xms128m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$state/log4j2.properties" -cp "$jars/*" \
    org.apache.kafka.connect.cli.ConnectStandalone "$state/worker.properties" "$state"/connectors/*.properties >>"$log" 2>&1 &
  echo $! > "$pidfile"
  for _ in $(seq 1 240); do
    if ! running; then echo "connect.sh: the worker exited; last log lines:" >&2; tail -30 "$log" >&2; exit 1; fi
    if curl -sf "http://127.0.0.1:$port/connectors" >/dev/null 2>&1; then
      echo "connect.sh: Kafka Connect ready on 127.0.0.1:$port"; return
    fi
    sleep 0.5
  done
  echo "connect.sh: the worker did not answer within 120 s; last log lines:" >&2; tail -30 "$log" >&2; stop; exit 1
}

stop() {
  if ! running; then rm -f "$pidfile"; echo "connect.sh: not running"; return; fi
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  echo "connect.sh: stopped"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  restart) stop; launch ;;
  status) running ;;
  pid) running && cat "$pidfile" ;;
  fetch) fetch_jars ;;
  *) echo "usage: $0 start CONNECTOR.properties... | stop | restart | status | pid | fetch" >&2; exit 2 ;;
esac

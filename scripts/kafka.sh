#!/usr/bin/env bash
# Runs a single-node Apache Kafka 4.x broker (KRaft, combined broker+controller) on loopback, for
# the real-services test suite and for local use. Needs Java 17+ and Maven; the broker's jars are
# resolved from Maven Central through scripts/kafka/pom.xml into a cache outside the repository.
#
#   scripts/kafka.sh start     fetch jars if needed, format fresh storage, start, wait for metadata
#   scripts/kafka.sh stop      SIGTERM and wait (SIGKILL after 30 s)
#   scripts/kafka.sh restart   stop and start again on the same log dirs (data is kept)
#   scripts/kafka.sh status    exit 0 when running
#   scripts/kafka.sh version   print the broker version read from its log
#   scripts/kafka.sh pid       print the broker JVM's pid
#   scripts/kafka.sh classpath fetch jars if needed, print a Java classpath with kafka-clients (for
#                              the Java producer examples)
#
# Environment: CACHEWIRE_KAFKA_PORT (default 19092; the controller listens on port+1),
# CACHEWIRE_STATE_DIR (default /tmp/cachewire-services), CACHEWIRE_CACHE_DIR (default ~/.cache/cachewire).
#
# CACHEWIRE_KAFKA_BROKERS=3 runs a KRaft cluster of 3 combined broker+controller nodes instead
# (a static quorum of 3 voters): node i (1..3) listens PLAINTEXT on port+10*(i-1) and CONTROLLER
# on the next port. Topics default to replication factor 3 with min.insync.replicas=2 (the
# project's producers use acks=all, so a write survives one broker lost), and so do the internal
# topics. Plaintext only. Per-node commands for fault tests:
#
#   scripts/kafka.sh brokers          print the bootstrap list (host:port,...)
#   scripts/kafka.sh pid N            print node N's JVM pid (without N: node 1's)
#   scripts/kafka.sh kill N           SIGKILL node N (a crash: no controlled shutdown)
#   scripts/kafka.sh stop-node N      SIGTERM node N and wait (a controlled shutdown)
#   scripts/kafka.sh start-node N     start node N again on its data, wait until it is back
#   scripts/kafka.sh node-of PORT     print the node number listening on PORT
#
# CACHEWIRE_KAFKA_SECURE_DIR, when set, names a directory from `go run ./internal/testenv/secureenv`
# (ca.crt, kafka.crt, kafka.key, kafka-test.password): the broker then also listens SASL_SSL on
# port+2 with the SCRAM-SHA-512 user cwtest (made at format time), and enforces ACLs
# (StandardAuthorizer, nothing allowed without an ACL); cwtest is granted its ACLs after the first
# start. The PLAINTEXT listener stays, as User:ANONYMOUS, a super user: it serves the broker's
# own controller traffic and the JVM tools of the suite; every Go test reaches the broker over
# SASL_SSL as cwtest.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
port="${CACHEWIRE_KAFKA_PORT:-19092}"
cport=$((port + 1))
sport=$((port + 2))
secure="${CACHEWIRE_KAFKA_SECURE_DIR:-}"
state="${CACHEWIRE_STATE_DIR:-/tmp/cachewire-services}/kafka-$port"
cache="${CACHEWIRE_CACHE_DIR:-$HOME/.cache/cachewire}"
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$root/scripts/kafka/pom.xml")
jars="$cache/kafka-$version-$(sha256sum "$root/scripts/kafka/pom.xml" | cut -c1-12)"
pidfile="$state/kafka.pid"
log="$state/kafka.log"

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

fetch_jars() {
  if [ -f "$jars/.complete" ]; then return; fi
  command -v mvn >/dev/null || { echo "kafka.sh: Maven (mvn) is needed to fetch the broker jars" >&2; exit 1; }
  echo "kafka.sh: resolving Apache Kafka $version jars into $jars"
  rm -rf "$jars"; mkdir -p "$jars"
  mvn -q -B -f "$root/scripts/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$jars"
  touch "$jars/.complete"
}

write_config() {
  mkdir -p "$state/data"
  cat > "$state/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.quorum.bootstrap.servers=127.0.0.1:$cport
log.dirs=$state/data
num.partitions=3
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
PROPS
  if [ -n "$secure" ]; then write_secure_config; fi
  cat > "$state/log4j2.properties" <<'PROPS'
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = OUT
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = info
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
PROPS
}

# pem_value prints a PEM file as one properties value: its lines joined by a literal \n.
pem_value() { awk '{ printf "%s\\n", $0 }' "$1"; }

# write_secure_config adds the SASL_SSL listener and the authorizer to server.properties. The
# key and chain are inline (ssl.keystore.key, ssl.keystore.certificate.chain): Kafka reads a PEM
# keystore file only with an encrypted key, and secureenv writes unencrypted PKCS #8 keys.
write_secure_config() {
  for f in ca.crt kafka.crt kafka.key kafka-test.password; do
    [ -f "$secure/$f" ] || { echo "kafka.sh: $secure/$f is missing (make it with go run ./internal/testenv/secureenv $secure)" >&2; exit 1; }
  done
  sed -i -e "s|^listeners=.*|listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport,SASL_SSL://127.0.0.1:$sport|" \
    -e "s|^advertised.listeners=.*|advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$sport|" \
    -e "s|^listener.security.protocol.map=.*|listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL|" \
    "$state/server.properties"
  cat >> "$state/server.properties" <<PROPS
inter.broker.listener.name=PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.key=$(pem_value "$secure/kafka.key")
ssl.keystore.certificate.chain=$(pem_value "$secure/kafka.crt")$(pem_value "$secure/ca.crt")
ssl.truststore.type=PEM
ssl.truststore.location=$secure/ca.crt
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:ANONYMOUS
PROPS
}

# grant_test_user gives cwtest its ACLs: every topic, group and transactional id, and the cluster
# (to create topics). The broker keeps ACLs in its metadata log, so a restart keeps them.
grant_test_user() {
  (cd "$root" && go run ./internal/testenv/secureenv -grant "127.0.0.1:$port") \
    || { echo "kafka.sh: granting cwtest its ACLs failed" >&2; exit 1; }
  echo "kafka.sh: SASL_SSL on 127.0.0.1:$sport (user cwtest, ACLs enforced)"
}

java_cmd() { # main class and args
  java -Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$state/log4j2.properties" -cp "$jars/*" "$@"
}

start() {
  if running; then echo "kafka.sh: already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; return; fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || (exec 3<>"/dev/tcp/127.0.0.1/$cport") 2>/dev/null ||
    { [ -n "$secure" ] && (exec 3<>"/dev/tcp/127.0.0.1/$sport") 2>/dev/null; }; then
    echo "kafka.sh: port $port, $cport or $sport is already in use by another process; set CACHEWIRE_KAFKA_PORT" >&2; exit 1
  fi
  command -v java >/dev/null || { echo "kafka.sh: Java 17+ is needed" >&2; exit 1; }
  fetch_jars
  fresh=
  if [ ! -f "$state/data/meta.properties" ]; then
    fresh=1
    rm -rf "$state"; mkdir -p "$state"
    write_config
    # An id starting with '-' is drawn again (as Kafka's Uuid.randomUuid does): the storage tool
    # would read "-t -xyz" as a missing value, and one start in 64 failed.
    cluster_id=-
    while [ "${cluster_id#-}" != "$cluster_id" ]; do
      cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    scram=()
    if [ -n "$secure" ]; then scram=(--add-scram "SCRAM-SHA-512=[name=cwtest,password=$(cat "$secure/kafka-test.password")]"); fi
    java_cmd kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$state/server.properties" "${scram[@]}" >"$state/format.log" 2>&1 \
      || { cat "$state/format.log" >&2; exit 1; }
  fi
  echo "kafka.sh: starting Apache Kafka $version on 127.0.0.1:$port (log $log)"
  # The pid file holds the JVM's own pid, so tests can pause the broker (SIGSTOP) to cut Kafka off.
  nohup java -Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$state/log4j2.properties" -cp "$jars/*" kafka.Kafka "$state/server.properties" >>"$log" 2>&1 &
  echo $! > "$pidfile"
  if ! (cd "$root" && go run ./internal/cmd/kafkaready -brokers "127.0.0.1:$port" -timeout 120s) || ! running; then
    echo "kafka.sh: broker did not become ready; last log lines:" >&2; tail -30 "$log" >&2; stop; exit 1
  fi
  if [ -n "$secure" ] && [ -n "$fresh" ]; then grant_test_user; fi
  echo "kafka.sh: Apache Kafka $(broker_version) ready on 127.0.0.1:$port"
}

stop() {
  if ! running; then rm -f "$pidfile"; echo "kafka.sh: not running"; return; fi
  pid=$(cat "$pidfile")
  kill -CONT "$pid" 2>/dev/null || true # in case a test left it paused
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do running || break; sleep 0.1; done
  if running; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$pidfile"
  echo "kafka.sh: stopped"
}

broker_version() { sed -n 's/.*Kafka version: \([^ ]*\).*/\1/p' "$log" 2>/dev/null | tail -1; }

# --- the 3-node cluster (CACHEWIRE_KAFKA_BROKERS=3) ---
nodes="${CACHEWIRE_KAFKA_BROKERS:-1}"
cstate="${CACHEWIRE_STATE_DIR:-/tmp/cachewire-services}/kafka-cluster-$port"
nport() { echo $((port + 10 * ($1 - 1))); }
ndir() { echo "$cstate/node-$1"; }
nrunning() { [ -f "$(ndir "$1")/kafka.pid" ] && kill -0 "$(cat "$(ndir "$1")/kafka.pid")" 2>/dev/null; }
cbrokers() { local out=() i; for i in $(seq 1 "$nodes"); do out+=("127.0.0.1:$(nport "$i")"); done; (IFS=,; echo "${out[*]}"); }

cwrite_config() { # node
  local i=$1 d voters=() j; d=$(ndir "$i")
  for j in $(seq 1 "$nodes"); do voters+=("$j@127.0.0.1:$(( $(nport "$j") + 1 ))"); done
  mkdir -p "$d/data"
  cat > "$d/server.properties" <<PROPS
process.roles=broker,controller
node.id=$i
listeners=PLAINTEXT://127.0.0.1:$(nport "$i"),CONTROLLER://127.0.0.1:$(( $(nport "$i") + 1 ))
advertised.listeners=PLAINTEXT://127.0.0.1:$(nport "$i")
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.quorum.voters=$(IFS=,; echo "${voters[*]}")
log.dirs=$d/data
num.partitions=3
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
controlled.shutdown.enable=true
replica.lag.time.max.ms=10000
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
PROPS
  cp "$state/log4j2.properties" "$d/log4j2.properties" 2>/dev/null || write_log4j "$d/log4j2.properties"
}

write_log4j() { # file
  cat > "$1" <<'PROPS'
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = OUT
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = info
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
PROPS
}

cstart_node() { # node: launch the JVM (no wait)
  local d; d=$(ndir "$1")
  if nrunning "$1"; then return; fi
  nohup java -Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$d/log4j2.properties" -cp "$jars/*" kafka.Kafka "$d/server.properties" >>"$d/kafka.log" 2>&1 &
  echo $! > "$d/kafka.pid"
}

cwait() { # brokers to ask, then what to wait for, as kafkaready flags
  local ask=$1; shift
  if ! (cd "$root" && go run ./internal/cmd/kafkaready -brokers "$ask" -timeout 180s "$@"); then
    echo "kafka.sh: cluster did not become ready; last log lines of each node:" >&2
    for i in $(seq 1 "$nodes"); do echo "--- node $i" >&2; tail -15 "$(ndir "$i")/kafka.log" >&2 || true; done
    return 1
  fi
}

cstart() {
  [ -z "$secure" ] || { echo "kafka.sh: the cluster (CACHEWIRE_KAFKA_BROKERS) runs plaintext only; unset CACHEWIRE_KAFKA_SECURE_DIR" >&2; exit 1; }
  command -v java >/dev/null || { echo "kafka.sh: Java 17+ is needed" >&2; exit 1; }
  local i p
  for i in $(seq 1 "$nodes"); do
    nrunning "$i" && continue
    for p in $(nport "$i") $(( $(nport "$i") + 1 )); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "kafka.sh: port $p is already in use by another process; set CACHEWIRE_KAFKA_PORT" >&2; exit 1
      fi
    done
  done
  fetch_jars
  if [ ! -f "$(ndir 1)/data/meta.properties" ]; then
    rm -rf "$cstate"; mkdir -p "$cstate"
    local cluster_id=-
    while [ "${cluster_id#-}" != "$cluster_id" ]; do
      cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    for i in $(seq 1 "$nodes"); do
      cwrite_config "$i"
      java -Xms128m -Xmx256m -Dlog4j2.configurationFile="$(ndir "$i")/log4j2.properties" -cp "$jars/*" \
        kafka.tools.StorageTool format -t "$cluster_id" -c "$(ndir "$i")/server.properties" >"$(ndir "$i")/format.log" 2>&1 \
        || { cat "$(ndir "$i")/format.log" >&2; exit 1; }
    done
  fi
  echo "kafka.sh: starting an Apache Kafka $version cluster of $nodes nodes on $(cbrokers) (logs $cstate/node-*/kafka.log)"
  for i in $(seq 1 "$nodes"); do cstart_node "$i"; done
  cwait "$(cbrokers)" -min-brokers "$nodes" || { cstop; exit 1; }
  echo "kafka.sh: Apache Kafka $(sed -n 's/.*Kafka version: \([^ ]*\).*/\1/p' "$(ndir 1)/kafka.log" | tail -1) cluster ready on $(cbrokers)"
}

cstop_node() { # node signal
  local i=$1 sig=${2:-TERM} pid d; d=$(ndir "$i")
  if ! nrunning "$i"; then rm -f "$d/kafka.pid"; return; fi
  pid=$(cat "$d/kafka.pid")
  kill -CONT "$pid" 2>/dev/null || true
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do nrunning "$i" || break; sleep 0.1; done
  if nrunning "$i"; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
  rm -f "$d/kafka.pid"
}

cstop() {
  local i
  for i in $(seq 1 "$nodes"); do cstop_node "$i" TERM & done
  wait
  echo "kafka.sh: cluster stopped"
}

cnode_arg() { # validate a node number
  [[ "${1:-}" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$nodes" ] || { echo "kafka.sh: want a node number 1..$nodes, got '${1:-}'" >&2; exit 2; }
}

if [ "$nodes" != 1 ]; then
  [[ "$nodes" =~ ^[0-9]+$ ]] && [ "$nodes" -ge 3 ] && [ "$nodes" -le 9 ] || { echo "kafka.sh: CACHEWIRE_KAFKA_BROKERS must be 1 or 3..9, got $nodes" >&2; exit 2; }
  case "${1:-}" in
    start) cstart ;;
    stop) cstop ;;
    restart) cstop; cstart ;;
    status) for i in $(seq 1 "$nodes"); do nrunning "$i" || exit 1; done ;;
    version) sed -n 's/.*Kafka version: \([^ ]*\).*/\1/p' "$(ndir 1)/kafka.log" 2>/dev/null | tail -1 ;;
    brokers) cbrokers ;;
    pid) n=${2:-1}; cnode_arg "$n"; nrunning "$n" && cat "$(ndir "$n")/kafka.pid" ;;
    kill) cnode_arg "${2:-}"; cstop_node "$2" KILL; echo "kafka.sh: node $2 killed" ;;
    stop-node) cnode_arg "${2:-}"; cstop_node "$2" TERM; echo "kafka.sh: node $2 stopped" ;;
    start-node) cnode_arg "${2:-}"; cstart_node "$2"
      cwait "127.0.0.1:$(nport "$2")" -min-brokers "$nodes" -in-sync && echo "kafka.sh: node $2 is back, every partition in sync" ;;
    node-of) for i in $(seq 1 "$nodes"); do [ "$(nport "$i")" = "${2:-}" ] && { echo "$i"; exit 0; }; done
      echo "kafka.sh: no node listens on port ${2:-}" >&2; exit 1 ;;
    classpath) fetch_jars >&2; echo "$jars/*" ;;
    *) echo "usage: $0 start|stop|restart|status|version|brokers|pid N|kill N|stop-node N|start-node N|node-of PORT|classpath" >&2; exit 2 ;;
  esac
  exit
fi

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) running ;;
  version) broker_version ;;
  pid) running && cat "$pidfile" ;;
  classpath) fetch_jars >&2; echo "$jars/*" ;;
  *) echo "usage: $0 start|stop|restart|status|version|pid|classpath" >&2; exit 2 ;;
esac

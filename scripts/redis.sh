#!/usr/bin/env bash
# Runs a redis-server (from Debian's redis-server package, installed when missing and running as
# root) on its own loopback port with no persistence, for the real-services test suite.
#
#   scripts/redis.sh start | stop | restart | status | version | pid
#
# Environment: CACHEWIRE_REDIS_PORT (default 16379), CACHEWIRE_STATE_DIR (default /tmp/cachewire-services).
#
# CACHEWIRE_REDIS_SECURE_DIR, when set, names a directory from `go run ./internal/testenv/secureenv`
# (ca.crt, redis.crt, redis.key, users.acl): the server then also speaks TLS on port+1 and takes
# its users from users.acl (the ACL user cwtest, limited to the tier's commands and the suite's
# key prefixes; the default user stays open for the plaintext port's tools).
#
# CACHEWIRE_REDIS_NODES=6 runs a Redis Cluster of 3 masters and 3 replicas instead (any even
# count of 6 or more: half masters, one replica each), on ports port..port+N-1, plaintext, with
# cluster-node-timeout 2000 ms so a replica takes over from a lost master within seconds.
# Per-node commands for fault tests:
#
#   scripts/redis.sh addrs            print every node's address (host:port,...)
#   scripts/redis.sh masters          print the masters' addresses
#   scripts/redis.sh pid N            print node N's pid (N from 1)
#   scripts/redis.sh kill N           SIGKILL node N (its data is gone: no persistence)
#   scripts/redis.sh start-node N     start node N again (it rejoins, as a replica if it was
#                                     failed over) and wait until the cluster is ok and the
#                                     node serves slots or replicates in sync
#   scripts/redis.sh failover-wait N  wait until node N (killed) serves no slot: its replica was
#                                     promoted, and every slot has a live master again
#   scripts/redis.sh node-of PORT     print the node number listening on PORT
set -euo pipefail

port="${CACHEWIRE_REDIS_PORT:-16379}"
state="${CACHEWIRE_STATE_DIR:-/tmp/cachewire-services}/redis-$port"
pidfile="$state/redis.pid"
secure="${CACHEWIRE_REDIS_SECURE_DIR:-}"

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

ensure_installed() {
  command -v redis-server >/dev/null && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "redis.sh: installing redis-server from Debian packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
  else
    echo "redis.sh: redis-server is not installed (apt-get install redis-server)" >&2; exit 1
  fi
}

start() {
  if running; then echo "redis.sh: already running on 127.0.0.1:$port"; return; fi
  ensure_installed
  mkdir -p "$state"
  tls=()
  if [ -n "$secure" ]; then
    for f in ca.crt redis.crt redis.key users.acl; do
      [ -f "$secure/$f" ] || { echo "redis.sh: $secure/$f is missing (make it with go run ./internal/testenv/secureenv $secure)" >&2; exit 1; }
    done
    tls=(--tls-port "$((port + 1))" --tls-cert-file "$secure/redis.crt" --tls-key-file "$secure/redis.key"
      --tls-ca-cert-file "$secure/ca.crt" --tls-auth-clients no --aclfile "$secure/users.acl")
  fi
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes \
    --pidfile "$pidfile" --logfile "$state/redis.log" --dir "$state" "${tls[@]}"
  for _ in $(seq 1 100); do
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && {
      echo "redis.sh: redis-server $(version) ready on 127.0.0.1:$port${secure:+ (TLS on 127.0.0.1:$((port + 1)), ACL users from $secure/users.acl)}"; return; }
    sleep 0.1
  done
  echo "redis.sh: redis-server did not answer PING" >&2; tail -20 "$state/redis.log" >&2; exit 1
}

stop() {
  if ! running; then echo "redis.sh: not running"; return; fi
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || kill "$(cat "$pidfile")" 2>/dev/null || true
  for _ in $(seq 1 100); do running || break; sleep 0.1; done
  rm -f "$pidfile"; echo "redis.sh: stopped"
}

version() { redis-cli -p "$port" info server 2>/dev/null | sed -n 's/^redis_version:\(.*\)\r*$/\1/p' | tr -d '\r'; }

# --- Redis Cluster (CACHEWIRE_REDIS_NODES) ---
rnodes="${CACHEWIRE_REDIS_NODES:-1}"
cstate="${CACHEWIRE_STATE_DIR:-/tmp/cachewire-services}/redis-cluster-$port"
rport() { echo $((port + $1 - 1)); }
rdir() { echo "$cstate/node-$1"; }
rrunning() { [ -f "$(rdir "$1")/redis.pid" ] && kill -0 "$(cat "$(rdir "$1")/redis.pid")" 2>/dev/null; }
raddrs() { local out=() i; for i in $(seq 1 "$rnodes"); do out+=("127.0.0.1:$(rport "$i")"); done; (IFS=,; echo "${out[*]}"); }

rstart_node() { # node
  local i=$1 d; d=$(rdir "$i"); mkdir -p "$d"
  rrunning "$i" && return
  # nodes.conf is the node's cluster identity: kept across restarts so a killed node rejoins.
  redis-server --bind 127.0.0.1 --port "$(rport "$i")" --save '' --appendonly no --daemonize yes \
    --cluster-enabled yes --cluster-config-file "$d/nodes.conf" --cluster-node-timeout 2000 \
    --cluster-replica-validity-factor 0 --pidfile "$d/redis.pid" --logfile "$d/redis.log" --dir "$d"
  for _ in $(seq 1 100); do
    redis-cli -p "$(rport "$i")" ping 2>/dev/null | grep -q PONG && return
    sleep 0.1
  done
  echo "redis.sh: node $i did not answer PING" >&2; tail -20 "$d/redis.log" >&2; exit 1
}

# rwait_ok waits until every live node reports cluster_state:ok and every slot is served.
rwait_ok() {
  local i ok
  for _ in $(seq 1 300); do
    ok=1
    for i in $(seq 1 "$rnodes"); do
      rrunning "$i" || continue
      redis-cli -p "$(rport "$i")" cluster info 2>/dev/null | tr -d '\r' | grep -qx 'cluster_state:ok' || { ok=; break; }
      redis-cli -p "$(rport "$i")" cluster info 2>/dev/null | tr -d '\r' | grep -qx 'cluster_slots_ok:16384' || { ok=; break; }
    done
    [ -n "$ok" ] && return 0
    sleep 0.1
  done
  echo "redis.sh: the cluster is not ok after 30 s:" >&2
  for i in $(seq 1 "$rnodes"); do rrunning "$i" && redis-cli -p "$(rport "$i")" cluster nodes >&2 && break; done
  return 1
}

rstart() {
  ensure_installed
  [ -z "$secure" ] || { echo "redis.sh: the cluster (CACHEWIRE_REDIS_NODES) runs plaintext only; unset CACHEWIRE_REDIS_SECURE_DIR" >&2; exit 1; }
  local i fresh=
  [ -f "$(rdir 1)/nodes.conf" ] || { fresh=1; rm -rf "$cstate"; }
  for i in $(seq 1 "$rnodes"); do
    if ! rrunning "$i" && (exec 3<>"/dev/tcp/127.0.0.1/$(rport "$i")") 2>/dev/null; then
      echo "redis.sh: port $(rport "$i") is already in use by another process; set CACHEWIRE_REDIS_PORT" >&2; exit 1
    fi
    rstart_node "$i"
  done
  if [ -n "$fresh" ]; then
    local addrs=(); for i in $(seq 1 "$rnodes"); do addrs+=("127.0.0.1:$(rport "$i")"); done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$cstate/create.log" 2>&1 \
      || { cat "$cstate/create.log" >&2; exit 1; }
  fi
  rwait_ok || exit 1
  # every replica has finished its first sync, so a master lost now has a replica to take over
  for _ in $(seq 1 300); do
    [ "$(for i in $(seq 1 "$rnodes"); do redis-cli -p "$(rport "$i")" info replication | tr -d '\r'; done | grep -c '^master_link_status:up')" -ge $((rnodes / 2)) ] && break
    sleep 0.1
  done
  echo "redis.sh: Redis Cluster ($((rnodes / 2)) masters, $((rnodes / 2)) replicas) of redis-server $(redis-cli -p "$port" info server | sed -n 's/^redis_version:\(.*\)\r*$/\1/p' | tr -d '\r') ready on $(raddrs)"
}

rstop_node() { # node signal
  local i=$1 sig=${2:-TERM} d; d=$(rdir "$i")
  rrunning "$i" || { rm -f "$d/redis.pid"; return; }
  if [ "$sig" = KILL ]; then kill -KILL "$(cat "$d/redis.pid")"; else redis-cli -p "$(rport "$i")" shutdown nosave >/dev/null 2>&1 || kill "$(cat "$d/redis.pid")" 2>/dev/null || true; fi
  for _ in $(seq 1 100); do rrunning "$i" || break; sleep 0.1; done
  rm -f "$d/redis.pid"
}

# rfailover_wait waits until no live node lists node $1 as a master owning slots, then until the
# cluster is ok.
rfailover_wait() {
  local gone=$1 i owns
  for _ in $(seq 1 300); do
    owns=
    for i in $(seq 1 "$rnodes"); do
      [ "$i" = "$gone" ] && continue
      rrunning "$i" || continue
      if redis-cli -p "$(rport "$i")" cluster nodes 2>/dev/null | awk -v a="127.0.0.1:$(rport "$gone")" '
        { split($2, x, "@") } x[1] == a && $3 ~ /master/ && $9 != "" { found = 1 } END { exit !found }'; then
        owns=1; break
      fi
    done
    if [ -z "$owns" ]; then rwait_ok && { echo "redis.sh: node $gone was failed over; masters now $(rmasters)"; return 0; }; return 1; fi
    sleep 0.1
  done
  echo "redis.sh: node $gone still owns slots after 30 s" >&2; return 1
}

# rwait_settled waits until node $1 serves slots as a master or is a replica in sync with its
# master: a killed master that comes back empty first rejoins as a master of nothing, and only
# then becomes a replica of the node that took its slots.
rwait_settled() {
  local p; p=$(rport "$1")
  for _ in $(seq 1 300); do
    if redis-cli -p "$p" info replication 2>/dev/null | tr -d '\r' | grep -q '^master_link_status:up'; then return 0; fi
    if redis-cli -p "$p" cluster nodes 2>/dev/null | awk '$3 ~ /myself/ && $3 ~ /master/ && $9 != "" { f = 1 } END { exit !f }'; then return 0; fi
    sleep 0.1
  done
  echo "redis.sh: node $1 neither serves slots nor replicates after 30 s:" >&2
  redis-cli -p "$p" cluster nodes >&2; return 1
}

rnode_arg() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$rnodes" ] || { echo "redis.sh: want a node number 1..$rnodes, got '${1:-}'" >&2; exit 2; }
}

rmasters() {
  local i
  for i in $(seq 1 "$rnodes"); do
    rrunning "$i" || continue
    redis-cli -p "$(rport "$i")" cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail/ && $9 != "" { split($2, a, "@"); print a[1] }' | sort | paste -sd,
    return
  done
}

if [ "$rnodes" != 1 ]; then
  [[ "$rnodes" =~ ^[0-9]+$ ]] && [ "$rnodes" -ge 6 ] && [ $((rnodes % 2)) = 0 ] || { echo "redis.sh: CACHEWIRE_REDIS_NODES must be 1 or an even number of 6 or more, got $rnodes" >&2; exit 2; }
  case "${1:-}" in
    start) rstart ;;
    stop) for i in $(seq 1 "$rnodes"); do rstop_node "$i"; done; echo "redis.sh: cluster stopped" ;;
    restart) for i in $(seq 1 "$rnodes"); do rstop_node "$i"; done; rstart ;;
    status) for i in $(seq 1 "$rnodes"); do rrunning "$i" || exit 1; done ;;
    version) redis-cli -p "$port" info server 2>/dev/null | sed -n 's/^redis_version:\(.*\)\r*$/\1/p' | tr -d '\r' ;;
    addrs) raddrs ;;
    masters) rmasters ;;
    pid) rnode_arg "${2:-}"; rrunning "$2" && cat "$(rdir "$2")/redis.pid" ;;
    kill) rnode_arg "${2:-}"; rstop_node "$2" KILL; echo "redis.sh: node $2 killed" ;;
    start-node) rnode_arg "${2:-}"; rstart_node "$2"; rwait_ok && rwait_settled "$2" && echo "redis.sh: node $2 is back" ;;
    failover-wait) rnode_arg "${2:-}"; rfailover_wait "$2" ;;
    node-of) for i in $(seq 1 "$rnodes"); do [ "$(rport "$i")" = "${2:-}" ] && { echo "$i"; exit 0; }; done
      echo "redis.sh: no node listens on port ${2:-}" >&2; exit 1 ;;
    *) echo "usage: $0 start|stop|restart|status|version|addrs|masters|pid N|kill N|start-node N|failover-wait N|node-of PORT" >&2; exit 2 ;;
  esac
  exit
fi

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) running ;;
  version) version ;;
  pid) running && cat "$pidfile" ;;
  *) echo "usage: $0 start|stop|restart|status|version|pid" >&2; exit 2 ;;
esac

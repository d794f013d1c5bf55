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

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) running ;;
  version) version ;;
  pid) running && cat "$pidfile" ;;
  *) echo "usage: $0 start|stop|restart|status|version|pid" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Runs a PostgreSQL server (Debian's postgresql package, installed when missing) as the non-root
# user postgres, with its data under /tmp and listening on loopback only, for the real-services
# test suite. Trust authentication on loopback: a test server, never a production one.
#
#   scripts/postgres.sh start | stop | restart | reset | status | version | dsn
#
# The data stays in the state dir across stop and start; reset stops the server and deletes it.
#
# Environment: CACHEWIRE_POSTGRES_PORT (default 15432), CACHEWIRE_STATE_DIR (default
# /tmp/cachewire-services). Tests read CACHEWIRE_TEST_POSTGRES, the DSN `dsn` prints.
set -euo pipefail

port="${CACHEWIRE_POSTGRES_PORT:-15432}"
state="${CACHEWIRE_STATE_DIR:-/tmp/cachewire-services}/postgres-$port"
data="$state/data"
user=postgres

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

as_pg() { # command...: run as the postgres user (the server refuses to run as root)
  if [ "$(id -un)" = "$user" ]; then "$@"; else runuser -u "$user" -- "$@"; fi
}

ensure_installed() {
  [ -n "$(bindir)" ] && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "postgres.sh: installing postgresql from Debian packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
  else
    echo "postgres.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1
  fi
}

running() { [ -n "$(bindir)" ] && [ -f "$data/postmaster.pid" ] && as_pg "$(bindir)/pg_ctl" -D "$data" status >/dev/null 2>&1; }

dsn() { echo "postgres://$user@127.0.0.1:$port/postgres?sslmode=disable"; }

start() {
  ensure_installed
  if running; then echo "postgres.sh: already running on 127.0.0.1:$port"; return; fi
  local bin; bin=$(bindir)
  mkdir -p "$state"
  chown "$user" "$state"
  # The server runs as $user: it must be able to reach the state dir (mktemp -d makes it 0700).
  chmod o+x "$(dirname "$state")"
  if [ ! -f "$data/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$data" -U "$user" --auth=trust -E UTF8 --locale=C.UTF-8 >"$state/initdb.log" 2>&1 \
      || { echo "postgres.sh: initdb failed" >&2; tail -20 "$state/initdb.log" >&2; exit 1; }
  fi
  # wal_level logical: Debezium (logical decoding) uses the same server. Unix sockets in the
  # state dir, so that nothing needs /var/run/postgresql.
  as_pg "$bin/pg_ctl" -D "$data" -l "$state/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$state -c wal_level=logical -c fsync=off -c max_connections=200" \
    start >/dev/null \
    || { echo "postgres.sh: the server did not start" >&2; tail -20 "$state/postgres.log" >&2; exit 1; }
  echo "postgres.sh: PostgreSQL $(version) ready: $(dsn)"
}

stop() {
  if ! running; then echo "postgres.sh: not running"; return; fi
  as_pg "$(bindir)/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null
  echo "postgres.sh: stopped"
}

version() { "$(bindir)/postgres" --version | awk '{print $3}'; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  reset) stop; rm -rf "$state"; echo "postgres.sh: data removed ($state)" ;;
  status) running ;;
  version) version ;;
  dsn) dsn ;;
  *) echo "usage: $0 start|stop|restart|reset|status|version|dsn" >&2; exit 2 ;;
esac

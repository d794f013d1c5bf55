#!/usr/bin/env bash
# End-to-end check of the Python client in examples/python against real processes: creates a
# venv, installs examples/python/requirements.txt, generates the stubs into a temp directory,
# builds writer, cachenode and cachectl, starts a writer and a cache node (configured by flags
# only) against the running Kafka and Redis, writes a value with `cachectl put`, reads it with
# read.py --min-version <the version put printed>, and checks the key, value and version read.py
# printed. The writer and the node are stopped (SIGTERM, wait) on any exit.
#
#   scripts/python-client-check.sh
#
# Needs a running broker at 127.0.0.1:$CACHEWIRE_KAFKA_PORT and redis-server at
# 127.0.0.1:$CACHEWIRE_REDIS_PORT (scripts/kafka.sh start, scripts/redis.sh start; defaults
# 19092 and 16379 as there), python3 (3.9+, with venv) and Go. Everything it makes goes under
# $CACHEWIRE_STATE_DIR/pyclient-* (or a temp dir that is removed). Each run uses its own topic,
# consumer group and Redis key prefix, so it can share Kafka and Redis with the test suites. It
# picks free loopback ports for the processes. PYTHON picks the interpreter (default python3).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
kafka="127.0.0.1:${CACHEWIRE_KAFKA_PORT:-19092}"
redis="127.0.0.1:${CACHEWIRE_REDIS_PORT:-16379}"
python="${PYTHON:-python3}"
run_id="$(date +%s)-$$"
topic="cachewire.pyclient.$run_id"

if [ -n "${CACHEWIRE_STATE_DIR:-}" ]; then
  mkdir -p "$CACHEWIRE_STATE_DIR"
  dir=$(mktemp -d "$CACHEWIRE_STATE_DIR/pyclient-XXXXXX")
  keep=1
else
  dir=$(mktemp -d /tmp/cachewire-pyclient.XXXXXX)
  keep=0
fi
mkdir -p "$dir/bin" "$dir/stubs" "$dir/logs"
say() { echo "python-client-check: $*"; }

pids=() # the writer's and the node's (env execs them, so these are theirs)
stop_all() { # SIGTERM in reverse start order, then wait for each; 1 when one did not exit 0
  local i pid rc bad=0
  for (( i=${#pids[@]}-1; i>=0; i-- )); do
    pid=${pids[$i]}
    kill -TERM "$pid" 2>/dev/null || true
    rc=0; wait "$pid" 2>/dev/null || rc=$?
    if [ $rc -ne 0 ]; then say "pid $pid exited $rc after SIGTERM" >&2; bad=1; fi
  done
  pids=()
  return $bad
}
on_exit() {
  local rc=$?
  stop_all || true
  if [ $rc -ne 0 ]; then
    for f in "$dir"/logs/*.log; do
      [ -f "$f" ] && { echo "--- last lines of $f"; tail -20 "$f"; }
    done
  fi
  if [ $keep -eq 0 ]; then rm -rf "$dir"; else say "state and logs in $dir"; fi
  exit $rc
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# The processes are configured by flags only: drop every CACHEWIRE_* variable from their
# environment (CI exports several; cachectl and the binaries read CACHEWIRE_* variables).
clean_env=()
for v in $(compgen -e | grep '^CACHEWIRE_' || true); do clean_env+=(-u "$v"); done
run_clean() { env "${clean_env[@]}" "$@"; }

for addr in "$kafka" "$redis"; do
  (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null \
    || { say "nothing listens on $addr (scripts/kafka.sh start, scripts/redis.sh start)" >&2; exit 1; }
done

say "venv and requirements ($("$python" --version 2>&1))"
"$python" -m venv "$dir/venv" || { say "cannot create a venv with $python (Debian: apt-get install python3-venv)" >&2; exit 1; }
"$dir/venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/examples/python/requirements.txt" \
  > "$dir/logs/pip.log" 2>&1 || { cat "$dir/logs/pip.log" >&2; say "pip install failed" >&2; exit 1; }
"$dir/venv/bin/python" -m pip freeze --disable-pip-version-check | grep -iE '^(grpcio|grpcio-tools|protobuf)==' | tr '\n' ' '; echo

say "generating the stubs into $dir/stubs"
PYTHON="$dir/venv/bin/python" "$root/examples/python/gen.sh" "$dir/stubs"

say "building writer, cachenode, cachectl"
(cd "$root" && go build -o "$dir/bin/" ./cmd/writer ./cmd/cachenode ./cmd/cachectl)

# Free loopback ports, chosen by the kernel (released just before the processes bind them).
read -r wgrpc whttp ngrpc nhttp < <("$python" - <<'PY'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
PY
)
writer="127.0.0.1:$wgrpc"
node="127.0.0.1:$ngrpc"

wait_healthy() { # name pid deadline-seconds cachectl-args...
  local name=$1 pid=$2 deadline=$(( SECONDS + $3 )); shift 3
  until run_clean "$dir/bin/cachectl" --timeout 1s "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { say "$name exited before it was healthy" >&2; return 1; }
    [ $SECONDS -lt $deadline ] || { say "$name not healthy after $3 s" >&2; return 1; }
    sleep 0.2 # poll interval
  done
  say "$name is healthy"
}

say "starting the writer on $writer (Kafka $kafka, topic $topic)"
env "${clean_env[@]}" "$dir/bin/writer" \
  --kafka-brokers="$kafka" --topic="$topic" --create-topic --topic-partitions=3 \
  --db-path="$dir/writer.db" --grpc-addr="$writer" --http-addr="127.0.0.1:$whttp" \
  --writer-id=pyclient-writer --drain-delay=0s --shutdown-timeout=5s \
  > "$dir/logs/writer.log" 2>&1 &
pids+=($!)
wait_healthy writer "${pids[-1]}" 60 --writer "$writer" health --writer

say "starting the cache node on $node (Redis $redis)"
env "${clean_env[@]}" "$dir/bin/cachenode" \
  --kafka-brokers="$kafka" --topics="$topic" --redis-addrs="$redis" \
  --redis-prefix="cw-pyclient-$run_id:" --group-id="cachewire-pyclient-$run_id" \
  --origin="grpc://$writer" --grpc-addr="$node" --http-addr="127.0.0.1:$nhttp" \
  --node-id=pyclient-node --drain-delay=0s --shutdown-timeout=5s \
  > "$dir/logs/cachenode.log" 2>&1 &
pids+=($!)
wait_healthy cachenode "${pids[-1]}" 90 --node "$node" health

key="pyclient/$run_id"
put_and_read() { # value: cachectl put KEY value, then read.py --min-version <its version>
  local value=$1 put version text got
  put=$(run_clean "$dir/bin/cachectl" --writer "$writer" --json put "$key" "$value")
  version=$("$python" -c 'import json, sys; print(json.loads(sys.argv[1])["version"])' "$put")
  say "cachectl put: $("$python" -c 'import json, sys; print(json.dumps(json.loads(sys.argv[1])))' "$put")"
  [ "$version" -gt 0 ] 2>/dev/null || { say "cachectl put printed no version" >&2; return 1; }
  local read_py=("$dir/venv/bin/python" "$root/examples/python/read.py" --stubs "$dir/stubs" --node "$node" --min-version "$version")
  text=$("${read_py[@]}" "$key")
  say "read.py --min-version $version: $text"
  case "$text" in
    "key=$key version=$version value=$value tier="*" stale="*) ;;
    *) say "read.py printed '$text', want key=$key version=$version value=$value" >&2; return 1 ;;
  esac
  got=$("${read_py[@]}" --json "$key")
  say "read.py --min-version $version --json: $got"
  "$python" - "$got" "$key" "$value" "$version" <<'PY'
import json, sys
got, key, value, version = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
want = {"key": key, "found": True, "value": value, "version": version}
bad = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
if bad:
    sys.exit("python-client-check: read.py printed %s; mismatches (got, want): %s" % (got, bad))
if got.get("tier") not in ("L1", "L2", "ORIGIN") or not isinstance(got.get("stale"), bool):
    sys.exit("python-client-check: read.py printed tier %r, stale %r" % (got.get("tier"), got.get("stale")))
PY
  last_version=$version
}
# The second write replaces a value the node already holds: --min-version must see it.
put_and_read "hello from python $run_id"
put_and_read "hello again from python $run_id"

say "stopping the node and the writer (SIGTERM)"
stop_all || { say "the node or the writer did not stop cleanly" >&2; exit 1; }
say "OK: read.py read $key up to version $last_version through a real node"

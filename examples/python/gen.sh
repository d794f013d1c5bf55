#!/usr/bin/env bash
# Generates the Python stubs of cachewire's API (proto/cachewire/v1/*.proto) with grpcio-tools.
# The stubs are not committed: generate them after `pip install -r requirements.txt`.
#
#   examples/python/gen.sh [OUT_DIR]      default OUT_DIR: examples/python/gen
#
# The stubs land in OUT_DIR/cachewire/v1/ (cache_pb2.py, cache_pb2_grpc.py, ...) and import each
# other as cachewire.v1.*, so OUT_DIR goes on sys.path (read.py does that, see --stubs).
# google/protobuf/timestamp.proto comes from grpc_tools' bundled include directory (_proto).
# PYTHON picks the interpreter (default: python3, e.g. a venv's).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="${1:-$here/gen}"
python="${PYTHON:-python3}"

include=$("$python" -c 'import os, grpc_tools; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))') \
  || { echo "gen.sh: grpcio-tools is not installed for $python (pip install -r $here/requirements.txt)" >&2; exit 1; }
mkdir -p "$out"
cd "$root/proto"
"$python" -m grpc_tools.protoc -I . -I "$include" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  cachewire/v1/*.proto
echo "gen.sh: stubs in $out/cachewire/v1"

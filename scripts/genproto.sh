#!/usr/bin/env bash
# Regenerates the committed Go code under proto/ from the .proto files, with pinned generators.
#
#   scripts/genproto.sh          regenerate in place
#   scripts/genproto.sh --check  regenerate into a temp dir, lint with buf, and fail if the
#                                committed code differs (what .ci/run runs)
#
# Pins: protoc from Debian bookworm (protobuf-compiler 3.21.12, which also ships the well-known
# types under /usr/include), protoc-gen-go v1.36.12, protoc-gen-go-grpc v1.6.2, buf v1.75.0.
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
BUF_VERSION=v1.75.0
PROTOC_VERSION="libprotoc 3.21.12"

root=$(cd "$(dirname "$0")/.." && pwd)
bin="${CACHEWIRE_TOOLS:-$HOME/.cache/cachewire/bin}"
mkdir -p "$bin"
export PATH="$bin:$PATH"

have_version() { # tool version: true when $bin/tool was built from that module version
  [ -x "$bin/$1" ] && go version -m "$bin/$1" 2>/dev/null | grep -q "[[:space:]]$2\$\|[[:space:]]$2[[:space:]]"
}
install_tool() { # name module version
  if ! have_version "$1" "$3"; then
    echo "genproto: installing $2@$3" >&2
    GOBIN="$bin" GOFLAGS= go install "$2@$3"
  fi
}

if ! command -v protoc >/dev/null || [ "$(protoc --version)" != "$PROTOC_VERSION" ]; then
  echo "genproto: need $PROTOC_VERSION (Debian package protobuf-compiler; libprotobuf-dev for the well-known types)," \
    "found: $(protoc --version 2>/dev/null || echo none)" >&2
  exit 1
fi
install_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
install_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"

generate() { # outdir
  (cd "$root/proto" && protoc -I . -I /usr/include \
    --go_out="$1" --go_opt=paths=source_relative \
    --go-grpc_out="$1" --go-grpc_opt=paths=source_relative \
    cachewire/v1/*.proto)
}

if [ "${1:-}" = "--check" ]; then
  install_tool buf github.com/bufbuild/buf/cmd/buf "$BUF_VERSION"
  (cd "$root/proto" && buf lint)
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  generate "$tmp"
  status=0
  for f in "$tmp"/cachewire/v1/*.go; do
    rel="cachewire/v1/$(basename "$f")"
    if ! diff -u "$root/proto/$rel" "$f"; then status=1; fi
  done
  for f in "$root"/proto/cachewire/v1/*.pb.go; do
    [ -f "$tmp/cachewire/v1/$(basename "$f")" ] || { echo "genproto: stale generated file proto/cachewire/v1/$(basename "$f")"; status=1; }
  done
  if [ $status -ne 0 ]; then
    echo "genproto: generated code is out of date: run scripts/genproto.sh and commit the result" >&2
    exit 1
  fi
  echo "genproto: generated code is up to date; buf lint clean"
else
  generate "$root/proto"
  echo "genproto: regenerated proto/cachewire/v1"
fi

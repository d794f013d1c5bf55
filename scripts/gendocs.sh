#!/usr/bin/env bash
# Regenerates docs/configuration.md from the binaries' --help, which lists every flag with its
# environment variable and default. cmd/cachenode and cmd/writer tests fail when it is stale.
#
#   scripts/gendocs.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
table() { # binary
  echo "| Flag | Environment | Default | Meaning |"
  echo "|---|---|---|---|"
  go run "./cmd/$1" --help 2>&1 | awk '
    /^  --/ && /\)$/ {
      name=$1; env=$0; sub(/.*\(env /, "", env); sub(/,.*/, "", env)
      def=$0; sub(/.*, default /, "", def); sub(/\)$/, "", def)
      getline help; sub(/^ +/, "", help)
      printf "| `%s` | `%s` | `%s` | %s |\n", name, env, def, help
    }'
}
{
  cat <<'HEAD'
# Configuration

Every flag of `cachenode` and `writer` can also be set through an environment variable with
the binary's own prefix (`CACHEWIRE_NODE_`, `CACHEWIRE_WRITER_`; `cachectl` reads
`CACHEWIRE_CTL_`), so one `.env` file can configure a node and a writer side by side. A flag on
the command line wins over the environment. The unprefixed names of earlier releases
(`CACHEWIRE_GRPC_ADDR`, …) are still read when the prefixed one is unset, with a warning at
start-up; they will be removed in the next release.

`--check-config` validates the flags (addresses, durations, sizes) and exits without
connecting to anything. `--version` prints the build.

Tracing is not a flag: `cachenode`, `writer` and `relay` read the standard OpenTelemetry
variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_TRACES_SAMPLER`,
`OTEL_SERVICE_NAME`, ...) and export nothing without an endpoint; see the README's Operations.

This file is generated from `--help` by `scripts/gendocs.sh`; the tests fail when it is stale.

## cachenode

HEAD
  table cachenode
  printf '\n## writer\n\n'
  table writer
} > docs/configuration.md
echo "gendocs: wrote docs/configuration.md"

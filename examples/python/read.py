#!/usr/bin/env python3
"""Reads one key through a cachewire cache node (cachewire.v1.CacheService/Get).

    python read.py [--node 127.0.0.1:7070] [--min-version N] [--json] KEY

Prints the key, its version, its value, the tier it was served from (L1, L2 or ORIGIN) and whether
the node marked it stale. --min-version asks for a value at least that new (read-your-writes: pass
the version a write returned). Exit codes follow cachectl: 0 found, 1 the key has no value,
3 the node is unreachable or unavailable, 4 invalid request, 5 any other error.

The stubs come from gen.sh; --stubs (or CACHEWIRE_PY_STUBS) names their directory, by default
gen/ next to this file.
"""

import argparse
import json
import os
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("key")
    ap.add_argument("--node", default="127.0.0.1:7070", help="cache node gRPC address (default %(default)s)")
    ap.add_argument("--min-version", type=int, default=0, help="smallest acceptable version (0: any)")
    ap.add_argument("--timeout", type=float, default=5.0, help="deadline in seconds (default %(default)s)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--stubs", default=os.environ.get("CACHEWIRE_PY_STUBS",
                                                      os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen")),
                    help="directory gen.sh wrote the stubs to (default %(default)s)")
    args = ap.parse_args()
    if args.min_version < 0:
        ap.error("--min-version must not be negative")

    sys.path.insert(0, args.stubs)
    try:
        import grpc
        from cachewire.v1 import cache_pb2, cache_pb2_grpc
    except ImportError as e:
        print(f"read.py: {e}: run gen.sh (after pip install -r requirements.txt) or pass --stubs", file=sys.stderr)
        return 5

    with grpc.insecure_channel(args.node) as channel:
        stub = cache_pb2_grpc.CacheServiceStub(channel)
        try:
            resp = stub.Get(cache_pb2.GetRequest(key=args.key, min_version=args.min_version),
                            timeout=args.timeout)
        except grpc.RpcError as e:
            print(f"read.py: Get {args.key!r} from {args.node}: {e.code().name}: {e.details()}", file=sys.stderr)
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return 3
            if e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
                return 4
            return 5

    tier = cache_pb2.Tier.Name(resp.tier).removeprefix("TIER_")
    value = resp.value.decode("utf-8", errors="backslashreplace")
    stale = resp.freshness.stale
    if args.json:
        out = {"key": resp.key, "found": resp.found, "version": resp.version, "value": value,
               "tier": tier, "stale": stale}
        if resp.freshness.HasField("fresh_as_of"):
            out["fresh_as_of"] = resp.freshness.fresh_as_of.ToJsonString()
        print(json.dumps(out))
    elif resp.found:
        print(f"key={resp.key} version={resp.version} value={value} tier={tier} stale={str(stale).lower()}")
    else:
        print(f"key={resp.key} not found (version {resp.version}, tier {tier}, stale={str(stale).lower()})")
    return 0 if resp.found else 1


if __name__ == "__main__":
    sys.exit(main())

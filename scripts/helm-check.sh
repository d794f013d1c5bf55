#!/usr/bin/env bash
# Checks the Helm chart (deploy/helm/cachewire) and the plain manifests (deploy/kubernetes):
# `helm lint --strict`, `helm template` with the default values and with the other values that
# switch objects on and off, and then, in every rendering and in the plain manifests, that
#   - cachenode is a native sidecar: an init container with restartPolicy: Always, and not one of
#     the main containers;
#   - it has a startupProbe and a readinessProbe on /readyz and a livenessProbe on /healthz, on
#     the HTTP port, which its configuration binds to 0.0.0.0;
#   - its node id comes from the pod name and its Redis password (when any) from a Secret;
#   - terminationGracePeriodSeconds exceeds its drain delay + shutdown timeout;
#   - the writer is one replica with the Recreate strategy;
#   - every CACHEWIRE_NODE_* / CACHEWIRE_WRITER_* variable is one that cachenode / writer lists in
#     --help (an unknown name would be silently ignored), and each binary's --check-config accepts
#     its ConfigMap (both built from this checkout with go build).
# Needs helm (on PATH, or $HELM), python3 (standard library only) and Go.
#
#   scripts/helm-check.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
chart="$root/deploy/helm/cachewire"
helm="${HELM:-helm}"
command -v "$helm" >/dev/null || { echo "helm-check: helm not found (set HELM or PATH)" >&2; exit 1; }
tmp=$(mktemp -d /tmp/cachewire-helm-check.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

echo "helm-check: $("$helm" version --short 2>/dev/null || true)"
"$helm" lint --strict "$chart"

render() { # name, helm template arguments...
  local name=$1; shift
  "$helm" template "$@" > "$tmp/$name.yaml" || { echo "helm-check: helm template $* failed" >&2; exit 1; }
  echo "helm-check: rendered $name ($(grep -c '^kind:' "$tmp/$name.yaml") objects)"
}
render defaults "$chart"
render password demo "$chart" --set redis.password.value=s3cret
render existing-secret demo "$chart" --set redis.password.existingSecret=my-redis
render no-writer demo "$chart" --set writer.enabled=false --set origin=grpc://origin.example:7080 \
  --set node.drainDelaySeconds=20 --set node.shutdownTimeoutSeconds=30
echo "helm-check: building cachenode and writer"
(cd "$root" && go build -o "$tmp/bin/" ./cmd/cachenode ./cmd/writer)
for f in node-config redis-secret example-app writer; do echo "---"; cat "$root/deploy/kubernetes/$f.yaml"; done > "$tmp/plain.yaml"

python3 - "$tmp" <<'PY'
import os, re, subprocess, sys

tmp = sys.argv[1]
binaries = {"CACHEWIRE_NODE_": "cachenode", "CACHEWIRE_WRITER_": "writer"}
known = {}
for prefix, b in binaries.items():
    out = subprocess.run([os.path.join(tmp, "bin", b), "--help"], capture_output=True, text=True)
    known[prefix] = set(re.findall(r"\(env (" + prefix + r"[A-Z0-9_]+)", out.stdout + out.stderr))
    if not known[prefix]:
        sys.exit(f"helm-check: {b} --help lists no {prefix}* variables")
# expectations per rendering: (redis secret object, secretKeyRef name or None, writer present)
cases = {
    "defaults": (False, None, True),
    "password": (True, "demo-cachewire-redis", True),
    "existing-secret": (False, "my-redis", True),
    "no-writer": (False, None, False),
    "plain": (True, "cachewire-redis", True),
}

def docs(text):
    for doc in re.split(r"^---\s*$", text, flags=re.M):
        lines = [l for l in doc.splitlines() if l.strip() and not l.lstrip().startswith("#")]
        if lines:
            yield lines

def indent(line):
    return len(line) - len(line.lstrip(" "))

def block(lines, key):
    """The lines under the first `key:` (a mapping key, at any depth), without it."""
    for i, l in enumerate(lines):
        if re.match(r"^\s*(- )?" + re.escape(key) + r":(\s|$)", l):
            base = indent(l) + (2 if l.lstrip().startswith("- ") else 0)
            out = []
            for m in lines[i + 1:]:
                if indent(m) <= base and not (indent(m) == base and m.lstrip().startswith("- ")):
                    break
                out.append(m)
            return out
    return None

def items(lines):
    """Split a YAML sequence block into its items."""
    if not lines:
        return []
    base = min(indent(l) for l in lines if l.lstrip().startswith("- "))
    out = []
    for l in lines:
        if indent(l) == base and l.lstrip().startswith("- "):
            out.append([" " * (base + 2) + l.lstrip()[2:]])
        elif out:
            out[-1].append(l)
    return out

def value(lines, key):
    for l in lines or []:
        m = re.match(r"^\s*(- )?" + re.escape(key) + r":\s*(.*?)\s*(#.*)?$", l)
        if m:
            return m.group(2).strip('"\'')
    return None

def seconds(v):
    m = re.fullmatch(r"(\d+)s", v or "")
    return int(m.group(1)) if m else None

errors = []
for name, (want_secret, want_ref, want_writer) in cases.items():
    text = open(os.path.join(tmp, name + ".yaml")).read()
    objs = list(docs(text))
    kinds = [(value(o, "kind"), value(block(o, "metadata"), "name")) for o in objs]
    def err(msg):
        errors.append(f"{name}: {msg}")
    cms = {n: o for o, (k, n) in zip(objs, kinds) if k == "ConfigMap"}
    node_cm = next((o for o in cms.values() if value(o, "CACHEWIRE_NODE_KAFKA_BROKERS") is not None), None)
    if node_cm is None:
        err("no ConfigMap with CACHEWIRE_NODE_* variables")
        continue
    http = value(node_cm, "CACHEWIRE_NODE_HTTP_ADDR") or ""
    if not http.startswith("0.0.0.0:"):
        err(f"CACHEWIRE_NODE_HTTP_ADDR={http!r}: the kubelet's probes need 0.0.0.0")
    drain, shut = seconds(value(node_cm, "CACHEWIRE_NODE_DRAIN_DELAY")), seconds(value(node_cm, "CACHEWIRE_NODE_SHUTDOWN_TIMEOUT"))
    if drain is None or shut is None:
        err("CACHEWIRE_NODE_DRAIN_DELAY / CACHEWIRE_NODE_SHUTDOWN_TIMEOUT missing or not in whole seconds")
        continue
    # Variable names against the binaries' flags, and the ConfigMaps' values against --check-config.
    for o in objs:
        for var in re.findall(r"^\s*(?:- name: )?(CACHEWIRE_(?:NODE|WRITER)_[A-Z0-9_]+)(?=:|\s*(?:#|$))", "\n".join(o), re.M):
            prefix = "CACHEWIRE_NODE_" if var.startswith("CACHEWIRE_NODE_") else "CACHEWIRE_WRITER_"
            if var not in known[prefix]:
                err(f"{var} is not a {binaries[prefix]} flag's variable ({binaries[prefix]} --help)")
    for cm_name, o in cms.items():
        data = {}
        for l in block(o, "data") or []:
            m = re.match(r"^\s*(CACHEWIRE_(?:NODE|WRITER)_[A-Z0-9_]+):\s*(.*?)\s*(#.*)?$", l)
            if m:
                data[m.group(1)] = m.group(2).strip('"\'')
        prefix = next((p for p in binaries if any(k.startswith(p) for k in data)), None)
        if prefix is None:
            continue
        env = {"PATH": os.environ.get("PATH", ""), **data}
        if prefix == "CACHEWIRE_NODE_":  # set in the pod spec
            env.update(CACHEWIRE_NODE_NODE_ID="example-app-0", CACHEWIRE_NODE_REDIS_PASSWORD="x")
        r = subprocess.run([os.path.join(tmp, "bin", binaries[prefix]), "--check-config"], env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            err(f"ConfigMap {cm_name}: {binaries[prefix]} --check-config: {(r.stdout + r.stderr).strip()}")
    has_secret = any(k == "Secret" for k, _ in kinds)
    if has_secret != want_secret:
        err(f"Secret object present: {has_secret}, want {want_secret}")
    sidecars = 0
    for o, (k, n) in zip(objs, kinds):
        if k != "Deployment":
            continue
        spec = block(o, "template")
        init = items(block(spec, "initContainers"))
        main = items(block(spec, "containers"))
        if any(value(c, "name") == "cachenode" for c in main):
            err(f"{n}: cachenode is a main container, want a native sidecar (init container)")
        for c in init:
            if value(c, "name") != "cachenode":
                continue
            sidecars += 1
            if value(c, "restartPolicy") != "Always":
                err(f"{n}: cachenode init container without restartPolicy: Always")
            for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                p = block(c, probe)
                if p is None:
                    err(f"{n}: cachenode has no {probe}")
                elif value(p, "path") != path or value(p, "port") is None:
                    err(f"{n}: cachenode {probe} is not an httpGet on {path}")
            env = items(block(c, "env"))
            byname = {value(e, "name"): e for e in env}
            if "fieldPath: metadata.name" not in " ".join(byname.get("CACHEWIRE_NODE_NODE_ID", [])):
                err(f"{n}: CACHEWIRE_NODE_NODE_ID does not come from the pod name")
            pw = byname.get("CACHEWIRE_NODE_REDIS_PASSWORD")
            ref = value(block(pw, "secretKeyRef"), "name") if pw else None
            if ref != want_ref:
                err(f"{n}: CACHEWIRE_NODE_REDIS_PASSWORD from Secret {ref!r}, want {want_ref!r}")
            if block(c, "resources") is None or block(block(c, "resources"), "limits") is None:
                err(f"{n}: cachenode has no resource limits")
            grace = int(value(spec, "terminationGracePeriodSeconds") or 30)
            if grace <= drain + shut:
                err(f"{n}: terminationGracePeriodSeconds {grace} <= drain delay {drain} + shutdown timeout {shut}")
            print(f"helm-check: {name}: {n}: sidecar OK, grace {grace}s > {drain}s + {shut}s")
    if sidecars != 1:
        err(f"{sidecars} cachenode sidecars, want 1")
    writers = [o for o, (k, n) in zip(objs, kinds) if k == "Deployment"
               and any(value(c, "name") == "writer" for c in items(block(block(o, "template"), "containers")))]
    if bool(writers) != want_writer:
        err(f"writer Deployment present: {bool(writers)}, want {want_writer}")
    for w in writers:
        if value(w, "replicas") != "1" or value(block(w, "strategy"), "type") != "Recreate":
            err("writer: want replicas 1 and strategy Recreate")
if errors:
    print("\n".join("helm-check: FAIL: " + e for e in errors))
    sys.exit(1)
print("helm-check: OK")
PY

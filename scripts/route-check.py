#!/usr/bin/env python3
"""Checks that a rendered chart's Ingress sends every path a service serves to
that service (scripts/checks/helm.sh runs it on every profile, and on a chart
with a wrong route, which must fail).

The source of truth is the services' own OpenAPI documents (docs/api/*.json,
each tested against the code that serves it) plus the routes that have none:
the WebSocket and each document's own URL. A path reaches the Ingress path
with the longest matching prefix, element by element (Kubernetes `Prefix`).

    route-check.py RENDERED.yaml distributed|embedded
Exits 1, naming each misrouted path, when one is wrong."""
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Served, with no OpenAPI document of their own.
EXTRA = {
    "auth": ["/v1/openapi.json"],
    "chat": ["/v1/ws", "/v1/chat/openapi.json"],
    "media": ["/v1/media/openapi.json"],
    "signaling": ["/v1/calls/openapi.json"],
}


def served():
    out = []
    for service, extra in EXTRA.items():
        doc = json.loads((ROOT / "docs/api" / f"{service}.openapi.json").read_text())
        for path in list(doc["paths"]) + extra:
            # A concrete request path: each {param} becomes a sample segment.
            out.append((service, re.sub(r"\{[^}]+\}", "x", path)))
    return out


def ingress_paths(rendered):
    """(prefix, backend service name) of every Ingress path, from the
    chart's own layout: `- path:`, then `service:`, then its `name:`."""
    paths, in_ingress, prefix, in_service = [], False, None, False
    for line in rendered.splitlines():
        if line.startswith("kind:"):
            in_ingress = line.split(":", 1)[1].strip() == "Ingress"
            continue
        if not in_ingress:
            continue
        m = re.match(r"\s*- path: (\S+)", line)
        if m:
            prefix, in_service = m.group(1), False
        elif prefix is not None and line.strip() == "service:":
            in_service = True
        elif in_service:
            m = re.match(r"\s+name: (\S+)", line)
            if m:
                paths.append((prefix, m.group(1)))
                prefix, in_service = None, False
    return paths


def matches(prefix, path):
    p = [s for s in prefix.split("/") if s]
    q = [s for s in path.split("/") if s]
    return q[: len(p)] == p


def main():
    rendered = pathlib.Path(sys.argv[1]).read_text()
    mode = sys.argv[2]
    routes = ingress_paths(rendered)
    if not routes:
        print("route-check: no Ingress paths in the rendering")
        return 1
    wrong = []
    for service, path in served():
        hits = [r for r in routes if matches(r[0], path)]
        if not hits:
            wrong.append(f"{path} ({service}) reaches no service")
            continue
        prefix, backend = max(hits, key=lambda r: len(r[0]))
        if mode == "distributed" and not backend.endswith("-" + service):
            wrong.append(f"{path} ({service}) goes to {backend} through {prefix}")
    for w in wrong:
        print("route-check: " + w)
    n = len(served())
    print(f"route-check: {n - len(wrong)} of {n} served paths reach their service ({mode})")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())

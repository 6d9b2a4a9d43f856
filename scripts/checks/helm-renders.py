#!/usr/bin/env python3
"""Checks what a rendered chart gives one workload's natter container, from the
`# renders:` lines of a values file (scripts/checks/helm-cases/good-*.yaml):

  # renders: WORKLOAD env NAME=VALUE      plain value, or secret:SECRET:KEY for a secretKeyRef
  # renders: WORKLOAD no-env NAME
  # renders: WORKLOAD mount PATH=secret:SECRET:KEY:MODE   read-only Secret volume projecting KEY
  # renders: WORKLOAD no-mount PATH

WORKLOAD is a Deployment, StatefulSet or DaemonSet name. MODE is octal.

Usage: helm-renders.py VALUES_FILE RENDERED_YAML
"""
import sys

import yaml

values_file, rendered = sys.argv[1], sys.argv[2]
workloads = {}
for doc in yaml.safe_load_all(open(rendered)):
    if doc and doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
        workloads[doc["metadata"]["name"]] = doc["spec"]["template"]["spec"]


def container(pod):
    return next(c for c in pod["containers"] if c["name"] == "natter")


def env_of(pod):
    out = {}
    for e in container(pod).get("env", []):
        if "value" in e:
            out[e["name"]] = str(e["value"])
        else:
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            out[e["name"]] = f"secret:{ref['name']}:{ref['key']}" if ref else "valueFrom"
    return out


def mount_of(pod, path):
    m = next((m for m in container(pod).get("volumeMounts", []) if m["mountPath"] == path), None)
    if m is None:
        return None
    vol = next(v for v in pod.get("volumes", []) if v["name"] == m["name"])
    if "secret" not in vol or not m.get("readOnly"):
        return f"{m['name']} (not a read-only Secret volume)"
    s = vol["secret"]
    keys = ",".join(i["key"] for i in s.get("items", [])) or "*"
    mode = format(s["defaultMode"], "04o") if "defaultMode" in s else "default"
    return f"secret:{s['secretName']}:{keys}:{mode}"


problems = []
count = 0
for line in open(values_file):
    if not line.startswith("# renders: "):
        continue
    count += 1
    workload, what, arg = line[len("# renders: "):].strip().split(" ", 2)
    pod = workloads.get(workload)
    if pod is None:
        problems.append(f"{workload}: no such workload rendered")
        continue
    if what == "env":
        name, _, want = arg.partition("=")
        got = env_of(pod).get(name)
        if got != want:
            problems.append(f"{workload}: env {name} is {got!r}, expected {want!r}")
    elif what == "no-env":
        if arg in env_of(pod):
            problems.append(f"{workload}: env {arg} is set, expected none")
    elif what == "mount":
        path, _, want = arg.partition("=")
        got = mount_of(pod, path)
        if got != want:
            problems.append(f"{workload}: mount {path} is {got!r}, expected {want!r}")
    elif what == "no-mount":
        if mount_of(pod, arg) is not None:
            problems.append(f"{workload}: {arg} is mounted, expected not")
    else:
        problems.append(f"unknown assertion: {line.strip()}")

for p in problems:
    print(f"ERROR {p}")
print(f"helm-renders: {count - len(problems)} of {count} assertions hold")
sys.exit(1 if problems else 0)

#!/usr/bin/env python3
"""Checks the chart's alerts (files/alerts.yaml) and Grafana dashboard
(files/dashboard.json): every PromQL expression parses, and every metric it
names is one the binary exports (the lists the metrics tests check the binary
against, natter/tests/support/metrics_lists.rs). Alerts need a severity and a
summary, and unique names.

Usage: observability-check.py [ALERTS_YAML [DASHBOARD_JSON]]
"""
import json
import re
import sys

import promql_parser
import yaml

CHART = "deploy/helm/natter"
alerts_path = sys.argv[1] if len(sys.argv) > 1 else f"{CHART}/files/alerts.yaml"
dashboard_path = sys.argv[2] if len(sys.argv) > 2 else f"{CHART}/files/dashboard.json"

# Names in the metrics lists, plus Prometheus' own `up`.
lists = open("natter/tests/support/metrics_lists.rs").read()
known = set(re.findall(r'"([a-z_][a-z0-9_]*)"', lists)) | {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# A metric reference: a name right before a label selector `{`.
REFERENCE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}

problems = []


def check_expr(where, expr):
    try:
        promql_parser.parse(expr)
    except Exception as e:  # the parser raises plain exceptions with a message
        problems.append(f"{where}: PromQL does not parse: {e}: {expr}")
        return 0
    names = [n for n in REFERENCE.findall(expr) if n not in KEYWORDS]
    if not names:
        problems.append(f"{where}: names no metric: {expr}")
    for name in names:
        base = name
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name[: -len(suffix)] in known:
                base = name[: -len(suffix)]
        if base not in known:
            problems.append(f"{where}: {name} is not a metric natter exports")
    return len(names)


# ---- alerts ----
doc = yaml.safe_load(open(alerts_path))
sample = 'namespace="natter",service=~"natter(-.*)?"'
alerts = 0
seen = set()
for group in doc["groups"]:
    for rule in group["rules"]:
        name = rule.get("alert", "?")
        where = f"{alerts_path}: {name}"
        if name in seen:
            problems.append(f"{where}: duplicate alert name")
        seen.add(name)
        if "__SELECTOR__" not in rule["expr"]:
            problems.append(f"{where}: no __SELECTOR__ (it would match other releases' series)")
        check_expr(where, rule["expr"].replace("__SELECTOR__", sample))
        if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            problems.append(f"{where}: severity must be critical, warning or info")
        if not rule.get("annotations", {}).get("summary"):
            problems.append(f"{where}: no summary annotation")
        alerts += 1

# ---- dashboard ----
dash = json.load(open(dashboard_path))
targets = 0
for panel in dash["panels"]:
    for t in panel.get("targets", []):
        expr = t["expr"].replace("$namespace", "natter").replace("$pod", ".*")
        check_expr(f"{dashboard_path}: panel {panel['title']!r}", expr)
        targets += 1
if targets == 0:
    problems.append(f"{dashboard_path}: no queries")

for p in problems:
    print(f"ERROR {p}")
if problems:
    sys.exit(1)
print(f"observability-check: {alerts} alerts, {targets} dashboard queries; every metric is exported")

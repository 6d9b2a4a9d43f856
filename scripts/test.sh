#!/usr/bin/env bash
# The one command that runs every test: it installs and starts what the tests
# need (scripts/test-deps.sh), then checks formatting and lints, then runs the
# whole test suite (unit, HTTP, contract tests on SQLite and PostgreSQL, interop).
set -euo pipefail
cd "$(dirname "$0")/.."

# A build cache outside the clone, so a fresh clone on the same machine reuses it.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/natter/target}
mkdir -p "$CARGO_TARGET_DIR"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# Incremental state only helps edit-compile loops; in a test run it doubles the
# size of target/ (a full disk once broke CI's linker).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

# Fail early and plainly when the build cannot fit, rather than with a linker bus error.
free_kib=$(df -Pk "$CARGO_TARGET_DIR" | awk 'NR==2 {print $4}')
if (( free_kib < 8 * 1024 * 1024 )); then
  echo "only $((free_kib / 1024)) MiB free under $CARGO_TARGET_DIR; the build needs about 8 GiB" >&2
  exit 1
fi

step() { printf '\n== %s ==\n' "$*"; }

step "dependencies"
scripts/test-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

for check in scripts/checks/*.sh; do
  [[ -e $check ]] || continue
  step "$check"
  bash "$check"
done
echo "all tests passed"

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

# A test run compares with the checked-in expectations and never rewrites them:
# with a bless variable set, golden and OpenAPI tests would write what the code
# produces and pass. Blessing is its own command (scripts/bless.sh).
for var in NATTER_BLESS UPDATE_OPENAPI NATTER_WRITE_SEEDS; do
  if [[ -n ${!var+set} ]]; then
    echo "$var is set: the tests would rewrite their expectations instead of checking them." >&2
    echo "Unset it to test; run scripts/bless.sh to rewrite golden files on purpose." >&2
    exit 2
  fi
done
# What the tree looked like before the tests, so a test that writes into it fails the run.
tree_before=$(git status --porcelain=v1 --untracked-files=all 2>/dev/null || true)

step "dependencies"
scripts/test-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "module circles"
# No file of a crate may reach another that reaches it back through imports
# (issue 23); the script prints the circle it finds.
python3 scripts/checks/module-cycles.py

step "tests"
# natter-cli is run by tests of another package (cli_call, doc_walkthroughs),
# which build it on demand with this same command. Built here, that is a
# no-op for them, rather than minutes of compiling inside a test's time limit
# (alone, natter-client's dependencies resolve other features than in the
# workspace's test build, so some compile again).
cargo build --locked -p natter-client --bin natter-cli
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace --locked --no-fail-fast
  # nextest does not run doctests.
  step "doctests"
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi

for check in scripts/checks/*.sh; do
  [[ -e $check ]] || continue
  step "$check"
  bash "$check"
done
step "the tests left the tree as they found it"
tree_after=$(git status --porcelain=v1 --untracked-files=all 2>/dev/null || true)
if [[ $tree_after != "$tree_before" ]]; then
  echo "the test run changed files in the clone:" >&2
  diff <(printf '%s\n' "$tree_before") <(printf '%s\n' "$tree_after") >&2 || true
  git --no-pager diff --stat >&2 || true
  exit 1
fi
echo "all tests passed"

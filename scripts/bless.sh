#!/usr/bin/env bash
# Rewrites the checked-in expectations from the code: the golden scenario
# transcripts (tests/golden/) and the OpenAPI documents (docs/api/). This is the
# only way they change; the test command refuses to run with the bless variables
# set and fails when a test run changed a tracked file. Review `git diff` after.
#
#   scripts/bless.sh            # everything
#   scripts/bless.sh openapi    # only the OpenAPI documents
#   scripts/bless.sh scenarios  # only the scenario transcripts
#   scripts/bless.sh seeds      # only media's generated fuzz seeds
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/natter/target}
what=${1:-all}
run() {
  if command -v cargo-nextest >/dev/null; then
    cargo nextest run --locked "$@"
  else
    cargo test --locked "$@"
  fi
}
if [[ $what == all || $what == seeds ]]; then
  NATTER_WRITE_SEEDS=1 cargo test --locked -p natter-media --lib write_seeds
fi
if [[ $what == all || $what == openapi ]]; then
  UPDATE_OPENAPI=1 run -p natter-auth --test openapi
  UPDATE_OPENAPI=1 run -p natter-media --test lifecycle openapi
  UPDATE_OPENAPI=1 run -p natter-signaling --test api openapi
  UPDATE_OPENAPI=1 run -p natter-chat --test openapi
fi
if [[ $what == all || $what == scenarios ]]; then
  scripts/test-deps.sh
  NATTER_BLESS=1 run -p natter-tests -p natter
fi
git status --short -- tests docs/api media/fuzz/seeds
echo "blessed ($what): review the diff above before committing"

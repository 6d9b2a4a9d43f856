#!/usr/bin/env bash
# Installs `natter` and `natter-cli` (release builds) into ~/.cargo/bin
# ($CARGO_HOME/bin, on PATH after a rustup install), or into PREFIX/bin.
# One cargo build for both, so the dependencies they share compile once
# (two `cargo install --path` runs would compile them twice).
# natter-cli links the system's libvpx (VP8 video) and libopus through
# pkg-config (Debian/Ubuntu: apt-get install pkg-config libvpx-dev libopus-dev);
# without libopus-dev the opus crate builds libopus from source, which needs cmake.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  echo "usage: scripts/install.sh [PREFIX]   (default PREFIX: \${CARGO_HOME:-~/.cargo})"
  exit 0
fi
prefix=${1:-${CARGO_HOME:-$HOME/.cargo}}
target=${CARGO_TARGET_DIR:-target}

if ! pkg-config --exists vpx 2>/dev/null; then
  echo "natter-cli needs libvpx: apt-get install pkg-config libvpx-dev" >&2
  exit 1
fi
if ! pkg-config --exists opus 2>/dev/null && ! command -v cmake >/dev/null; then
  echo "natter-cli needs libopus: apt-get install pkg-config libopus-dev (or cmake, to build it from source)" >&2
  exit 1
fi
cargo build --release --locked -p natter --bin natter -p natter-client --bin natter-cli
mkdir -p "$prefix/bin"
install -m 0755 "$target/release/natter" "$target/release/natter-cli" "$prefix/bin/"
echo "installed $prefix/bin/natter and $prefix/bin/natter-cli"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "add $prefix/bin to PATH to run them by name" ;;
esac

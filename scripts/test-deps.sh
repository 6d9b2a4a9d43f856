#!/usr/bin/env bash
# Installs and starts everything the test suite talks to, when it is missing:
# PostgreSQL, Redis, openssl, coturn's client tools, an S3-compatible server
# (s3s-fs), ffmpeg, jq and curl (the docs' walk-throughs), and for calls
# libopus-dev, libvpx-dev, espeak-ng, PESQ, Chromium and playwright-core. Idempotent; safe
# to run every time.
# Each `ensure_*` prints one line saying what it found or did.
set -euo pipefail

apt_updated=0
apt_install() {
  if ((apt_updated == 0)); then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null; then
    echo "deps: installing PostgreSQL"
    apt_install postgresql
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "deps: starting PostgreSQL"
    local version
    version=$(ls /etc/postgresql | sort -V | tail -1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    # Tests connect as postgres over TCP without a password (trust), as on CI machines.
    local hba=/etc/postgresql/$version/main/pg_hba.conf
    if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
      sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
      pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    fi
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
  pg_isready -h 127.0.0.1 -p 5432 >/dev/null || { echo "deps: PostgreSQL did not start" >&2; exit 1; }
  # Databases left behind by interrupted test runs.
  psql -h 127.0.0.1 -U postgres -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'natter_test_%'" 2>/dev/null |
    while read -r db; do psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
  echo "deps: PostgreSQL ready on 127.0.0.1:5432"
}

ensure_redis() {
  if ! command -v redis-server >/dev/null; then
    echo "deps: installing Redis"
    apt_install redis-server
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "deps: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 1 30); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.5; done
  fi
  echo "deps: Redis ready on 127.0.0.1:6379"
}

ensure_coturn_clients() {
  if ! command -v turnutils_uclient >/dev/null; then
    echo "deps: installing coturn (for its client tools)"
    apt_install coturn
  fi
  # The package may start its own turnserver on 3478; our tests need the port free.
  if pgrep -x turnserver >/dev/null; then
    pkill -x turnserver || true
  fi
  echo "deps: coturn client tools present"
}

# The S3-compatible server the media suites run against (s3s-fs, built once from
# the crate registry into a cache outside the clone). Fixed loopback port and
# known test credentials; its data lives under /tmp. The media tests read
# NATTER_TEST_S3_ENDPOINT (default below) and fail when it does not answer.
S3_PORT=${NATTER_TEST_S3_PORT:-9310}
S3_VERSION=0.14.1
ensure_s3() {
  local tools=${NATTER_TOOLS_DIR:-$HOME/.cache/natter/tools}
  local bin=$tools/bin/s3s-fs
  if [[ ! -x $bin ]] || [[ $("$bin" --version 2>/dev/null) != "s3s-fs $S3_VERSION" ]]; then
    echo "deps: building s3s-fs $S3_VERSION (once; cached in $tools)"
    env -u CARGO_TARGET_DIR cargo install --quiet --locked --root "$tools" "s3s-fs@$S3_VERSION" --features binary
  fi
  local data=/tmp/natter-s3s
  # s3s-fs resolves every object path against its working directory: one
  # started from a clone that was deleted since (fresh-clone checks) answers
  # 500 to everything while `GET /` still works. Replace it.
  local pid
  for pid in $(pgrep -f "s3s-fs --host 127.0.0.1 --port $S3_PORT " || true); do
    if [[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == *"(deleted)"* ]]; then
      echo "deps: restarting s3s-fs (its working directory was deleted)"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
  if ! curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/"; then
    echo "deps: starting s3s-fs on 127.0.0.1:$S3_PORT"
    mkdir -p "$data"
    setsid env -C "$data" "$bin" --host 127.0.0.1 --port "$S3_PORT" --access-key natter-test --secret-key natter-test-secret \
      "$data" >/tmp/natter-s3s.log 2>&1 < /dev/null &
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" && break; sleep 0.1; done
  fi
  curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" || { echo "deps: s3s-fs did not start (see /tmp/natter-s3s.log)" >&2; exit 1; }
  # Buckets left behind by interrupted test runs.
  find /tmp/natter-s3s -mindepth 1 -maxdepth 1 -name 'natter-test-*' -mmin +60 -exec rm -rf {} + 2>/dev/null || true
  echo "deps: S3-compatible server (s3s-fs $S3_VERSION) ready on 127.0.0.1:$S3_PORT"
}

# ffmpeg, for the media suite's video-thumbnail tests (optional at run time).
ensure_ffmpeg() {
  if ! command -v ffmpeg >/dev/null; then
    echo "deps: installing ffmpeg"
    apt_install ffmpeg
  fi
  echo "deps: ffmpeg present"
}

# libopus-dev, libvpx-dev and pkg-config: the client SDK (calls, natter-cli)
# links the system's libopus (Opus audio) and libvpx (VP8 video) through
# pkg-config; without libopus-dev the opus crate would build libopus from
# source with cmake.
ensure_codecs() {
  if ! command -v pkg-config >/dev/null || ! pkg-config --exists opus vpx; then
    echo "deps: installing libopus-dev, libvpx-dev and pkg-config"
    apt_install libopus-dev libvpx-dev pkg-config
  fi
  echo "deps: libopus $(pkg-config --modversion opus), libvpx $(pkg-config --modversion vpx) present"
}

# jq and curl: the walk-throughs in docs/ (natter/tests/doc_walkthroughs.rs)
# run their commands as written, and those use both.
ensure_jq() {
  if ! command -v jq >/dev/null || ! command -v curl >/dev/null; then
    echo "deps: installing jq and curl"
    apt_install jq curl
  fi
  echo "deps: jq and curl present"
}

# espeak-ng: the speech sample of the PESQ call test.
ensure_espeak() {
  if ! command -v espeak-ng >/dev/null; then
    echo "deps: installing espeak-ng"
    apt_install espeak-ng
  fi
  echo "deps: espeak-ng present"
}

# PESQ (ITU-T P.862) scorer for the speech call test: PyPI `pesq` in a venv
# outside the clone. The test runs $NATTER_TOOLS_DIR/pesq-venv/bin/python.
ensure_pesq() {
  local tools=${NATTER_TOOLS_DIR:-$HOME/.cache/natter/tools}
  local venv=$tools/pesq-venv
  if ! "$venv/bin/python" -c 'import pesq, numpy' 2>/dev/null; then
    echo "deps: installing pesq into $venv"
    if ! python3 -m venv --help >/dev/null 2>&1; then apt_install python3-venv; fi
    mkdir -p "$tools"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check numpy pesq
  fi
  echo "deps: pesq present ($venv)"
}

# Headless Chromium and playwright-core (npm) for the browser call test. The
# test runs node with NODE_PATH=$NATTER_TOOLS_DIR/node/node_modules.
ensure_browser() {
  local tools=${NATTER_TOOLS_DIR:-$HOME/.cache/natter/tools}
  if ! command -v chromium >/dev/null; then
    echo "deps: installing chromium"
    apt_install chromium
  fi
  if ! command -v node >/dev/null; then
    echo "deps: installing nodejs and npm"
    apt_install nodejs npm
  fi
  if [[ ! -d $tools/node/node_modules/playwright-core ]]; then
    echo "deps: installing playwright-core into $tools/node"
    mkdir -p "$tools/node"
    (cd "$tools/node" && npm install --silent --no-audit --no-fund playwright-core@1 >/dev/null)
  fi
  echo "deps: chromium and playwright-core present"
}

ensure_codecs
ensure_jq
ensure_espeak
ensure_pesq
ensure_browser
# openssl, to make the test CA and certificate of the Redis-over-TLS cluster test.
ensure_openssl() {
  if ! command -v openssl >/dev/null; then
    echo "deps: installing openssl"
    apt_install openssl
  fi
  echo "deps: openssl present"
}

ensure_postgres
ensure_redis
ensure_openssl
ensure_coturn_clients
ensure_s3
ensure_ffmpeg

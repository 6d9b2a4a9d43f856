#!/usr/bin/env bash
# Installs and starts everything the test suite talks to, when it is missing:
# PostgreSQL, Redis, coturn's client tools. Idempotent; safe to run every time.
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

ensure_postgres
ensure_redis
ensure_coturn_clients

#!/usr/bin/env bash
# Starts ejabberd (Debian's package, 23.01 on bookworm) for the side-by-side
# chat benchmark: `xmpp-load` against it, `chat-load` against natter
# (BENCHMARKS.md, chat-core). Client port 127.0.0.1:5222, SASL ANONYMOUS
# without TLS, no shaper, nothing else listening (tests/peers/ejabberd.yml).
# Prints the server's pid. Stop it with: scripts/peer-ejabberd.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${EJABBERD_BENCH_DIR:-/tmp/natter-ejabberd}
ctl() { ejabberdctl --config-dir "$dir" --logs "$dir/log" --spool "$dir/db" "$@"; }

if [[ ${1:-} == stop ]]; then
  pkill -f "beam.*ejabberd@localhost" || true
  exit 0
fi
if ! command -v ejabberdctl >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q ejabberd >/dev/null
fi
# The server runs as the ejabberd user through su, which applies PAM limits:
# 19,000 idle sessions need more than the default 1,024 files.
echo 'ejabberd - nofile 20000' > /etc/security/limits.d/natter-ejabberd-bench.conf
mkdir -p "$dir/db" "$dir/log"
cp tests/peers/ejabberd.yml "$dir/ejabberd.yml"
cp /etc/ejabberd/inetrc "$dir/"
sed -e "s|^EJABBERD_CONFIG_PATH=.*|EJABBERD_CONFIG_PATH=$dir/ejabberd.yml|" \
    -e "s|^EJABBERD_PID_PATH=.*|EJABBERD_PID_PATH=$dir/ejabberd.pid|" \
    /etc/ejabberd/ejabberdctl.cfg > "$dir/ejabberdctl.cfg"
chown -R ejabberd:ejabberd "$dir"
pkill -f "beam.*ejabberd@localhost" || true
sleep 1
(cd "$dir" && ctl foreground > "$dir/foreground.log" 2>&1 &)
for _ in $(seq 1 60); do
  if ctl status >/dev/null 2>&1; then
    pgrep -f "beam.*ejabberd@localhost"
    exit 0
  fi
  sleep 1
done
echo "ejabberd did not start; see $dir/foreground.log" >&2
exit 1

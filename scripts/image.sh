#!/usr/bin/env bash
# Build deploy/Dockerfile without a Docker daemon (buildah), then run the image
# the way Kubernetes does (read-only root, UID 65532, a volume on /data) and
# check it through its own ports: /healthz, /readyz, a registration, a STUN
# Binding, and the HEALTHCHECK command.
#
# Where container registries cannot be reached, the Dockerfile's public bases
# (rust:*-slim-bookworm, distroless cc, debian:bookworm-slim) are replaced by
# local ones made here from Debian packages (mmdebstrap) and passed in with
# --build-arg. See docs/deploy.md, section 1.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/image.sh [options]

Builds the natter image from deploy/Dockerfile with buildah (no Docker daemon),
then runs it read-only as UID 65532 with a data volume and checks it.

  --target T        runtime (no ffmpeg), runtime-ffmpeg, or all (default: all)
  --tag NAME        image name (default: localhost/natter:dev; the ffmpeg
                    target gets NAME-ffmpeg)
  --bases-only      make the local base images and stop
  --rebuild-bases   make the local base images again even if they exist
  --no-build        skip the build (check images built before)
  --no-check        skip the run checks
  --no-cache        build every layer again (default: reuse buildah's layer cache)
  --http-port P     host port the checked container serves HTTP on (default 18080)
  --stun-port P     host port for STUN/TURN, UDP and TCP (default 13478)
  --work DIR        scratch space for base root filesystems
                    (default: /var/tmp/natter-image)
  -h, --help        this text

Base images it makes (once; re-runs reuse them):
  localhost/natter-debian:bookworm        minimal Debian 12 with apt (the ffmpeg stage)
  localhost/natter-rust:1.95-bookworm     that plus gcc, libc6-dev, make, perl,
                                          pkg-config and the host's Rust 1.95 toolchain
  localhost/natter-distroless:cc-bookworm distroless-like: glibc, libgcc, CA bundle,
                                          tzdata, passwd with nonroot (65532); no shell
Needs root, a Debian 12 host and the host's Rust 1.95 toolchain (rustup),
which is copied into the build base. Installs buildah, podman and mmdebstrap
with apt-get when they are missing. Each rebuild leaves superseded layers
behind (a few GB): `podman image prune` frees them.
EOF
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=all
TAG=localhost/natter:dev
WORK=/var/tmp/natter-image
HTTP_PORT=18080
STUN_PORT=13478
DO_BASES_ONLY=0 REBUILD_BASES=0 DO_BUILD=1 DO_CHECK=1 NO_CACHE=()
RUST_VERSION=1.95
SUITE=bookworm

while [ $# -gt 0 ]; do
  case "$1" in
    --target) TARGET=$2; shift 2 ;;
    --tag) TAG=$2; shift 2 ;;
    --bases-only) DO_BASES_ONLY=1; shift ;;
    --rebuild-bases) REBUILD_BASES=1; shift ;;
    --no-build) DO_BUILD=0; shift ;;
    --no-check) DO_CHECK=0; shift ;;
    --no-cache) NO_CACHE=(--no-cache); shift ;;
    --http-port) HTTP_PORT=$2; shift 2 ;;
    --stun-port) STUN_PORT=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "image.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$TARGET" in
  runtime|runtime-ffmpeg) TARGETS=("$TARGET") ;;
  all) TARGETS=(runtime runtime-ffmpeg) ;;
  *) echo "image.sh: --target must be runtime, runtime-ffmpeg or all" >&2; exit 2 ;;
esac

DEBIAN_BASE=localhost/natter-debian:$SUITE
BUILD_BASE=localhost/natter-rust:$RUST_VERSION-$SUITE
RUNTIME_BASE=localhost/natter-distroless:cc-$SUITE

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'image.sh: %s\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------
need=()
for t in buildah:buildah podman:podman mmdebstrap:mmdebstrap python3:python3 curl:curl; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  [ "$(id -u)" = 0 ] || die "need root to install ${need[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 \
    "${need[@]}" uidmap crun
fi

# The host's own Debian sources, so the bases use the same mirror as apt here.
SOURCES=
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
  [ -s "$f" ] && { SOURCES=$f; break; }
done
[ -n "$SOURCES" ] || die "no Debian sources file (/etc/apt/sources.list.d/debian.sources)"
. /etc/os-release
[ "${VERSION_CODENAME:-}" = "$SUITE" ] \
  || die "the host is ${VERSION_CODENAME:-unknown}, not $SUITE: the copied Rust toolchain must match the image's glibc"

image_exists() { podman image exists "$1" 2>/dev/null; }

# Imports a root filesystem directory as a one-layer image.
import_rootfs() { # dir name [--change ...]
  local dir=$1 name=$2; shift 2
  tar --numeric-owner --xattrs -C "$dir" -c . | podman import "$@" - "$name" >/dev/null
}

# Paths that only documentation and translations use; the copyright files stay.
DPKG_SLIM=(
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
)

make_debian_base() {
  local dir=$WORK/debian
  log "base $DEBIAN_BASE: mmdebstrap --variant=minbase $SUITE"
  rm -rf "$dir"
  mmdebstrap --quiet --variant=minbase --include=ca-certificates "${DPKG_SLIM[@]}" \
    --aptopt='APT::Install-Recommends "false"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    "$SUITE" "$dir" "$SOURCES"
  import_rootfs "$dir" "$DEBIAN_BASE" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]'
}

make_build_base() {
  local dir=$WORK/rust tc
  tc=$(rustup toolchain list 2>/dev/null | awk -v v="$RUST_VERSION" 'index($1, v".")==1 || $1 ~ "^"v"-" {print $1; exit}')
  [ -n "$tc" ] || die "no Rust $RUST_VERSION toolchain on the host (rustup toolchain install $RUST_VERSION)"
  tc=$(rustup run "$tc" rustc --print sysroot)
  log "base $BUILD_BASE: minbase + gcc libc6-dev make perl pkg-config, Rust from $tc"
  rm -rf "$dir"
  mmdebstrap --quiet --variant=minbase "${DPKG_SLIM[@]}" \
    --include=ca-certificates,gcc,libc6-dev,make,perl,pkg-config \
    --aptopt='APT::Install-Recommends "false"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    "$SUITE" "$dir" "$SOURCES"
  # The toolchain as rustup installed it (rustc, cargo, std; docs left out), laid
  # out like the official rust image: CARGO_HOME=/usr/local/cargo.
  mkdir -p "$dir/usr/local/rust" "$dir/usr/local/cargo/bin"
  tar -C "$tc" --exclude=./share/doc --exclude=./share/man -c . | tar -C "$dir/usr/local/rust" -x
  for b in cargo rustc rustdoc; do ln -s "../../rust/bin/$b" "$dir/usr/local/cargo/bin/$b"; done
  "$dir/usr/local/rust/bin/rustc" --version >/dev/null
  # Build stages fetch crates over HTTPS as the host does: where the host trusts
  # extra CAs (a TLS-inspecting proxy), so does this build-only base. The
  # runtime base keeps Debian's bundle alone.
  cat /etc/ssl/certs/ca-certificates.crt >>"$dir/etc/ssl/certs/ca-certificates.crt"
  import_rootfs "$dir" "$BUILD_BASE" \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]'
}

# Like gcr.io/distroless/cc-debian12:nonroot: the packages' files unpacked (no
# maintainer scripts ran, there is no shell to run them), the CA bundle the
# Debian base generated, and the users distroless has.
make_runtime_base() {
  local dir=$WORK/distroless
  [ -s "$WORK/debian/etc/ssl/certs/ca-certificates.crt" ] || make_debian_base
  log "base $RUNTIME_BASE: base-files netbase tzdata libc6 libgcc-s1, extracted"
  rm -rf "$dir"
  mmdebstrap --quiet --variant=extract "${DPKG_SLIM[@]}" \
    --include=base-files,netbase,tzdata,libc6,libgcc-s1 \
    "$SUITE" "$dir" "$SOURCES"
  rm -rf "${dir:?}"/var/lib/apt "$dir"/var/cache/apt "$dir"/etc/apt "$dir"/var/log/* "${dir:?}"/dev/*
  mkdir -p "$dir/etc/ssl/certs" "$dir/tmp" "$dir/home/nonroot" "$dir/root"
  chmod 1777 "$dir/tmp"
  chmod 700 "$dir/root"
  chown 65532:65532 "$dir/home/nonroot"
  cp "$WORK/debian/etc/ssl/certs/ca-certificates.crt" "$dir/etc/ssl/certs/"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
    'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$dir/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'tty:x:5:' 'staff:x:50:' \
    'nonroot:x:65532:' >"$dir/etc/group"
  # No shell, no package manager: what is left of either goes.
  rm -f "$dir"/bin/sh "$dir"/usr/bin/sh
  import_rootfs "$dir" "$RUNTIME_BASE" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'USER 65532' --change 'WORKDIR /home/nonroot'
}

mkdir -p "$WORK"
for b in DEBIAN BUILD RUNTIME; do
  name_var=${b}_BASE
  if [ "$REBUILD_BASES" = 1 ] || ! image_exists "${!name_var}"; then
    case $b in
      DEBIAN) make_debian_base ;;
      BUILD) make_build_base ;;
      RUNTIME) make_runtime_base ;;
    esac
  fi
done
[ "$DO_BASES_ONLY" = 1 ] && { podman images --filter reference='localhost/natter-*'; exit 0; }

# --- build -------------------------------------------------------------------
# chroot isolation: no OCI runtime, no cgroups, no user namespace needed, which
# is what works in a sandbox without CAP_SYS_RESOURCE and with hybrid cgroups.
# Host network: cargo and apt reach their registries as the host does. Docker
# image format, because the OCI format has no HEALTHCHECK.
image_tag() { if [ "$1" = runtime ]; then echo "$TAG"; else echo "$TAG-${1#runtime-}"; fi; }

if [ "$DO_BUILD" = 1 ]; then
  for t in "${TARGETS[@]}"; do
    log "building --target $t -> $(image_tag "$t")"
    start=$(date +%s)
    buildah bud --isolation chroot --network host --layers --format docker "${NO_CACHE[@]}" \
      --ignorefile "$ROOT/deploy/Dockerfile.dockerignore" -f "$ROOT/deploy/Dockerfile" \
      --build-arg BUILD_IMAGE="$BUILD_BASE" --build-arg RUNTIME_IMAGE="$RUNTIME_BASE" \
      --build-arg FFMPEG_IMAGE="$DEBIAN_BASE" \
      --build-arg VERSION="$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo dev)" \
      --build-arg REVISION="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)" \
      --target "$t" -t "$(image_tag "$t")" "$ROOT"
    log "built $(image_tag "$t") in $(( $(date +%s) - start )) s"
  done
  podman images --filter reference="${TAG%%:*}"
fi
[ "$DO_CHECK" = 1 ] || exit 0

# --- run and check -------------------------------------------------------------
# podman runs the container with runc and only lowers rlimits: crun refuses a
# hybrid cgroup v1/v2 host, and raising RLIMIT_NOFILE/NPROC needs
# CAP_SYS_RESOURCE, which a sandboxed root may not have. --network host keeps
# the check off CNI/iptables; the ports are moved off 8080/3478 by environment
# variables instead, so a natter already running on this host is not in the way.
RUN_OPTS=(--runtime runc --network host
  --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
CHECK_DIR=$(mktemp -d /tmp/natter-image-check.XXXXXX)
CONTAINER=natter-image-check
remove_container() {
  podman rm -f -t 5 "$CONTAINER" >/dev/null 2>&1 || true
  podman volume rm -f "$CONTAINER-data" >/dev/null 2>&1 || true
}
cleanup() { remove_container; rm -rf "$CHECK_DIR"; }
trap cleanup EXIT
fail() { echo "CHECK FAILED: $*" >&2; podman logs --tail 40 "$CONTAINER" >&2 || true; exit 1; }
ok() { echo "ok   $*"; }

B=http://127.0.0.1:$HTTP_PORT
J='content-type: application/json'

# A short video for the thumbnail check, made by the ffmpeg image itself.
VIDEO=
if podman image exists "$(image_tag runtime-ffmpeg)"; then
  podman run --rm "${RUN_OPTS[@]}" --no-healthcheck --user 0 -v "$CHECK_DIR:/out" --entrypoint /usr/bin/ffmpeg \
    "$(image_tag runtime-ffmpeg)" -hide_banner -loglevel error -f lavfi \
    -i testsrc=size=640x360:rate=10 -t 1 -c:v libx264 -pix_fmt yuv420p "/out/clip.mp4" \
    && VIDEO=$CHECK_DIR/clip.mp4
fi

check_image() { # target
  local t=$1 image; image=$(image_tag "$1")
  log "checking $image"
  podman image exists "$image" || die "$image is not built (run without --no-build)"
  remove_container
  local hc size gz
  hc=$(podman image inspect -f '{{.Config.Healthcheck.Test}}' "$image")
  [[ "$hc" == *"natter health"* ]] || fail "image has no HEALTHCHECK natter health ($hc)"
  ok "image HEALTHCHECK: $hc"
  size=$(podman image inspect -f '{{.Size}}' "$image")
  # What a registry would ship is about the gzip of the layers.
  gz=$(podman save -q --format docker-archive "$image" | gzip -6 | wc -c)
  ok "image size: $(( size / 1000000 )) MB uncompressed, $(( gz / 1000000 )) MB gzip ($size / $gz bytes)"

  # As Kubernetes runs it (the chart's securityContext): root filesystem read-only
  # with no tmpfs added, UID/GID 65532, every capability dropped, no privilege
  # gain; the one writable place is the /data volume.
  podman volume create "$CONTAINER-data" >/dev/null
  podman run -d --name "$CONTAINER" "${RUN_OPTS[@]}" \
    --read-only --read-only-tmpfs=false --user 65532:65532 --cap-drop all \
    --security-opt no-new-privileges -v "$CONTAINER-data:/data" --health-interval disable \
    -e NATTER_HTTP__LISTEN="127.0.0.1:$HTTP_PORT" -e NATTER_TURN__LISTEN="127.0.0.1:$STUN_PORT" \
    -e NATTER_TURN__PORT_RANGE=49400-49499 "$image" >/dev/null 2>"$CHECK_DIR/podman.err" \
    || { cat "$CHECK_DIR/podman.err" >&2; fail "podman run"; }

  for _ in $(seq 1 60); do
    curl -fsS -o /dev/null "$B/readyz" 2>/dev/null && break
    [ "$(podman inspect -f '{{.State.Running}}' "$CONTAINER")" = true ] || fail "container exited"
    sleep 1
  done
  ok "/healthz: $(curl -fsS -w ' (HTTP %{http_code})' "$B/healthz" | tr -d '\n' || fail /healthz)"
  ok "/readyz: $(curl -fsS -w ' (HTTP %{http_code})' "$B/readyz" | tr -d '\n' || fail "/readyz after 60 s")"

  local pid uid ro
  pid=$(podman inspect -f '{{.State.Pid}}' "$CONTAINER")
  uid=$(awk '/^Uid:/ {print $2"/"$3}' "/proc/$pid/status")
  [ "$uid" = 65532/65532 ] || fail "process runs as uid $uid"
  ro=$(awk '$5 == "/" {print $6}' "/proc/$pid/mountinfo" | cut -d, -f1)
  [ "$ro" = ro ] || fail "root filesystem is mounted $ro"
  ok "PID 1 is natter as uid 65532 (real/effective $uid), root filesystem mounted $ro"

  # (podman's timer for HEALTHCHECK needs systemd, hence --health-interval
  # disable; `podman healthcheck run` runs the image's command once.)
  local said
  said=$(podman exec "$CONTAINER" /usr/local/bin/natter health 2>&1) || fail "natter health exited $?: $said"
  said="$said; $(podman exec "$CONTAINER" /usr/local/bin/natter health --live 2>&1)" \
    || fail "natter health --live: $said"
  podman healthcheck run "$CONTAINER" >/dev/null || fail "podman healthcheck run"
  ok "HEALTHCHECK: natter health ($said) exit 0; podman healthcheck run: healthy"

  # Registration: session -> code from the SMS outbox on the volume -> verify -> account.
  local vol number sid code acct token
  vol=$(podman volume inspect -f '{{.Mountpoint}}' "$CONTAINER-data")
  number="+1415555$(printf %04d $((RANDOM % 10000)))"
  sid=$(curl -fsS -X POST "$B/v1/registration/sessions" -H "$J" -d "{\"number\":\"$number\"}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["session_id"])') || fail "start registration"
  # The code is appended to the outbox by the SMS sender, maybe just after the answer.
  for _ in $(seq 1 20); do
    code=$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("session_id") == sys.argv[2]:
        print(m["code"])' "$vol/outbox/sms.jsonl" "$sid" 2>/dev/null | tail -1)
    [ -n "$code" ] && break
    sleep 0.5
  done
  [ -n "$code" ] || fail "no code for session $sid in $vol/outbox/sms.jsonl"
  curl -fsS -o /dev/null -X POST "$B/v1/registration/sessions/$sid/verify" -H "$J" \
    -d "{\"code\":\"$code\"}" || fail "verify code"
  acct=$(curl -fsS -X POST "$B/v1/accounts" -H "$J" \
    -d "{\"session_id\":\"$sid\",\"device_name\":\"image check\"}") || fail "create account"
  token=$(python3 -c 'import json,sys; a=json.loads(sys.argv[1]); assert a["device_id"] == 1; print(a["access_token"])' "$acct") \
    || fail "account answer: $acct"
  ok "registration: $number, code from /data/outbox/sms.jsonl, account $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["user_id"])' "$acct") device 1"

  # STUN Binding (RFC 8489) over UDP and TCP: the XOR-MAPPED-ADDRESS must be the
  # address the request came from.
  python3 - "$STUN_PORT" <<'PY' || fail "STUN Binding"
import os, socket, struct, sys
port = int(sys.argv[1])
MAGIC = 0x2112A442
def request():
    tid = os.urandom(12)
    return tid, struct.pack("!HHI", 0x0001, 0, MAGIC) + tid
def mapped(resp, tid):
    typ, length, magic = struct.unpack("!HHI", resp[:8])
    assert typ == 0x0101, f"not a Binding success response: 0x{typ:04x}"
    assert magic == MAGIC and resp[8:20] == tid, "wrong magic cookie or transaction id"
    body, i = resp[20:20 + length], 0
    while i + 4 <= len(body):
        atype, alen = struct.unpack("!HH", body[i:i + 4])
        val = body[i + 4:i + 4 + alen]
        if atype == 0x0020 and val[1] == 0x01:  # XOR-MAPPED-ADDRESS, IPv4
            p = struct.unpack("!H", val[2:4])[0] ^ (MAGIC >> 16)
            a = struct.unpack("!I", val[4:8])[0] ^ MAGIC
            return socket.inet_ntoa(struct.pack("!I", a)), p
        i += 4 + alen + (-alen % 4)
    raise AssertionError("no XOR-MAPPED-ADDRESS")
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(3)
u.bind(("127.0.0.1", 0))
tid, req = request()
u.sendto(req, ("127.0.0.1", port))
got = mapped(u.recvfrom(2048)[0], tid)
assert got == u.getsockname(), f"UDP mapped {got} != {u.getsockname()}"
t = socket.create_connection(("127.0.0.1", port), timeout=3)
tid, req = request()
t.sendall(req)
head = t.recv(20, socket.MSG_WAITALL)
rest = t.recv(struct.unpack("!H", head[2:4])[0], socket.MSG_WAITALL)
gt = mapped(head + rest, tid)
assert gt == t.getsockname(), f"TCP mapped {gt} != {t.getsockname()}"
print(f"ok   STUN Binding: UDP XOR-MAPPED-ADDRESS {got[0]}:{got[1]}, TCP {gt[0]}:{gt[1]} (= the client's own)")
PY

  # Video thumbnail: made with ffmpeg, "none" (and why) without.
  if [ -n "$VIDEO" ]; then
    local up status reason
    up=$(curl -fsS -X POST "$B/v1/media" -H "authorization: Bearer $token" \
      --data-binary "@$VIDEO") || fail "video upload"
    read -r status reason < <(python3 -c 'import json,sys; t=json.loads(sys.argv[1])["thumbnail"]; print(t["status"], t.get("reason") or "")' "$up")
    if [ "$t" = runtime-ffmpeg ]; then
      [ "$status" = created ] || fail "video thumbnail: $status $reason"
      ok "video upload ($(stat -c %s "$VIDEO") bytes mp4): thumbnail created (ffmpeg)"
    else
      [ "$status" = none ] || fail "video thumbnail without ffmpeg: $status"
      ok "video upload ($(stat -c %s "$VIDEO") bytes mp4): no thumbnail: $reason"
    fi
  fi

  # SIGTERM: readiness goes 503, connections drain, exit 0.
  local start rc
  start=$(date +%s)
  # (podman's stderr here and at run: complaints that there is no systemd for
  # a HEALTHCHECK timer, which --health-interval disable does not silence in 4.3.)
  podman stop -t 30 "$CONTAINER" >/dev/null 2>"$CHECK_DIR/podman.err" \
    || { cat "$CHECK_DIR/podman.err" >&2; fail "podman stop"; }
  rc=$(podman inspect -f '{{.State.ExitCode}}' "$CONTAINER")
  [ "$rc" = 0 ] || fail "exit code $rc after SIGTERM"
  ok "SIGTERM: exited 0 in $(( $(date +%s) - start )) s"
}

for t in "${TARGETS[@]}"; do check_image "$t"; done
log "all checks passed: ${TARGETS[*]}"

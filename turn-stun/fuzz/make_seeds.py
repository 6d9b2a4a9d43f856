#!/usr/bin/env python3
"""Regenerates the fuzz seed corpora in seeds/<target>/ from the RFC 5769 fixtures
and from hand-built STUN/TURN messages (the same shapes coturn's clients send).
Usage: python3 turn-stun/fuzz/make_seeds.py   (from the repository root or anywhere)."""
import hashlib, hmac, os, struct, zlib

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "core", "tests", "data")
COOKIE = 0x2112A442
REALM, USER, PASSWORD = b"natter.test", b"user", b"pass"  # match core's testkit

def msg_type(cls, method):
    return (method & 0xF) | ((method & 0x70) << 1) | ((method & 0xF80) << 2) | ((cls & 1) << 4) | ((cls & 2) << 7)

def attr(t, v):
    return struct.pack("!HH", t, len(v)) + v + b"\0" * (-len(v) % 4)

def xaddr(ip4, port, tid):
    x = bytes(a ^ b for a, b in zip(bytes(ip4), struct.pack("!I", COOKIE)))
    return struct.pack("!BBH", 0, 1, port ^ (COOKIE >> 16)) + x

def message(cls, method, attrs, tid, key=None, fingerprint=True):
    body = b"".join(attrs)
    head = lambda extra: struct.pack("!HHI", msg_type(cls, method), len(body) + extra, COOKIE) + tid
    if key is not None:
        mac = hmac.new(key, head(24) + body, hashlib.sha1).digest()
        body += attr(0x0008, mac)
    if fingerprint:
        crc = (zlib.crc32(head(8) + body) ^ 0x5354554E) & 0xFFFFFFFF
        body += attr(0x8028, struct.pack("!I", crc))
    return head(0) + body

def channel_data(ch, data, pad=True):
    return struct.pack("!HH", ch, len(data)) + data + (b"\0" * (-len(data) % 4) if pad else b"")

key = hashlib.md5(USER + b":" + REALM + b":" + PASSWORD).digest()
tid = lambda n: bytes(8) + struct.pack("!I", n)
nonce = b"0" * 40  # stale/forged nonce: exercises the 438 path
peer = xaddr([198, 51, 100, 1], 9, None)
auth = [attr(0x0006, USER), attr(0x0014, REALM), attr(0x0015, nonce)]
stun = {
    "binding": message(0, 0x001, [], tid(1)),
    "binding-software": message(0, 0x001, [attr(0x8022, b"natter fuzz")], tid(2), fingerprint=False),
    "allocate-unauthenticated": message(0, 0x003, [attr(0x0019, b"\x11\0\0\0")], tid(3)),
    "allocate-even-port": message(0, 0x003, [attr(0x0019, b"\x11\0\0\0"), attr(0x0018, b"\x80")] + auth, tid(4), key),
    "allocate-token": message(0, 0x003, [attr(0x0019, b"\x11\0\0\0"), attr(0x0022, bytes(8))] + auth, tid(5), key),
    "allocate-ipv6": message(0, 0x003, [attr(0x0019, b"\x11\0\0\0"), attr(0x0017, b"\x02\0\0\0"), attr(0x000D, struct.pack("!I", 3600))] + auth, tid(6), key),
    "refresh-zero": message(0, 0x004, [attr(0x000D, bytes(4))] + auth, tid(7), key),
    "create-permission": message(0, 0x008, [attr(0x0012, peer), attr(0x0012, peer)] + auth, tid(8), key),
    "channel-bind": message(0, 0x009, [attr(0x000C, b"\x40\0\0\0"), attr(0x0012, peer)] + auth, tid(9), key),
    "send-indication": message(1, 0x006, [attr(0x0012, peer), attr(0x0013, b"hello peer")], tid(10), fingerprint=False),
    "error-response": message(3, 0x003, [attr(0x0009, b"\0\0\x04\x01Unauthenticated"), attr(0x000A, b"\0\x30\x80\x22")], tid(11)),
}
for name in sorted(os.listdir(FIXTURES)):
    stun[name.rsplit(".", 1)[0]] = open(os.path.join(FIXTURES, name), "rb").read()

channel = {
    "padded": channel_data(0x4000, b"hello"),
    "unpadded": channel_data(0x4001, b"abc", pad=False),
    "empty": channel_data(0x7FFF, b""),
    "bad-number": channel_data(0x8000, b"x"),
    "truncated": struct.pack("!HH", 0x4000, 100) + b"short",
}
# turn_lifecycle reads its input as decisions (see core/src/fuzz_lifecycle.rs):
# 10 bytes of quotas and allow-list, then steps of (client byte, op byte, operands).
PEER = [0, 8, 8, 8, 8, 1, 0x1F, 0x90]  # IPv4 8.8.8.8:8080
lifecycle = {
    # allocate, permit, Send, peer data, ChannelBind, ChannelData, delete
    # (the same bytes as fuzz_lifecycle::tests::full_lifecycle)
    "full": bytes([3, 6, 3, 3, 0x10, 0, 7, 15, 15, 0] + [0, 0, 1, 4, 1, 0, 0]
                  + [0, 2, 0] + PEER + [0, 0] + [0, 5] + PEER + [3] + list(b"abc")
                  + [0, 7] + PEER + [3] + list(b"xyz") + [0, 3, 0, 1] + PEER + [0, 0]
                  + [0, 6, 0, 1, 2] + list(b"hi") + [0, 4, 0, 0, 0]),
    # EVEN-PORT with R, claimed by token; a wrapped loopback peer; time passing
    "even-port": bytes([4, 8, 2, 2, 0x10, 0, 7, 15, 15, 1] + [1, 0, 1, 0, 1, 1, 0]
                       + [2, 0, 1, 3, 0, 1, 1, 0] + [1, 2, 0, 2, 127, 0, 0, 1, 2, 1, 0x10, 0, 1, 0]
                       + [1, 8, 0x02, 0x58]),
    # a signed request with arbitrary text in USERNAME, REALM, NONCE and SOFTWARE
    "text-attrs": bytes([2, 2, 2, 2, 0, 0, 1, 1, 1, 0, 0, 11, 5] + list("héllo".encode())[:5]
                        + [0, 4] + list(b"real") + [3] + list(b"sw1") + [0]),
}
seeds = {
    "stun_message": stun,
    "channel_data": channel,
    "tcp_framing": {
        "binding-then-data": stun["binding"] + channel["padded"] + stun["send-indication"],
        "allocate-then-channel": stun["allocate-unauthenticated"] + stun["channel-bind"] + channel["padded"],
        "partial": stun["binding"][:10],
    },
    "server_datagram": {**{k: v for k, v in stun.items()}, **{"cd-" + k: v for k, v in channel.items()}},
    "turn_lifecycle": lifecycle,
}
for target, files in seeds.items():
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(d, name + ".bin"), "wb") as f:
            f.write(data)
    print(target, len(files))

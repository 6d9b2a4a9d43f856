#!/usr/bin/env python3
"""Which b-trees an SQLite database's recent commits wrote.

Usage: wal-pages.py DIR [COMMITS]
DIR holds a copy of natter.db and natter.db-wal taken while the server (or
chat-store-bench) was running; copy both in one `cp`. Reads the page number of
every valid WAL frame, groups the frames by commit (a frame with a database
size ends one), and names each page's b-tree with SQLite's dbstat table. Prints
the mean pages per commit over the last COMMITS commits (default 200), by b-tree.
"""
import collections
import os
import sqlite3
import struct
import sys

directory = sys.argv[1]
last_n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
wal = open(os.path.join(directory, "natter.db-wal"), "rb").read()
_magic, _version, page_size, _ckpt, salt1, salt2, _c1, _c2 = struct.unpack(">IIIIIIII", wal[:32])
offset, commits, current = 32, [], []
while offset + 24 + page_size <= len(wal):
    page, db_size, s1, s2 = struct.unpack(">IIII", wal[offset : offset + 16])
    if (s1, s2) != (salt1, salt2):
        break  # frames of an earlier WAL generation
    current.append(page)
    if db_size:
        commits.append(current)
        current = []
    offset += 24 + page_size
if not commits:
    sys.exit("no complete commit in the WAL")
owner = dict(
    (page, name)
    for name, page in sqlite3.connect(os.path.join(directory, "natter.db")).execute(
        "SELECT name, pageno FROM dbstat"
    )
)
recent = commits[-last_n:]
by_tree = collections.Counter()
for pages in recent:
    for page in set(pages):
        by_tree[owner.get(page, "?")] += 1
print(f"{len(recent)} commits, {sum(map(len, recent)) / len(recent):.1f} pages each (page size {page_size})")
for name, n in by_tree.most_common():
    print(f"{name:36} {n / len(recent):.1f}")

-- The idempotency key's index leads with the client id:
-- UNIQUE (client_id, sender_user, sender_device), was (sender_user,
-- sender_device, client_id). Why: the SDK makes time-ordered client ids
-- (UUID v7), so new keys land at the right edge of the index and a commit of
-- hundreds of messages dirties a handful of its pages; led by the sender,
-- every sender's keys sat in their own part of the index and each commit
-- dirtied about one page per sender (one per message with random ids), the
-- larger part of every commit's WAL writes. Lookups bind all three columns,
-- so any order serves them. BENCHMARKS.md has the figures.
--
-- SQLite cannot drop a table's UNIQUE constraint, so the table is rebuilt.
-- Foreign keys are on and this runs in one transaction: dropping the old
-- message table while the queue and status tables refer to it would cascade
-- into them. So the two child tables are rebuilt too, referring to the new
-- message table; the old children go first, then the old messages (nothing
-- refers to them any more), and renaming the new message table retargets the
-- new children's references.

CREATE TABLE chat_messages_2003 (
    msg_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    sender_user   TEXT NOT NULL,
    sender_device BIGINT NOT NULL,
    client_id     TEXT NOT NULL,
    conv_kind     TEXT NOT NULL,
    conv_id       TEXT NOT NULL,
    kind          TEXT NOT NULL,
    body          BLOB,
    system        TEXT,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    delivered_at  BIGINT,
    read_at       BIGINT,
    CONSTRAINT chat_messages_client_id UNIQUE (client_id, sender_user, sender_device)
);
INSERT INTO chat_messages_2003
       (msg_id, sender_user, sender_device, client_id, conv_kind, conv_id, kind, body, system,
        created_at, expires_at, delivered_at, read_at)
SELECT msg_id, sender_user, sender_device, client_id, conv_kind, conv_id, kind, body, system,
       created_at, expires_at, delivered_at, read_at
  FROM chat_messages ORDER BY client_id, sender_user, sender_device;

CREATE TABLE chat_status_2003 (
    msg_id       BIGINT NOT NULL REFERENCES chat_messages_2003 (msg_id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    delivered_at BIGINT,
    read_at      BIGINT,
    PRIMARY KEY (msg_id, user_id)
);
INSERT INTO chat_status_2003 (msg_id, user_id, delivered_at, read_at)
SELECT msg_id, user_id, delivered_at, read_at FROM chat_status;

CREATE TABLE chat_queue_2003 (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    TEXT NOT NULL,
    device_id  BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    kind       BIGINT NOT NULL,
    msg_id     BIGINT NOT NULL REFERENCES chat_messages_2003 (msg_id) ON DELETE CASCADE,
    peer       TEXT,
    at         BIGINT NOT NULL
);
INSERT INTO chat_queue_2003 (seq, user_id, device_id, generation, kind, msg_id, peer, at)
SELECT seq, user_id, device_id, generation, kind, msg_id, peer, at FROM chat_queue;

-- AUTOINCREMENT's high-water marks: ids of deleted rows are never reused.
DELETE FROM sqlite_sequence WHERE name IN ('chat_messages_2003', 'chat_queue_2003');
INSERT INTO sqlite_sequence (name, seq)
SELECT name || '_2003', seq FROM sqlite_sequence WHERE name IN ('chat_messages', 'chat_queue');

DROP TABLE chat_queue;
DROP TABLE chat_status;
DROP TABLE chat_messages;
ALTER TABLE chat_messages_2003 RENAME TO chat_messages;
ALTER TABLE chat_status_2003 RENAME TO chat_status;
ALTER TABLE chat_queue_2003 RENAME TO chat_queue;

CREATE INDEX chat_messages_expires ON chat_messages (expires_at);
CREATE INDEX chat_queue_device ON chat_queue (user_id, device_id, seq);
CREATE INDEX chat_queue_msg ON chat_queue (msg_id, user_id, device_id);

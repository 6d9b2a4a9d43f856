-- The idempotency key includes the sending device's credential generation:
-- UNIQUE (client_id, sender_user, sender_device, sender_generation). Why: a
-- device id is reused when a device re-registers or is re-linked, and a new
-- install that starts its client ids over (or restores them from a backup)
-- was answered `dup` with its predecessor's message and its own was never
-- stored.
--
-- Rows written before this migration take the generation their device has
-- now, so a resend across the upgrade is still recognised (see the
-- PostgreSQL migration of the same number).
--
-- Chat's migrations run after auth's (`natter migrate`, `natter serve`), whose
-- `devices` table this reads.
--
-- SQLite cannot drop a table's UNIQUE constraint, so the table and its two
-- child tables are rebuilt as in migration 2003 (which explains the order).

CREATE TABLE chat_messages_2004 (
    msg_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    sender_user   TEXT NOT NULL,
    sender_device BIGINT NOT NULL,
    sender_generation BIGINT NOT NULL DEFAULT 0,
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
    CONSTRAINT chat_messages_client_id UNIQUE (client_id, sender_user, sender_device, sender_generation)
);
INSERT INTO chat_messages_2004
       (msg_id, sender_user, sender_device, sender_generation, client_id, conv_kind, conv_id, kind,
        body, system, created_at, expires_at, delivered_at, read_at)
SELECT m.msg_id, m.sender_user, m.sender_device, COALESCE(d.generation, 0), m.client_id,
       m.conv_kind, m.conv_id, m.kind, m.body, m.system, m.created_at, m.expires_at,
       m.delivered_at, m.read_at
  FROM chat_messages m
  LEFT JOIN devices d ON d.user_id = m.sender_user AND d.device_id = m.sender_device
 ORDER BY m.client_id, m.sender_user, m.sender_device;

CREATE TABLE chat_status_2004 (
    msg_id       BIGINT NOT NULL REFERENCES chat_messages_2004 (msg_id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    delivered_at BIGINT,
    read_at      BIGINT,
    PRIMARY KEY (msg_id, user_id)
);
INSERT INTO chat_status_2004 (msg_id, user_id, delivered_at, read_at)
SELECT msg_id, user_id, delivered_at, read_at FROM chat_status;

CREATE TABLE chat_queue_2004 (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    TEXT NOT NULL,
    device_id  BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    kind       BIGINT NOT NULL,
    msg_id     BIGINT NOT NULL REFERENCES chat_messages_2004 (msg_id) ON DELETE CASCADE,
    peer       TEXT,
    at         BIGINT NOT NULL
);
INSERT INTO chat_queue_2004 (seq, user_id, device_id, generation, kind, msg_id, peer, at)
SELECT seq, user_id, device_id, generation, kind, msg_id, peer, at FROM chat_queue;

-- AUTOINCREMENT's high-water marks: ids of deleted rows are never reused.
DELETE FROM sqlite_sequence WHERE name IN ('chat_messages_2004', 'chat_queue_2004');
INSERT INTO sqlite_sequence (name, seq)
SELECT name || '_2004', seq FROM sqlite_sequence WHERE name IN ('chat_messages', 'chat_queue');

DROP TABLE chat_queue;
DROP TABLE chat_status;
DROP TABLE chat_messages;
ALTER TABLE chat_messages_2004 RENAME TO chat_messages;
ALTER TABLE chat_status_2004 RENAME TO chat_status;
ALTER TABLE chat_queue_2004 RENAME TO chat_queue;

CREATE INDEX chat_messages_expires ON chat_messages (expires_at);
CREATE INDEX chat_queue_device ON chat_queue (user_id, device_id, seq);
CREATE INDEX chat_queue_msg ON chat_queue (msg_id, user_id, device_id);

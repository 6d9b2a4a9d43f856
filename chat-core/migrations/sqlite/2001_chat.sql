-- chat-core: messages, per-device queues, receipts status, groups, presence, push tokens.
-- Times are Unix milliseconds (BIGINT), as in auth. Users and devices are auth's
-- `accounts` and `devices` tables, read but never written here and never
-- referenced by foreign keys (services own their tables).

-- One row per message. The body is cleared (set to NULL) once every recipient
-- device has it; the row itself stays until `expires_at` as the idempotency
-- record for (sender_user, sender_device, client_id) and for status queries.
CREATE TABLE chat_messages (
    msg_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    sender_user   TEXT NOT NULL,
    sender_device BIGINT NOT NULL,
    client_id     TEXT NOT NULL,
    conv_kind     TEXT NOT NULL,          -- 'u' (user) or 'g' (group)
    conv_id       TEXT NOT NULL,          -- the recipient user or the group
    kind          TEXT NOT NULL,
    body          BLOB,
    system        TEXT,                   -- JSON SystemEvent for kind = 'system'
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    CONSTRAINT chat_messages_client_id UNIQUE (sender_user, sender_device, client_id)
);
CREATE INDEX chat_messages_expires ON chat_messages (expires_at);

-- Delivered/read state per recipient user (not per device).
CREATE TABLE chat_status (
    msg_id       BIGINT NOT NULL REFERENCES chat_messages (msg_id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    delivered_at BIGINT,
    read_at      BIGINT,
    PRIMARY KEY (msg_id, user_id)
);

-- What each device has yet to receive, in order (seq). kind 0 = message,
-- 1 = delivered receipt, 2 = read receipt (peer = who). Rows are bound to the
-- device's credential generation: a re-registered or re-linked device id does
-- not inherit its predecessor's queue.
CREATE TABLE chat_queue (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    TEXT NOT NULL,
    device_id  BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    kind       BIGINT NOT NULL,
    msg_id     BIGINT NOT NULL REFERENCES chat_messages (msg_id) ON DELETE CASCADE,
    peer       TEXT,
    at         BIGINT NOT NULL
);
CREATE INDEX chat_queue_device ON chat_queue (user_id, device_id, seq);
CREATE INDEX chat_queue_msg ON chat_queue (msg_id, user_id, device_id);

CREATE TABLE chat_groups (
    group_id   TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE chat_group_members (
    group_id TEXT NOT NULL REFERENCES chat_groups (group_id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL,
    admin    BOOLEAN NOT NULL DEFAULT FALSE,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX chat_group_members_user ON chat_group_members (user_id);

CREATE TABLE chat_presence (
    user_id      TEXT PRIMARY KEY,
    last_seen_at BIGINT,
    privacy      TEXT NOT NULL DEFAULT 'everyone'
);

CREATE TABLE chat_contacts (
    user_id    TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    PRIMARY KEY (user_id, contact_id)
);

CREATE TABLE chat_push_tokens (
    user_id    TEXT NOT NULL,
    device_id  BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    platform   TEXT NOT NULL,
    token      TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- media: blob metadata, owners (quota), references (lifecycle), resumable uploads.
-- Times are Unix milliseconds (BIGINT) so SQLite and PostgreSQL store them alike.

-- One row per stored blob. state: 'pending' while its bytes are being moved
-- into place, 'ready' once downloadable, 'deleting' while the collector removes it.
CREATE TABLE media_blobs (
    hash           TEXT PRIMARY KEY,
    size           BIGINT NOT NULL,
    content_type   TEXT NOT NULL,
    opaque         BOOLEAN NOT NULL,
    state          TEXT NOT NULL,
    width          BIGINT,
    height         BIGINT,
    thumb_width    BIGINT,
    thumb_height   BIGINT,
    preview        TEXT,
    preview_width  BIGINT,
    preview_height BIGINT,
    thumb_note     TEXT,
    uploader       TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    last_ref_at    BIGINT NOT NULL,
    held_refs      BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX media_blobs_expiry ON media_blobs (held_refs, last_ref_at);
CREATE INDEX media_blobs_state ON media_blobs (state, created_at);

-- Who uploaded a blob: each owner is charged its size once, against its quota.
CREATE TABLE media_owners (
    hash       TEXT NOT NULL REFERENCES media_blobs (hash) ON DELETE CASCADE,
    user_id    TEXT NOT NULL,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (hash, user_id)
);
CREATE INDEX media_owners_user ON media_owners (user_id);

-- Bytes of live blobs per user (the sum of media_owners.size), kept as a counter
-- so the quota check can lock one row.
CREATE TABLE media_usage (
    user_id TEXT PRIMARY KEY,
    bytes   BIGINT NOT NULL DEFAULT 0
);

-- References from messages (kind 'message': extend the lifetime) and profiles
-- (kind 'profile': hold the blob until removed).
CREATE TABLE media_refs (
    hash       TEXT NOT NULL REFERENCES media_blobs (hash) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    ref_id     TEXT NOT NULL,
    holds      BOOLEAN NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (hash, kind, ref_id)
);

-- Resumable (TUS) uploads. While completed_hash is NULL an upload reserves its
-- declared length against its owner's quota.
CREATE TABLE media_uploads (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    length         BIGINT NOT NULL,
    received       BIGINT NOT NULL DEFAULT 0,
    opaque         BOOLEAN NOT NULL,
    claimed_hash   TEXT,
    metadata       TEXT NOT NULL DEFAULT '',
    hash_state     BYTEA NOT NULL,
    head           BYTEA NOT NULL,
    backend_state  TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    lease_token    TEXT,
    lease_until    BIGINT NOT NULL DEFAULT 0,
    completed_hash TEXT
);
CREATE INDEX media_uploads_user ON media_uploads (user_id);
CREATE INDEX media_uploads_expires ON media_uploads (expires_at);

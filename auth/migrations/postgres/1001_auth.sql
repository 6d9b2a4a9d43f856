-- auth: registration sessions, accounts, devices, tokens, second factors, key directory.
-- Times are Unix milliseconds (BIGINT) so SQLite and PostgreSQL store them alike.

CREATE TABLE auth_sessions (
    id              TEXT PRIMARY KEY,
    number          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    code_hash       TEXT,
    code_expires_at BIGINT NOT NULL DEFAULT 0,
    sends           BIGINT NOT NULL DEFAULT 0,
    next_send_at    BIGINT NOT NULL DEFAULT 0,
    attempts        BIGINT NOT NULL DEFAULT 0,
    verified_at     BIGINT,
    used            BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX auth_sessions_number ON auth_sessions (number);
CREATE INDEX auth_sessions_expires ON auth_sessions (expires_at);

CREATE TABLE accounts (
    user_id          TEXT PRIMARY KEY,
    number           TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    reglock_hash     TEXT,
    sf_failures      BIGINT NOT NULL DEFAULT 0,
    sf_locked_until  BIGINT NOT NULL DEFAULT 0,
    totp_secret      TEXT,
    totp_enabled     BOOLEAN NOT NULL DEFAULT FALSE,
    totp_last_step   BIGINT NOT NULL DEFAULT 0,
    display_name     TEXT NOT NULL DEFAULT '',
    about            TEXT NOT NULL DEFAULT '',
    avatar           TEXT,
    CONSTRAINT accounts_number_key UNIQUE (number)
);

CREATE TABLE devices (
    user_id      TEXT NOT NULL REFERENCES accounts (user_id) ON DELETE CASCADE,
    device_id    BIGINT NOT NULL,
    name         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    generation   BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    device_id  BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);

CREATE TABLE link_codes (
    code_hash  TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES accounts (user_id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL
);
CREATE INDEX link_codes_user ON link_codes (user_id);

CREATE TABLE recovery_codes (
    user_id   TEXT NOT NULL REFERENCES accounts (user_id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE device_keys (
    user_id       TEXT NOT NULL,
    device_id     BIGINT NOT NULL,
    identity_key  BYTEA NOT NULL,
    signing_key   BYTEA NOT NULL,
    spk_id        BIGINT NOT NULL,
    spk_public    BYTEA NOT NULL,
    spk_signature BYTEA NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

CREATE TABLE one_time_prekeys (
    user_id    TEXT NOT NULL,
    device_id  BIGINT NOT NULL,
    key_id     BIGINT NOT NULL,
    public_key BYTEA NOT NULL,
    PRIMARY KEY (user_id, device_id, key_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

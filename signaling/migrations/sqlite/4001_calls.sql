-- Call log: one row per call that ended (signaling owns this table).
CREATE TABLE call_log (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id         TEXT NOT NULL,
    caller          TEXT NOT NULL,
    caller_device   BIGINT NOT NULL,
    callee          TEXT NOT NULL,
    answered_device BIGINT,
    media           TEXT NOT NULL,
    started_at      BIGINT NOT NULL,
    answered_at     BIGINT,
    ended_at        BIGINT NOT NULL,
    outcome         TEXT NOT NULL,
    reason          TEXT NOT NULL
);
CREATE INDEX call_log_caller ON call_log (caller, started_at);
CREATE INDEX call_log_callee ON call_log (callee, started_at);

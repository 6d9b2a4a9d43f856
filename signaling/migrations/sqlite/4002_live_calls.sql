-- Calls that ring or are answered now, one row each, written as they change
-- state and removed when the call ends (its `call_log` row is inserted in the
-- same transaction). Why: calls live in one node's memory, and a crash used
-- to lose every live call's log entry. Now a node closes, at start-up, the
-- rows it left (owner = its node id; `local` in the embedded shape), and
-- every node closes, every minute, those of owners whose heartbeat stopped:
-- each becomes a `call_log` row with outcome `failed`, reason
-- `connection_lost`, ended when it was found.
CREATE TABLE call_live (
    call_id         TEXT PRIMARY KEY,
    owner           TEXT NOT NULL,
    caller          TEXT NOT NULL,
    caller_device   BIGINT NOT NULL,
    callee          TEXT NOT NULL,
    media           TEXT NOT NULL,
    started_at      BIGINT NOT NULL,
    answered_device BIGINT,
    answered_at     BIGINT
);
CREATE INDEX call_live_owner ON call_live (owner);

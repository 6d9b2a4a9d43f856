-- The idempotency key includes the sending device's credential generation:
-- UNIQUE (client_id, sender_user, sender_device, sender_generation). Why: a
-- device id is reused when a device re-registers or is re-linked, and a new
-- install that starts its client ids over (or restores them from a backup)
-- was answered `dup` with its predecessor's message and its own was never
-- stored.
--
-- Rows written before this migration take the generation their device has
-- now, so a resend across the upgrade (a client retrying an unanswered send
-- against the new version) is still recognised. A row from an earlier
-- generation of the same device id is then attributed to the current one;
-- that costs only the old behaviour, for ids reused from before the upgrade.
--
-- The unique index is built before the old constraint is dropped, with a
-- plain CREATE INDEX: it blocks writes to the table while it builds, but not
-- reads (ADD CONSTRAINT ... UNIQUE would block both).
ALTER TABLE chat_messages ADD COLUMN sender_generation BIGINT NOT NULL DEFAULT 0;

UPDATE chat_messages m
   SET sender_generation = d.generation
  FROM devices d
 WHERE d.user_id = m.sender_user AND d.device_id = m.sender_device;

CREATE UNIQUE INDEX chat_messages_client_id_2004
    ON chat_messages (client_id, sender_user, sender_device, sender_generation);
ALTER TABLE chat_messages DROP CONSTRAINT chat_messages_client_id;
ALTER TABLE chat_messages
    ADD CONSTRAINT chat_messages_client_id UNIQUE USING INDEX chat_messages_client_id_2004;

-- no-transaction
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
-- Applied step by step, outside one transaction, so that the pods of the
-- previous release keep reading and writing messages while it runs
-- (natter_common::migrate runs each step on its own; docs/runbook.md
-- "Migrations and locks" has the locks and their durations). The released
-- text (migrations/postgres-released/) did it all in one transaction whose
-- first statement took an ACCESS EXCLUSIVE lock: reads and writes stopped
-- for the whole backfill and index build. Databases that applied it keep its
-- checksum, and so does this text when it is applied.
--
-- A failed attempt is not recorded and starts over from the first step, so
-- every step can run again: on a fresh table, after any step of an earlier
-- attempt, or after the constraint was swapped but not yet recorded.
--
-- The brief ACCESS EXCLUSIVE steps (1 and 5) wait for their lock at most
-- 200 ms: a request that waits also stops the reads queued behind it. On a
-- timeout the runner lets those through and tries again.

-- step: column and trigger
-- Add the column (no rewrite: the default is stored in the catalogue), and a
-- trigger that gives rows the previous release inserts from now on
-- their device's generation, which the backfill below would miss.
SET LOCAL lock_timeout = '200ms';
ALTER TABLE chat_messages ADD COLUMN IF NOT EXISTS sender_generation BIGINT NOT NULL DEFAULT 0;
CREATE OR REPLACE FUNCTION chat_messages_2004_generation() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF NEW.sender_generation = 0 THEN
        NEW.sender_generation := COALESCE(
            (SELECT d.generation FROM devices d
              WHERE d.user_id = NEW.sender_user AND d.device_id = NEW.sender_device), 0);
    END IF;
    RETURN NEW;
END
$fn$;
DROP TRIGGER IF EXISTS chat_messages_2004_generation ON chat_messages;
CREATE TRIGGER chat_messages_2004_generation BEFORE INSERT ON chat_messages
    FOR EACH ROW EXECUTE FUNCTION chat_messages_2004_generation();

-- step: backfill
-- The rows that existed before the trigger, 10,000 at a time in msg_id order, each batch its own transaction (a top-level DO block may
-- commit): row locks last one batch, and no snapshot is held across the
-- table. Rows already carrying a generation are left alone, so a rerun after
-- the swap changes nothing that new code wrote.
DO $backfill$
DECLARE
    lo BIGINT := 0;
    hi BIGINT;
BEGIN
    LOOP
        SELECT max(msg_id) INTO hi FROM (
            SELECT msg_id FROM chat_messages WHERE msg_id > lo ORDER BY msg_id LIMIT 10000
        ) batch;
        EXIT WHEN hi IS NULL;
        UPDATE chat_messages m
           SET sender_generation = d.generation
          FROM devices d
         WHERE m.msg_id > lo AND m.msg_id <= hi
           AND m.sender_generation = 0
           AND d.user_id = m.sender_user AND d.device_id = m.sender_device
           AND d.generation <> 0;
        COMMIT;
        lo := hi;
    END LOOP;
END
$backfill$;

-- step: drop a leftover index
-- An earlier attempt may have left its index half built (INVALID, yet
-- maintained on every write) or built; start it over.
DROP INDEX CONCURRENTLY IF EXISTS chat_messages_client_id_2004;

-- step: build the index
-- The new key's index; reads and writes go on meanwhile (SHARE
-- UPDATE EXCLUSIVE). The old constraint keeps (client_id, sender_user,
-- sender_device) unique, so the wider key cannot find duplicates.
CREATE UNIQUE INDEX CONCURRENTLY chat_messages_client_id_2004
    ON chat_messages (client_id, sender_user, sender_device, sender_generation);

-- step: swap the constraints
-- And drop the trigger, in one short transaction: ACCESS EXCLUSIVE for catalogue changes only, no scan.
SET LOCAL lock_timeout = '200ms';
ALTER TABLE chat_messages DROP CONSTRAINT chat_messages_client_id;
ALTER TABLE chat_messages
    ADD CONSTRAINT chat_messages_client_id UNIQUE USING INDEX chat_messages_client_id_2004;
DROP TRIGGER IF EXISTS chat_messages_2004_generation ON chat_messages;
DROP FUNCTION IF EXISTS chat_messages_2004_generation();

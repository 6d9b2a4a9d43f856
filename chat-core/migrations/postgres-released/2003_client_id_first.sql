-- The idempotency key's index leads with the client id:
-- UNIQUE (client_id, sender_user, sender_device), was (sender_user,
-- sender_device, client_id). Why: the SDK makes time-ordered client ids
-- (UUID v7), so new keys land at the right edge of the index and a commit of
-- hundreds of messages touches a handful of its pages instead of about one
-- per sender (one per message with random ids). Lookups bind all three
-- columns, so any order serves them. See the SQLite migration of the same
-- number for the figures.
ALTER TABLE chat_messages DROP CONSTRAINT chat_messages_client_id;
ALTER TABLE chat_messages
    ADD CONSTRAINT chat_messages_client_id UNIQUE (client_id, sender_user, sender_device);

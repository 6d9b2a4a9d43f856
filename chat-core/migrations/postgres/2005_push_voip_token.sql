-- An iOS device has two push tokens: its APNs token (alert and background
-- pushes) and its PushKit token (VoIP pushes, for calls). The second one is
-- optional: without it a call is announced with an alert push.
-- Adding a nullable column without a default only changes the catalog (no
-- table rewrite); the brief lock it takes is on chat_push_tokens, which
-- message traffic does not touch.
SET LOCAL lock_timeout = '5s';
ALTER TABLE chat_push_tokens ADD COLUMN voip_token TEXT;

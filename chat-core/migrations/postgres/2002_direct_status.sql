-- Delivered/read state of a 1:1 message lives in its own row. Why: a 1:1
-- message has exactly one recipient user, and keeping that user's state in
-- `chat_status` cost every message a second table and its key index on send,
-- and a second row to update on delivery (the message row is rewritten then
-- anyway, to clear the body). Group messages keep one `chat_status` row per
-- member. A 1:1 message to oneself (a note to self) has no recipient state.
ALTER TABLE chat_messages ADD COLUMN delivered_at BIGINT;
ALTER TABLE chat_messages ADD COLUMN read_at BIGINT;

UPDATE chat_messages
   SET delivered_at = (SELECT s.delivered_at FROM chat_status s
                        WHERE s.msg_id = chat_messages.msg_id AND s.user_id = chat_messages.conv_id),
       read_at = (SELECT s.read_at FROM chat_status s
                   WHERE s.msg_id = chat_messages.msg_id AND s.user_id = chat_messages.conv_id)
 WHERE conv_kind = 'u';

DELETE FROM chat_status
 WHERE msg_id IN (SELECT msg_id FROM chat_messages WHERE conv_kind = 'u');

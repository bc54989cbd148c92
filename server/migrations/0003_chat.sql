-- Chat: messages sent in a room's meetings, kept with the room (gone when the room is).
-- `sent_us` is microseconds since the epoch: fine enough to keep a burst of messages in order.
CREATE TABLE chat_messages (
    id              TEXT PRIMARY KEY,
    room_id         TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    body            TEXT NOT NULL,
    sent_us         BIGINT NOT NULL
);
CREATE INDEX chat_messages_room ON chat_messages(room_id, sent_us, id);

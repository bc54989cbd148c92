-- Meeting logs: a session runs from the first participant joining a room (over signaling) to
-- the last one leaving; attendance records each participant's join and leave times.
CREATE TABLE meeting_sessions (
    id              TEXT PRIMARY KEY,
    room_id         TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    started_at      BIGINT NOT NULL,
    ended_at        BIGINT
);
CREATE INDEX meeting_sessions_room ON meeting_sessions(room_id, started_at);

CREATE TABLE meeting_attendance (
    id              TEXT PRIMARY KEY,
    session_id      TEXT NOT NULL REFERENCES meeting_sessions(id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    joined_at       BIGINT NOT NULL,
    left_at         BIGINT
);
CREATE INDEX meeting_attendance_session ON meeting_attendance(session_id);

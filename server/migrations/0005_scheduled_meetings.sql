-- Scheduled meetings: a time in a room, with a title and the people invited.
CREATE TABLE scheduled_meetings (
    id                  TEXT PRIMARY KEY,
    room_id             TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    title               TEXT NOT NULL,
    starts_at           BIGINT NOT NULL,
    duration_minutes    BIGINT NOT NULL,
    created_by          TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at          BIGINT NOT NULL
);
CREATE INDEX scheduled_meetings_start ON scheduled_meetings(starts_at);

CREATE TABLE meeting_invitees (
    meeting_id          TEXT NOT NULL REFERENCES scheduled_meetings(id) ON DELETE CASCADE,
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (meeting_id, user_id)
);
CREATE INDEX meeting_invitees_user ON meeting_invitees(user_id);

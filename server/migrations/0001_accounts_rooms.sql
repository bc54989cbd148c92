-- Portable between SQLite and PostgreSQL: TEXT ids, BIGINT unix milliseconds, BIGINT 0/1 flags.
CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    username        TEXT NOT NULL,
    username_norm   TEXT NOT NULL UNIQUE,
    email           TEXT NOT NULL,
    email_norm      TEXT NOT NULL UNIQUE,
    display_name    TEXT NOT NULL,
    password_hash   TEXT NOT NULL,
    role            TEXT NOT NULL,
    avatar_type     TEXT,
    avatar_version  BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- A session is one refresh-token family: one sign-in on one device.
CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at      BIGINT NOT NULL,
    last_used_at    BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    revoked_at      BIGINT
);
CREATE INDEX sessions_user ON sessions(user_id);

-- Refresh tokens are stored as SHA-256 digests; each is single use.
CREATE TABLE refresh_tokens (
    token_hash      TEXT PRIMARY KEY,
    session_id      TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    issued_at       BIGINT NOT NULL,
    used_at         BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);

CREATE TABLE password_resets (
    token_hash      TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    used_at         BIGINT
);
CREATE INDEX password_resets_user ON password_resets(user_id);

CREATE TABLE rooms (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    host_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    privacy             TEXT NOT NULL,
    password_hash       TEXT,
    locked              BIGINT NOT NULL DEFAULT 0,
    max_participants    BIGINT NOT NULL,
    expires_at          BIGINT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX rooms_listing ON rooms(created_at, id);
CREATE INDEX rooms_host ON rooms(host_id);

-- Who belongs to a room: its host, invited users, and everyone who has joined it once.
CREATE TABLE room_members (
    room_id         TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role            TEXT NOT NULL,
    added_at        BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_user ON room_members(user_id);

-- Who is in a room right now.
CREATE TABLE room_participants (
    room_id         TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    joined_at       BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

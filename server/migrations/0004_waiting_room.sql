-- Waiting rooms: newcomers wait until the host lets them in.
ALTER TABLE rooms ADD COLUMN waiting_room BIGINT NOT NULL DEFAULT 0;

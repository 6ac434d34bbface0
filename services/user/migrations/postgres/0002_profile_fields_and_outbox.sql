-- Preferences a user sets; NULL until they do.
ALTER TABLE users ADD COLUMN locale TEXT;
ALTER TABLE users ADD COLUMN time_zone TEXT;

-- The transactional outbox: every change to a profile appends its event
-- here in the transaction that makes the change, so a change is never
-- committed without its event nor an event without its change. `seq`
-- orders events (per subject too); `id` is what consumers dedupe by.
CREATE TABLE events (
    seq              BIGSERIAL PRIMARY KEY,
    id               UUID NOT NULL UNIQUE,
    type             TEXT NOT NULL,
    subject          UUID NOT NULL,
    -- The profile's version the event leaves behind.
    subject_version  BIGINT NOT NULL,
    occurred_at      TIMESTAMPTZ NOT NULL,
    -- The event's `data`, as JSON text (the same on both backends).
    data             TEXT NOT NULL
);
CREATE INDEX events_by_subject ON events (subject, seq);

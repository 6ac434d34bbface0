-- An account deleted in the user service: its credential stays, unusable
-- (`deleted`), until the scrubber removes it after the grace period — its
-- sessions' revocations must outlive the access tokens they refuse.
ALTER TABLE credentials DROP CONSTRAINT credentials_status_check;
ALTER TABLE credentials ADD CONSTRAINT credentials_status_check
    CHECK (status IN ('pending', 'active', 'deleted'));

-- Events received from other services (webhooks), by id: each applied
-- once however often it is delivered.
CREATE TABLE IF NOT EXISTS received_events (
    id           TEXT PRIMARY KEY,
    type         TEXT NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL
);

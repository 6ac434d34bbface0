-- no-transaction
-- An account deleted in the user service: its credential stays, unusable
-- (`deleted`), until the scrubber removes it after the grace period — its
-- sessions' revocations must outlive the access tokens they refuse.
--
-- SQLite cannot change a CHECK constraint: the table is rebuilt (the
-- procedure of SQLite's ALTER TABLE documentation), with foreign keys off
-- so that dropping the old table does not cascade to sessions.
PRAGMA foreign_keys = OFF;
BEGIN;
DROP TABLE IF EXISTS credentials_rebuilt;
CREATE TABLE credentials_rebuilt (
    user_id        BLOB PRIMARY KEY,
    email_lower    TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'active', 'deleted')),
    roles          TEXT NOT NULL DEFAULT 'user',
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
INSERT INTO credentials_rebuilt (user_id, email_lower, password_hash, status, roles, created_at, updated_at)
    SELECT user_id, email_lower, password_hash, status, roles, created_at, updated_at FROM credentials;
DROP TABLE credentials;
ALTER TABLE credentials_rebuilt RENAME TO credentials;

-- Events received from other services (webhooks), by id: each applied
-- once however often it is delivered.
CREATE TABLE IF NOT EXISTS received_events (
    id           TEXT PRIMARY KEY,
    type         TEXT NOT NULL,
    received_at  TEXT NOT NULL
);
COMMIT;
PRAGMA foreign_keys = ON;

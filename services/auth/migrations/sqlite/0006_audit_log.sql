-- SQLite twin of the PostgreSQL migration: UUIDs as 16-byte blobs, times as RFC 3339 text.
-- Security events, append-only. Written in the same transaction as the
-- change each records (or alone, for attempts that change nothing). No
-- foreign keys: the record outlives the account and sessions it names.
CREATE TABLE audit_events (
    -- UUIDv7: time-ordered, the keyset the admin API pages on.
    id           BLOB PRIMARY KEY,
    occurred_at  TEXT NOT NULL,
    type         TEXT NOT NULL,
    user_id      BLOB,
    session_id   BLOB,
    actor        TEXT,
    ip           TEXT,
    user_agent   TEXT,
    request_id   TEXT,
    detail       TEXT
);
CREATE INDEX audit_events_user_idx ON audit_events (user_id, id);
CREATE INDEX audit_events_type_idx ON audit_events (type, id);

-- Append-only, enforced by the database itself, not only by the code.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

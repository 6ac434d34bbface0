-- The outbox: announced changes (see src/domain/events.rs) append their
-- event here in the transaction that makes the change, with one delivery
-- per subscriber; the relay sends them. Same tables as the user
-- service's (portico_common::outbox), in this service's own database.

-- Each credential counts its events: the event's `version`, increasing
-- per user.
ALTER TABLE credentials ADD COLUMN event_version INTEGER NOT NULL DEFAULT 0;

CREATE TABLE events (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               BLOB NOT NULL UNIQUE,
    type             TEXT NOT NULL,
    subject          BLOB NOT NULL,
    -- The credential's event count after this one.
    subject_version  INTEGER NOT NULL,
    occurred_at      TEXT NOT NULL,
    -- The event's `data`, as JSON text (the same on both backends).
    data             TEXT NOT NULL
);
CREATE INDEX events_by_subject ON events (subject, seq);

-- One row per event and subscriber: written with the event (same
-- transaction), claimed by a relay under a lease, ended `delivered` or
-- `dead` (after the configured attempts; an admin can send it again).
CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq        INTEGER NOT NULL REFERENCES events (seq),
    subscriber       TEXT NOT NULL,
    -- The event's subject, copied: per-subject order is decided here.
    subject          BLOB NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    -- A relay's claim: no other relay takes the row before this passes.
    leased_until     TEXT,
    last_error       TEXT,
    delivered_at     TEXT,
    created_at       TEXT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_in_order ON deliveries (subscriber, subject, event_seq) WHERE status = 'pending';
CREATE INDEX deliveries_dead ON deliveries (id) WHERE status = 'dead';

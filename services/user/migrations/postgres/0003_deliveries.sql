-- One row per event and subscriber: written with the event (same
-- transaction), claimed by a relay under a lease, ended `delivered` or
-- `dead` (after the configured attempts; an admin can send it again).
CREATE TABLE deliveries (
    id               BIGSERIAL PRIMARY KEY,
    event_seq        BIGINT NOT NULL REFERENCES events (seq),
    subscriber       TEXT NOT NULL,
    -- The event's subject, copied: per-subject order is decided here.
    subject          UUID NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    -- A relay's claim: no other relay takes the row before this passes.
    leased_until     TIMESTAMPTZ,
    last_error       TEXT,
    delivered_at     TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_in_order ON deliveries (subscriber, subject, event_seq) WHERE status = 'pending';
CREATE INDEX deliveries_dead ON deliveries (id) WHERE status = 'dead';

-- Security events, append-only. Written in the same transaction as the
-- change each records (or alone, for attempts that change nothing). No
-- foreign keys: the record outlives the account and sessions it names.
CREATE TABLE audit_events (
    -- UUIDv7: time-ordered, the keyset the admin API pages on.
    id           UUID PRIMARY KEY,
    occurred_at  TIMESTAMPTZ NOT NULL,
    type         TEXT NOT NULL,
    -- The account the event is about, and its session.
    user_id      UUID,
    session_id   UUID,
    -- Who acted when it is not the user: `user:<id>` (an admin),
    -- `client:<id>` (a service client).
    actor        TEXT,
    ip           TEXT,
    user_agent   TEXT,
    request_id   TEXT,
    -- A short fact about the event (a role name, a kid, a count); never a secret.
    detail       TEXT
);
CREATE INDEX audit_events_user_idx ON audit_events (user_id, id);
CREATE INDEX audit_events_type_idx ON audit_events (type, id);

-- Append-only, enforced by the database itself, not only by the code.
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

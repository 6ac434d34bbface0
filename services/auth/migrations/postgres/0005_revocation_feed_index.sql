-- The revocation feed reads sessions by revoked_at several times a second
-- per follower: index it.
CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at);

-- Tokens spent before refresh-token families existed: only the previous
-- one per session was kept; remember it so its reuse is still detected.
INSERT INTO spent_refresh_tokens (hash, session_id, spent_at)
SELECT previous_hash, id, last_used_at FROM sessions WHERE previous_hash IS NOT NULL
ON CONFLICT DO NOTHING;

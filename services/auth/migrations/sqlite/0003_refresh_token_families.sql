-- SQLite twin of the PostgreSQL migration (UUIDs as blobs, times as text).
-- Refresh tokens form a family per session. Every token a session rotated
-- away is remembered (as its hash) so that one coming back is recognised:
-- within the grace window it gets the same successor again (a retry after
-- a lost answer, two tabs racing); after it, the whole session is revoked.
ALTER TABLE sessions ADD COLUMN rotated_at TEXT;

CREATE TABLE spent_refresh_tokens (
    hash        BLOB PRIMARY KEY,
    session_id  BLOB NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    spent_at    TEXT NOT NULL
);
CREATE INDEX spent_refresh_tokens_session_idx ON spent_refresh_tokens (session_id);

-- One random secret every replica shares (the first to start creates it):
-- the key that derives a refresh token's successor, so a retry within the
-- grace window gets the same tokens and nobody without it can predict them.
CREATE TABLE token_secrets (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    secret  BLOB NOT NULL
);

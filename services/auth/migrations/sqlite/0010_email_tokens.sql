-- SQLite twin of the PostgreSQL migration (UUIDs as blobs, times as text).
ALTER TABLE credentials ADD COLUMN email_verified_at TEXT;

-- Single-use mailed tokens (SHA-256 only): email verification, password reset.
CREATE TABLE account_tokens (
    token_hash   BLOB PRIMARY KEY,
    user_id      BLOB NOT NULL REFERENCES credentials (user_id) ON DELETE CASCADE,
    purpose      TEXT NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    email_lower  TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    used_at      TEXT
);
CREATE INDEX account_tokens_user_idx ON account_tokens (user_id, purpose);

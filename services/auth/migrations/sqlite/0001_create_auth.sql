-- SQLite twin of the PostgreSQL migration: UUIDs as 16-byte blobs, times as RFC 3339 text.
-- Credentials: one per user. `pending` while registration creates the
-- profile in the user service; only `active` credentials can log in.
CREATE TABLE credentials (
    user_id        BLOB PRIMARY KEY,
    -- Lower-cased email: one account per address whatever its letter case.
    email_lower    TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'active')),
    -- Comma-separated role names, copied into access tokens.
    roles          TEXT NOT NULL DEFAULT 'user',
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

-- A login session. Only hashes of refresh tokens are stored; rotation keeps
-- the previous hash to recognise a replayed (stolen) token.
CREATE TABLE sessions (
    id             BLOB PRIMARY KEY,
    user_id        BLOB NOT NULL REFERENCES credentials (user_id) ON DELETE CASCADE,
    refresh_hash   BLOB NOT NULL UNIQUE,
    previous_hash  BLOB,
    created_at     TEXT NOT NULL,
    last_used_at   TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    revoked_at     TEXT
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_previous_hash_idx ON sessions (previous_hash);

-- Ed25519 signing keys. Every replica signs with the oldest active key, so
-- replicas agree; all active keys are published in the JWKS.
CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,
    private_pkcs8  BLOB NOT NULL,
    public_key     BLOB NOT NULL,
    created_at     TEXT NOT NULL,
    retired_at     TEXT
);

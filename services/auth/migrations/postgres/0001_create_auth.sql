-- Credentials: one per user. `pending` while registration creates the
-- profile in the user service; only `active` credentials can log in.
CREATE TABLE credentials (
    user_id        UUID PRIMARY KEY,
    -- Lower-cased email: one account per address whatever its letter case.
    email_lower    TEXT NOT NULL CONSTRAINT credentials_email_lower_key UNIQUE,
    password_hash  TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'active')),
    -- Comma-separated role names, copied into access tokens.
    roles          TEXT NOT NULL DEFAULT 'user',
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);

-- A login session. Only hashes of refresh tokens are stored; rotation keeps
-- the previous hash to recognise a replayed (stolen) token.
CREATE TABLE sessions (
    id             UUID PRIMARY KEY,
    user_id        UUID NOT NULL REFERENCES credentials (user_id) ON DELETE CASCADE,
    refresh_hash   BYTEA NOT NULL CONSTRAINT sessions_refresh_hash_key UNIQUE,
    previous_hash  BYTEA,
    created_at     TIMESTAMPTZ NOT NULL,
    last_used_at   TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    revoked_at     TIMESTAMPTZ
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_previous_hash_idx ON sessions (previous_hash);

-- Ed25519 signing keys. Every replica signs with the oldest active key, so
-- replicas agree; all active keys are published in the JWKS.
CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,
    private_pkcs8  BYTEA NOT NULL,
    public_key     BYTEA NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    retired_at     TIMESTAMPTZ
);

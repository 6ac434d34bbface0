-- SQLite twin of the PostgreSQL migration (UUIDs as blobs, times as text).
-- Second factor: one TOTP authenticator per user, its secret sealed under
-- the KEK `kek_id`; `confirmed_at` NULL while not yet proven (MFA off);
-- `last_step` the newest time step accepted (a code is used once).
CREATE TABLE totp_factors (
    user_id        BLOB PRIMARY KEY REFERENCES credentials (user_id) ON DELETE CASCADE,
    sealed_secret  BLOB NOT NULL,
    kek_id         TEXT NOT NULL,
    last_step      INTEGER NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL,
    confirmed_at   TEXT
);

-- Single-use recovery codes, as SHA-256 of the code.
CREATE TABLE recovery_codes (
    user_id    BLOB NOT NULL REFERENCES credentials (user_id) ON DELETE CASCADE,
    code_hash  BLOB NOT NULL,
    used_at    TEXT,
    PRIMARY KEY (user_id, code_hash)
);

-- Sign-ins waiting for their second factor, by SHA-256 of the mfa_token.
CREATE TABLE mfa_challenges (
    token_hash  BLOB PRIMARY KEY,
    user_id     BLOB NOT NULL REFERENCES credentials (user_id) ON DELETE CASCADE,
    expires_at  TEXT NOT NULL,
    failures    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX mfa_challenges_user_idx ON mfa_challenges (user_id);

-- Email verification: when the account's email was proven to be theirs.
ALTER TABLE credentials ADD COLUMN email_verified_at TIMESTAMPTZ;

-- Single-use, short-lived tokens mailed to the account's address (only
-- their SHA-256 is kept): verifying the email, resetting the password.
-- `email_lower` is the address the token was sent to: a verification
-- proves that address only.
CREATE TABLE account_tokens (
    token_hash   BYTEA PRIMARY KEY,
    user_id      UUID NOT NULL REFERENCES credentials (user_id) ON DELETE CASCADE,
    purpose      TEXT NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    email_lower  TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    used_at      TIMESTAMPTZ
);
CREATE INDEX account_tokens_user_idx ON account_tokens (user_id, purpose);

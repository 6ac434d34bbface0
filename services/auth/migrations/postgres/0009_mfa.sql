-- Second factor: one TOTP authenticator per user. Its secret is sealed
-- (AES-256-GCM under the KEK `kek_id`, bound to the user id); `confirmed_at`
-- is NULL while it is enrolled but not yet proven with a code (MFA off).
-- `last_step` is the newest time step accepted: a code is used once.
CREATE TABLE totp_factors (
    user_id        UUID PRIMARY KEY REFERENCES credentials (user_id) ON DELETE CASCADE,
    sealed_secret  BYTEA NOT NULL,
    kek_id         TEXT NOT NULL,
    last_step      BIGINT NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL,
    confirmed_at   TIMESTAMPTZ
);

-- Single-use recovery codes, as SHA-256 of the code (80 random bits).
CREATE TABLE recovery_codes (
    user_id    UUID NOT NULL REFERENCES credentials (user_id) ON DELETE CASCADE,
    code_hash  BYTEA NOT NULL,
    used_at    TIMESTAMPTZ,
    PRIMARY KEY (user_id, code_hash)
);

-- A sign-in whose password was right, waiting for its second factor: the
-- `mfa_token` handed out (as SHA-256), short-lived, dropped after a few
-- wrong codes or once used.
CREATE TABLE mfa_challenges (
    token_hash  BYTEA PRIMARY KEY,
    user_id     UUID NOT NULL REFERENCES credentials (user_id) ON DELETE CASCADE,
    expires_at  TIMESTAMPTZ NOT NULL,
    failures    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX mfa_challenges_user_idx ON mfa_challenges (user_id);

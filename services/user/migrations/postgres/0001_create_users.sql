-- Profiles owned by the user service. The id is minted by auth (UUIDv7).
CREATE TABLE users (
    id            UUID PRIMARY KEY,
    email         TEXT NOT NULL,
    -- Lower-cased email: one account per address whatever its letter case.
    email_lower   TEXT NOT NULL CONSTRAINT users_email_lower_key UNIQUE,
    display_name  TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'active',
    -- Bumped on every change; the ETag of the profile.
    version       BIGINT NOT NULL DEFAULT 1,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

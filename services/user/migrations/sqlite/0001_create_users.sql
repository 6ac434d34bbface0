-- Profiles owned by the user service. The id is minted by auth (UUIDv7),
-- stored as a 16-byte blob; times are RFC 3339 text.
CREATE TABLE users (
    id            BLOB PRIMARY KEY,
    email         TEXT NOT NULL,
    -- Lower-cased email: one account per address whatever its letter case.
    email_lower   TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'active',
    -- Bumped on every change; the ETag of the profile.
    version       INTEGER NOT NULL DEFAULT 1,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

-- SQLite twin of the PostgreSQL migration: times as RFC 3339 text.
-- Signing keys rotate: each has a generation (replicas racing to rotate
-- collide on it, so one new key is made), a moment it starts signing
-- (published before that, so verifiers' cached JWKS know it first), and its
-- private half sealed with AES-256-GCM under a key-encryption key named by
-- kek_id (NULL: a row from before encryption, sealed at the next start).
ALTER TABLE signing_keys ADD COLUMN generation INTEGER;
ALTER TABLE signing_keys ADD COLUMN signs_from TEXT;
ALTER TABLE signing_keys ADD COLUMN kek_id TEXT;
-- Until now there was exactly one key (the bootstrap row guaranteed it).
UPDATE signing_keys SET generation = 1, signs_from = created_at;
CREATE UNIQUE INDEX signing_keys_generation_key ON signing_keys (generation);

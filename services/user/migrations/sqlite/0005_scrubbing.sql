-- When a deleted account's personal data was scrubbed (NULL: not yet).
ALTER TABLE users ADD COLUMN scrubbed_at TEXT;
CREATE INDEX users_to_scrub ON users (updated_at) WHERE status = 'deleted' AND scrubbed_at IS NULL;

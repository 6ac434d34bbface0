-- The admin directory: pages by id (UUIDv7, so creation order), search by
-- email prefix and by display-name substring. The trigram index serves
-- `lower(display_name) LIKE '%…%'` (pg_trgm is a trusted extension: the
-- database's owner may create it).
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX users_email_prefix ON users (email_lower text_pattern_ops);
CREATE INDEX users_display_name_trigram ON users USING gin (lower(display_name) gin_trgm_ops);

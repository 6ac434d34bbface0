-- The admin directory pages by id (the primary key, UUIDv7, so creation
-- order), filtered by status. Search by email prefix and display-name
-- substring scans the page's range: the embedded database is for small
-- installations (PostgreSQL indexes both).
CREATE INDEX users_status ON users (status, id);

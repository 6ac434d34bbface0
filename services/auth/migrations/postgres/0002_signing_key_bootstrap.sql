-- At most one row: the replica that inserts it creates the first signing
-- key; replicas starting at the same time wait on it and then use that key.
CREATE TABLE signing_key_bootstrap (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    kid  TEXT NOT NULL
);

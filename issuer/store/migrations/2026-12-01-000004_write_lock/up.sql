-- One row that every write transaction updates first. On SQLite this takes the write lock
-- at the start of the transaction (as BEGIN IMMEDIATE would), so that two connections of
-- one pool never deadlock upgrading a read lock, and the busy timeout orders them instead.
-- PostgreSQL uses a transaction-scoped advisory lock for the same purpose.
CREATE TABLE write_lock (
    id INTEGER PRIMARY KEY NOT NULL,
    n BIGINT NOT NULL
);
INSERT INTO write_lock (id, n) VALUES (1, 0);

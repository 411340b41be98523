-- Signed checkpoints of the audit chain: the record count and head hash, signed with the
-- audit key in the token (the JSON `signed`). Whoever can write to the database can
-- append records or cut the tail, but cannot make a checkpoint.
CREATE TABLE audit_checkpoints (
    records BIGINT PRIMARY KEY NOT NULL,
    at BIGINT NOT NULL,
    head TEXT NOT NULL,
    signed TEXT NOT NULL
);

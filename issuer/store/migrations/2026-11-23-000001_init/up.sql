-- The issuer's schema. Written in the SQL that SQLite and PostgreSQL share: keys are
-- assigned by the application (no AUTOINCREMENT/SERIAL), binary columns are BYTEA (SQLite
-- stores blobs as given under any declared type), times are Unix seconds in BIGINT.

-- The CA's own key pairs and certificates: the root, the issuing CA, the OCSP responder.
CREATE TABLE authorities (
    role TEXT PRIMARY KEY NOT NULL,
    key_label TEXT NOT NULL,
    key_alg TEXT NOT NULL,
    certificate BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

-- API tokens: only a SHA-256 of the token is stored.
CREATE TABLE api_tokens (
    token_hash BYTEA PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- The audit trail: a hash chain (each record's hash covers the previous hash), appended in
-- the same transaction as the change it records.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY NOT NULL,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash BYTEA NOT NULL
);

-- Officers' sessions in the admin portal, shared by every server on the database: the
-- cookie's SHA-256 (never the cookie), the credential the officer signed in with (checked
-- again on every request: a revoked service ID ends its sessions), and the times the idle
-- and hard limits are measured from.
CREATE TABLE portal_sessions (
    token_sha256 BYTEA PRIMARY KEY NOT NULL,
    officer_id TEXT NOT NULL REFERENCES officers (id),
    credential TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    ended_at BIGINT
);
CREATE INDEX portal_sessions_officer ON portal_sessions (officer_id);

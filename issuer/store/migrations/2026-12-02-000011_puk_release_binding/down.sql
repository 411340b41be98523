DROP TABLE puk_releases;
CREATE TABLE puk_releases (
    approval_id TEXT PRIMARY KEY NOT NULL REFERENCES approvals (id),
    carrier_id TEXT NOT NULL REFERENCES carriers (id),
    code_sha256 BYTEA NOT NULL,
    verification TEXT NOT NULL,
    released_at BIGINT
);
CREATE INDEX puk_releases_carrier ON puk_releases (carrier_id);

-- A release bound to the holder and to the card's card-authentication certificate at the
-- request, with the approver's release code (SHA-256), when the channel escrowed the new
-- PUK it set on the card, and when the release was closed unused (refused, lapsed, or the
-- card left ACTIVE). Releases are a day's business: the table is made anew (an open
-- release of the earlier form is dropped, as it would have lapsed).
DROP TABLE puk_releases;
CREATE TABLE puk_releases (
    approval_id TEXT PRIMARY KEY NOT NULL REFERENCES approvals (id),
    carrier_id TEXT NOT NULL REFERENCES carriers (id),
    person_id TEXT NOT NULL REFERENCES people (id),
    certificate TEXT NOT NULL,
    code_sha256 BYTEA NOT NULL,
    approver_code_sha256 BYTEA,
    verification TEXT NOT NULL,
    released_at BIGINT,
    rotated_at BIGINT,
    closed_at BIGINT
);
CREATE INDEX puk_releases_carrier ON puk_releases (carrier_id);

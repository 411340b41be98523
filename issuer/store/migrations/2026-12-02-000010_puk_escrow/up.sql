-- PIN unblock (LIFECYCLE.md, PIN and PUK). A card's PUK as the personalisation set it,
-- sealed by the token (AES-256-GCM under a key that never leaves it, bound to the carrier):
-- the database alone reveals none.
CREATE TABLE carrier_puks (
    carrier_id TEXT PRIMARY KEY NOT NULL REFERENCES carriers (id),
    sealed BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

-- A release asked for by the service desk for the holder (its approval is a second
-- officer's), bound to the holder and to the card's card-authentication certificate at the
-- request: the requester's and the approver's release codes as SHA-256, how the holder was
-- verified, when the card's channel took the PUK (once), when it escrowed the new PUK it
-- set on the card, and when the release was closed unused (the card left ACTIVE, the
-- request was refused or lapsed).
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

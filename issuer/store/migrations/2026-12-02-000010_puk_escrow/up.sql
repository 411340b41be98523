-- PIN unblock (LIFECYCLE.md, PIN and PUK). A card's PUK as the personalisation set it,
-- sealed by the token (AES-256-GCM under a key that never leaves it, bound to the carrier):
-- the database alone reveals none.
CREATE TABLE carrier_puks (
    carrier_id TEXT PRIMARY KEY NOT NULL REFERENCES carriers (id),
    sealed BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

-- A release asked for by the service desk for the holder (its approval is a second
-- officer's): the holder's release code as its SHA-256, how the holder was verified, and
-- when the card's channel took the PUK (once).
CREATE TABLE puk_releases (
    approval_id TEXT PRIMARY KEY NOT NULL REFERENCES approvals (id),
    carrier_id TEXT NOT NULL REFERENCES carriers (id),
    code_sha256 BYTEA NOT NULL,
    verification TEXT NOT NULL,
    released_at BIGINT
);
CREATE INDEX puk_releases_carrier ON puk_releases (carrier_id);

-- The registration authority: officers and their tokens, people and their identity
-- proofings, carriers and the certificates on them, and four-eyes approvals. States are
-- the snake_case names of tessera_issuer_types::lifecycle; times are Unix seconds.

CREATE TABLE officers (
    id TEXT PRIMARY KEY NOT NULL,
    display_name TEXT NOT NULL,
    -- Comma-separated role names, sorted.
    roles TEXT NOT NULL,
    person_id TEXT,
    created_at BIGINT NOT NULL,
    -- Set when the officer leaves or is removed: their tokens stop working.
    disabled_at BIGINT
);

-- Officer tokens: only a SHA-256 of the token is stored.
CREATE TABLE officer_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    token_hash BYTEA NOT NULL UNIQUE,
    officer_id TEXT NOT NULL REFERENCES officers (id),
    label TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE people (
    id TEXT PRIMARY KEY NOT NULL,
    employee_number TEXT NOT NULL UNIQUE,
    given_name TEXT NOT NULL,
    family_name TEXT NOT NULL,
    email TEXT,
    upn TEXT,
    identity_number TEXT UNIQUE,
    -- The non-resident data set (birth date, nationality) as JSON.
    non_resident TEXT,
    protected_identity BOOLEAN NOT NULL,
    -- The person's Active Directory SID (S-1-5-21-…), for strong certificate mapping.
    directory_sid TEXT,
    state TEXT NOT NULL,
    proofed_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- A logon name and a directory SID name one person: the certificate carries them.
CREATE UNIQUE INDEX people_upn ON people (upn);
CREATE UNIQUE INDEX people_directory_sid ON people (directory_sid);

CREATE TABLE proofings (
    id TEXT PRIMARY KEY NOT NULL,
    person_id TEXT NOT NULL REFERENCES people (id),
    document_type TEXT NOT NULL,
    document_number TEXT NOT NULL,
    issuing_country TEXT NOT NULL,
    document_expiry TEXT NOT NULL,
    officer_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    place TEXT NOT NULL
);

CREATE TABLE carriers (
    id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    serial_number TEXT NOT NULL,
    state TEXT NOT NULL,
    person_id TEXT REFERENCES people (id),
    suspend_reason TEXT,
    deadline BIGINT,
    revoke_reason TEXT,
    original_id TEXT REFERENCES carriers (id),
    ends_at BIGINT,
    terms_version TEXT,
    terms_accepted_at BIGINT,
    receipt TEXT,
    -- The four-eyes approval of the current assignment.
    approval_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (kind, serial_number)
);
CREATE INDEX carriers_person ON carriers (person_id);
-- The deadline sweep reads suspended and temporary carriers by time.
CREATE INDEX carriers_deadline ON carriers (state, deadline);

-- The holder's loss-report code for their card (given once, at hand-over), as SHA-256.
CREATE TABLE loss_codes (
    code_hash BYTEA PRIMARY KEY NOT NULL,
    carrier_id TEXT NOT NULL UNIQUE REFERENCES carriers (id)
);

-- The certificates a carrier carries; a pool card's earlier holders' certificates stay
-- as history, released (released_at) when the card was wiped and restocked.
CREATE TABLE carrier_certificates (
    serial TEXT PRIMARY KEY NOT NULL REFERENCES certificates (serial),
    carrier_id TEXT NOT NULL REFERENCES carriers (id),
    released_at BIGINT
);
CREATE INDEX carrier_certificates_carrier ON carrier_certificates (carrier_id);

CREATE TABLE approvals (
    id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    carrier_id TEXT NOT NULL REFERENCES carriers (id),
    person_id TEXT NOT NULL REFERENCES people (id),
    requested_by TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    -- The certificate subject (JSON) as it stood when asked for: what the approver sees
    -- and what is issued, whatever HR changes afterwards.
    subject TEXT NOT NULL,
    state TEXT NOT NULL,
    decided_by TEXT,
    decided_at BIGINT
);
CREATE INDEX approvals_carrier ON approvals (carrier_id);

-- Bulk revocations (K6.9): asked for by one officer, carried out when a second approves.
CREATE TABLE bulk_revocations (
    id TEXT PRIMARY KEY NOT NULL,
    reason TEXT NOT NULL,
    -- The carriers and their holders when named, as a JSON array, and its SHA-256 (hex),
    -- which the chained audit record repeats.
    carriers TEXT NOT NULL,
    carriers_sha256 TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    state TEXT NOT NULL,
    decided_by TEXT,
    decided_at BIGINT
);

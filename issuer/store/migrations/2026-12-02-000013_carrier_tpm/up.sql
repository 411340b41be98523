-- The TPM a TPM virtual card's keys live in, recorded at enrolment: SHA-256 of its
-- endorsement key (SubjectPublicKeyInfo, hex), and the name of the card's PIN index (hex)
-- its PIN-bound keys' policies name. A renewal's new keys must be proven in the same TPM
-- and bound to the same PIN index.
CREATE TABLE carrier_tpm (
    carrier_id TEXT PRIMARY KEY NOT NULL REFERENCES carriers (id),
    ek_key_sha256 TEXT NOT NULL,
    pin_index_name TEXT,
    enrolled_at BIGINT NOT NULL
);

-- The certificate a TPM virtual card signed its renewal with, on each certificate that
-- renewal issued: a renewal started again replaces exactly those of its unfinished
-- predecessor, never the certificates the card carries.
ALTER TABLE carrier_certificates ADD COLUMN renewal_signed_by TEXT;

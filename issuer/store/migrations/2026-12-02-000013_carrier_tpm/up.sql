-- The TPM a TPM virtual card's keys live in (SHA-256 of its endorsement key certificate,
-- hex), recorded at enrolment: a renewal's new keys must be proven in the same TPM.
CREATE TABLE carrier_tpm (
    carrier_id TEXT PRIMARY KEY NOT NULL REFERENCES carriers (id),
    ek_sha256 TEXT NOT NULL,
    enrolled_at BIGINT NOT NULL
);

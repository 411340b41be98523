-- Officers' passkeys for the admin portal. A passkey is registered inside a session begun
-- with the officer's card and stays bound to that card's authentication certificate: it
-- signs in only while that certificate is a good service ID of the officer's. The
-- credential itself (public key, counter, attestation) is the portal's WebAuthn library's
-- serialisation, opaque here.
CREATE TABLE portal_passkeys (
    id TEXT PRIMARY KEY NOT NULL,
    officer_id TEXT NOT NULL REFERENCES officers (id),
    certificate_serial TEXT NOT NULL,
    label TEXT NOT NULL,
    credential TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used BIGINT,
    removed_at BIGINT
);
CREATE INDEX portal_passkeys_officer ON portal_passkeys (officer_id);

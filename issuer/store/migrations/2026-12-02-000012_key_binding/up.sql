-- The key each carrier's certificate certifies (SHA-256 of its SubjectPublicKeyInfo, hex):
-- one key is certified on one carrier only, so that revoking a lost carrier revokes every
-- certificate of its keys. Certificates from before this migration have none.
ALTER TABLE carrier_certificates ADD COLUMN spki_sha256 TEXT;
CREATE INDEX carrier_certificates_spki ON carrier_certificates (spki_sha256);

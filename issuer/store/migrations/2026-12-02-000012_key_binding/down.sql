DROP INDEX carrier_certificates_spki;
ALTER TABLE carrier_certificates DROP COLUMN spki_sha256;

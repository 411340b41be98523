ALTER TABLE carrier_certificates DROP COLUMN renewal_signed_by;
DROP TABLE carrier_tpm;

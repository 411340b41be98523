DROP TABLE carrier_tpm;

DROP TABLE portal_passkeys;

-- Certificates of more than one authority share the table (the issuing CA's, and the
-- issuer's own HTTPS certificates from its TLS CA): a CRL lists only its own authority's.
-- The index that makes a CRL page an index-only range scan leads with the authority.
DROP INDEX certificates_revoked;
CREATE INDEX certificates_revoked ON certificates (authority, serial, revoked_at, revocation_reason, not_after)
    WHERE revoked_at IS NOT NULL;

-- The portal's chart counts certificates issued and revoked per week: by time, not by a
-- scan of every certificate.
CREATE INDEX certificates_created_at ON certificates (created_at);
CREATE INDEX certificates_revoked_at ON certificates (revoked_at);

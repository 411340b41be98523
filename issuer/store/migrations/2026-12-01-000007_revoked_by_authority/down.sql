DROP INDEX certificates_revoked;
CREATE INDEX certificates_revoked ON certificates (serial, revoked_at, revocation_reason, not_after)
    WHERE revoked_at IS NOT NULL;

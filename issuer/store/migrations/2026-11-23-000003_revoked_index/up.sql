-- The CRL reads every revoked certificate in pages ordered by serial. A partial index that
-- carries the columns the CRL needs makes each page a range scan of the index alone (no
-- lookup into the table per row), on SQLite and PostgreSQL alike.
CREATE INDEX certificates_revoked ON certificates (serial, revoked_at, revocation_reason, not_after)
    WHERE revoked_at IS NOT NULL;

-- Certificates. A row is written as an intent (the TBS certificate, serial unique by
-- constraint) and committed before the token signs; the signed certificate is stored
-- afterwards. Revocation works on the row, so a certificate whose final store failed is
-- still revocable (Boulder's order: intent, sign, store).
CREATE TABLE certificates (
    serial TEXT PRIMARY KEY NOT NULL,
    authority TEXT NOT NULL,
    profile TEXT NOT NULL,
    status TEXT NOT NULL,
    tbs BYTEA NOT NULL,
    certificate BYTEA,
    not_after BIGINT NOT NULL,
    revoked_at BIGINT,
    revocation_reason TEXT,
    created_at BIGINT NOT NULL
);

-- Every CRL issued, numbered per authority (RFC 5280 §5.2.3: monotonically increasing).
CREATE TABLE crls (
    authority TEXT NOT NULL,
    number BIGINT NOT NULL,
    this_update BIGINT NOT NULL,
    crl BYTEA NOT NULL,
    PRIMARY KEY (authority, number)
);

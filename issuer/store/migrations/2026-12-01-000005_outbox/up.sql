-- The status feed: every status change (issued, revoked, held, released) is appended here in
-- the same transaction as the change. OCSP caches and CRL publishing (in every issuer
-- process), and later the IdP and shared-device agents, follow it by sequence number; on
-- PostgreSQL a NOTIFY on channel tessera_outbox wakes followers at commit.
CREATE TABLE outbox (
    seq BIGINT PRIMARY KEY NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    serial TEXT
);

-- CRL numbers are reserved before the CRL is signed, each with the outbox position its
-- snapshot of the revoked certificates reached: a number is never used twice, and a higher
-- number never describes an older state (RFC 5280 §5.2.3).
CREATE TABLE crl_numbers (
    authority TEXT NOT NULL,
    number BIGINT NOT NULL,
    upto BIGINT NOT NULL,
    reserved_at BIGINT NOT NULL,
    PRIMARY KEY (authority, number)
);

-- Relying parties to tell that a session ended (Single Logout over the SOAP back channel),
-- queued in the transaction that ends the session so that none is forgotten, whoever
-- ended it and whichever server sends. reason: user or admin (SAML's logout reasons).
-- next_at: when the next attempt is due (a sender leases a row by moving it ahead);
-- done_at and outcome once it is answered or given up.
CREATE TABLE logout_notices (
    session_id TEXT NOT NULL,
    relying_party TEXT NOT NULL,
    person_id TEXT NOT NULL,
    session_index TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at BIGINT NOT NULL,
    done_at BIGINT,
    outcome TEXT,
    PRIMARY KEY (session_id, relying_party)
);
CREATE INDEX logout_notices_due ON logout_notices (done_at, next_at);

-- The IdP's state: everything a second server on the same database needs (services are
-- stateless). Secrets that browsers hold (session cookies, tickets, request bindings) are
-- stored as SHA-256 hashes, so a copy of the database logs nobody in.

-- SQLite: a write takes this row first, so writers queue instead of deadlocking on an
-- upgrade from a read lock. PostgreSQL uses an advisory lock instead.
CREATE TABLE write_lock (
    id INTEGER PRIMARY KEY NOT NULL,
    n BIGINT NOT NULL
);
INSERT INTO write_lock (id, n) VALUES (1, 0);

-- AuthnRequest IDs seen, per relying party, until the request could no longer be
-- accepted anyway (its maximum age): a replayed request finds its row.
CREATE TABLE seen_requests (
    relying_party TEXT NOT NULL,
    request_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (relying_party, request_id)
);
CREATE INDEX seen_requests_expiry ON seen_requests (expires_at);

-- Requests accepted and waiting for the user (login, attribute release), bound to the
-- browser that brought them (browser_hash: the hash of a cookie set then).
CREATE TABLE pending (
    id TEXT PRIMARY KEY NOT NULL,
    browser_hash TEXT NOT NULL,
    relying_party TEXT NOT NULL,
    request TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX pending_expiry ON pending (expires_at);

-- SSO sessions. id: a random name for administrators (not a secret); cookie_hash: the
-- hash of the browser's cookie, set when the SSO host takes the login host's ticket.
-- holder: the person's attributes as the issuer gave them at login, JSON. Ended (ended_at) by the user, an administrator or the
-- issuer's status feed; never reused after expires_at (60 minutes from the login).
CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    cookie_hash TEXT UNIQUE,
    person_id TEXT NOT NULL,
    serial TEXT NOT NULL,
    loa TEXT NOT NULL,
    holder TEXT NOT NULL,
    address TEXT NOT NULL,
    authn_instant BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    ended_at BIGINT,
    end_reason TEXT
);
CREATE INDEX sessions_serial ON sessions (serial);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- The relying parties a session answered, with the SessionIndex each was given.
CREATE TABLE session_uses (
    session_id TEXT NOT NULL REFERENCES sessions (id),
    relying_party TEXT NOT NULL,
    session_index TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (session_id, relying_party)
);

-- One-time hand-overs from the login host (where the card's TLS login happens) back to
-- the SSO host, valid for a minute (id: the hash of the ticket).
CREATE TABLE tickets (
    id TEXT PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL REFERENCES sessions (id),
    pending_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Remembered attribute releases: this person let these attributes go to this relying
-- party without asking again (until withdrawn, or until the set changes).
CREATE TABLE consents (
    person_id TEXT NOT NULL,
    relying_party TEXT NOT NULL,
    attributes TEXT NOT NULL,
    given_at BIGINT NOT NULL,
    PRIMARY KEY (person_id, relying_party)
);

-- Certificates the status feed said were revoked or put on hold (a hold lifted removes
-- the row), with the event's position: a login whose holder lookup is older than such an
-- event is refused, whichever of the two commits first.
CREATE TABLE ended_serials (
    serial TEXT PRIMARY KEY NOT NULL,
    seq BIGINT NOT NULL
);

-- How far the issuer's status feed has been followed.
CREATE TABLE feed_cursor (
    id INTEGER PRIMARY KEY NOT NULL,
    seq BIGINT NOT NULL
);
INSERT INTO feed_cursor (id, seq) VALUES (1, 0);

-- The audit trail, a hash chain as the issuer's (tessera_issuer_types::audit::record_hash).
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY NOT NULL,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash BYTEA NOT NULL
);

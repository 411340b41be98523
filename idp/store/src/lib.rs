//! The IdP's database: the only crate of the IdP that talks to SQLite or PostgreSQL
//! (diesel), as `tessera-issuer-store` is for the issuer — a separate database, since the
//! IdP never reads the issuer's.
//!
//! What it holds: the AuthnRequest IDs seen (replay), requests waiting for the user, SSO
//! sessions and the relying parties they answered, the one-time tickets from the login
//! host, remembered attribute releases, how far the issuer's status feed was followed, and
//! the audit trail, hash-chained exactly as the issuer's. Every change and its audit record
//! commit together: callers write both inside one [`Store::write`].

use std::path::Path;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use tessera_issuer_types::audit::{record_hash, AuditRecord, GENESIS};

mod schema;

use schema::{
    audit_log, consents, ended_serials, feed_cursor, logout_notices, pending, seen_requests,
    session_uses, sessions, tickets,
};

/// Why the database did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached.
    #[error("the IdP database is unavailable: {0}")]
    Unavailable(String),
    #[error("IdP database error: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("migrating the IdP database: {0}")]
    Migration(String),
}

impl From<diesel::r2d2::PoolError> for StoreError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// Where the database is.
#[derive(Debug, Clone, Copy)]
pub enum Location<'a> {
    Sqlite(&'a Path),
    /// A `postgres://` URL.
    Postgres(&'a str),
}

/// A connection to either backend; every query is written once for both.
#[derive(diesel::MultiConnection)]
pub(crate) enum Conn {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// SQLite: WAL (readers go on during a write), foreign keys, and a wait for another
/// process's write instead of an error.
fn prepare(conn: &mut Conn) -> Result<(), diesel::result::Error> {
    if let Conn::Sqlite(c) = conn {
        c.batch_execute(
            "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
        )?;
    }
    Ok(())
}

#[derive(Debug)]
struct Customizer;

impl CustomizeConnection<Conn, diesel::r2d2::Error> for Customizer {
    fn on_acquire(&self, conn: &mut Conn) -> Result<(), diesel::r2d2::Error> {
        prepare(conn).map_err(diesel::r2d2::Error::QueryError)
    }
}

/// The database: a pool of connections.
#[derive(Clone)]
pub struct Store {
    pool: Pool<ConnectionManager<Conn>>,
    postgres: bool,
    /// SQLite: this process's writers queue here rather than in SQLite's busy handler.
    writers: std::sync::Arc<std::sync::Mutex<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("postgres", &self.postgres)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the database (an SQLite file is created), bringing the schema up to date.
    pub fn open(location: Location<'_>) -> Result<Self, StoreError> {
        let (url, postgres, size) = match location {
            Location::Sqlite(path) => (
                path.to_str()
                    .ok_or_else(|| {
                        StoreError::Unavailable(format!("path is not UTF-8: {}", path.display()))
                    })?
                    .to_owned(),
                false,
                4,
            ),
            Location::Postgres(url) if url.contains("gssencmode=") => (url.to_owned(), true, 8),
            Location::Postgres(url) => {
                let sep = if url.contains('?') { '&' } else { '?' };
                (format!("{url}{sep}gssencmode=disable"), true, 8)
            }
        };
        let mut first =
            Conn::establish(&url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        prepare(&mut first)?;
        first
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        let pool = Pool::builder()
            .max_size(size)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .test_on_check_out(true)
            .connection_customizer(Box::new(Customizer))
            .build(ConnectionManager::new(url))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            pool,
            postgres,
            writers: std::sync::Arc::default(),
        })
    }

    fn conn(&self) -> Result<PooledConnection<ConnectionManager<Conn>>, StoreError> {
        Ok(self.pool.get()?)
    }

    /// Runs `f` in a transaction that writes, one writer at a time across every server on
    /// the database (PostgreSQL: an advisory lock; SQLite: the write lock row, first).
    /// Commits if `f` returns `Ok`; rolls back everything `f` did if not.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let _queued =
            (!self.postgres).then(|| self.writers.lock().unwrap_or_else(|p| p.into_inner()));
        let first = if self.postgres {
            "SELECT pg_advisory_xact_lock(7302020)"
        } else {
            "UPDATE write_lock SET n = n + 1 WHERE id = 1"
        };
        let mut conn = self.conn()?;
        let mut outcome = None;
        let r = conn.transaction(|c| -> Result<(), diesel::result::Error> {
            diesel::sql_query(first).execute(c)?;
            let r = f(&mut Tx { conn: c });
            let failed = r.is_err();
            outcome = Some(r);
            if failed {
                Err(diesel::result::Error::RollbackTransaction)
            } else {
                Ok(())
            }
        });
        match (r, outcome) {
            (_, Some(Err(e))) => Err(e),
            (Ok(()), Some(Ok(v))) => Ok(v),
            (Err(e), _) => Err(StoreError::Query(e).into()),
            (Ok(()), None) => {
                Err(StoreError::Query(diesel::result::Error::RollbackTransaction).into())
            }
        }
    }

    /// Runs `f` on a connection, outside a write transaction.
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.conn()?;
        f(&mut Tx { conn: &mut conn })
    }
}

/// The queries, on one connection (inside a transaction when from [`Store::write`]).
pub struct Tx<'a> {
    conn: &'a mut Conn,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tx")
    }
}

/// A request accepted and waiting for the user.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = pending)]
pub struct Pending {
    pub id: String,
    /// The hash of the cookie given to the browser that brought the request.
    pub browser_hash: String,
    pub relying_party: String,
    /// What the SSO step needs to answer it, JSON (the IdP's own type).
    pub request: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// An SSO session.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = sessions)]
pub struct Session {
    /// A random name for administrators (not a secret).
    pub id: String,
    /// The hash of the browser's session cookie, once the SSO host has set it.
    pub cookie_hash: Option<String>,
    pub person_id: String,
    /// The certificate the user logged in with (hex serial, as the issuer writes it).
    pub serial: String,
    pub loa: String,
    /// The holder's attributes at login, JSON.
    pub holder: String,
    /// The browser's address at login.
    pub address: String,
    pub authn_instant: i64,
    pub expires_at: i64,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
}

impl Session {
    /// Whether it may answer a request at `now`.
    pub fn live(&self, now: i64) -> bool {
        self.ended_at.is_none() && now < self.expires_at
    }
}

/// A remembered attribute release.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = consents)]
pub struct Consent {
    pub person_id: String,
    pub relying_party: String,
    /// The attribute names released, sorted, comma-separated: a different set asks again.
    pub attributes: String,
    pub given_at: i64,
}

/// Who ended a session, as SAML's LogoutRequest says it (core §3.7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// The user logged out.
    User,
    /// An administrator, or the issuer's status feed (a revocation or hold).
    Admin,
}

impl EndedBy {
    fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }
}

/// A relying party to tell that a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = logout_notices)]
pub struct LogoutNotice {
    pub session_id: String,
    pub relying_party: String,
    pub person_id: String,
    pub session_index: String,
    /// `user` or `admin`.
    pub reason: String,
    pub created_at: i64,
    pub attempts: i32,
    pub next_at: i64,
    pub done_at: Option<i64>,
    pub outcome: Option<String>,
}

/// An audit record as stored.
#[derive(Queryable, Selectable)]
#[diesel(table_name = audit_log)]
struct AuditRow {
    seq: i64,
    at: i64,
    actor: String,
    action: String,
    details: String,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

impl Tx<'_> {
    /// Records that `relying_party` sent request `id`, kept until `expires_at`; false when
    /// it was seen before (a replay). Rows past their time are dropped on the way.
    pub fn remember_request(
        &mut self,
        relying_party: &str,
        id: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        diesel::delete(seen_requests::table.filter(seen_requests::expires_at.lt(now)))
            .execute(self.conn)?;
        let seen: i64 = seen_requests::table
            .filter(seen_requests::relying_party.eq(relying_party))
            .filter(seen_requests::request_id.eq(id))
            .count()
            .get_result(self.conn)?;
        if seen > 0 {
            return Ok(false);
        }
        diesel::insert_into(seen_requests::table)
            .values((
                seen_requests::relying_party.eq(relying_party),
                seen_requests::request_id.eq(id),
                seen_requests::expires_at.eq(expires_at),
            ))
            .execute(self.conn)?;
        Ok(true)
    }

    pub fn put_pending(&mut self, p: &Pending, now: i64) -> Result<(), StoreError> {
        diesel::delete(pending::table.filter(pending::expires_at.lt(now))).execute(self.conn)?;
        diesel::insert_into(pending::table)
            .values(p)
            .execute(self.conn)?;
        Ok(())
    }

    /// A waiting request that has not expired.
    pub fn pending(&mut self, id: &str, now: i64) -> Result<Option<Pending>, StoreError> {
        Ok(pending::table
            .find(id)
            .filter(pending::expires_at.ge(now))
            .select(Pending::as_select())
            .first(self.conn)
            .optional()?)
    }

    /// Removes a waiting request (answered); false if it was not there (answered already).
    pub fn take_pending(&mut self, id: &str) -> Result<bool, StoreError> {
        Ok(diesel::delete(pending::table.find(id)).execute(self.conn)? == 1)
    }

    pub fn create_session(&mut self, s: &Session) -> Result<(), StoreError> {
        diesel::insert_into(sessions::table)
            .values(s)
            .execute(self.conn)?;
        Ok(())
    }

    pub fn session(&mut self, id: &str) -> Result<Option<Session>, StoreError> {
        Ok(sessions::table
            .find(id)
            .select(Session::as_select())
            .first(self.conn)
            .optional()?)
    }

    /// The session whose cookie hashes to `cookie_hash`.
    pub fn session_by_cookie(&mut self, cookie_hash: &str) -> Result<Option<Session>, StoreError> {
        Ok(sessions::table
            .filter(sessions::cookie_hash.eq(cookie_hash))
            .select(Session::as_select())
            .first(self.conn)
            .optional()?)
    }

    /// Gives a session its cookie (once); false if it had one.
    pub fn bind_cookie(&mut self, id: &str, cookie_hash: &str) -> Result<bool, StoreError> {
        Ok(diesel::update(
            sessions::table
                .find(id)
                .filter(sessions::cookie_hash.is_null()),
        )
        .set(sessions::cookie_hash.eq(Some(cookie_hash)))
        .execute(self.conn)?
            == 1)
    }

    /// Sessions not ended nor expired at `now`, newest first, at most `limit`.
    pub fn live_sessions(&mut self, now: i64, limit: i64) -> Result<Vec<Session>, StoreError> {
        Ok(sessions::table
            .filter(sessions::ended_at.is_null())
            .filter(sessions::expires_at.gt(now))
            .order(sessions::authn_instant.desc())
            .limit(limit)
            .select(Session::as_select())
            .load(self.conn)?)
    }

    /// Ends a live session, and queues a logout notice for every relying party it
    /// answered (in this transaction: none is forgotten); false if it was not live.
    pub fn end_session(
        &mut self,
        id: &str,
        reason: &str,
        by: EndedBy,
        at: i64,
    ) -> Result<bool, StoreError> {
        let ended = diesel::update(
            sessions::table
                .find(id)
                .filter(sessions::ended_at.is_null()),
        )
        .set((
            sessions::ended_at.eq(Some(at)),
            sessions::end_reason.eq(Some(reason)),
        ))
        .execute(self.conn)?
            == 1;
        if !ended {
            return Ok(false);
        }
        let person: String = sessions::table
            .find(id)
            .select(sessions::person_id)
            .first(self.conn)?;
        for (relying_party, session_index) in self.uses(id)? {
            diesel::insert_into(logout_notices::table)
                .values((
                    logout_notices::session_id.eq(id),
                    logout_notices::relying_party.eq(&relying_party),
                    logout_notices::person_id.eq(&person),
                    logout_notices::session_index.eq(&session_index),
                    logout_notices::reason.eq(by.as_str()),
                    logout_notices::created_at.eq(at),
                    logout_notices::attempts.eq(0),
                    logout_notices::next_at.eq(at),
                ))
                .execute(self.conn)?;
        }
        Ok(true)
    }

    /// Whether a logout notice is due at `now` (a read: the sender asks every second, and
    /// a lease is a write, a disk flush, on the one write path).
    pub fn logout_notice_due(&mut self, now: i64) -> Result<bool, StoreError> {
        Ok(diesel::select(diesel::dsl::exists(
            logout_notices::table
                .filter(logout_notices::done_at.is_null())
                .filter(logout_notices::next_at.le(now)),
        ))
        .get_result(self.conn)?)
    }

    /// Up to `limit` logout notices due at `now`, leased until `lease_until` (moved ahead,
    /// so that another server on the same database leaves them alone meanwhile).
    pub fn lease_logout_notices(
        &mut self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<LogoutNotice>, StoreError> {
        let due: Vec<LogoutNotice> = logout_notices::table
            .filter(logout_notices::done_at.is_null())
            .filter(logout_notices::next_at.le(now))
            .order(logout_notices::next_at.asc())
            .limit(limit)
            .select(LogoutNotice::as_select())
            .load(self.conn)?;
        for n in &due {
            diesel::update(logout_notices::table.find((&n.session_id, &n.relying_party)))
                .set((
                    logout_notices::next_at.eq(lease_until),
                    logout_notices::attempts.eq(n.attempts + 1),
                ))
                .execute(self.conn)?;
        }
        Ok(due)
    }

    /// Records a notice's outcome: done (answered, or given up), or due again at `retry_at`
    /// — only if the sender still holds it (`leased` is its `attempts` after the lease:
    /// when the lease ran out and another server took the notice, this changes nothing
    /// and returns false).
    #[allow(clippy::too_many_arguments)]
    pub fn logout_notice_outcome(
        &mut self,
        session_id: &str,
        relying_party: &str,
        leased: i32,
        outcome: &str,
        done: bool,
        retry_at: i64,
        at: i64,
    ) -> Result<bool, StoreError> {
        let outcome: String = outcome.chars().take(500).collect();
        let row = logout_notices::table
            .find((session_id, relying_party))
            .filter(logout_notices::attempts.eq(leased))
            .filter(logout_notices::done_at.is_null());
        let changed = if done {
            diesel::update(row)
                .set((
                    logout_notices::done_at.eq(Some(at)),
                    logout_notices::outcome.eq(Some(outcome)),
                ))
                .execute(self.conn)?
        } else {
            diesel::update(row)
                .set((
                    logout_notices::next_at.eq(retry_at),
                    logout_notices::outcome.eq(Some(outcome)),
                ))
                .execute(self.conn)?
        };
        Ok(changed == 1)
    }

    /// A session's logout notices, for administrators.
    pub fn logout_notices_of(&mut self, session_id: &str) -> Result<Vec<LogoutNotice>, StoreError> {
        Ok(logout_notices::table
            .filter(logout_notices::session_id.eq(session_id))
            .order(logout_notices::created_at.asc())
            .select(LogoutNotice::as_select())
            .load(self.conn)?)
    }

    /// Ends every live session logged in with the certificate `serial`, returning them.
    pub fn end_sessions_of(
        &mut self,
        serial: &str,
        reason: &str,
        at: i64,
    ) -> Result<Vec<Session>, StoreError> {
        let live: Vec<Session> = sessions::table
            .filter(sessions::serial.eq(serial))
            .filter(sessions::ended_at.is_null())
            .select(Session::as_select())
            .load(self.conn)?;
        for s in &live {
            self.end_session(&s.id, reason, EndedBy::Admin, at)?;
        }
        Ok(live)
    }

    /// Records that a session answered `relying_party` with `session_index` (the latest
    /// answer's index kept).
    pub fn used(
        &mut self,
        session_id: &str,
        relying_party: &str,
        session_index: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        diesel::delete(
            session_uses::table
                .filter(session_uses::session_id.eq(session_id))
                .filter(session_uses::relying_party.eq(relying_party)),
        )
        .execute(self.conn)?;
        diesel::insert_into(session_uses::table)
            .values((
                session_uses::session_id.eq(session_id),
                session_uses::relying_party.eq(relying_party),
                session_uses::session_index.eq(session_index),
                session_uses::at.eq(at),
            ))
            .execute(self.conn)?;
        Ok(())
    }

    /// The relying parties a session answered, with their SessionIndex.
    pub fn uses(&mut self, session_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(session_uses::table
            .filter(session_uses::session_id.eq(session_id))
            .order(session_uses::at.asc())
            .select((session_uses::relying_party, session_uses::session_index))
            .load(self.conn)?)
    }

    pub fn put_ticket(
        &mut self,
        id: &str,
        session_id: &str,
        pending_id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        diesel::insert_into(tickets::table)
            .values((
                tickets::id.eq(id),
                tickets::session_id.eq(session_id),
                tickets::pending_id.eq(pending_id),
                tickets::expires_at.eq(expires_at),
            ))
            .execute(self.conn)?;
        Ok(())
    }

    /// Takes a ticket once: its session and waiting request if it exists and is current
    /// (spent either way, and expired ones swept).
    pub fn take_ticket(
        &mut self,
        id: &str,
        now: i64,
    ) -> Result<Option<(String, String)>, StoreError> {
        let found: Option<(String, String, i64)> = tickets::table
            .find(id)
            .select((
                tickets::session_id,
                tickets::pending_id,
                tickets::expires_at,
            ))
            .first(self.conn)
            .optional()?;
        diesel::delete(tickets::table.filter(tickets::id.eq(id).or(tickets::expires_at.lt(now))))
            .execute(self.conn)?;
        Ok(found
            .filter(|(_, _, expires)| *expires >= now)
            .map(|(s, p, _)| (s, p)))
    }

    pub fn consent(
        &mut self,
        person_id: &str,
        relying_party: &str,
    ) -> Result<Option<Consent>, StoreError> {
        Ok(consents::table
            .find((person_id, relying_party))
            .select(Consent::as_select())
            .first(self.conn)
            .optional()?)
    }

    /// Remembers a release (replacing an earlier one for the same pair).
    pub fn give_consent(&mut self, c: &Consent) -> Result<(), StoreError> {
        self.withdraw_consent(&c.person_id, &c.relying_party)?;
        diesel::insert_into(consents::table)
            .values(c)
            .execute(self.conn)?;
        Ok(())
    }

    /// Forgets a release; false if there was none.
    pub fn withdraw_consent(
        &mut self,
        person_id: &str,
        relying_party: &str,
    ) -> Result<bool, StoreError> {
        Ok(
            diesel::delete(consents::table.find((person_id, relying_party))).execute(self.conn)?
                == 1,
        )
    }

    pub fn consents_of(&mut self, person_id: &str) -> Result<Vec<Consent>, StoreError> {
        Ok(consents::table
            .filter(consents::person_id.eq(person_id))
            .order(consents::relying_party.asc())
            .select(Consent::as_select())
            .load(self.conn)?)
    }

    /// Records that the feed said `serial` was revoked or held at position `seq`.
    pub fn serial_ended(&mut self, serial: &str, seq: i64) -> Result<(), StoreError> {
        diesel::delete(ended_serials::table.find(serial)).execute(self.conn)?;
        diesel::insert_into(ended_serials::table)
            .values((ended_serials::serial.eq(serial), ended_serials::seq.eq(seq)))
            .execute(self.conn)?;
        Ok(())
    }

    /// Records that the feed said a hold on `serial` was lifted.
    pub fn serial_released(&mut self, serial: &str) -> Result<(), StoreError> {
        diesel::delete(ended_serials::table.find(serial)).execute(self.conn)?;
        Ok(())
    }

    /// Where the feed last said `serial` was revoked or held, if it did (and no lift
    /// came after).
    pub fn ended_at_seq(&mut self, serial: &str) -> Result<Option<i64>, StoreError> {
        Ok(ended_serials::table
            .find(serial)
            .select(ended_serials::seq)
            .first(self.conn)
            .optional()?)
    }

    pub fn feed_cursor(&mut self) -> Result<i64, StoreError> {
        Ok(feed_cursor::table
            .find(1)
            .select(feed_cursor::seq)
            .first(self.conn)?)
    }

    pub fn set_feed_cursor(&mut self, seq: i64) -> Result<(), StoreError> {
        diesel::update(feed_cursor::table.find(1))
            .set(feed_cursor::seq.eq(seq))
            .execute(self.conn)?;
        Ok(())
    }

    /// Appends a record to the audit chain: `details` is the event's fields as JSON text.
    pub fn audit(
        &mut self,
        actor: &str,
        action: &str,
        details: &str,
        at: i64,
    ) -> Result<AuditRecord, StoreError> {
        let last: Option<(i64, Vec<u8>)> = audit_log::table
            .select((audit_log::seq, audit_log::hash))
            .order(audit_log::seq.desc())
            .first(self.conn)
            .optional()?;
        let (seq, prev) = last.map_or((1, GENESIS.to_vec()), |(s, h)| (s + 1, h));
        let hash = record_hash(&prev, seq, at, actor, action, details);
        diesel::insert_into(audit_log::table)
            .values((
                audit_log::seq.eq(seq),
                audit_log::at.eq(at),
                audit_log::actor.eq(actor),
                audit_log::action.eq(action),
                audit_log::details.eq(details),
                audit_log::prev_hash.eq(&prev),
                audit_log::hash.eq(&hash),
            ))
            .execute(self.conn)?;
        Ok(AuditRecord {
            seq,
            at,
            actor: actor.to_owned(),
            action: action.to_owned(),
            details: details.to_owned(),
            prev_hash: hex::encode(prev),
            hash: hex::encode(hash),
        })
    }

    /// Up to `limit` audit records after `after`, in order.
    pub fn audit_page(&mut self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        let rows: Vec<AuditRow> = audit_log::table
            .filter(audit_log::seq.gt(after))
            .order(audit_log::seq.asc())
            .limit(limit)
            .select(AuditRow::as_select())
            .load(self.conn)?;
        Ok(rows
            .into_iter()
            .map(|r| AuditRecord {
                seq: r.seq,
                at: r.at,
                actor: r.actor,
                action: r.action,
                details: r.details,
                prev_hash: hex::encode(r.prev_hash),
                hash: hex::encode(r.hash),
            })
            .collect())
    }
}

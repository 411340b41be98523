//! The issuer's database, and the only crate that uses diesel: SQLite for the embedded
//! deployment, PostgreSQL in production, with the same migrations and the same queries.
//!
//! Callers get a [`Store`] (a connection pool that reconnects after a database restart)
//! and work in [`Tx`] — [`Store::write`] for a change, [`Store::read`] for a look — whose
//! methods are typed queries: statuses are enums, audit records are [`audit::AuditEvent`]s,
//! and every status change goes into the outbox in the same transaction.
#![forbid(unsafe_code)]

pub mod audit;
mod authorities;
mod certificates;
mod conn;
mod crls;
pub mod outbox;
pub mod portal;
pub mod registration;
pub mod schema;

use std::path::Path;
use std::time::Duration;

use diesel::connection::Connection;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel::RunQueryDsl;

pub use authorities::{AuthorityRole, AuthorityRow};
pub use certificates::{NewCertificate, OwnCertificate, RevokedRow};
pub use conn::{Conn, MIGRATIONS};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be reached (down, restarting, refusing connections).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A query failed.
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
    /// The schema could not be brought up to date.
    #[error("migrating the database: {0}")]
    Migration(String),
    /// A row holds what the issuer never writes (edited by hand, or a newer version's).
    #[error("unexpected data in the database: {0}")]
    Corrupt(String),
}

impl From<diesel::r2d2::PoolError> for StoreError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// Where the database is.
#[derive(Debug, Clone)]
pub enum Location<'a> {
    Sqlite(&'a Path),
    /// A `postgres://` URL, with the password if any.
    Postgres(&'a str),
}

/// The database: a pool of connections.
#[derive(Clone)]
pub struct Store {
    pool: Pool<ConnectionManager<Conn>>,
    postgres: bool,
    /// For connections outside the pool (the outbox listener). Holds the password when the
    /// configuration gave one: wiped with the store.
    url: std::sync::Arc<zeroize::Zeroizing<String>>,
    /// On SQLite, this process's writers queue here, in order, rather than in SQLite's busy
    /// handler, which sleeps in growing steps (up to 100 ms) and made the slowest issuances
    /// wait hundreds of milliseconds under load. Other processes still meet the busy
    /// handler.
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
    /// Opens the database, creating an SQLite file if needed, and brings the schema up to
    /// date. Connections are checked before use and replaced when broken, so the store
    /// recovers by itself after a database restart.
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
            Location::Postgres(url) => (without_gssapi(url), true, 8),
        };
        // The schema first, on one connection, with a clear error if the database is not
        // there at all.
        let mut first =
            Conn::establish(&url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        conn::prepare(&mut first)?;
        conn::migrate(&mut first)?;
        let pool = Pool::builder()
            .max_size(size)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .test_on_check_out(true)
            .connection_customizer(Box::new(conn::Customizer))
            .build(ConnectionManager::new(url.clone()))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            pool,
            postgres,
            url: std::sync::Arc::new(zeroize::Zeroizing::new(url)),
            writers: std::sync::Arc::default(),
        })
    }

    /// Opens the database a deployment's configuration names. A PostgreSQL password is read
    /// from its file (never from the configuration itself) and put into the URL in memory.
    pub fn open_configured(
        config: &tessera_issuer_types::config::DatabaseConfig,
        data_dir: &Path,
    ) -> Result<Self, StoreError> {
        use tessera_issuer_types::config::{Config, DatabaseConfig};
        match config {
            DatabaseConfig::Sqlite { path } => {
                Self::open(Location::Sqlite(&Config::resolve(data_dir, path)))
            }
            DatabaseConfig::Postgres { url, password_file } => {
                let url = match password_file {
                    None => zeroize::Zeroizing::new(url.clone()),
                    Some(file) => {
                        let file = Config::resolve(data_dir, file);
                        let password = zeroize::Zeroizing::new(
                            std::fs::read_to_string(&file).map_err(|e| {
                                StoreError::Unavailable(format!(
                                    "reading the database password {}: {e}",
                                    file.display()
                                ))
                            })?,
                        );
                        with_password(url, password.trim_end_matches(['\n', '\r']))?
                    }
                };
                Self::open(Location::Postgres(&url))
            }
        }
    }

    fn conn(&self) -> Result<PooledConnection<ConnectionManager<Conn>>, StoreError> {
        Ok(self.pool.get()?)
    }

    /// A connection for what the typed queries do not cover (tests that tamper with rows).
    pub fn raw(&self) -> Result<PooledConnection<ConnectionManager<Conn>>, StoreError> {
        self.conn()
    }

    /// Runs `f` in a transaction that writes, one writer at a time across every process
    /// that shares the database (PostgreSQL: a transaction-scoped advisory lock; SQLite:
    /// the write lock, taken at the start). Commits if `f` returns `Ok`.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let _queued =
            (!self.postgres).then(|| self.writers.lock().unwrap_or_else(|p| p.into_inner()));
        let first = if self.postgres {
            "SELECT pg_advisory_xact_lock(7302019)"
        } else {
            "UPDATE write_lock SET n = n + 1 WHERE id = 1"
        };
        self.transaction(Some(first), f)
    }

    /// Runs `f` in a read-only transaction that sees one consistent state of the database
    /// throughout (PostgreSQL: REPEATABLE READ; SQLite: a read transaction in WAL mode),
    /// for reads that must agree with each other (a CRL's entries and its outbox position).
    pub fn snapshot<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let first = self
            .postgres
            .then_some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
        self.transaction(first, f)
    }

    /// Runs `first` (if any), then `f`, in one transaction: committed if `f` returns `Ok`,
    /// rolled back (and `f`'s own error returned) if not.
    fn transaction<T, E: From<StoreError>>(
        &self,
        first: Option<&str>,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.conn()?;
        let mut outcome = None;
        let r = conn.transaction(|c| -> Result<(), diesel::result::Error> {
            if let Some(sql) = first {
                diesel::sql_query(sql).execute(c)?;
            }
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
            (Ok(()), None) => Err(StoreError::Corrupt("transaction ran nothing".into()).into()),
        }
    }

    /// Runs `f` on a connection, without a write transaction.
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.conn()?;
        f(&mut Tx { conn: &mut conn })
    }

    /// A waiter for new outbox entries: on PostgreSQL a connection of its own that LISTENs
    /// on the outbox channel; on SQLite, which has no notifications, a timer.
    pub fn listener(&self) -> Result<outbox::Listener, StoreError> {
        outbox::Listener::new(self.postgres.then(|| self.url.as_str()))
    }

    /// Whether the database answers (for `/readyz`).
    pub fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        diesel::sql_query("SELECT 1").execute(&mut *conn)?;
        Ok(())
    }
}

/// The URL with GSSAPI encryption off unless it asks for it: libpq otherwise asks
/// Kerberos for credentials on every connection, and a process that exits while a pool
/// thread is connecting aborts in Kerberos's mutexes (`k5_mutex_lock: Received error 22`,
/// seen under `audit verify`). Deployments that use Kerberos say `gssencmode=` themselves.
fn without_gssapi(url: &str) -> String {
    if url.contains("gssencmode=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}gssencmode=disable")
}

/// `postgres://user@host/db` with the password put in as `user:password@`, percent-encoded
/// (RFC 3986 §3.2.1).
fn with_password(url: &str, password: &str) -> Result<zeroize::Zeroizing<String>, StoreError> {
    let bad = || {
        StoreError::Unavailable(
            "database.url needs a user (postgres://user@host/db) to go with a password file".into(),
        )
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let (user, host) = rest.split_once('@').ok_or_else(bad)?;
    if user.is_empty() || user.contains(':') {
        return Err(bad());
    }
    let mut encoded = zeroize::Zeroizing::new(String::new());
    for b in password.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(zeroize::Zeroizing::new(format!(
        "{scheme}://{user}:{}@{host}",
        encoded.as_str()
    )))
}

/// A connection inside [`Store::write`] or [`Store::read`]; the typed queries are its
/// methods (in this crate's modules).
pub struct Tx<'c> {
    conn: &'c mut Conn,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").finish_non_exhaustive()
    }
}

/// Unix seconds as the database stores times.
pub fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgresql_urls_turn_gssapi_off_unless_they_choose() {
        assert_eq!(
            without_gssapi("postgres://u@h/db"),
            "postgres://u@h/db?gssencmode=disable"
        );
        assert_eq!(
            without_gssapi("postgres://u@h/db?sslmode=require"),
            "postgres://u@h/db?sslmode=require&gssencmode=disable"
        );
        assert_eq!(
            without_gssapi("postgres://u@h/db?gssencmode=require"),
            "postgres://u@h/db?gssencmode=require"
        );
    }
}

//! The database: SQLite for the embedded deployment, PostgreSQL in production, with the
//! same migrations and the same queries ([`Conn`] is either). Migrations are compiled into
//! the binary and applied on open.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// A connection to either backend; every query of the issuer is written once for both.
#[derive(diesel::MultiConnection)]
pub enum Conn {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Postgresql(_) => "Conn::Postgresql",
            Self::Sqlite(_) => "Conn::Sqlite",
        })
    }
}

/// Opens the deployment's database: PostgreSQL when `url` is a `postgres://` URL, else the
/// SQLite file `path`.
pub fn open(path: &Path, url: Option<&str>) -> Result<Conn> {
    match url {
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            open_postgres(u)
        }
        Some(u) => Err(anyhow!(
            "database URL {u:?}: only postgres:// URLs are supported"
        )),
        None => open_sqlite(path),
    }
}

/// Connects to PostgreSQL and brings the schema up to date.
pub fn open_postgres(url: &str) -> Result<Conn> {
    let mut conn =
        PgConnection::establish(url).map_err(|e| anyhow!("connecting to PostgreSQL: {e}"))?;
    conn.run_pending_migrations(MIGRATIONS)
        .map_err(|e| anyhow!("migrating the PostgreSQL database: {e}"))?;
    Ok(Conn::Postgresql(conn))
}

/// Runs `f` in a transaction that writes: on PostgreSQL it first takes a transaction-scoped
/// advisory lock, so that issuer instances append to the audit chain one at a time; SQLite
/// serialises writers by itself.
pub fn write_transaction<T, E>(
    conn: &mut Conn,
    f: impl FnOnce(&mut Conn) -> std::result::Result<T, E>,
) -> std::result::Result<T, E>
where
    E: From<diesel::result::Error>,
{
    conn.transaction(|c| {
        if let Conn::Postgresql(pg) = c {
            diesel::sql_query("SELECT pg_advisory_xact_lock(7302019)").execute(pg)?;
        }
        f(c)
    })
}

/// The schema migrations, applied in order on open.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The schema as diesel sees it.
pub mod schema {
    diesel::table! {
        authorities (role) {
            role -> Text,
            key_label -> Text,
            key_alg -> Text,
            certificate -> Binary,
            created_at -> BigInt,
        }
    }

    diesel::table! {
        api_tokens (token_hash) {
            token_hash -> Binary,
            name -> Text,
            role -> Text,
            created_at -> BigInt,
        }
    }

    diesel::table! {
        certificates (serial) {
            serial -> Text,
            authority -> Text,
            profile -> Text,
            status -> Text,
            tbs -> Binary,
            certificate -> Nullable<Binary>,
            not_after -> BigInt,
            revoked_at -> Nullable<BigInt>,
            revocation_reason -> Nullable<Text>,
            created_at -> BigInt,
        }
    }

    diesel::table! {
        crls (authority, number) {
            authority -> Text,
            number -> BigInt,
            this_update -> BigInt,
            crl -> Binary,
        }
    }

    diesel::table! {
        audit_log (seq) {
            seq -> BigInt,
            at -> BigInt,
            actor -> Text,
            action -> Text,
            details -> Text,
            prev_hash -> Binary,
            hash -> Binary,
        }
    }
}

/// Opens (creating if needed) the SQLite database and brings its schema up to date.
pub fn open_sqlite(path: &Path) -> Result<Conn> {
    let url = path
        .to_str()
        .ok_or_else(|| anyhow!("database path is not UTF-8: {}", path.display()))?;
    let mut conn = SqliteConnection::establish(url).with_context(|| format!("opening {url}"))?;
    // WAL keeps readers going during writes; foreign keys on; wait rather than fail on a
    // busy database.
    diesel::sql_query("PRAGMA journal_mode = WAL").execute(&mut conn)?;
    diesel::sql_query("PRAGMA foreign_keys = ON").execute(&mut conn)?;
    diesel::sql_query("PRAGMA busy_timeout = 5000").execute(&mut conn)?;
    conn.run_pending_migrations(MIGRATIONS)
        .map_err(|e| anyhow!("migrating {url}: {e}"))?;
    Ok(Conn::Sqlite(conn))
}

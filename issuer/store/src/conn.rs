//! The connection type (either backend, one set of queries) and what every new connection
//! needs: SQLite's pragmas, and the migrations compiled into the binary.

use diesel::pg::PgConnection;
use diesel::r2d2::CustomizeConnection;
use diesel::sqlite::SqliteConnection;
use diesel::RunQueryDsl;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::StoreError;

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

/// The schema migrations, applied in order on open.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// SQLite: WAL keeps readers going during a write, foreign keys on, and a connection waits
/// (up to 5 s) for another's write instead of failing.
pub(crate) fn prepare(conn: &mut Conn) -> Result<(), StoreError> {
    if let Conn::Sqlite(c) = conn {
        for pragma in [
            "PRAGMA journal_mode = WAL",
            "PRAGMA foreign_keys = ON",
            "PRAGMA busy_timeout = 5000",
        ] {
            diesel::sql_query(pragma).execute(c)?;
        }
    }
    Ok(())
}

pub(crate) fn migrate(conn: &mut Conn) -> Result<(), StoreError> {
    conn.run_pending_migrations(MIGRATIONS)
        .map(drop)
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    // PostgreSQL only (the migrations are one set for both backends, and SQLite has no
    // operator classes): indexes for the portal's prefix searches, `lower(x) LIKE 'ab%'`
    // and `action LIKE 'ab%'`, which a plain index serves only under the C collation.
    // Idempotent, so every start makes sure of them.
    if let Conn::Postgresql(c) = conn {
        for sql in POSTGRES_INDEXES {
            diesel::sql_query(*sql).execute(c)?;
        }
    }
    Ok(())
}

/// See [`migrate`].
const POSTGRES_INDEXES: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS people_search_employee ON people (lower(employee_number) text_pattern_ops)",
    "CREATE INDEX IF NOT EXISTS people_search_given ON people (lower(given_name) text_pattern_ops)",
    "CREATE INDEX IF NOT EXISTS people_search_family ON people (lower(family_name) text_pattern_ops)",
    "CREATE INDEX IF NOT EXISTS people_search_given_typed ON people (given_name text_pattern_ops)",
    "CREATE INDEX IF NOT EXISTS people_search_family_typed ON people (family_name text_pattern_ops)",
    "CREATE INDEX IF NOT EXISTS people_search_email ON people (lower(email) text_pattern_ops)",
    "CREATE INDEX IF NOT EXISTS audit_log_action_search ON audit_log (action text_pattern_ops, seq)",
];

/// Runs [`prepare`] on every connection the pool opens.
#[derive(Debug)]
pub(crate) struct Customizer;

impl CustomizeConnection<Conn, diesel::r2d2::Error> for Customizer {
    fn on_acquire(&self, conn: &mut Conn) -> Result<(), diesel::r2d2::Error> {
        prepare(conn).map_err(|e| {
            diesel::r2d2::Error::QueryError(match e {
                StoreError::Query(q) => q,
                other => diesel::result::Error::QueryBuilderError(other.to_string().into()),
            })
        })
    }
}

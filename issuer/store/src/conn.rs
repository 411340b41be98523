//! The connection type (either backend, one set of queries) and what every new connection
//! needs: SQLite's pragmas, and the migrations compiled into the binary.

use diesel::pg::PgConnection;
use diesel::r2d2::CustomizeConnection;
use diesel::sqlite::SqliteConnection;
use diesel::{OptionalExtension, RunQueryDsl};
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
    if let Conn::Postgresql(c) = conn {
        postgres_indexes(c)?;
    }
    Ok(())
}

/// Makes the PostgreSQL-only indexes that are missing (or left invalid by a build that was
/// interrupted), without blocking writes: `CREATE INDEX CONCURRENTLY`, one server at a time
/// (an advisory lock), and nothing at all when they exist, as on every start but the first.
fn postgres_indexes(c: &mut PgConnection) -> Result<(), StoreError> {
    #[derive(diesel::QueryableByName)]
    struct Valid {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        valid: bool,
    }
    let state = |c: &mut PgConnection, name: &str| -> Result<Option<bool>, StoreError> {
        Ok(diesel::sql_query(
            "SELECT indisvalid AS valid FROM pg_index WHERE indexrelid = to_regclass($1)::oid",
        )
        .bind::<diesel::sql_types::Text, _>(name)
        .get_result::<Valid>(c)
        .optional()?
        .map(|v| v.valid))
    };
    if POSTGRES_INDEXES.iter().try_fold(true, |all, (name, _)| {
        Ok::<_, StoreError>(all && state(c, name)? == Some(true))
    })? {
        return Ok(());
    }
    const LOCK: i64 = 0x7465_7373_6572_6131; // "tessera1"
    diesel::sql_query(format!("SELECT pg_advisory_lock({LOCK})")).execute(c)?;
    let made = (|| -> Result<(), StoreError> {
        for (name, definition) in POSTGRES_INDEXES {
            match state(c, name)? {
                Some(true) => continue,
                Some(false) => {
                    diesel::sql_query(format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                        .execute(c)?;
                }
                None => {}
            }
            diesel::sql_query(format!("CREATE INDEX CONCURRENTLY {name} ON {definition}"))
                .execute(c)?;
        }
        Ok(())
    })();
    diesel::sql_query(format!("SELECT pg_advisory_unlock({LOCK})")).execute(c)?;
    made
}

/// See [`migrate`]: (name, what it indexes).
const POSTGRES_INDEXES: &[(&str, &str)] = &[
    (
        "people_search_employee",
        "people (lower(employee_number) text_pattern_ops)",
    ),
    (
        "people_search_given",
        "people (lower(given_name) text_pattern_ops)",
    ),
    (
        "people_search_family",
        "people (lower(family_name) text_pattern_ops)",
    ),
    (
        "people_search_given_typed",
        "people (given_name text_pattern_ops)",
    ),
    (
        "people_search_family_typed",
        "people (family_name text_pattern_ops)",
    ),
    (
        "people_search_email",
        "people (lower(email) text_pattern_ops)",
    ),
    (
        "audit_log_action_search",
        "audit_log (action text_pattern_ops, seq)",
    ),
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

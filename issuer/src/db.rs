//! The database: SQLite for the embedded deployment (PostgreSQL support follows with the
//! same migrations). Migrations are compiled into the binary.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

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
pub fn open_sqlite(path: &Path) -> Result<SqliteConnection> {
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
    Ok(conn)
}

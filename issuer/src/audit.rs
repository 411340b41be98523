//! The audit trail as a hash chain (LoA3 K2.7: tamper-evident records of every action).
//! Each record's hash covers its contents and the previous record's hash, so an edited,
//! deleted or reordered record breaks the chain at a place `verify` names. A record is
//! appended in the same database transaction as the change it records.
//!
//! Removing records from the *end* cannot be seen from the chain alone: operators anchor
//! the head hash elsewhere (`audit verify` prints it).

use anyhow::{Context, Result};
use diesel::prelude::*;
use sha2::Digest;

use crate::clock::Clock;
use crate::db::schema::audit_log;

/// The hash before the first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Insertable, Selectable)]
#[diesel(table_name = audit_log)]
pub struct Record {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub details: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// The hash of a record's contents after `prev`: a domain tag, then every field
/// length-prefixed, so no two different records encode alike.
pub fn record_hash(
    prev: &[u8],
    seq: i64,
    at: i64,
    actor: &str,
    action: &str,
    details: &str,
) -> Vec<u8> {
    let mut h = sha2::Sha256::new();
    h.update(b"tessera-audit-v1\0");
    for field in [
        prev,
        &seq.to_be_bytes(),
        &at.to_be_bytes(),
        actor.as_bytes(),
        action.as_bytes(),
        details.as_bytes(),
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    h.finalize().to_vec()
}

/// Appends a record. Call it inside the transaction that makes the change.
pub fn append(
    conn: &mut crate::db::Conn,
    clock: &dyn Clock,
    actor: &str,
    action: &str,
    details: &serde_json::Value,
) -> Result<Record> {
    let last: Option<(i64, Vec<u8>)> = audit_log::table
        .select((audit_log::seq, audit_log::hash))
        .order(audit_log::seq.desc())
        .first(conn)
        .optional()
        .context("reading the audit chain head")?;
    let (seq, prev) = match last {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS.to_vec()),
    };
    let at = i64::try_from(clock.now().as_secs()).unwrap_or(i64::MAX);
    let details = details.to_string();
    let record = Record {
        seq,
        at,
        actor: actor.to_owned(),
        action: action.to_owned(),
        hash: record_hash(&prev, seq, at, actor, action, &details),
        details,
        prev_hash: prev,
    };
    diesel::insert_into(audit_log::table)
        .values(&record)
        .execute(conn)
        .context("writing the audit record")?;
    Ok(record)
}

/// What `verify` found wrong first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Tamper {
    #[error("audit record {0} was edited: its hash does not match its contents")]
    Edited(i64),
    #[error("audit record {found_at} was moved: it was written as record {written_as} (records reordered)")]
    Reordered { found_at: i64, written_as: i64 },
    #[error("audit record {expected} is missing: the records jump from {before} to {found}")]
    Missing {
        expected: i64,
        before: i64,
        found: i64,
    },
    #[error(
        "audit record {0} does not follow the record before it: the chain is broken there \
         (records were deleted, reordered or rewritten)"
    )]
    ChainBroken(i64),
}

/// A verified chain: how many records and the head hash to anchor elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub head: Vec<u8>,
}

/// How far from its place a moved record is looked for when its hash does not match.
const MOVE_SEARCH: i64 = 1000;

/// Checks the whole chain in order.
pub fn verify(conn: &mut crate::db::Conn) -> Result<std::result::Result<Verified, Tamper>> {
    let records: Vec<Record> = audit_log::table
        .select(Record::as_select())
        .order(audit_log::seq.asc())
        .load(conn)
        .context("reading the audit log")?;
    let mut prev = GENESIS.to_vec();
    let mut prev_seq = 0;
    for r in &records {
        if r.seq != prev_seq + 1 {
            return Ok(Err(Tamper::Missing {
                expected: prev_seq + 1,
                before: prev_seq,
                found: r.seq,
            }));
        }
        if record_hash(&r.prev_hash, r.seq, r.at, &r.actor, &r.action, &r.details) != r.hash {
            // Intact contents under another sequence number mean the record was moved.
            let moved_from = (r.seq.saturating_sub(MOVE_SEARCH)
                ..=r.seq.saturating_add(MOVE_SEARCH))
                .filter(|s| *s != r.seq && *s > 0)
                .find(|s| {
                    record_hash(&r.prev_hash, *s, r.at, &r.actor, &r.action, &r.details) == r.hash
                });
            return Ok(Err(match moved_from {
                Some(written_as) => Tamper::Reordered {
                    found_at: r.seq,
                    written_as,
                },
                None => Tamper::Edited(r.seq),
            }));
        }
        if r.prev_hash != prev {
            return Ok(Err(Tamper::ChainBroken(r.seq)));
        }
        prev.clone_from(&r.hash);
        prev_seq = r.seq;
    }
    Ok(Ok(Verified {
        records: records.len() as u64,
        head: prev,
    }))
}

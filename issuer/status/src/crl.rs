//! The CRL publisher. A CRL describes one consistent state: its entries and the outbox
//! position they reach are read in one snapshot; its number is then reserved against that
//! position (a number is never reused, and a higher number never describes an older
//! state, whichever issuer process publishes); the CA signs it; it is stored, keeping the
//! newest few. Entries are read in pages and encoded as they come
//! (`tessera_issuer_ca::crl`), so a CRL of a million entries needs about its own size in
//! memory.

use std::time::Duration;

use bytes::Bytes;
use tessera_issuer_ca::IssuingCa;
use tessera_issuer_store::Store;
use tessera_issuer_types::Serial;

use crate::StatusError;

/// The authority whose CRLs these are.
pub const AUTHORITY: &str = "issuing";
/// How many of the newest CRLs the database keeps (each can be tens of megabytes).
pub const KEEP: i64 = 10;
/// Rows read per page.
const PAGE: i64 = 20_000;

/// What a publication did.
#[derive(Debug)]
pub enum Published {
    /// A new CRL.
    New {
        number: i64,
        entries: usize,
        der: Vec<u8>,
        /// The outbox position it covers.
        upto: i64,
    },
    /// Another publisher reserved a number for a newer state meanwhile; this one was
    /// dropped (theirs is at least as new).
    Superseded,
}

/// Issues a CRL of every revoked, unexpired certificate, valid for `validity`.
pub fn publish(
    ca: &IssuingCa,
    store: &Store,
    now: Duration,
    validity: Duration,
) -> Result<Published, StatusError> {
    let now_secs = tessera_issuer_store::secs(now);
    let (upto, builder) = store.snapshot(|tx| -> Result<_, StatusError> {
        let upto = tx.outbox_head()?;
        let expected = usize::try_from(tx.revoked_count(now_secs)?).unwrap_or(0);
        let mut builder = ca.crl_builder(now, validity, expected)?;
        // Keyset pagination on the primary key: each page is an index range scan.
        let mut after = String::new();
        loop {
            let page = tx.revoked_page(&after, now_secs, PAGE)?;
            let Some(last) = page.last() else { break };
            after = last.serial.clone();
            for row in &page {
                let serial = Serial::parse(&row.serial)
                    .map_err(|_| StatusError::Encoding(format!("serial {:?}", row.serial)))?;
                let entry = tessera_issuer_ca::crl::entry(&serial, row.at, row.reason)
                    .map_err(|e| StatusError::Encoding(e.to_string()))?;
                builder
                    .push(&entry)
                    .map_err(|e| StatusError::Encoding(e.to_string()))?;
            }
        }
        Ok((upto, builder))
    })?;
    let entries = builder.len();
    let Some(number) = store.write(|tx| tx.reserve_crl_number(AUTHORITY, upto, now_secs))? else {
        return Ok(Published::Superseded);
    };
    let der = ca.sign_crl(builder, number)?;
    store.write(|tx| tx.insert_crl(AUTHORITY, number, now_secs, &der, KEEP))?;
    Ok(Published::New {
        number,
        entries,
        der,
        upto,
    })
}

/// The newest CRL, kept in memory by number (a CRL of a million entries is ~44 MB: it is
/// read from the database once per number, not per download).
#[derive(Debug, Default)]
pub struct Latest {
    held: std::sync::RwLock<Option<(i64, Bytes)>>,
}

impl Latest {
    /// The newest stored CRL, or `None` before the first.
    pub fn get(&self, store: &Store) -> Result<Option<Bytes>, StatusError> {
        let Some(newest) = store.read(|tx| tx.latest_crl_number(AUTHORITY))? else {
            return Ok(None);
        };
        if let Some((n, der)) = self.held.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if *n == newest {
                return Ok(Some(der.clone()));
            }
        }
        let Some((n, der)) = store.read(|tx| tx.latest_crl(AUTHORITY))? else {
            return Ok(None);
        };
        let der = Bytes::from(der);
        *self.held.write().unwrap_or_else(|p| p.into_inner()) = Some((n, der.clone()));
        Ok(Some(der))
    }
}

//! The status feed: every status change, in order, written in the transaction that makes
//! it. Followers remember the last sequence number they handled and ask for what came
//! after; on PostgreSQL the writer also sends `NOTIFY tessera_outbox` (delivered at commit),
//! so followers need not poll.

use diesel::prelude::*;
use tessera_issuer_types::Serial;

use crate::conn::Conn;
use crate::schema::outbox;
use crate::{StoreError, Tx};

/// The PostgreSQL channel the outbox notifies on.
pub const CHANNEL: &str = "tessera_outbox";

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Issued,
    Revoked,
    Held,
    Released,
}

impl Change {
    /// The name the status feed uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Revoked => "revoked",
            Self::Held => "held",
            Self::Released => "released",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "issued" => Self::Issued,
            "revoked" => Self::Revoked,
            "held" => Self::Held,
            "released" => Self::Released,
            _ => return None,
        })
    }

    /// Whether the change alters what a CRL lists.
    pub fn affects_crl(self) -> bool {
        !matches!(self, Self::Issued)
    }
}

/// One entry of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: i64,
    pub at: i64,
    pub change: Change,
    pub serial: Serial,
}

impl Tx<'_> {
    /// Appends a status change; call it inside the [`crate::Store::write`] that makes it.
    pub fn outbox(&mut self, change: Change, serial: &Serial, at: i64) -> Result<i64, StoreError> {
        let seq = self.outbox_head()? + 1;
        diesel::insert_into(outbox::table)
            .values((
                outbox::seq.eq(seq),
                outbox::at.eq(at),
                outbox::kind.eq(change.as_str()),
                outbox::serial.eq(serial.as_str()),
            ))
            .execute(self.conn)?;
        if let Conn::Postgresql(pg) = &mut *self.conn {
            diesel::sql_query(format!("NOTIFY {CHANNEL}")).execute(pg)?;
        }
        Ok(seq)
    }

    /// The last sequence number written (0: none).
    pub fn outbox_head(&mut self) -> Result<i64, StoreError> {
        Ok(outbox::table
            .select(diesel::dsl::max(outbox::seq))
            .first::<Option<i64>>(self.conn)?
            .unwrap_or(0))
    }

    /// Up to `limit` events after `cursor`, in order.
    pub fn outbox_since(&mut self, cursor: i64, limit: i64) -> Result<Vec<Event>, StoreError> {
        let rows: Vec<(i64, i64, String, Option<String>)> = outbox::table
            .filter(outbox::seq.gt(cursor))
            .order(outbox::seq.asc())
            .limit(limit)
            .select((outbox::seq, outbox::at, outbox::kind, outbox::serial))
            .load(self.conn)?;
        rows.into_iter()
            .map(|(seq, at, kind, serial)| {
                let change = Change::parse(&kind)
                    .ok_or_else(|| StoreError::Corrupt(format!("outbox kind {kind:?}")))?;
                let serial = serial
                    .as_deref()
                    .and_then(|s| Serial::parse(s).ok())
                    .ok_or_else(|| StoreError::Corrupt(format!("outbox {seq} without serial")))?;
                Ok(Event {
                    seq,
                    at,
                    change,
                    serial,
                })
            })
            .collect()
    }
}

/// Waits for outbox entries (see [`crate::Store::listener`]).
pub struct Listener {
    pg: Option<diesel::pg::PgConnection>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("postgres", &self.pg.is_some())
            .finish()
    }
}

/// How often the PostgreSQL listener reads its socket, and how often a SQLite follower
/// looks at the table: the bound on how late a follower learns of a change.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(50);

impl Listener {
    pub(crate) fn new(postgres_url: Option<&str>) -> Result<Self, StoreError> {
        let pg = match postgres_url {
            Some(url) => {
                let mut c = diesel::pg::PgConnection::establish(url)
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                diesel::sql_query(format!("LISTEN {CHANNEL}")).execute(&mut c)?;
                Some(c)
            }
            None => None,
        };
        Ok(Self { pg })
    }

    /// Returns when an entry may have been written (a notification on PostgreSQL; every
    /// [`POLL`] on SQLite), or after `timeout`. An error means the connection broke: make a
    /// new listener.
    pub fn wait(&mut self, timeout: std::time::Duration) -> Result<(), StoreError> {
        let Some(pg) = self.pg.as_mut() else {
            std::thread::sleep(POLL.min(timeout));
            return Ok(());
        };
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let mut notified = false;
            for n in pg.notifications_iter() {
                n?;
                notified = true;
            }
            if notified || std::time::Instant::now() >= deadline {
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
    }
}

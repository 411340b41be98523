//! [`Status`]: the OCSP responder and the CRL publisher of one issuer process, kept
//! current by following the status outbox. Every process sharing the database learns of
//! every change within the outbox listener's poll (PostgreSQL NOTIFY, or SQLite polling),
//! invalidates its cached OCSP responses for the serial, and publishes a CRL within
//! [`Settings::crl_delay`] of a change that affects it (and every [`Settings::crl_interval`]
//! regardless), retrying one that failed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera_issuer_ca::IssuingCa;
use tessera_issuer_store::Store;
use tessera_issuer_types::{Clock, Serial};

use crate::crl::{self, Published};
use crate::ocsp::{self, Cache};
use crate::StatusError;

/// Outbox entries read at a time.
const OUTBOX_PAGE: i64 = 1000;

/// How status is produced.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a pre-signed OCSP response is served; zero signs every response.
    pub ocsp_cache_age: Duration,
    /// How many bytes of pre-signed responses are kept.
    pub ocsp_cache_bytes: usize,
    /// How soon after a revocation (or hold, or release) a CRL that lists it is published.
    pub crl_delay: Duration,
    /// A CRL is published at least this often, changes or not.
    pub crl_interval: Duration,
    /// nextUpdate − thisUpdate of each CRL.
    pub crl_validity: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ocsp_cache_age: Duration::from_secs(60),
            ocsp_cache_bytes: 64 << 20,
            crl_delay: Duration::from_secs(2),
            crl_interval: Duration::from_secs(3600),
            crl_validity: Duration::from_secs(86_400),
        }
    }
}

/// Revocation status for relying parties.
pub struct Status {
    ca: Arc<IssuingCa>,
    store: Store,
    clock: Arc<dyn Clock>,
    cache: Cache,
    latest: crl::Latest,
    settings: Settings,
    /// Outbox positions: handled by the follower, and covered by the newest CRL published.
    followed: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Status")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Status {
    pub fn new(
        ca: Arc<IssuingCa>,
        store: Store,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Self {
        Self {
            cache: Cache::new(settings.ocsp_cache_age, settings.ocsp_cache_bytes),
            ca,
            store,
            clock,
            latest: crl::Latest::default(),
            settings,
            followed: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// The answer to an OCSP request when it needs neither the database nor the token (a
    /// fresh pre-signed answer, or a malformed request): for the async threads. `None`:
    /// call [`Status::ocsp`] off them.
    pub fn ocsp_quick(&self, request: &[u8]) -> Option<Bytes> {
        ocsp::quick(&self.cache, self.clock.now(), request)
    }

    /// The OCSP response to a DER request (blocking on a cache miss: database and token).
    pub fn ocsp(&self, request: &[u8]) -> Bytes {
        ocsp::respond(
            &self.ca,
            &self.store,
            &self.cache,
            self.clock.now(),
            request,
        )
    }

    /// The newest CRL; publishes the first if there is none yet.
    pub fn crl(&self) -> Result<Bytes, StatusError> {
        if let Some(der) = self.latest.get(&self.store)? {
            return Ok(der);
        }
        self.publish_crl()?;
        self.latest
            .get(&self.store)?
            .ok_or_else(|| StatusError::Encoding("no CRL after publishing one".into()))
    }

    /// The issuing CA certificate (DER).
    pub fn ca_certificate(&self) -> Bytes {
        Bytes::copy_from_slice(self.ca.certificate_der())
    }

    /// A status change this process made: forget its cached responses now (the follower
    /// would, a poll later).
    pub fn changed(&self, serial: &Serial) {
        self.cache.invalidate(serial.as_str(), self.clock.now());
    }

    /// Publishes a CRL now.
    pub fn publish_crl(&self) -> Result<Published, StatusError> {
        let published = crl::publish(
            &self.ca,
            &self.store,
            self.clock.now(),
            self.settings.crl_validity,
        )?;
        if let Published::New {
            number,
            entries,
            der,
            ..
        } = &published
        {
            tracing::info!(number, entries, bytes = der.len(), "CRL published");
        }
        Ok(published)
    }

    /// Whether the database and the token answer.
    pub fn ready(&self) -> Result<(), String> {
        self.store.ping().map_err(|e| format!("database: {e}"))?;
        self.ca.ping().map_err(|e| format!("token: {e:#}"))
    }

    /// For metrics: OCSP answers from the cache and signed afresh, bytes cached.
    pub fn ocsp_counts(&self) -> (u64, u64, usize) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.cache.hits.load(Relaxed),
            self.cache.misses.load(Relaxed),
            self.cache.bytes(),
        )
    }

    /// For metrics: seconds since the newest CRL was issued (`None` before the first).
    pub fn crl_age(&self) -> Option<Duration> {
        let issued = self
            .store
            .read(|tx| tx.latest_crl_this_update(crl::AUTHORITY))
            .ok()
            .flatten()?;
        Some(
            self.clock
                .now()
                .saturating_sub(Duration::from_secs(u64::try_from(issued).unwrap_or(0))),
        )
    }

    /// Starts the follower thread; it stops when `stop` turns true.
    pub fn follow(
        self: &Arc<Self>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("status-follower".into())
            .spawn(move || me.follow_loop(&stop))
    }

    fn follow_loop(&self, stop: &AtomicBool) {
        let mut cursor = loop {
            match self.store.read(|tx| tx.outbox_head()) {
                Ok(head) => break head,
                Err(e) => {
                    tracing::warn!(error = %e, "status follower: database unavailable, retrying");
                    if wait(stop, Duration::from_secs(1)) {
                        return;
                    }
                }
            }
        };
        self.followed.store(cursor, Ordering::SeqCst);
        let mut listener = None;
        let mut crl_due = Some(Instant::now());
        let mut last_crl = Instant::now();
        let mut backoff = Duration::from_secs(1);
        while !stop.load(Ordering::SeqCst) {
            // Wait for a change (or the next CRL), no longer than a second so `stop` is seen.
            let until_crl = crl_due.map_or(Duration::from_secs(1), |d| {
                d.saturating_duration_since(Instant::now())
            });
            let timeout = until_crl.min(Duration::from_secs(1));
            let waited = match listener.as_mut() {
                Some(l) => tessera_issuer_store::outbox::Listener::wait(l, timeout),
                None => match self.store.listener() {
                    Ok(l) => {
                        listener = Some(l);
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = waited {
                tracing::warn!(error = %e, "status follower: listener lost, reconnecting");
                listener = None;
                if wait(stop, Duration::from_millis(500)) {
                    return;
                }
            }
            // Everything new, in pages: a backlog (after a restart, or a burst of
            // revocations) is caught up at once, not a page per wake-up.
            loop {
                match self.store.read(|tx| tx.outbox_since(cursor, OUTBOX_PAGE)) {
                    Ok(events) => {
                        for e in &events {
                            self.cache
                                .invalidate_at(e.serial.as_str(), e.seq, self.clock.now());
                            if e.change.affects_crl() && crl_due.is_none() {
                                crl_due = Some(Instant::now() + self.settings.crl_delay);
                            }
                            cursor = e.seq;
                        }
                        self.followed.store(cursor, Ordering::SeqCst);
                        if events.len() < usize::try_from(OUTBOX_PAGE).unwrap_or(0) {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "status follower: reading the outbox");
                        break;
                    }
                }
            }
            if last_crl.elapsed() >= self.settings.crl_interval && crl_due.is_none() {
                crl_due = Some(Instant::now());
            }
            if crl_due.is_some_and(|d| Instant::now() >= d) {
                match self.publish_if_behind(cursor) {
                    Ok(()) => {
                        crl_due = None;
                        last_crl = Instant::now();
                        backoff = Duration::from_secs(1);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, retry_in = ?backoff, "CRL publication failed");
                        crl_due = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                    }
                }
            }
        }
    }

    /// Publishes unless the newest stored CRL already covers `cursor` and is recent
    /// (another process published it).
    fn publish_if_behind(&self, cursor: i64) -> Result<(), StatusError> {
        let (covered, issued) = self.store.read(|tx| -> Result<_, StatusError> {
            Ok((
                tx.latest_crl_upto(crl::AUTHORITY)?,
                tx.latest_crl_this_update(crl::AUTHORITY)?,
            ))
        })?;
        let age = issued.map(|t| {
            self.clock
                .now()
                .saturating_sub(Duration::from_secs(u64::try_from(t).unwrap_or(0)))
        });
        let recent = age.is_some_and(|a| a < self.settings.crl_interval);
        if recent && covered >= cursor {
            return Ok(());
        }
        match self.publish_crl()? {
            Published::New { .. } => Ok(()),
            // Another publisher reserved a number for a state at least as new. Only once its
            // CRL is stored is this change published: if it died before that, this one
            // retries (and then reserves, its snapshot being as new).
            Published::Superseded => {
                let covered = self.store.read(|tx| tx.latest_crl_upto(crl::AUTHORITY))?;
                if covered >= cursor {
                    Ok(())
                } else {
                    Err(StatusError::Retry(
                        "another publisher's newer CRL is not stored yet".into(),
                    ))
                }
            }
        }
    }
}

/// Sleeps `d` in short steps; true if `stop` was set meanwhile.
fn wait(stop: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
    }
    stop.load(Ordering::SeqCst)
}

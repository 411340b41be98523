//! Prometheus metrics (`/metrics`, OpenMetrics text): issuances and revocations served,
//! OCSP answers from the cache and signed afresh, the newest CRL's age, and how long the
//! token takes to sign.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The issuer's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub issuances: Counter,
    pub revocations: Counter,
    ocsp_hits: Counter<u64, AtomicU64>,
    ocsp_misses: Counter<u64, AtomicU64>,
    ocsp_cache_bytes: Gauge,
    crl_age: Gauge,
    token_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tessera_issuer");
        let issuances = Counter::default();
        let revocations = Counter::default();
        let ocsp_hits = Counter::default();
        let ocsp_misses = Counter::default();
        let ocsp_cache_bytes = Gauge::default();
        let crl_age = Gauge::default();
        // 100 µs to ~1.6 s: SoftHSM2 signs in a fraction of a millisecond, a network HSM
        // in milliseconds, a TPM in tens to hundreds.
        let token_latency = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 15),
        );
        registry.register("issuances", "Certificates issued", issuances.clone());
        registry.register("revocations", "Revocations and holds", revocations.clone());
        registry.register(
            "ocsp_cache_hits",
            "OCSP answers served from the pre-signed cache",
            ocsp_hits.clone(),
        );
        registry.register(
            "ocsp_cache_misses",
            "OCSP answers signed afresh",
            ocsp_misses.clone(),
        );
        registry.register(
            "ocsp_cache_bytes",
            "Bytes of pre-signed OCSP answers held",
            ocsp_cache_bytes.clone(),
        );
        registry.register(
            "crl_age_seconds",
            "Seconds since the newest CRL was issued (-1: none yet)",
            crl_age.clone(),
        );
        registry.register(
            "token_sign_seconds",
            "Time the token takes to make one signature",
            token_latency.clone(),
        );
        Self {
            registry,
            issuances,
            revocations,
            ocsp_hits,
            ocsp_misses,
            ocsp_cache_bytes,
            crl_age,
            token_latency,
        }
    }

    /// Records one signature's time (give to `tessera_issuer_ca::signer::Timed`).
    pub fn observe_signature(&self, took: std::time::Duration) {
        self.token_latency.observe(took.as_secs_f64());
    }

    /// The text a scrape gets, with the status layer's figures read now.
    pub fn render(&self, status: &tessera_issuer_status::Status) -> String {
        let (hits, misses, bytes) = status.ocsp_counts();
        // Counters only go up: add what is new since the last scrape.
        let add = |c: &Counter<u64, AtomicU64>, now: u64| {
            let before = c.get();
            if now > before {
                c.inc_by(now - before);
            }
        };
        add(&self.ocsp_hits, hits);
        add(&self.ocsp_misses, misses);
        self.ocsp_cache_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.crl_age.set(
            status
                .crl_age()
                .map_or(-1, |a| i64::try_from(a.as_secs()).unwrap_or(i64::MAX)),
        );
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

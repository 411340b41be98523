//! The OCSP responder (RFC 6960): answers for the issuing CA's certificates, signed by the
//! delegated responder key, with the responder certificate attached.
//!
//! Requests in the RFC 5019 shape — one certificate, no requestor name, no signature, no
//! extension (what browsers and most relying parties send) — are answered from [`Cache`],
//! keyed by the request's CertID as re-encoded (so requests that differ in anything else
//! share one entry), bounded in bytes, swept of stale entries, and invalidated on every
//! status change. Everything else is signed afresh. Requests larger than
//! [`MAX_REQUEST`] are `malformedRequest` without being parsed.

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;
use std::time::Duration;

use bytes::Bytes;
use der::asn1::OctetString;
use der::{Decode, Encode};
use sha1::Digest as _;
use tessera_issuer_ca::IssuingCa;
use tessera_issuer_store::Store;
use tessera_issuer_types::{CertificateStatus, RevocationReason, Serial};
use x509_cert::ext::pkix::CrlReason;
use x509_cert::ext::Extension;
use x509_ocsp::{
    CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse, ResponderId, ResponseData,
    RevokedInfo, SingleResponse,
};

/// Most certificates one request may ask about.
pub const MAX_REQUESTS: usize = 16;
/// Largest request parsed: sixteen CertIDs with a nonce, a requestor name and a signature
/// with a certificate fit well inside.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a response may be cached by relying parties (nextUpdate − thisUpdate).
pub const VALIDITY: Duration = Duration::from_secs(3600);

fn generalized(t: Duration) -> Option<OcspGeneralizedTime> {
    der::asn1::GeneralizedTime::from_unix_duration(Duration::from_secs(t.as_secs()))
        .ok()
        .map(OcspGeneralizedTime)
}

/// The hashes of our issuer in a CertID's algorithm, or None for an algorithm we do not
/// answer in (SHA-1 and SHA-256 are answered).
fn issuer_hashes(ca: &IssuingCa, alg: &const_oid::ObjectIdentifier) -> Option<(Vec<u8>, Vec<u8>)> {
    let name = ca.subject_der();
    let key = ca.subject_public_key_bits();
    if *alg == const_oid::db::rfc5912::ID_SHA_1 {
        Some((
            sha1::Sha1::digest(name).to_vec(),
            sha1::Sha1::digest(key).to_vec(),
        ))
    } else if *alg == const_oid::db::rfc5912::ID_SHA_256 {
        Some((
            sha2::Sha256::digest(name).to_vec(),
            sha2::Sha256::digest(key).to_vec(),
        ))
    } else {
        None
    }
}

/// The authority this responder answers for (the issuer's own HTTPS certificates are the
/// TLS CA's, and "unknown" here).
const ISSUING: &str = "issuing";

/// Whether a CertID names the issuing CA (by SHA-1 or SHA-256 hashes of its name and key).
fn is_ours(ca: &IssuingCa, id: &CertId) -> bool {
    issuer_hashes(ca, &id.hash_algorithm.oid).is_some_and(|(name, key)| {
        id.issuer_name_hash.as_bytes() == name.as_slice()
            && id.issuer_key_hash.as_bytes() == key.as_slice()
    })
}

/// Pre-signed responses, for requests in the RFC 5019 shape. See the module docs.
#[derive(Debug)]
pub struct Cache {
    inner: RwLock<Inner>,
    max_age: Duration,
    max_bytes: usize,
    /// Answers served from the cache, and signed afresh (for metrics).
    pub hits: std::sync::atomic::AtomicU64,
    pub misses: std::sync::atomic::AtomicU64,
    /// Responses being signed now: past [`MAX_SIGNING`] a request gets `tryLater`, so
    /// relying parties cannot queue the token's signatures ahead of issuance.
    signing: std::sync::atomic::AtomicUsize,
}

/// Most OCSP responses signed at once (the token signs one at a time; this bounds the
/// queue in front of it, not the throughput).
pub const MAX_SIGNING: usize = 32;

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Vec<u8>, Entry>,
    /// Serial to the CertIDs cached for it (SHA-1 and SHA-256 CertIDs of one certificate).
    by_serial: HashMap<String, Vec<Vec<u8>>>,
    /// Keys in the order they were stored, for eviction (stale or removed keys are skipped).
    order: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Bumped by every invalidation.
    generation: u64,
    /// The generation and time of each serial's last invalidation, and the outbox entry
    /// behind it if the follower made it: a response signed from a status read before it
    /// (a read that did not yet see that entry) is not stored.
    invalidated: HashMap<String, (u64, Duration, Option<i64>)>,
    last_sweep: Duration,
}

#[derive(Debug)]
struct Entry {
    response: Bytes,
    made: Duration,
    /// The outbox position the status it was signed from had seen.
    covers: i64,
    serial: String,
    size: usize,
}

/// Bookkeeping per entry beyond its key, serial and response.
const ENTRY_OVERHEAD: usize = 128;
/// How often stale entries are swept (on a store).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How long an invalidation is remembered: longer than any signing in flight.
const REMEMBER_INVALIDATION: Duration = Duration::from_secs(60);

impl Cache {
    /// A cache whose entries are served for at most `max_age` after signing and that holds
    /// at most `max_bytes`; a zero age disables it.
    pub fn new(max_age: Duration, max_bytes: usize) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            max_age,
            max_bytes,
            hits: std::sync::atomic::AtomicU64::new(0),
            misses: std::sync::atomic::AtomicU64::new(0),
            signing: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The fresh response for this CertID (DER), if any.
    pub fn lookup(&self, cert_id: &[u8], now: Duration) -> Option<Bytes> {
        self.read()
            .entries
            .get(cert_id)
            .filter(|e| now.saturating_sub(e.made) < self.max_age)
            .map(|e| e.response.clone())
    }

    /// The generation to pass to [`Cache::store`]: read it before reading the status the
    /// response is signed from.
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// Keeps `response` for `cert_id` (about `serial`), signed from a status read that had
    /// seen the outbox up to `covers`, unless the serial's status changed after
    /// `generation` was read (by a change that read had not seen).
    pub fn store(
        &self,
        cert_id: &[u8],
        serial: &str,
        response: &[u8],
        now: Duration,
        generation: u64,
        covers: i64,
    ) {
        if self.max_age.is_zero() {
            return;
        }
        let size = cert_id.len() + serial.len() + response.len() + ENTRY_OVERHEAD;
        if size > self.max_bytes {
            return;
        }
        let mut inner = self.write();
        if inner
            .invalidated
            .get(serial)
            .is_some_and(|(g, _, seq)| *g > generation && seq.is_none_or(|s| covers < s))
        {
            return;
        }
        if now.saturating_sub(inner.last_sweep) >= SWEEP_EVERY {
            inner.sweep(now, self.max_age);
        }
        inner.remove(cert_id);
        while inner.bytes + size > self.max_bytes {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.remove(&oldest);
        }
        inner.bytes += size;
        inner.order.push_back(cert_id.to_vec());
        inner
            .by_serial
            .entry(serial.to_owned())
            .or_default()
            .push(cert_id.to_vec());
        inner.entries.insert(
            cert_id.to_vec(),
            Entry {
                response: Bytes::copy_from_slice(response),
                made: now,
                covers,
                serial: serial.to_owned(),
                size,
            },
        );
    }

    /// Forgets every response for `serial`; call on each status change this process made.
    pub fn invalidate(&self, serial: &str, now: Duration) {
        self.forget(serial, now, None);
    }

    /// Forgets the responses for `serial` signed from a status that had not seen outbox
    /// entry `seq` (the follower's invalidation: a response signed after the change, from
    /// the changed status, stays — writes are serialised, so a read that saw the outbox at
    /// `seq` or later saw the change).
    pub fn invalidate_at(&self, serial: &str, seq: i64, now: Duration) {
        self.forget(serial, now, Some(seq));
    }

    fn forget(&self, serial: &str, now: Duration, seq: Option<i64>) {
        let mut inner = self.write();
        inner.generation += 1;
        let generation = inner.generation;
        // The strictest demand on a response still being signed stays: this process's own
        // change (no outbox position: every earlier read is stale) beats any position,
        // and a later position beats an earlier one heard late.
        let seq = match inner.invalidated.get(serial) {
            Some((_, _, None)) => None,
            Some((_, _, Some(earlier))) => seq.map(|s| s.max(*earlier)),
            None => seq,
        };
        inner
            .invalidated
            .insert(serial.to_owned(), (generation, now, seq));
        for key in inner.by_serial.get(serial).cloned().unwrap_or_default() {
            let stale = match (seq, inner.entries.get(&key)) {
                (Some(seq), Some(e)) => e.covers < seq,
                _ => true,
            };
            if stale {
                inner.remove(&key);
            }
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.read().bytes
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn remove(&mut self, key: &[u8]) {
        if let Some(e) = self.entries.remove(key) {
            self.bytes -= e.size;
            if let Some(keys) = self.by_serial.get_mut(&e.serial) {
                keys.retain(|k| k != key);
                if keys.is_empty() {
                    self.by_serial.remove(&e.serial);
                }
            }
        }
    }

    fn sweep(&mut self, now: Duration, max_age: Duration) {
        self.last_sweep = now;
        let stale: Vec<Vec<u8>> = self
            .entries
            .iter()
            .filter(|(_, e)| now.saturating_sub(e.made) >= max_age)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.remove(&k);
        }
        let entries = &self.entries;
        self.order.retain(|k| entries.contains_key(k));
        self.invalidated
            .retain(|_, (_, at, _)| now.saturating_sub(*at) < REMEMBER_INVALIDATION);
    }
}

/// The CertID a request in the RFC 5019 shape asks about, re-encoded: the cache key.
fn cacheable(req: &OcspRequest) -> Option<&CertId> {
    let tbs = &req.tbs_request;
    match (
        tbs.request_list.as_slice(),
        &tbs.request_extensions,
        &tbs.requestor_name,
        &req.optional_signature,
    ) {
        ([single], None, None, None) if single.single_request_extensions.is_none() => {
            Some(&single.req_cert)
        }
        _ => None,
    }
}

/// The request's nonce extension (RFC 8954 §2.1: a nonce of 1 to 32 octets); `Err` for
/// one outside those bounds, which is refused.
fn nonce(req: &OcspRequest) -> Result<Option<Extension>, ()> {
    let Some(ext) = req
        .tbs_request
        .request_extensions
        .as_ref()
        .and_then(|exts| {
            exts.iter()
                .find(|e| e.extn_id == const_oid::db::rfc6960::ID_PKIX_OCSP_NONCE)
        })
    else {
        return Ok(None);
    };
    let inner = OctetString::from_der(ext.extn_value.as_bytes()).map_err(|_| ())?;
    if (1..=32).contains(&inner.as_bytes().len()) {
        Ok(Some(ext.clone()))
    } else {
        Err(())
    }
}

fn status_error(status: OcspResponse) -> Vec<u8> {
    status.to_der().unwrap_or_default()
}

/// The answer that needs neither the database nor the token, if there is one: a fresh
/// pre-signed answer, or `malformedRequest`.
pub fn quick(cache: &Cache, now: Duration, request: &[u8]) -> Option<Bytes> {
    if request.len() > MAX_REQUEST {
        return Some(Bytes::from(status_error(OcspResponse::malformed_request())));
    }
    let Ok(req) = OcspRequest::from_der(request) else {
        return Some(Bytes::from(status_error(OcspResponse::malformed_request())));
    };
    let key = cacheable(&req)?.to_der().ok()?;
    let hit = cache.lookup(&key, now)?;
    cache
        .hits
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(hit)
}

/// A complete DER OCSP response to a DER request. Malformed or oversized requests get the
/// `malformedRequest` status (RFC 6960 §2.3), never a panic.
pub fn respond(
    ca: &IssuingCa,
    store: &Store,
    cache: &Cache,
    now: Duration,
    request: &[u8],
) -> Bytes {
    if request.len() > MAX_REQUEST {
        return Bytes::from(status_error(OcspResponse::malformed_request()));
    }
    let Ok(req) = OcspRequest::from_der(request) else {
        return Bytes::from(status_error(OcspResponse::malformed_request()));
    };
    let list = &req.tbs_request.request_list;
    if list.is_empty() || list.len() > MAX_REQUESTS {
        return Bytes::from(status_error(OcspResponse::malformed_request()));
    }
    let Ok(nonce) = nonce(&req) else {
        return Bytes::from(status_error(OcspResponse::malformed_request()));
    };
    // CertIDs must name their hash algorithm plainly (parameters absent or NULL): the
    // parameters are the requester's to choose, and would make one certificate endless
    // distinct cache keys.
    let plain = |id: &CertId| match &id.hash_algorithm.parameters {
        None => true,
        Some(p) => *p == der::asn1::Any::from(der::asn1::Null),
    };
    if !list.iter().all(|r| plain(&r.req_cert)) {
        return Bytes::from(status_error(OcspResponse::malformed_request()));
    }
    // Nothing here is ours to answer for: `unauthorized`, unsigned (RFC 5019 §2.2.3),
    // instead of a signed `unknown` per request.
    if !list.iter().any(|r| is_ours(ca, &r.req_cert)) {
        return Bytes::from(status_error(OcspResponse::unauthorized()));
    }
    let key = cacheable(&req).and_then(|id| id.to_der().ok());
    if let Some(key) = &key {
        if let Some(hit) = cache.lookup(key, now) {
            cache
                .hits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return hit;
        }
    }
    cache
        .misses
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let generation = cache.generation();
    use std::sync::atomic::{AtomicUsize, Ordering};
    /// One place in the signing queue, given back however the signing ends.
    struct Place<'a>(&'a AtomicUsize);
    impl Drop for Place<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let place = Place(&cache.signing);
    if place.0.fetch_add(1, Ordering::SeqCst) >= MAX_SIGNING {
        return Bytes::from(status_error(OcspResponse::try_later()));
    }
    let built = build(ca, store, now, &req, nonce);
    drop(place);
    match built {
        Ok((der, known, covers)) => {
            if let (Some(key), Some(serial)) = (&key, known) {
                cache.store(key, serial.as_str(), &der, now, generation, covers);
            }
            Bytes::from(der)
        }
        Err(e) => {
            tracing::error!(error = %e, "OCSP response failed");
            Bytes::from(status_error(OcspResponse::internal_error()))
        }
    }
}

/// Signs the response; returns it and, when it is about one certificate we issued, that
/// certificate's serial (the answer may then be cached).
fn build(
    ca: &IssuingCa,
    store: &Store,
    now: Duration,
    req: &OcspRequest,
    nonce: Option<Extension>,
) -> Result<(Vec<u8>, Option<Serial>, i64), crate::StatusError> {
    let time = |t| generalized(t).ok_or_else(|| crate::StatusError::Encoding("time".into()));
    let mut responses = Vec::new();
    let mut known = Vec::new();
    // The outbox position the statuses below have seen (the lowest, over one read each).
    let mut covers = i64::MAX;
    for single in &req.tbs_request.request_list {
        let id: &CertId = &single.req_cert;
        let ours = is_ours(ca, id);
        let serial = Serial::from_bytes(id.serial_number.as_bytes()).ok();
        let status = match (ours, &serial) {
            (true, Some(serial)) => {
                // The outbox head first: the status read after it has seen at least
                // every change up to it (writes are serialised and each commits its
                // outbox entry with the change), whether or not the two reads share a
                // snapshot. Read the other way round, a revocation committed between them
                // would mark a stale "good" as covering it.
                let (head, status) = store.read(|tx| {
                    Ok::<_, tessera_issuer_store::StoreError>((
                        tx.outbox_head()?,
                        tx.status_under(ISSUING, serial)?,
                    ))
                })?;
                covers = covers.min(head);
                status
            }
            _ => None,
        };
        let cert_status = match status {
            None => CertStatus::unknown(),
            Some(CertificateStatus::Intent | CertificateStatus::Issued) => CertStatus::good(),
            Some(CertificateStatus::Revoked { at, reason }) => {
                let at = Duration::from_secs(u64::try_from(at).unwrap_or(0));
                CertStatus::revoked(RevokedInfo {
                    revocation_time: time(at)?,
                    revocation_reason: crl_reason(reason),
                })
            }
        };
        if let (Some(_), Some(serial)) = (status, serial) {
            known.push(serial);
        }
        responses.push(SingleResponse {
            cert_id: id.clone(),
            cert_status,
            this_update: time(now)?,
            next_update: generalized(now + VALIDITY),
            single_extensions: None,
        });
    }
    let data = ResponseData {
        version: x509_ocsp::Version::V1,
        responder_id: ResponderId::ByKey(
            OctetString::new(sha1::Sha1::digest(ca.ocsp_public_key_bits()).to_vec())
                .map_err(|e| crate::StatusError::Encoding(e.to_string()))?,
        ),
        produced_at: time(now)?,
        responses,
        response_extensions: nonce.map(|n| vec![n]),
    };
    let der = ca.sign_ocsp(data)?;
    let cacheable = (known.len() == 1 && req.tbs_request.request_list.len() == 1)
        .then(|| known.pop())
        .flatten();
    Ok((der, cacheable, covers))
}

/// RFC 5280 §5.3.1: omit the reason rather than say "unspecified".
fn crl_reason(r: RevocationReason) -> Option<CrlReason> {
    use RevocationReason as R;
    Some(match r {
        R::Unspecified => return None,
        R::KeyCompromise => CrlReason::KeyCompromise,
        R::CaCompromise => CrlReason::CaCompromise,
        R::AffiliationChanged => CrlReason::AffiliationChanged,
        R::Superseded => CrlReason::Superseded,
        R::CessationOfOperation => CrlReason::CessationOfOperation,
        R::CertificateHold => CrlReason::CertificateHold,
        R::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGE: Duration = Duration::from_secs(60);

    #[test]
    fn the_cache_serves_fresh_entries_and_forgets_a_serial_on_invalidation() {
        let cache = Cache::new(AGE, 1 << 20);
        let t = Duration::from_secs(1_000);
        let g = cache.generation();
        cache.store(b"id-a-sha1", "aa", b"good-a", t, g, 0);
        cache.store(b"id-a-sha256", "aa", b"good-a2", t, g, 0);
        cache.store(b"id-b", "bb", b"good-b", t, g, 0);
        assert_eq!(
            cache.lookup(b"id-a-sha1", t).as_deref(),
            Some(&b"good-a"[..])
        );
        // Stale after max_age.
        assert_eq!(cache.lookup(b"id-b", t + AGE), None);
        cache.invalidate("aa", t);
        assert_eq!(cache.lookup(b"id-a-sha1", t), None);
        assert_eq!(cache.lookup(b"id-a-sha256", t), None);
        assert!(cache.lookup(b"id-b", t).is_some());
        // A response signed from a status read before the invalidation is not kept.
        cache.store(b"id-a-sha1", "aa", b"stale-good", t, g, 0);
        assert_eq!(cache.lookup(b"id-a-sha1", t), None);
        // One read after it is.
        let g2 = cache.generation();
        cache.store(b"id-a-sha1", "aa", b"revoked", t, g2, 0);
        assert_eq!(
            cache.lookup(b"id-a-sha1", t).as_deref(),
            Some(&b"revoked"[..])
        );
    }

    /// The follower hears of a change late: a response already signed from the changed
    /// status (its read saw the outbox entry) stays cached; one from before goes, and one
    /// still being signed from before is not kept.
    #[test]
    fn the_followers_late_invalidation_keeps_responses_signed_after_the_change() {
        let cache = Cache::new(AGE, 1 << 20);
        let t = Duration::from_secs(1_000);
        cache.store(b"id-a", "aa", b"after", t, cache.generation(), 7);
        cache.store(b"id-b", "bb", b"before", t, cache.generation(), 6);
        cache.invalidate_at("aa", 7, t);
        cache.invalidate_at("bb", 7, t);
        assert_eq!(cache.lookup(b"id-a", t).as_deref(), Some(&b"after"[..]));
        assert_eq!(cache.lookup(b"id-b", t), None);
        let g = cache.generation();
        cache.invalidate_at("bb", 9, t);
        cache.store(b"id-b", "bb", b"in flight", t, g, 8);
        assert_eq!(cache.lookup(b"id-b", t), None);
        cache.store(b"id-b", "bb", b"in flight, seen", t, g, 9);
        assert_eq!(
            cache.lookup(b"id-b", t).as_deref(),
            Some(&b"in flight, seen"[..])
        );
        // This process's own change forgets whatever was cached.
        cache.invalidate("aa", t);
        assert_eq!(cache.lookup(b"id-a", t), None);
        // ... and a response read before it stays refused even when the follower then
        // hears of an older entry late.
        let g = cache.generation();
        cache.invalidate("cc", t);
        cache.invalidate_at("cc", 3, t);
        cache.store(b"id-c", "cc", b"stale", t, g, 5);
        assert_eq!(cache.lookup(b"id-c", t), None);
    }

    #[test]
    fn the_cache_is_bounded_in_bytes_and_swept() {
        let max = 64 * 1024;
        let cache = Cache::new(AGE, max);
        let t = Duration::from_secs(1_000);
        let response = vec![0x30; 1024];
        for i in 0..100_000u32 {
            let key = i.to_be_bytes();
            cache.store(&key, &i.to_string(), &response, t, cache.generation(), 0);
            assert!(cache.bytes() <= max);
        }
        assert!(cache.len() < 100);
        // Later, everything is stale: one store sweeps it all away.
        let later = t + AGE + Duration::from_secs(1);
        cache.store(b"new", "new", &response, later, cache.generation(), 0);
        assert_eq!(cache.len(), 1);
        // An entry larger than the whole bound is not kept.
        cache.store(b"huge", "huge", &vec![0; max], later, cache.generation(), 0);
        assert_eq!(cache.lookup(b"huge", later), None);
        let off = Cache::new(Duration::ZERO, max);
        off.store(b"r", "aa", b"x", t, 0, 0);
        assert!(off.is_empty());
    }

    /// A request with no CertID and a nonce extension of `len` octets.
    fn with_nonce(len: usize) -> OcspRequest {
        let value = OctetString::new(vec![7u8; len]).unwrap().to_der().unwrap();
        OcspRequest {
            tbs_request: x509_ocsp::TbsRequest {
                version: x509_ocsp::Version::V1,
                requestor_name: None,
                request_list: Vec::new(),
                request_extensions: Some(vec![Extension {
                    extn_id: const_oid::db::rfc6960::ID_PKIX_OCSP_NONCE,
                    critical: false,
                    extn_value: OctetString::new(value).unwrap(),
                }]),
            },
            optional_signature: None,
        }
    }

    #[test]
    fn nonces_of_1_to_32_octets_are_echoed_and_others_refused() {
        assert!(nonce(&with_nonce(0)).is_err());
        assert!(nonce(&with_nonce(1)).unwrap().is_some());
        assert!(nonce(&with_nonce(32)).unwrap().is_some());
        assert!(nonce(&with_nonce(33)).is_err());
        let mut none = with_nonce(1);
        none.tbs_request.request_extensions = None;
        assert!(nonce(&none).unwrap().is_none());
    }
}

//! The OCSP responder (RFC 6960): answers for the issuing CA's certificates, signed by the
//! delegated responder key in the token, with the responder certificate attached.
//!
//! Requests in the RFC 5019 shape (one certificate, no nonce or other extension: what
//! browsers and most relying parties send) are answered from [`Cache`], a map of pre-signed
//! responses per certificate that the server invalidates in the same critical section as
//! every status change; everything else is signed afresh from the database.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use axum::body::Bytes;

use der::asn1::OctetString;
use der::{Decode, Encode};
use diesel::prelude::*;
use sha1::Digest as _;
use x509_cert::ext::pkix::CrlReason;
use x509_cert::ext::Extension;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    ResponderId, ResponseData, RevokedInfo, SingleResponse,
};

use crate::ca::{reason_code, IssuingCa};
use crate::clock::Clock;
use crate::db::schema::certificates;

/// Most certificates one request may ask about.
const MAX_REQUESTS: usize = 16;
/// How long a response may be cached by relying parties.
const VALIDITY: Duration = Duration::from_secs(3600);

fn generalized(t: Duration) -> Option<OcspGeneralizedTime> {
    der::asn1::GeneralizedTime::from_unix_duration(Duration::from_secs(t.as_secs()))
        .ok()
        .map(OcspGeneralizedTime)
}

/// The hashes of our issuer in a CertId's algorithm, or None for an algorithm we do not
/// answer in (SHA-1 and SHA-256 are answered).
fn issuer_hashes(ca: &IssuingCa, alg: &const_oid::ObjectIdentifier) -> Option<(Vec<u8>, Vec<u8>)> {
    let name = ca.subject_der().ok()?;
    let key = ca.subject_public_key_bits();
    if *alg == const_oid::db::rfc5912::ID_SHA_1 {
        Some((
            sha1::Sha1::digest(&name).to_vec(),
            sha1::Sha1::digest(key).to_vec(),
        ))
    } else if *alg == const_oid::db::rfc5912::ID_SHA_256 {
        Some((
            sha2::Sha256::digest(&name).to_vec(),
            sha2::Sha256::digest(key).to_vec(),
        ))
    } else {
        None
    }
}

/// Pre-signed responses per certificate, for requests in the RFC 5019 shape.
///
/// Keyed by the request's exact DER, so a hit costs one hash lookup and no parsing (the
/// response echoes the request's CertID, which clients compare byte for byte), and indexed
/// by serial, which is what a status change invalidates. Only answers about certificates we
/// issued are kept (asking about random serials cannot grow the map), and at most
/// [`Cache::MAX_ENTRIES`].
///
/// The cache is per process: the server invalidates a serial while it holds the lock it
/// changes the status under, so one `serve` process never answers from a stale entry. Other
/// processes sharing a PostgreSQL database see a change once their entry is older than
/// `max_age`.
#[derive(Debug)]
pub struct Cache {
    entries: RwLock<Entries>,
    max_age: Duration,
}

#[derive(Debug, Default)]
struct Entries {
    by_request: HashMap<Vec<u8>, Cached>,
    /// Serial (lower-case hex) to the requests cached for it.
    by_serial: HashMap<String, Vec<Vec<u8>>>,
}

#[derive(Debug)]
struct Cached {
    response: Bytes,
    made: Duration,
}

/// A response, and the serial it may be cached under, if it may.
#[derive(Debug)]
pub struct Answer {
    pub der: Vec<u8>,
    cacheable: Option<String>,
}

impl Cache {
    /// Most responses held (a response is about 1 KiB with the responder certificate).
    pub const MAX_ENTRIES: usize = 100_000;

    /// A cache whose entries are served for at most `max_age` after signing; zero disables.
    pub fn new(max_age: Duration) -> Self {
        Self {
            entries: RwLock::new(Entries::default()),
            max_age,
        }
    }

    /// The pre-signed response to exactly this request, if one is fresh.
    pub fn lookup(&self, request: &[u8], now: Duration) -> Option<Bytes> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .by_request
            .get(request)
            .filter(|c| now.saturating_sub(c.made) < self.max_age)
            .map(|c| c.response.clone())
    }

    /// Keeps `answer` to `request` if it may be cached. Call it under the lock status
    /// changes are made under, so an invalidation cannot slip between signing and storing.
    pub fn store(&self, request: &[u8], answer: &Answer, now: Duration) {
        let Some(serial) = &answer.cacheable else {
            return;
        };
        if self.max_age.is_zero() {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let Entries {
            by_request,
            by_serial,
        } = &mut *entries;
        if by_request.len() >= Self::MAX_ENTRIES && !by_request.contains_key(request) {
            let max_age = self.max_age;
            by_request.retain(|_, c| now.saturating_sub(c.made) < max_age);
            by_serial.retain(|_, requests| {
                requests.retain(|r| by_request.contains_key(r));
                !requests.is_empty()
            });
            if by_request.len() >= Self::MAX_ENTRIES {
                return;
            }
        }
        let cached = Cached {
            response: Bytes::copy_from_slice(&answer.der),
            made: now,
        };
        if by_request.insert(request.to_vec(), cached).is_none() {
            by_serial
                .entry(serial.clone())
                .or_default()
                .push(request.to_vec());
        }
    }

    /// Forgets every response for `serial` (lower-case hex); call on each status change.
    pub fn invalidate(&self, serial: &str) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        for request in entries.by_serial.remove(serial).unwrap_or_default() {
            entries.by_request.remove(&request);
        }
    }
}

/// The serial (lower-case hex) of a request in the RFC 5019 shape: one certificate, no
/// request or single extensions (a nonce needs a fresh signature).
fn cacheable(req: &OcspRequest) -> Option<String> {
    let tbs = &req.tbs_request;
    match (tbs.request_list.as_slice(), &tbs.request_extensions) {
        ([single], None) if single.single_request_extensions.is_none() => {
            Some(hex::encode(single.req_cert.serial_number.as_bytes()))
        }
        _ => None,
    }
}

/// A complete DER OCSP response to a DER request. Malformed requests get the
/// `malformedRequest` status (RFC 6960 §2.3), never a panic.
pub fn respond(
    ca: &IssuingCa,
    conn: &mut crate::db::Conn,
    clock: &dyn Clock,
    request: &[u8],
) -> Answer {
    let fail = |status: OcspResponse| Answer {
        der: status.to_der().unwrap_or_default(),
        cacheable: None,
    };
    let Ok(req) = OcspRequest::from_der(request) else {
        return fail(OcspResponse::malformed_request());
    };
    let list = &req.tbs_request.request_list;
    if list.is_empty() || list.len() > MAX_REQUESTS {
        return fail(OcspResponse::malformed_request());
    }
    match build(ca, conn, clock, &req) {
        Ok((der, known)) => Answer {
            der,
            cacheable: known.then(|| cacheable(&req)).flatten(),
        },
        Err(e) => {
            eprintln!("tessera-issuer: OCSP: {e:#}");
            fail(OcspResponse::internal_error())
        }
    }
}

fn build(
    ca: &IssuingCa,
    conn: &mut crate::db::Conn,
    clock: &dyn Clock,
    req: &OcspRequest,
) -> anyhow::Result<(Vec<u8>, bool)> {
    let now = clock.now();
    let mut responses = Vec::new();
    // Whether every certificate asked about is one of ours (so the answer may be cached).
    let mut all_known = true;
    for single in &req.tbs_request.request_list {
        let id: &CertId = &single.req_cert;
        let ours = issuer_hashes(ca, &id.hash_algorithm.oid).is_some_and(|(name, key)| {
            id.issuer_name_hash.as_bytes() == name.as_slice()
                && id.issuer_key_hash.as_bytes() == key.as_slice()
        });
        let status = if ours {
            let serial = hex::encode(id.serial_number.as_bytes());
            let row: Option<(Option<i64>, Option<String>)> = certificates::table
                .filter(certificates::serial.eq(&serial))
                .select((certificates::revoked_at, certificates::revocation_reason))
                .first(conn)
                .optional()?;
            match row {
                None => {
                    all_known = false;
                    CertStatus::unknown()
                }
                Some((None, _)) => CertStatus::good(),
                Some((Some(at), reason)) => {
                    let at = Duration::from_secs(u64::try_from(at).unwrap_or(0));
                    let reason = reason
                        .as_deref()
                        .and_then(reason_code)
                        .filter(|r| *r != CrlReason::Unspecified);
                    CertStatus::revoked(RevokedInfo {
                        revocation_time: generalized(at).ok_or_else(|| anyhow::anyhow!("time"))?,
                        revocation_reason: reason,
                    })
                }
            }
        } else {
            all_known = false;
            CertStatus::unknown()
        };
        responses.push(SingleResponse {
            cert_id: id.clone(),
            cert_status: status,
            this_update: generalized(now).ok_or_else(|| anyhow::anyhow!("time"))?,
            next_update: generalized(now + VALIDITY),
            single_extensions: None,
        });
    }
    // Echo the nonce (RFC 8954: at most 32 bytes are honoured).
    let nonce: Option<Extension> = req
        .tbs_request
        .request_extensions
        .as_ref()
        .and_then(|exts| {
            exts.iter()
                .find(|e| e.extn_id == const_oid::db::rfc6960::ID_PKIX_OCSP_NONCE)
                .filter(|e| e.extn_value.as_bytes().len() <= 34)
                .cloned()
        });
    let data = ResponseData {
        version: x509_ocsp::Version::V1,
        responder_id: ResponderId::ByKey(OctetString::new(
            sha1::Sha1::digest(ca.ocsp_public_key_bits()).to_vec(),
        )?),
        produced_at: generalized(now).ok_or_else(|| anyhow::anyhow!("time"))?,
        responses,
        response_extensions: nonce.map(|n| vec![n]),
    };
    let tbs = data.to_der()?;
    let (alg, signature) = ca.sign_as_ocsp_responder(&tbs)?;
    let basic = BasicOcspResponse {
        tbs_response_data: data,
        signature_algorithm: alg,
        signature: der::asn1::BitString::from_bytes(&signature)?,
        certs: Some(vec![ca.ocsp_certificate().clone()]),
    };
    Ok((OcspResponse::successful(basic)?.to_der()?, all_known))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(serial: Option<&str>, body: &[u8]) -> Answer {
        Answer {
            der: body.to_vec(),
            cacheable: serial.map(str::to_owned),
        }
    }

    #[test]
    fn cache_serves_fresh_entries_and_forgets_a_serial_on_invalidation() {
        let cache = Cache::new(Duration::from_secs(60));
        let t = Duration::from_secs(1_000);
        cache.store(b"req-a-sha1", &answer(Some("aa"), b"good-a"), t);
        cache.store(b"req-a-sha256", &answer(Some("aa"), b"good-a2"), t);
        cache.store(b"req-b", &answer(Some("bb"), b"good-b"), t);
        cache.store(b"req-unknown", &answer(None, b"unknown"), t);
        assert_eq!(
            cache.lookup(b"req-a-sha1", t).as_deref(),
            Some(&b"good-a"[..])
        );
        assert_eq!(cache.lookup(b"req-unknown", t), None, "uncacheable kept");
        // Stale after max_age.
        assert_eq!(cache.lookup(b"req-b", t + Duration::from_secs(60)), None);
        // Invalidation takes every request about the serial, and only those.
        cache.invalidate("aa");
        assert_eq!(cache.lookup(b"req-a-sha1", t), None);
        assert_eq!(cache.lookup(b"req-a-sha256", t), None);
        assert!(cache.lookup(b"req-b", t).is_some());
        // A response stored again replaces the old one.
        cache.store(b"req-b", &answer(Some("bb"), b"revoked-b"), t);
        assert_eq!(
            cache.lookup(b"req-b", t).as_deref(),
            Some(&b"revoked-b"[..])
        );
        cache.invalidate("bb");
        assert_eq!(cache.lookup(b"req-b", t), None);
    }

    #[test]
    fn a_zero_age_cache_keeps_nothing_and_a_full_one_stops_growing() {
        let off = Cache::new(Duration::ZERO);
        off.store(b"r", &answer(Some("aa"), b"x"), Duration::from_secs(1));
        assert_eq!(off.lookup(b"r", Duration::from_secs(1)), None);

        let cache = Cache::new(Duration::from_secs(60));
        let t = Duration::from_secs(1_000);
        for i in 0..Cache::MAX_ENTRIES + 10 {
            let key = i.to_be_bytes();
            cache.store(&key, &answer(Some(&i.to_string()), b"x"), t);
        }
        let held = cache.entries.read().unwrap().by_request.len();
        assert_eq!(held, Cache::MAX_ENTRIES);
        // Once the old entries are stale they make room.
        let later = t + Duration::from_secs(61);
        cache.store(b"new", &answer(Some("new"), b"y"), later);
        assert_eq!(cache.lookup(b"new", later).as_deref(), Some(&b"y"[..]));
        assert_eq!(cache.entries.read().unwrap().by_serial.len(), 1);
    }
}

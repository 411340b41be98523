//! The OCSP responder (RFC 6960): answers for the issuing CA's certificates, signed by the
//! delegated responder key in the token, with the responder certificate attached. Every
//! response is signed afresh from the database, so a status change shows at once.

use std::time::Duration;

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

/// A complete DER OCSP response to a DER request. Malformed requests get the
/// `malformedRequest` status (RFC 6960 §2.3), never a panic.
pub fn respond(
    ca: &IssuingCa,
    conn: &mut crate::db::Conn,
    clock: &dyn Clock,
    request: &[u8],
) -> Vec<u8> {
    let fail = |status: OcspResponse| status.to_der().unwrap_or_default();
    let Ok(req) = OcspRequest::from_der(request) else {
        return fail(OcspResponse::malformed_request());
    };
    let list = &req.tbs_request.request_list;
    if list.is_empty() || list.len() > MAX_REQUESTS {
        return fail(OcspResponse::malformed_request());
    }
    match build(ca, conn, clock, &req) {
        Ok(der) => der,
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
) -> anyhow::Result<Vec<u8>> {
    let now = clock.now();
    let mut responses = Vec::new();
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
                None => CertStatus::unknown(),
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
    Ok(OcspResponse::successful(basic)?.to_der()?)
}

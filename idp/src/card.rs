//! Is this a service ID we may log in with? (K7.1–7.2.) The certificate a card presented
//! in TLS: issued (signature checked) by one of our issuing CAs, valid now, not a CA, for
//! digital signatures and TLS client authentication, under the organisation's policy for
//! the service ID at LoA3 (which gives the LoA); then its status, fresh: OCSP first (the
//! responder the certificate names, or the configured one; a nonce; the response signed
//! by the CA or by a responder the CA delegated to, for this certificate, current), the CRL
//! if OCSP cannot answer (signed by the CA, current), and refused if neither can: fail
//! closed. Both are fetched over plain HTTP (both are signed), so what an attacker on the
//! path can do is bounded here: the OCSP answer must echo our nonce (no replay of an old
//! "good"), a signed answer that is wrong or says "unknown" refuses the card (no falling
//! back to an older source), and a CRL counts only while it is younger than the issuer's
//! publication interval (an on-path attacker could replay one at most that old; status
//! over the authenticated link to the issuer is the next step).

use std::time::Duration;

use der::{Decode, Encode};
use sha1::Digest as _;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityInfoAccessSyntax, BasicConstraints, CertificatePolicies, CrlDistributionPoints,
    ExtendedKeyUsage, KeyUsage, KeyUsages,
};
use x509_cert::Certificate;

const EKU_CLIENT_AUTH: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
const EKU_OCSP_SIGNING: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.9");
const AD_OCSP: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");

/// What a card's certificate is checked against.
#[derive(Debug, Clone)]
pub struct Trust {
    /// Our issuing CAs' certificates (DER).
    pub issuing_cas: Vec<Vec<u8>>,
    /// The organisation's certificate-policy OID for the service ID at LoA3.
    pub policy: const_oid::ObjectIdentifier,
    /// The LoA URI that policy gives.
    pub loa: String,
    /// An OCSP responder to ask instead of the one the certificate names.
    pub ocsp_url: Option<String>,
    /// Clock skew allowed in status times.
    pub skew: Duration,
    /// How old an OCSP answer may be (its thisUpdate), whatever its nextUpdate says.
    pub max_status_age: Duration,
    /// How old a CRL may be (its thisUpdate): the issuer publishes one at least hourly.
    pub max_crl_age: Duration,
    /// Whether an OCSP answer must echo the request's nonce (our issuer's does; a
    /// responder that pre-signs its answers does not).
    pub require_nonce: bool,
    /// How long to wait for a responder or a CRL.
    pub timeout: Duration,
}

/// A service ID that may log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    /// The certificate's serial number (hex, as the issuer names it).
    pub serial: String,
    /// Its subject (RFC 4514 text).
    pub subject: String,
    pub loa: String,
    /// How its status was learnt.
    pub status_from: StatusSource,
}

/// Where a good status came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusSource {
    Ocsp,
    Crl,
}

/// Why a certificate may not log in (each says so to the user and the audit trail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error("not a certificate: {0}")]
    Malformed(String),
    #[error("not issued by this organisation's service-ID CA")]
    OtherCa,
    #[error("the certificate is not valid now (expired, or not yet valid)")]
    NotValidNow,
    #[error("the certificate is not for logging in: {0}")]
    WrongUsage(String),
    #[error("the certificate is not issued under the service-ID policy")]
    NoPolicy,
    #[error("the certificate is revoked")]
    Revoked,
    #[error("the issuer does not know this certificate")]
    UnknownToIssuer,
    #[error("the certificate's status cannot be learnt now, so it cannot be used (OCSP: {ocsp}; CRL: {crl})")]
    StatusUnknown { ocsp: String, crl: String },
}

/// Checks `cert` (DER) at `now` (since the epoch).
pub fn check(cert: &[u8], trust: &Trust, now: Duration) -> Result<Card, CardError> {
    let leaf = Certificate::from_der(cert).map_err(|e| CardError::Malformed(e.to_string()))?;
    let ca = issuer_of(&leaf, &trust.issuing_cas).ok_or(CardError::OtherCa)?;
    if !valid_at(&leaf, now) {
        return Err(CardError::NotValidNow);
    }
    let tbs = &leaf.tbs_certificate;
    if ext::<BasicConstraints>(&leaf).is_some_and(|b| b.ca) {
        return Err(CardError::WrongUsage("a CA certificate".into()));
    }
    if !ext::<KeyUsage>(&leaf).is_some_and(|k| k.0.contains(KeyUsages::DigitalSignature)) {
        return Err(CardError::WrongUsage(
            "no digitalSignature key usage".into(),
        ));
    }
    if !ext::<ExtendedKeyUsage>(&leaf).is_some_and(|e| e.0.contains(&EKU_CLIENT_AUTH)) {
        return Err(CardError::WrongUsage(
            "no TLS client authentication (EKU)".into(),
        ));
    }
    if !ext::<CertificatePolicies>(&leaf)
        .is_some_and(|p| p.0.iter().any(|i| i.policy_identifier == trust.policy))
    {
        return Err(CardError::NoPolicy);
    }
    let serial = hex(tbs.serial_number.as_bytes());
    let status_from = match ocsp(&leaf, &ca, trust, now) {
        Ok(Answer::Good) => StatusSource::Ocsp,
        Ok(Answer::Revoked) => return Err(CardError::Revoked),
        // A certificate our own CA signed but does not know: a misused CA key looks so.
        Ok(Answer::Unknown) => return Err(CardError::UnknownToIssuer),
        Err(Failure::Refused(why)) => {
            return Err(CardError::StatusUnknown {
                ocsp: why,
                crl: "not asked: the OCSP answer was refused".into(),
            })
        }
        Err(Failure::Unavailable(ocsp_why)) => match crl(&leaf, &ca, trust, now) {
            Ok(true) => StatusSource::Crl,
            Ok(false) => return Err(CardError::Revoked),
            Err(crl_why) => {
                return Err(CardError::StatusUnknown {
                    ocsp: ocsp_why,
                    crl: crl_why,
                })
            }
        },
    };
    Ok(Card {
        serial,
        subject: tbs.subject.to_string(),
        loa: trust.loa.clone(),
        status_from,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ext<T: for<'a> Decode<'a> + const_oid::AssociatedOid>(cert: &Certificate) -> Option<T> {
    cert.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == T::OID)
        .and_then(|e| T::from_der(e.extn_value.as_bytes()).ok())
}

fn seconds(t: &x509_cert::time::Time) -> u64 {
    t.to_unix_duration().as_secs()
}

fn valid_at(cert: &Certificate, now: Duration) -> bool {
    let v = &cert.tbs_certificate.validity;
    seconds(&v.not_before) <= now.as_secs() && now.as_secs() <= seconds(&v.not_after)
}

/// Whether `signed` (a TBS structure's DER) carries a good signature by `signer`.
fn signed_by(
    signer: &Certificate,
    alg: &spki::AlgorithmIdentifierOwned,
    tbs: &[u8],
    signature: &[u8],
) -> bool {
    tessera_hsm::verify_signature(
        &signer.tbs_certificate.subject_public_key_info,
        alg,
        tbs,
        signature,
    )
    .is_ok()
}

/// The configured CA that issued `leaf`: its subject is the leaf's issuer and its key
/// verifies the leaf's signature.
fn issuer_of(leaf: &Certificate, cas: &[Vec<u8>]) -> Option<Certificate> {
    if leaf.signature_algorithm != leaf.tbs_certificate.signature {
        return None;
    }
    let tbs = leaf.tbs_certificate.to_der().ok()?;
    cas.iter()
        .filter_map(|der| Certificate::from_der(der).ok())
        .find(|ca| {
            ca.tbs_certificate.subject == leaf.tbs_certificate.issuer
                && signed_by(
                    ca,
                    &leaf.signature_algorithm,
                    &tbs,
                    leaf.signature.raw_bytes(),
                )
        })
}

/// Bytes from a URL, at most `limit`, within the trust's timeout; only `http` (OCSP and
/// CRLs are signed: TLS adds nothing, and RFC 5280/6960 responders are plain HTTP).
fn http(url: &str, body: Option<&[u8]>, limit: u64, timeout: Duration) -> Result<Vec<u8>, String> {
    if !url.starts_with("http://") {
        return Err(format!("{url}: only http:// is fetched"));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .build()
        .into();
    let response = match body {
        Some(b) => agent
            .post(url)
            .header("Content-Type", "application/ocsp-request")
            .send(b),
        None => agent.get(url).call(),
    };
    response
        .map_err(|e| format!("{url}: {e}"))?
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| format!("{url}: {e}"))
}

fn cert_id(leaf: &Certificate, ca: &Certificate) -> Result<x509_ocsp::CertId, String> {
    let name = ca
        .tbs_certificate
        .subject
        .to_der()
        .map_err(|e| e.to_string())?;
    let key = ca
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let octets = |b: &[u8]| der::asn1::OctetString::new(b.to_vec()).map_err(|e| e.to_string());
    Ok(x509_ocsp::CertId {
        hash_algorithm: spki::AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::ID_SHA_1,
            parameters: Some(der::asn1::Null.into()),
        },
        issuer_name_hash: octets(&sha1::Sha1::digest(&name))?,
        issuer_key_hash: octets(&sha1::Sha1::digest(key))?,
        serial_number: leaf.tbs_certificate.serial_number.clone(),
    })
}

/// What a signed, checked OCSP answer says.
enum Answer {
    Good,
    Revoked,
    Unknown,
}

/// Why there is no OCSP answer.
enum Failure {
    /// Nothing usable came (no responder, transport, an unsigned error status): the CRL
    /// may answer instead.
    Unavailable(String),
    /// An answer came and is wrong (signature, nonce, another certificate, too old): the
    /// card is refused; falling back would let whoever forged it choose the older source.
    Refused(String),
}

/// The OCSP answer for `leaf`.
fn ocsp(
    leaf: &Certificate,
    ca: &Certificate,
    trust: &Trust,
    now: Duration,
) -> Result<Answer, Failure> {
    use Failure::{Refused, Unavailable};
    let url = match &trust.ocsp_url {
        Some(u) => u.clone(),
        None => ext::<AuthorityInfoAccessSyntax>(leaf)
            .and_then(|aia| {
                aia.0
                    .into_iter()
                    .find_map(|ad| match (ad.access_method, ad.access_location) {
                        (m, GeneralName::UniformResourceIdentifier(u)) if m == AD_OCSP => {
                            Some(u.to_string())
                        }
                        _ => None,
                    })
            })
            .ok_or_else(|| Unavailable("the certificate names no OCSP responder".into()))?,
    };
    let id = cert_id(leaf, ca).map_err(Unavailable)?;
    let mut nonce = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let inner = der::asn1::OctetString::new(nonce.to_vec())
        .and_then(|o| o.to_der())
        .and_then(der::asn1::OctetString::new)
        .map_err(|e| Unavailable(e.to_string()))?;
    let nonce_ext = x509_cert::ext::Extension {
        extn_id: const_oid::db::rfc6960::ID_PKIX_OCSP_NONCE,
        critical: false,
        extn_value: inner,
    };
    let request = x509_ocsp::OcspRequest {
        tbs_request: x509_ocsp::TbsRequest {
            version: x509_ocsp::Version::V1,
            requestor_name: None,
            request_list: vec![x509_ocsp::Request {
                req_cert: id.clone(),
                single_request_extensions: None,
            }],
            request_extensions: Some(vec![nonce_ext]),
        },
        optional_signature: None,
    }
    .to_der()
    .map_err(|e| Unavailable(e.to_string()))?;
    let body = http(&url, Some(&request), 64 * 1024, trust.timeout).map_err(Unavailable)?;
    let response = x509_ocsp::OcspResponse::from_der(&body)
        .map_err(|e| Unavailable(format!("not an OCSP response: {e}")))?;
    if response.response_status != x509_ocsp::OcspResponseStatus::Successful {
        // Unsigned by nature: anyone could have sent it.
        return Err(Unavailable(format!(
            "the responder answered {:?}",
            response.response_status
        )));
    }
    let bytes = response
        .response_bytes
        .ok_or_else(|| Unavailable("a successful response without a body".into()))?;
    if bytes.response_type != const_oid::db::rfc6960::ID_PKIX_OCSP_BASIC {
        return Err(Unavailable("not a basic OCSP response".into()));
    }
    let basic = x509_ocsp::BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| Unavailable(e.to_string()))?;
    let tbs = basic
        .tbs_response_data
        .to_der()
        .map_err(|e| Unavailable(e.to_string()))?;
    // Signed by the CA, or by a responder certificate the CA issued for OCSP signing.
    let by_ca = signed_by(
        ca,
        &basic.signature_algorithm,
        &tbs,
        basic.signature.raw_bytes(),
    );
    let by_delegate = || {
        basic.certs.iter().flatten().any(|r| {
            r.tbs_certificate.issuer == ca.tbs_certificate.subject
                && r.signature_algorithm == r.tbs_certificate.signature
                && r.tbs_certificate.to_der().is_ok_and(|t| {
                    signed_by(ca, &r.signature_algorithm, &t, r.signature.raw_bytes())
                })
                && valid_at(r, now)
                && ext::<ExtendedKeyUsage>(r).is_some_and(|e| e.0.contains(&EKU_OCSP_SIGNING))
                && signed_by(
                    r,
                    &basic.signature_algorithm,
                    &tbs,
                    basic.signature.raw_bytes(),
                )
        })
    };
    if !by_ca && !by_delegate() {
        return Err(Refused(
            "the response is not signed by the CA or a responder it delegated to".into(),
        ));
    }
    // Our nonce echoed; an extension that is there but malformed counts as a wrong one.
    let nonce_present = basic
        .tbs_response_data
        .response_extensions
        .iter()
        .flatten()
        .any(|e| e.extn_id == const_oid::db::rfc6960::ID_PKIX_OCSP_NONCE);
    match basic.nonce() {
        Some(n) if n.0.as_bytes() == nonce => {}
        Some(_) => {
            return Err(Refused(
                "the response answers another request (nonce)".into(),
            ))
        }
        None if nonce_present => return Err(Refused("the response's nonce is malformed".into())),
        None if trust.require_nonce => {
            return Err(Refused(
                "the response does not echo our nonce (it could be a replay)".into(),
            ))
        }
        None => {}
    }
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|r| r.cert_id == id)
        .ok_or_else(|| Refused("the response is not about this certificate".into()))?;
    current(
        single.this_update.0.to_unix_duration(),
        single.next_update.map(|t| t.0.to_unix_duration()),
        trust.max_status_age,
        trust,
        now,
    )
    .map_err(Refused)?;
    Ok(match single.cert_status {
        x509_ocsp::CertStatus::Good(_) => Answer::Good,
        x509_ocsp::CertStatus::Revoked(_) => Answer::Revoked,
        x509_ocsp::CertStatus::Unknown(_) => Answer::Unknown,
    })
}

/// Whether a status issued at `this_update` (valid until `next_update`) is current: not
/// from the future, its nextUpdate not passed, and at most `max_age` old whatever its
/// nextUpdate says.
fn current(
    this_update: Duration,
    next_update: Option<Duration>,
    max_age: Duration,
    trust: &Trust,
    now: Duration,
) -> Result<(), String> {
    if this_update > now + trust.skew {
        return Err("the status is dated in the future".into());
    }
    if this_update + max_age + trust.skew < now {
        return Err("the status is too old".into());
    }
    match next_update {
        Some(next) if next + trust.skew < now => {
            Err("the status is out of date (nextUpdate passed)".into())
        }
        _ => Ok(()),
    }
}

/// The CRL's answer for `leaf`: `Ok(true)` not listed, `Ok(false)` listed.
fn crl(leaf: &Certificate, ca: &Certificate, trust: &Trust, now: Duration) -> Result<bool, String> {
    let url = ext::<CrlDistributionPoints>(leaf)
        .and_then(|dps| {
            dps.0
                .into_iter()
                .find_map(|dp| match dp.distribution_point {
                    Some(x509_cert::ext::pkix::name::DistributionPointName::FullName(names)) => {
                        names.into_iter().find_map(|n| match n {
                            GeneralName::UniformResourceIdentifier(u) => Some(u.to_string()),
                            _ => None,
                        })
                    }
                    _ => None,
                })
        })
        .ok_or("the certificate names no CRL")?;
    let body = http(&url, None, 64 * 1024 * 1024, trust.timeout)?;
    let list =
        x509_cert::crl::CertificateList::from_der(&body).map_err(|e| format!("not a CRL: {e}"))?;
    if list.tbs_cert_list.issuer != ca.tbs_certificate.subject
        || list.signature_algorithm != list.tbs_cert_list.signature
    {
        return Err("the CRL is not the CA's".into());
    }
    let tbs = list.tbs_cert_list.to_der().map_err(|e| e.to_string())?;
    if !signed_by(
        ca,
        &list.signature_algorithm,
        &tbs,
        list.signature.raw_bytes(),
    ) {
        return Err("the CRL is not signed by the CA".into());
    }
    // A delta, a partition (IssuingDistributionPoint) or anything else critical would
    // not be a complete list: refused.
    let critical = list
        .tbs_cert_list
        .crl_extensions
        .iter()
        .flatten()
        .any(|e| e.critical)
        || list
            .tbs_cert_list
            .revoked_certificates
            .iter()
            .flatten()
            .flat_map(|r| r.crl_entry_extensions.iter().flatten())
            .any(|e| e.critical);
    if critical {
        return Err("the CRL has a critical extension we do not read".into());
    }
    current(
        list.tbs_cert_list.this_update.to_unix_duration(),
        list.tbs_cert_list.next_update.map(|t| t.to_unix_duration()),
        trust.max_crl_age,
        trust,
        now,
    )?;
    let serial = &leaf.tbs_certificate.serial_number;
    Ok(!list
        .tbs_cert_list
        .revoked_certificates
        .iter()
        .flatten()
        .any(|r| &r.serial_number == serial))
}

//! Building X.509 certificates on the card (attestation) and at manufacture (the simulated
//! manufacturer CA). The signature comes from a closure so that the key can stay in any
//! key store.

use der::asn1::{BitString, OctetString};
use der::{Decode, Encode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use std::time::{Duration, SystemTime};
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;

use der::asn1::{GeneralizedTime, UtcTime};
use x509_cert::time::{Time, Validity};

/// ecdsa-with-SHA256 (RFC 5758 §3.2), without parameters.
pub fn ecdsa_with_sha256() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
        parameters: None,
    }
}

/// The parts of a certificate that vary.
#[derive(Debug)]
pub struct CertTemplate<'a> {
    /// Positive serial number bytes (big-endian, at most 20 bytes).
    pub serial: &'a [u8],
    pub issuer: Name,
    pub subject: Name,
    pub validity: Validity,
    pub spki_der: &'a [u8],
    pub extensions: Vec<Extension>,
}

/// Why a certificate could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    #[error("DER: {0}")]
    Der(#[from] der::Error),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Assembles the TBS certificate, asks `sign` for a signature over its DER, and returns
/// the certificate DER.
pub fn build(
    t: CertTemplate<'_>,
    sig_alg: AlgorithmIdentifierOwned,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, CertError> {
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(t.serial)?,
        signature: sig_alg.clone(),
        issuer: t.issuer,
        validity: t.validity,
        subject: t.subject,
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(t.spki_der)?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: (!t.extensions.is_empty()).then_some(t.extensions),
    };
    let tbs_der = tbs.to_der()?;
    let signature = sign(&tbs_der).map_err(CertError::Sign)?;
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: sig_alg,
        signature: BitString::from_bytes(&signature)?,
    };
    Ok(cert.to_der()?)
}

/// The content of a certificate data object (SP 800-73-4 Part 1 Table 10: `70` the
/// certificate, `71` CertInfo 00 (not compressed), `FE` the empty error detection code), as
/// yubico-piv-tool and OpenSC read it.
pub fn object_content(certificate_der: &[u8]) -> Vec<u8> {
    let mut content = Vec::new();
    crate::tlv::push(&mut content, 0x70, certificate_der);
    crate::tlv::push(&mut content, 0x71, &[0]);
    crate::tlv::push(&mut content, 0xFE, &[]);
    content
}

/// An extension whose value is given as raw bytes.
pub fn extension(
    oid: const_oid::ObjectIdentifier,
    critical: bool,
    value: &[u8],
) -> Result<Extension, der::Error> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value)?,
    })
}

/// `days` from `now`, in whole seconds (DER times carry no fractions).
pub fn validity(now: SystemTime, days: u64) -> Result<Validity, der::Error> {
    let start = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| der::Error::from(der::ErrorKind::DateTime))?;
    let start = Duration::from_secs(start.as_secs());
    let end = start + Duration::from_secs(days * 86_400);
    Ok(Validity {
        not_before: time(start)?,
        not_after: time(end)?,
    })
}

/// RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
fn time(since_epoch: Duration) -> Result<Time, der::Error> {
    Ok(match UtcTime::from_unix_duration(since_epoch) {
        Ok(t) => Time::UtcTime(t),
        Err(_) => Time::GeneralTime(GeneralizedTime::from_unix_duration(since_epoch)?),
    })
}

//! X.509 helpers: time encoding, serials, key identifiers, extensions, fingerprints, OIDs,
//! signature verification; and building the CA's own certificates (root, issuing CA, OCSP
//! responder), signed through a closure once the TBS certificate is complete (crate-private:
//! [`crate::authority`] is the public way).

use std::time::Duration;

use anyhow::Result;
use der::asn1::{BitString, GeneralizedTime, Null, OctetString, UtcTime};
use der::{Decode, Encode};
use sha1::Digest as _;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

/// RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
pub fn time(since_epoch: Duration) -> Result<Time> {
    let whole = Duration::from_secs(since_epoch.as_secs());
    Ok(match UtcTime::from_unix_duration(whole) {
        Ok(t) => Time::UtcTime(t),
        Err(_) => Time::GeneralTime(GeneralizedTime::from_unix_duration(whole)?),
    })
}

/// A positive serial number with 128 random bits (CA/B BR §7.1: at least 64 bits from a
/// CSPRNG; PROFILES.md).
pub fn random_serial() -> Vec<u8> {
    let mut s = vec![0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut s);
    s[0] &= 0x7F;
    if s[0] == 0 {
        s[0] = 0x01;
    }
    s
}

/// The key identifier a certificate's issuer gives: its SubjectKeyIdentifier (RFC 5280
/// §4.2.1.1 says the AKI carries it), or, without one, method (1) over its key.
pub fn issuer_key_id(issuer: &x509_cert::Certificate) -> Result<Vec<u8>> {
    if let Ok(Some((_, ski))) = issuer.tbs_certificate.get::<SubjectKeyIdentifier>() {
        return Ok(ski.0.as_bytes().to_vec());
    }
    key_identifier(&issuer.tbs_certificate.subject_public_key_info.to_der()?)
}

/// The key identifier of RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey bits.
pub fn key_identifier(spki_der: &[u8]) -> Result<Vec<u8>> {
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der)?;
    Ok(sha1::Sha1::digest(spki.subject_public_key.raw_bytes()).to_vec())
}

/// An extension with a DER-encoded value.
pub fn ext(
    oid: const_oid::ObjectIdentifier,
    critical: bool,
    value: &impl Encode,
) -> Result<Extension> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

/// What kind of certificate the CA makes for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CaRole {
    Root,
    /// An issuing CA; it issues end-entity certificates only (path length 0).
    Issuing,
    /// The delegated OCSP responder (RFC 6960 §4.2.2.2).
    OcspResponder,
    /// The issuer's own HTTPS server certificate (serverAuth) for its host names.
    TlsServer,
    /// The key that signs checkpoints of the audit chain (digitalSignature and
    /// contentCommitment: it vouches for a record of what happened).
    AuditSigner,
}

/// Everything a CA certificate needs besides the signature.
#[derive(Debug)]
pub(crate) struct CaCertificate<'a> {
    pub(crate) role: CaRole,
    pub(crate) subject: Name,
    pub(crate) issuer: Name,
    pub(crate) subject_spki: &'a [u8],
    /// The issuer's key identifier: its certificate's SKI, or (self-signed) the subject's.
    pub(crate) issuer_key_id: Vec<u8>,
    pub(crate) not_before: Duration,
    pub(crate) not_after: Duration,
    pub(crate) signature_algorithm: AlgorithmIdentifierOwned,
    /// Subject alternative names (the TLS server's host names and addresses).
    pub(crate) san: Vec<x509_cert::ext::pkix::name::GeneralName>,
    /// For an issuing CA: the certificate policy it issues under, and where its issuer's
    /// CRL is (RFC 5280 §4.2.1.4, §4.2.1.13).
    pub(crate) policy: Option<const_oid::ObjectIdentifier>,
    pub(crate) crl_url: Option<String>,
}

/// Builds and signs a CA-side certificate. `sign` receives the DER TBS certificate.
pub(crate) fn build(
    c: CaCertificate<'_>,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    use const_oid::db::rfc5280 as oid;
    let mut extensions = Vec::new();
    match c.role {
        CaRole::Root | CaRole::Issuing => {
            let bc = BasicConstraints {
                ca: true,
                path_len_constraint: (c.role == CaRole::Issuing).then_some(0),
            };
            extensions.push(ext(oid::ID_CE_BASIC_CONSTRAINTS, true, &bc)?);
            let ku = KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign);
            extensions.push(ext(oid::ID_CE_KEY_USAGE, true, &ku)?);
            if let Some(policy) = c.policy {
                use x509_cert::ext::pkix::certpolicy::PolicyInformation;
                let policies = x509_cert::ext::pkix::CertificatePolicies(vec![PolicyInformation {
                    policy_identifier: policy,
                    policy_qualifiers: None,
                }]);
                extensions.push(ext(oid::ID_CE_CERTIFICATE_POLICIES, false, &policies)?);
            }
            if let Some(url) = &c.crl_url {
                use x509_cert::ext::pkix::crl::dp::DistributionPoint;
                use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
                let dp = x509_cert::ext::pkix::CrlDistributionPoints(vec![DistributionPoint {
                    distribution_point: Some(DistributionPointName::FullName(vec![
                        GeneralName::UniformResourceIdentifier(der::asn1::Ia5String::new(url)?),
                    ])),
                    reasons: None,
                    crl_issuer: None,
                }]);
                extensions.push(ext(oid::ID_CE_CRL_DISTRIBUTION_POINTS, false, &dp)?);
            }
        }
        CaRole::TlsServer => {
            let ku = KeyUsage(KeyUsages::DigitalSignature.into());
            extensions.push(ext(oid::ID_CE_KEY_USAGE, true, &ku)?);
            let eku = ExtendedKeyUsage(vec![oid::ID_KP_SERVER_AUTH]);
            extensions.push(ext(oid::ID_CE_EXT_KEY_USAGE, false, &eku)?);
            extensions.push(ext(
                oid::ID_CE_SUBJECT_ALT_NAME,
                false,
                &x509_cert::ext::pkix::SubjectAltName(c.san.clone()),
            )?);
        }
        CaRole::AuditSigner => {
            let ku = KeyUsage(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation);
            extensions.push(ext(oid::ID_CE_KEY_USAGE, true, &ku)?);
        }
        CaRole::OcspResponder => {
            let ku = KeyUsage(KeyUsages::DigitalSignature.into());
            extensions.push(ext(oid::ID_CE_KEY_USAGE, true, &ku)?);
            let eku = ExtendedKeyUsage(vec![oid::ID_KP_OCSP_SIGNING]);
            extensions.push(ext(oid::ID_CE_EXT_KEY_USAGE, false, &eku)?);
            // RFC 6960 §4.2.2.2.1: id-pkix-ocsp-nocheck, value NULL.
            extensions.push(ext(
                const_oid::db::rfc6960::ID_PKIX_OCSP_NOCHECK,
                false,
                &Null,
            )?);
        }
    }
    let ski = SubjectKeyIdentifier(OctetString::new(key_identifier(c.subject_spki)?)?);
    extensions.push(ext(oid::ID_CE_SUBJECT_KEY_IDENTIFIER, false, &ski)?);
    if c.role != CaRole::Root {
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(c.issuer_key_id.clone())?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        };
        extensions.push(ext(oid::ID_CE_AUTHORITY_KEY_IDENTIFIER, false, &aki)?);
    }
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&random_serial())?,
        signature: c.signature_algorithm.clone(),
        issuer: c.issuer,
        validity: Validity {
            not_before: time(c.not_before)?,
            not_after: time(c.not_after)?,
        },
        subject: c.subject,
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(c.subject_spki)?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let signature = sign(&tbs.to_der()?)?;
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: c.signature_algorithm,
        signature: BitString::from_bytes(&signature)?,
    };
    Ok(cert.to_der()?)
}

/// What the certificates table records of a certificate the CA made for itself.
#[derive(Debug, Clone)]
pub struct Described {
    pub serial: tessera_issuer_types::Serial,
    pub tbs: Vec<u8>,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    pub fingerprint: String,
}

/// Parses a certificate for [`Described`].
pub fn describe(der: &[u8]) -> Result<Described> {
    let cert = Certificate::from_der(der)?;
    let serial =
        tessera_issuer_types::Serial::from_bytes(cert.tbs_certificate.serial_number.as_bytes())
            .map_err(|e| anyhow::anyhow!("serial: {e}"))?;
    let not_after = cert
        .tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs();
    Ok(Described {
        serial,
        tbs: cert.tbs_certificate.to_der()?,
        not_after: i64::try_from(not_after).unwrap_or(i64::MAX),
        fingerprint: fingerprint(der),
    })
}

/// The SHA-256 fingerprint of a certificate, as `AA:BB:…`.
pub fn fingerprint(cert_der: &[u8]) -> String {
    sha2::Sha256::digest(cert_der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The certificate in a file, as DER: DER, or PEM (the first block of a chain, as in a TLS
/// certificate file). Anything else is an error that names the file.
pub fn read_certificate(path: &std::path::Path) -> Result<Vec<u8>> {
    use anyhow::Context;
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let first = raw
        .windows(END.len())
        .position(|w| w == END)
        .map_or(&raw[..], |at| &raw[..at + END.len()]);
    let der = match der::pem::decode_vec(first) {
        Ok(("CERTIFICATE", der)) => der,
        Ok((label, _)) => anyhow::bail!("{}: a PEM {label}, not a CERTIFICATE", path.display()),
        Err(_) => raw,
    };
    Certificate::from_der(&der)
        .with_context(|| format!("{}: not an X.509 certificate", path.display()))?;
    Ok(der)
}

/// PEM of a DER certificate.
pub fn to_pem(cert_der: &[u8]) -> Result<String> {
    der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, cert_der)
        .map_err(|e| anyhow::anyhow!("PEM encoding: {e}"))
}

/// Parses a dotted OID, refusing what `const-oid` 0.9 cannot hold: arcs of 2^28 and more
/// (it overflows on arcs above 32 bits instead of reporting an error, and cannot encode
/// arcs that need five base-128 bytes).
pub fn parse_oid(s: &str) -> Result<const_oid::ObjectIdentifier> {
    let arcs: Vec<&str> = s.trim().split('.').collect();
    anyhow::ensure!(arcs.len() >= 2, "OID {s:?} needs at least two arcs");
    let mut values = Vec::with_capacity(arcs.len());
    for arc in &arcs {
        anyhow::ensure!(
            !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()),
            "OID {s:?}: arcs are decimal numbers"
        );
        let value = arc
            .parse::<u32>()
            .ok()
            .filter(|v| *v < 1 << 28)
            .ok_or_else(|| {
                anyhow::anyhow!("OID {s:?}: arc {arc} is 2^28 or more, which is not supported")
            })?;
        values.push(value);
    }
    anyhow::ensure!(values[0] <= 2, "OID {s:?}: the first arc is 0, 1 or 2");
    anyhow::ensure!(
        values[0] == 2 || values[1] < 40,
        "OID {s:?}: under 0 and 1 the second arc is below 40"
    );
    const_oid::ObjectIdentifier::new(s.trim()).map_err(|e| anyhow::anyhow!("OID {s:?}: {e}"))
}

pub use tessera_hsm::verify_signature;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_that_const_oid_cannot_hold_are_refused_not_panicked_on() {
        assert!(parse_oid("1.2.752.201.3.1").is_ok());
        assert!(parse_oid("2.25.268435455").is_ok());
        assert!(parse_oid("2.25.268435456").is_err());
        for bad in [
            "2.25.329800735698586629295641978511506172918",
            "1",
            "1..2",
            "3.1",
            "1.40",
            "1.2.x",
            "",
        ] {
            assert!(parse_oid(bad).is_err(), "{bad}");
        }
    }
}

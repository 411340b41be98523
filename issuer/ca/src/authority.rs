//! The CA's own certificates, for `init` and the key ceremonies: the self-signed root, the
//! issuing CA under it (with its certificate policy and the root CRL's location), the
//! delegated OCSP responder and the HTTPS server certificate, a certificate request for an
//! offline root, and the root's CRL. Each takes typed contents and has the token sign what
//! it builds itself.

use std::time::Duration;

use anyhow::{Context, Result};
use der::{Decode, Encode};
use tessera_issuer_types::config::KeyAlg;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;
use x509_cert::Certificate;

use crate::signer::{KeyRole, Signer, Tbs};
use crate::x509::{self, CaCertificate, CaRole};
use tessera_hsm::Token;

/// Validity of a certificate the CA makes for itself.
#[derive(Debug, Clone, Copy)]
pub struct Period {
    pub not_before: Duration,
    pub not_after: Duration,
}

/// A self-signed root with the key `label` in the token.
pub fn root_certificate(
    token: &Token,
    label: &str,
    alg: KeyAlg,
    name: Name,
    period: Period,
) -> Result<Vec<u8>> {
    let spki = token.public_key(label, alg)?;
    let key_id = x509::key_identifier(&spki)?;
    x509::build(
        CaCertificate {
            role: CaRole::Root,
            subject: name.clone(),
            issuer: name,
            subject_spki: &spki,
            issuer_key_id: key_id,
            not_before: period.not_before,
            not_after: period.not_after,
            signature_algorithm: crate::signature_algorithm(alg),
            san: Vec::new(),
            policy: None,
            crl_url: None,
        },
        |tbs| token.sign(label, alg, tbs),
    )
}

/// What an issuing-CA certificate carries besides names and keys.
#[derive(Debug, Clone)]
pub struct IssuingProfile {
    /// Its validity.
    pub period: Period,
    /// The certificate policy the CA issues under.
    pub policy: const_oid::ObjectIdentifier,
    /// Where the root's CRL is published.
    pub root_crl_url: String,
}

/// An issuing-CA certificate for `subject_spki`, signed by the root key `root_label`.
pub fn issuing_certificate(
    token: &Token,
    root_label: &str,
    alg: KeyAlg,
    root: &Certificate,
    subject: Name,
    subject_spki: &[u8],
    profile: &IssuingProfile,
) -> Result<Vec<u8>> {
    let period = profile.period;
    x509::build(
        CaCertificate {
            role: CaRole::Issuing,
            subject,
            issuer: root.tbs_certificate.subject.clone(),
            subject_spki,
            issuer_key_id: x509::issuer_key_id(root)?,
            not_before: period.not_before,
            not_after: period.not_after,
            signature_algorithm: crate::signature_algorithm(alg),
            san: Vec::new(),
            policy: Some(profile.policy),
            crl_url: Some(profile.root_crl_url.clone()),
        },
        |tbs| token.sign(root_label, alg, tbs),
    )
}

/// A certificate the CA makes for one of the issuer's own keys: the delegated OCSP
/// responder and the audit signer (under the issuing CA), or the HTTPS server (under the
/// TLS CA).
#[derive(Debug)]
pub enum OwnCertificate<'a> {
    OcspResponder,
    AuditSigner,
    TlsServer { hosts: &'a [GeneralName] },
}

/// The HTTPS certificate's subject alternative names: IP addresses and DNS names.
pub fn tls_names(hosts: &[String]) -> Result<Vec<GeneralName>> {
    hosts
        .iter()
        .map(|host| {
            Ok(match host.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(v4)) => {
                    GeneralName::IpAddress(der::asn1::OctetString::new(v4.octets())?)
                }
                Ok(std::net::IpAddr::V6(v6)) => {
                    GeneralName::IpAddress(der::asn1::OctetString::new(v6.octets())?)
                }
                Err(_) => {
                    tessera_issuer_types::config::check_domain(host)
                        .map_err(|e| anyhow::anyhow!("TLS host {host:?}: {e}"))?;
                    GeneralName::DnsName(der::asn1::Ia5String::new(host)?)
                }
            })
        })
        .collect()
}

/// What an own certificate is made of besides its kind and issuer.
#[derive(Debug)]
pub struct OwnRequest<'a> {
    pub subject: Name,
    pub subject_spki: &'a [u8],
    pub period: Period,
}

/// Signs an [`OwnCertificate`] with the key that issues that kind — the issuing CA's for
/// the OCSP responder and the audit signer, the TLS CA's for the HTTPS server, nothing
/// else — whose certificate is `issuer`. `record` gets the DER TBS certificate before the
/// token signs it (the caller commits the intent there; an error stops the signature).
/// For `init` and for renewal while serving alike.
pub fn own_certificate(
    signer: &dyn Signer,
    issuer: &Certificate,
    kind: OwnCertificate<'_>,
    request: OwnRequest<'_>,
    record: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<Vec<u8>> {
    let (role, san, issuer_role) = match kind {
        OwnCertificate::OcspResponder => (CaRole::OcspResponder, Vec::new(), KeyRole::Issuing),
        OwnCertificate::AuditSigner => (CaRole::AuditSigner, Vec::new(), KeyRole::Issuing),
        OwnCertificate::TlsServer { hosts } => (CaRole::TlsServer, hosts.to_vec(), KeyRole::TlsCa),
    };
    let OwnRequest {
        subject,
        subject_spki,
        period,
    } = request;
    anyhow::ensure!(
        signer.public_key(issuer_role)?
            == issuer.tbs_certificate.subject_public_key_info.to_der()?,
        "the issuer certificate given is not for the {issuer_role:?} key"
    );
    x509::build(
        CaCertificate {
            role,
            subject,
            issuer: issuer.tbs_certificate.subject.clone(),
            subject_spki,
            issuer_key_id: x509::issuer_key_id(issuer)?,
            not_before: period.not_before,
            not_after: period.not_after,
            signature_algorithm: crate::signature_algorithm(signer.algorithm()),
            san,
            policy: None,
            crl_url: None,
        },
        |tbs| {
            record(tbs)?;
            signer.sign(issuer_role, Tbs::new(tbs))
        },
    )
}

/// A PKCS#10 request for the key `label`, signed by it (the issuing CA's request to an
/// offline root).
pub fn certificate_request(
    token: &Token,
    label: &str,
    alg: KeyAlg,
    subject: Name,
) -> Result<Vec<u8>> {
    let spki = token.public_key(label, alg)?;
    let info = x509_cert::request::CertReqInfo {
        version: x509_cert::request::Version::V1,
        subject,
        public_key: spki::SubjectPublicKeyInfoOwned::from_der(&spki)?,
        attributes: Default::default(),
    };
    let signature = token.sign(label, alg, &info.to_der()?)?;
    Ok(x509_cert::request::CertReq {
        info,
        algorithm: crate::signature_algorithm(alg),
        signature: der::asn1::BitString::from_bytes(&signature)?,
    }
    .to_der()?)
}

/// The root's CRL (no entries: a root revokes only its issuing CAs), signed by the
/// signer's root key, valid until `next_update`.
pub fn root_crl(
    signer: &dyn Signer,
    root: &Certificate,
    number: i64,
    now: Duration,
    next_update: Duration,
) -> Result<Vec<u8>> {
    use x509_cert::ext::pkix::{AuthorityKeyIdentifier, CrlNumber};
    anyhow::ensure!(
        signer.public_key(KeyRole::Root)?
            == root.tbs_certificate.subject_public_key_info.to_der()?,
        "the root certificate given is not for the root key"
    );
    let signature = crate::signature_algorithm(signer.algorithm());
    let header = crate::crl::CrlHeader {
        signature: &signature,
        issuer: &root.tbs_certificate.subject,
        this_update: x509::time(now)?,
        next_update: Some(x509::time(next_update)?),
    };
    let builder = crate::crl::CrlBuilder::new(&header, 0)?;
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(der::asn1::OctetString::new(x509::issuer_key_id(root)?)?),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    };
    let extensions = vec![
        x509::ext(
            const_oid::db::rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER,
            false,
            &aki,
        )?,
        x509::ext(
            const_oid::db::rfc5280::ID_CE_CRL_NUMBER,
            false,
            &CrlNumber(der::asn1::Uint::new(&number.to_be_bytes())?),
        )?,
    ];
    builder
        .finish(&extensions, |tbs| -> Result<_> {
            Ok((
                signature.clone(),
                signer.sign(KeyRole::Root, Tbs::new(tbs))?,
            ))
        })
        .context("signing the root CRL")
}

/// A self-signed issuing-CA certificate and an OCSP responder certificate for a
/// [`crate::signer::MemorySigner`]'s keys: an [`crate::IssuingCa`] for unit tests of the
/// layers above, in milliseconds and without a token.
#[cfg(feature = "memory-signer")]
pub fn memory_certificates(
    signer: &crate::signer::MemorySigner,
    now: Duration,
) -> Result<(Vec<u8>, Vec<u8>)> {
    use std::str::FromStr;
    let spki = signer.public_key(KeyRole::Issuing)?;
    let name = Name::from_str("CN=Test Issuing CA,O=Tessera tests")?;
    let period = Period {
        not_before: now.saturating_sub(Duration::from_secs(3600)),
        not_after: now + Duration::from_secs(10 * 365 * 86_400),
    };
    let issuing = x509::build(
        CaCertificate {
            role: CaRole::Issuing,
            subject: name.clone(),
            issuer: name,
            subject_spki: &spki,
            issuer_key_id: x509::key_identifier(&spki)?,
            not_before: period.not_before,
            not_after: period.not_after,
            signature_algorithm: crate::signature_algorithm(signer.algorithm()),
            san: Vec::new(),
            policy: None,
            crl_url: None,
        },
        |tbs| signer.sign(KeyRole::Issuing, Tbs::new(tbs)),
    )?;
    let ocsp = own_certificate(
        signer,
        &Certificate::from_der(&issuing)?,
        OwnCertificate::OcspResponder,
        OwnRequest {
            subject: Name::from_str("CN=Test OCSP Responder,O=Tessera tests")?,
            subject_spki: &signer.public_key(KeyRole::Ocsp)?,
            period,
        },
        &mut |_| Ok(()),
    )?;
    Ok((issuing, ocsp))
}

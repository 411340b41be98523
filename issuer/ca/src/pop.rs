//! Proof of possession: what makes the CA believe the requester holds the private key of
//! the public key it asks to certify (issue 8, finding 5).
//!
//! - a PKCS#10 request whose signature verifies with the key it carries (RFC 2986);
//! - a PIV attestation in Yubico's format: the certificate the card's attestation key
//!   (slot `F9`) made for the key, and the card's attestation certificate (object
//!   `5FFF01`), chained to a manufacturer CA the issuer trusts, for the slot the profile
//!   names (the slot is in the attestation certificate's subject, `… Attestation 9a`).

use std::time::Duration;

use der::{Decode, Encode};
use x509_cert::request::CertReq;
use x509_cert::Certificate;

/// How the key was proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    Csr,
    Attestation,
    /// A TPM attestation: credential activation and `TPM2_Certify` (`crate::tpm`).
    TpmAttestation,
    /// None: a bare public key, accepted only where the profile allows it.
    None,
}

impl Proof {
    /// The name the audit trail records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csr => "csr",
            Self::Attestation => "attestation",
            Self::TpmAttestation => "tpm-attestation",
            Self::None => "none",
        }
    }
}

/// DER from PEM with the expected label (or DER given as is, when `allow_der`).
fn pem(text: &str, label: &str) -> Result<Vec<u8>, String> {
    match der::pem::decode_vec(text.as_bytes()) {
        Ok((l, der)) if l == label => Ok(der),
        Ok((l, _)) => Err(format!("PEM label {l:?}, expected {label}")),
        Err(_) => Err(format!("not PEM ({label})")),
    }
}

/// The SubjectPublicKeyInfo (DER) of a PEM public key: no proof.
pub fn bare_key(pem_text: &str) -> Result<Vec<u8>, String> {
    pem(pem_text, "PUBLIC KEY")
}

/// Why a PKCS#10 request's key is not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsrError {
    /// The key is one we never certify ([`crate::lint::check_public_key`]).
    Key(String),
    /// Not a request, or its signature does not verify with its key.
    Proof(String),
}

/// The key of a PEM PKCS#10 request: judged first (a key we would never certify, such as
/// RSA-1024, is refused as such, whatever its proof), then the request's signature
/// checked with it.
pub fn csr_key(pem_text: &str) -> Result<Vec<u8>, CsrError> {
    let der = pem(pem_text, "CERTIFICATE REQUEST").map_err(CsrError::Proof)?;
    let req = CertReq::from_der(&der)
        .map_err(|e| CsrError::Proof(format!("not a PKCS#10 request: {e}")))?;
    let key = req
        .info
        .public_key
        .to_der()
        .map_err(|e| CsrError::Proof(e.to_string()))?;
    crate::lint::check_public_key(&key).map_err(CsrError::Key)?;
    let info = req
        .info
        .to_der()
        .map_err(|e| CsrError::Proof(e.to_string()))?;
    crate::x509::verify_signature(
        &req.info.public_key,
        &req.algorithm,
        &info,
        req.signature.raw_bytes(),
    )
    .map_err(|e| {
        CsrError::Proof(format!(
            "the request's signature does not verify with its key: {e:#}"
        ))
    })?;
    Ok(key)
}

/// The key of a PIV attestation, after checking the chain to one of `roots`, the validity
/// of both certificates at `now`, and that it attests a key in `slot` (e.g. `0x9A`).
pub fn attested_key(
    certificate_pem: &str,
    intermediate_pem: &str,
    roots: &[Certificate],
    slot: u8,
    now: Duration,
) -> Result<Vec<u8>, String> {
    let leaf = Certificate::from_der(&pem(certificate_pem, "CERTIFICATE")?)
        .map_err(|e| format!("attestation certificate: {e}"))?;
    let intermediate = Certificate::from_der(&pem(intermediate_pem, "CERTIFICATE")?)
        .map_err(|e| format!("attestation intermediate: {e}"))?;
    signed_by(&leaf, &intermediate)
        .map_err(|e| format!("the attestation was not made by the card's attestation key: {e}"))?;
    let root = roots
        .iter()
        .find(|r| {
            r.tbs_certificate.subject == intermediate.tbs_certificate.issuer
                && signed_by(&intermediate, r).is_ok()
        })
        .ok_or("the card's attestation certificate does not chain to a trusted manufacturer CA")?;
    for (c, what) in [
        (&leaf, "attestation"),
        (&intermediate, "card attestation"),
        (root, "manufacturer CA"),
    ] {
        let v = &c.tbs_certificate.validity;
        if now < v.not_before.to_unix_duration() || now > v.not_after.to_unix_duration() {
            return Err(format!("the {what} certificate is not valid now"));
        }
    }
    let suffix = format!("attestation {slot:02x}");
    let cn = common_name(&leaf).unwrap_or_default().to_ascii_lowercase();
    if !cn.ends_with(&suffix) {
        return Err(format!(
            "the attestation is for another slot ({cn:?}); the profile's key is in {slot:02X}"
        ));
    }
    // The key's PIN policy (Yubico extension 1.3.6.1.4.1.41482.3.8: PIN policy, touch
    // policy): a key the card uses without its PIN is not an LoA3 authenticator — but for
    // the card-authentication key (9E), which SP 800-73-4 §3.1.1 defines as usable without
    // the PIN (a tap at a door, the card's own proof in a PIN unblock), and whose
    // certificates say so (no LoA3 policy).
    let policy = leaf
        .tbs_certificate
        .extensions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|e| e.extn_id == YUBICO_POLICY)
        .map(|e| e.extn_value.as_bytes().to_vec())
        .ok_or("the attestation does not state the key's PIN policy")?;
    match policy.first().copied() {
        Some(PIN_ONCE | PIN_ALWAYS) => {}
        Some(PIN_NEVER) if slot == CARD_AUTHENTICATION_SLOT => {}
        Some(PIN_NEVER) => {
            return Err("the attested key is used without a PIN (PIN policy never)".into())
        }
        _ => return Err("the attestation's PIN policy is not one this issuer knows".into()),
    }
    leaf.tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| e.to_string())
}

/// Yubico's attestation extension with the key's PIN and touch policies.
const YUBICO_POLICY: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.41482.3.8");
const PIN_NEVER: u8 = 1;
const CARD_AUTHENTICATION_SLOT: u8 = 0x9E;
const PIN_ONCE: u8 = 2;
const PIN_ALWAYS: u8 = 3;

fn signed_by(cert: &Certificate, issuer: &Certificate) -> anyhow::Result<()> {
    anyhow::ensure!(
        cert.tbs_certificate.issuer == issuer.tbs_certificate.subject,
        "issuer name differs"
    );
    crate::x509::verify_signature(
        &issuer.tbs_certificate.subject_public_key_info,
        &cert.signature_algorithm,
        &cert.tbs_certificate.to_der()?,
        cert.signature.raw_bytes(),
    )
}

fn common_name(cert: &Certificate) -> Option<String> {
    cert.tbs_certificate.subject.0.iter().find_map(|rdn| {
        rdn.0.iter().find_map(|atv| {
            (atv.oid == const_oid::db::rfc4519::CN).then(|| {
                atv.value
                    .decode_as::<der::asn1::Utf8StringRef<'_>>()
                    .map(|s| s.as_str().to_owned())
                    .or_else(|_| {
                        atv.value
                            .decode_as::<der::asn1::PrintableStringRef<'_>>()
                            .map(|s| s.as_str().to_owned())
                    })
                    .ok()
            })?
        })
    })
}

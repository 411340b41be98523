//! The issuing CA: end-entity certificates by profile, and the signatures on CRLs and OCSP
//! responses.
//!
//! Issuance has Boulder's shape (`issuance/cert.go`): [`IssuingCa::prepare`] checks the
//! request, builds the TBS certificate (serial with 128 random bits), lints it against its
//! profile and issuer, and hands the [`Intent`] to the caller to record durably; only if
//! that succeeds does it return an [`IssuanceToken`], and only [`IssuingCa::issue`],
//! consuming the token, makes the token sign. Nothing is signed before its intent is
//! recorded, and no path signs bytes a caller chose.

use std::sync::Arc;
use std::time::Duration;

use der::asn1::{Ia5String, OctetString, SetOfVec, Utf8StringRef};
use der::{Decode, Encode};
use spki::SubjectPublicKeyInfoOwned;
use tessera_issuer_types::config::KeyAlg;
use tessera_issuer_types::{ErrorCode, ProfileName, Serial, Subject};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::pkix::certpolicy::PolicyInformation;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName, OtherName};
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, CertificatePolicies,
    CrlDistributionPoints, CrlNumber, ExtendedKeyUsage, SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;

use crate::crl::{CrlBuilder, CrlHeader};
use crate::lint::{self, KeyKind};
use crate::profile::{self, Profile};
use crate::signer::{KeyRole, Signer, Tbs};
use crate::x509::{ext, key_identifier, random_serial, time};

/// Why the CA refused or failed. Each variant maps to a stable [`ErrorCode`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    #[error("no profile {0} in this issuer")]
    UnknownProfile(ProfileName),
    #[error("public key not acceptable: {0}")]
    BadPublicKey(String),
    #[error("subject not acceptable: {0}")]
    BadSubject(String),
    #[error("validity of {days} days is beyond the profile's maximum of {max}")]
    ValidityTooLong { days: u32, max: u32 },
    #[error("the certificate failed its profile check before signing: {0}")]
    Lint(String),
    /// The token (or the encoding around it) failed.
    #[error("signing failed: {0:#}")]
    Signing(anyhow::Error),
}

impl CaError {
    /// The stable code API clients see.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnknownProfile(_) => ErrorCode::UnknownProfile,
            Self::BadPublicKey(_) => ErrorCode::BadPublicKey,
            Self::BadSubject(_) => ErrorCode::BadSubject,
            Self::ValidityTooLong { .. } => ErrorCode::ValidityTooLong,
            Self::Lint(_) => ErrorCode::LintFailed,
            Self::Signing(_) => ErrorCode::Internal,
        }
    }
}

fn signing(e: impl std::fmt::Display) -> CaError {
    CaError::Signing(anyhow::anyhow!("{e}"))
}

/// Where relying parties find revocation status and the CA certificate, and the policy.
#[derive(Debug, Clone)]
pub struct Urls {
    pub crl: String,
    pub ocsp: String,
    pub ca_issuers: String,
    /// The organisation's certificate-policy OID for the service ID at LoA3.
    pub policy: const_oid::ObjectIdentifier,
}

/// What to issue: a key whose possession the registration authority has checked.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub profile: ProfileName,
    pub subject: &'a Subject,
    /// The DER SubjectPublicKeyInfo of the key generated on the card.
    pub public_key: &'a [u8],
    /// Days of validity; the profile's default when absent.
    pub validity_days: Option<u32>,
}

/// What the caller must record before the token signs.
#[derive(Debug, Clone)]
pub struct Intent {
    pub serial: Serial,
    pub profile: ProfileName,
    /// The subject's common name.
    pub subject: String,
    /// The DER TBS certificate the token will sign, and its SHA-256 (hex).
    pub tbs_der: Vec<u8>,
    pub tbs_sha256: String,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

/// A linted TBS certificate whose intent the caller recorded; [`IssuingCa::issue`] alone
/// turns it into a signature.
#[derive(Debug)]
pub struct IssuanceToken {
    intent: Intent,
    tbs: TbsCertificate,
}

impl IssuanceToken {
    pub fn intent(&self) -> &Intent {
        &self.intent
    }
}

/// A signed certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub serial: Serial,
    pub der: Vec<u8>,
    pub subject: String,
    pub tbs_sha256: String,
}

/// The issuing CA: its certificate, the OCSP responder's, the profiles, and the signer
/// that holds both keys.
pub struct IssuingCa {
    signer: Arc<dyn Signer>,
    alg: KeyAlg,
    cert: Certificate,
    cert_der: Vec<u8>,
    /// The subject name, DER (OCSP hashes it for every CertID it checks).
    subject_der: Vec<u8>,
    /// The key identifier end-entity AKIs carry: the issuing CA certificate's SKI.
    key_id: Vec<u8>,
    /// Replaced when `serve` renews it (same key, new certificate).
    ocsp_cert: std::sync::RwLock<Certificate>,
    profiles: Vec<Profile>,
    urls: Urls,
    upn_domains: Vec<String>,
}

impl std::fmt::Debug for IssuingCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuingCa")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl IssuingCa {
    /// The issuing CA over `signer`, with its certificate and the OCSP responder's. Refuses
    /// certificates that are not for the signer's keys.
    pub fn new(
        signer: Arc<dyn Signer>,
        issuing_der: &[u8],
        ocsp_der: &[u8],
        urls: Urls,
        upn_domains: Vec<String>,
    ) -> anyhow::Result<Self> {
        let profiles = profile::profiles();
        profile::validate(&profiles).map_err(|e| anyhow::anyhow!("certificate profiles: {e}"))?;
        let cert = Certificate::from_der(issuing_der)?;
        let ocsp_cert = Certificate::from_der(ocsp_der)?;
        for (role, c, what) in [
            (KeyRole::Issuing, &cert, "issuing CA"),
            (KeyRole::Ocsp, &ocsp_cert, "OCSP responder"),
        ] {
            anyhow::ensure!(
                signer.public_key(role)? == c.tbs_certificate.subject_public_key_info.to_der()?,
                "the {what} certificate is not for the {what} key in the token"
            );
        }
        let spki = cert.tbs_certificate.subject_public_key_info.to_der()?;
        let key_id = cert
            .tbs_certificate
            .get::<SubjectKeyIdentifier>()
            .ok()
            .flatten()
            .map(|(_, ski)| ski.0.as_bytes().to_vec())
            .map_or_else(|| key_identifier(&spki), Ok)?;
        Ok(Self {
            alg: signer.algorithm(),
            signer,
            subject_der: cert.tbs_certificate.subject.to_der()?,
            cert,
            cert_der: issuing_der.to_vec(),
            key_id,
            ocsp_cert: std::sync::RwLock::new(ocsp_cert),
            profiles,
            urls,
            upn_domains,
        })
    }

    /// The issuing CA certificate (DER).
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// The DER of the issuing CA's subject name.
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }

    /// The issuing CA's subjectPublicKey bits (what OCSP key hashes cover).
    pub fn subject_public_key_bits(&self) -> &[u8] {
        self.cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes()
    }

    /// The OCSP responder's public key bits (its ResponderID by key).
    pub fn ocsp_public_key_bits(&self) -> Vec<u8> {
        self.ocsp_certificate()
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes()
            .to_vec()
    }

    /// The OCSP responder's current certificate.
    pub fn ocsp_certificate(&self) -> Certificate {
        self.ocsp_cert
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a renewed OCSP responder certificate in service; refuses one that is not for
    /// the responder key or not issued by this CA.
    pub fn replace_ocsp_certificate(&self, der: &[u8]) -> anyhow::Result<()> {
        let cert = Certificate::from_der(der)?;
        anyhow::ensure!(
            self.signer.public_key(KeyRole::Ocsp)?
                == cert.tbs_certificate.subject_public_key_info.to_der()?,
            "the OCSP responder certificate is not for the OCSP responder key"
        );
        anyhow::ensure!(
            cert.tbs_certificate.issuer == self.cert.tbs_certificate.subject,
            "the OCSP responder certificate is not issued by this CA"
        );
        crate::x509::verify_signature(
            &self.cert.tbs_certificate.subject_public_key_info,
            &cert.signature_algorithm,
            &cert.tbs_certificate.to_der()?,
            cert.signature.raw_bytes(),
        )
        .map_err(|e| {
            anyhow::anyhow!("the OCSP responder certificate is not signed by this CA: {e}")
        })?;
        *self.ocsp_cert.write().unwrap_or_else(|p| p.into_inner()) = cert;
        Ok(())
    }

    pub fn urls(&self) -> &Urls {
        &self.urls
    }

    /// Whether the token answers.
    pub fn ping(&self) -> anyhow::Result<()> {
        self.signer.ping()
    }

    fn profile(&self, name: ProfileName) -> Result<&Profile, CaError> {
        self.profiles
            .iter()
            .find(|p| p.name == name)
            .ok_or(CaError::UnknownProfile(name))
    }

    /// How long a certificate of `name` lives when no validity is asked for.
    pub fn default_validity_days(&self, name: ProfileName) -> Result<u32, CaError> {
        Ok(self.profile(name)?.default_validity_days)
    }

    /// Checks `req`, builds and lints the TBS certificate, and has `record` record the
    /// intent. Returns the token [`IssuingCa::issue`] needs only if `record` succeeded.
    pub fn prepare<E: From<CaError>>(
        &self,
        req: &Request<'_>,
        now: Duration,
        record: impl FnOnce(&Intent) -> Result<(), E>,
    ) -> Result<IssuanceToken, E> {
        let profile = self.profile(req.profile)?.clone();
        let kind = lint::check_public_key(req.public_key).map_err(CaError::BadPublicKey)?;
        let days = req.validity_days.unwrap_or(profile.default_validity_days);
        if days == 0 || days > profile.max_validity_days {
            return Err(CaError::ValidityTooLong {
                days,
                max: profile.max_validity_days,
            }
            .into());
        }
        let tbs = self.tbs(&profile, req.subject, req.public_key, kind, now, days)?;
        let tbs_der = tbs.to_der().map_err(signing)?;
        lint::lint(&profile, &tbs_der, &self.cert, days).map_err(CaError::Lint)?;
        let serial = Serial::from_bytes(tbs.serial_number.as_bytes()).map_err(signing)?;
        let not_after = tbs.validity.not_after.to_unix_duration();
        let intent = Intent {
            serial,
            profile: req.profile,
            subject: req.subject.common_name.trim().to_owned(),
            tbs_sha256: hex::encode(sha2::Digest::finalize(
                <sha2::Sha256 as sha2::Digest>::new_with_prefix(&tbs_der),
            )),
            tbs_der,
            not_after: i64::try_from(not_after.as_secs()).unwrap_or(i64::MAX),
        };
        // Nothing is signed before the intent is durably recorded: a crash after signing
        // leaves a known, revocable serial, never an unknown certificate.
        record(&intent)?;
        Ok(IssuanceToken { intent, tbs })
    }

    /// Seals a card secret (a PUK) bound to `aad` under the token's escrow key.
    pub fn seal_secret(&self, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, CaError> {
        self.signer.seal(aad, secret).map_err(CaError::Signing)
    }

    /// Opens a sealed card secret.
    pub fn open_secret(
        &self,
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, CaError> {
        self.signer.unseal(aad, sealed).map_err(CaError::Signing)
    }

    /// Signs a prepared certificate.
    pub fn issue(&self, token: IssuanceToken) -> Result<Issued, CaError> {
        let IssuanceToken { intent, tbs } = token;
        let signature = self
            .signer
            .sign(KeyRole::Issuing, Tbs::new(&intent.tbs_der))
            .map_err(CaError::Signing)?;
        let cert = Certificate {
            tbs_certificate: tbs,
            signature_algorithm: crate::signature_algorithm(self.alg),
            signature: der::asn1::BitString::from_bytes(&signature).map_err(signing)?,
        };
        Ok(Issued {
            der: cert.to_der().map_err(signing)?,
            serial: intent.serial,
            subject: intent.subject,
            tbs_sha256: intent.tbs_sha256,
        })
    }

    /// A CRL to fill: issued now, next update in `next_update`; push its entries
    /// (`crate::crl::entry`), then [`IssuingCa::sign_crl`].
    pub fn crl_builder(
        &self,
        now: Duration,
        next_update: Duration,
        expected_entries: usize,
    ) -> Result<CrlBuilder, CaError> {
        let signature = crate::signature_algorithm(self.alg);
        let header = CrlHeader {
            signature: &signature,
            issuer: &self.cert.tbs_certificate.subject,
            this_update: time(now).map_err(signing)?,
            next_update: Some(time(now + next_update).map_err(signing)?),
        };
        CrlBuilder::new(&header, expected_entries).map_err(signing)
    }

    /// Finishes a CRL with its number and the authority key identifier, and signs it with
    /// the issuing CA's key.
    pub fn sign_crl(&self, builder: CrlBuilder, number: i64) -> Result<Vec<u8>, CaError> {
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(self.key_id.clone()).map_err(signing)?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        };
        let number = der::asn1::Uint::new(&number.to_be_bytes()).map_err(signing)?;
        let extensions = vec![
            ext(
                const_oid::db::rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER,
                false,
                &aki,
            )
            .map_err(signing)?,
            ext(
                const_oid::db::rfc5280::ID_CE_CRL_NUMBER,
                false,
                &CrlNumber(number),
            )
            .map_err(signing)?,
        ];
        let alg = crate::signature_algorithm(self.alg);
        builder
            .finish(&extensions, |tbs| -> anyhow::Result<_> {
                Ok((
                    alg.clone(),
                    self.signer.sign(KeyRole::Issuing, Tbs::new(tbs))?,
                ))
            })
            .map_err(CaError::Signing)
    }

    /// Signs OCSP response data with the delegated responder key and wraps it in a
    /// successful OCSPResponse (DER) carrying the responder's certificate.
    pub fn sign_ocsp(&self, data: x509_ocsp::ResponseData) -> Result<Vec<u8>, CaError> {
        let tbs = data.to_der().map_err(signing)?;
        let signature = self
            .signer
            .sign(KeyRole::Ocsp, Tbs::new(&tbs))
            .map_err(CaError::Signing)?;
        let basic = x509_ocsp::BasicOcspResponse {
            tbs_response_data: data,
            signature_algorithm: crate::signature_algorithm(self.alg),
            signature: der::asn1::BitString::from_bytes(&signature).map_err(signing)?,
            certs: Some(vec![self.ocsp_certificate()]),
        };
        x509_ocsp::OcspResponse::successful(basic)
            .and_then(|r| r.to_der())
            .map_err(signing)
    }

    fn tbs(
        &self,
        profile: &Profile,
        subject: &Subject,
        spki_der: &[u8],
        kind: KeyKind,
        now: Duration,
        days: u32,
    ) -> Result<TbsCertificate, CaError> {
        use const_oid::db::rfc5280 as oid;
        let cn = subject.common_name.trim();
        lint::check_common_name(cn).map_err(CaError::BadSubject)?;
        let org = organization(&self.cert.tbs_certificate.subject);
        let mut rdns = Vec::new();
        if let Some(o) = &org {
            rdns.push(rdn(const_oid::db::rfc4519::O, o)?);
        }
        rdns.push(rdn(const_oid::db::rfc4519::CN, cn)?);

        let mut san = Vec::new();
        let san_rules = profile.san;
        if let Some(upn) = &subject.upn {
            if !san_rules.upn {
                return Err(CaError::BadSubject(format!(
                    "profile {} carries no UPN",
                    profile.name
                )));
            }
            lint::check_upn(upn, &self.upn_domains)
                .map_err(|e| CaError::BadSubject(format!("upn: {e}")))?;
            let value = der::Any::encode_from(&Utf8StringRef::new(upn).map_err(internal)?)
                .map_err(internal)?;
            san.push(GeneralName::OtherName(OtherName {
                type_id: profile::OTHER_NAME_UPN,
                value,
            }));
        }
        if let Some(email) = &subject.email {
            if !san_rules.email {
                return Err(CaError::BadSubject(format!(
                    "profile {} carries no e-mail",
                    profile.name
                )));
            }
            lint::check_email(email).map_err(|e| CaError::BadSubject(format!("email: {e}")))?;
            let ia5 = Ia5String::new(email)
                .map_err(|_| CaError::BadSubject("email must be ASCII".into()))?;
            san.push(GeneralName::Rfc822Name(ia5));
        }
        if san_rules.card_uuid {
            let uuid = subject
                .card_uuid
                .as_deref()
                .ok_or_else(|| CaError::BadSubject("card-authentication needs card_uuid".into()))?;
            if !is_uuid(uuid) {
                return Err(CaError::BadSubject("card_uuid must be a UUID".into()));
            }
            let uri = Ia5String::new(&format!("urn:uuid:{}", uuid.to_ascii_lowercase()))
                .map_err(internal)?;
            san.push(GeneralName::UniformResourceIdentifier(uri));
        } else if subject.card_uuid.is_some() {
            return Err(CaError::BadSubject(format!(
                "profile {} carries no card UUID",
                profile.name
            )));
        }

        // The SID goes with the Windows logon name: only where the profile carries a UPN.
        let sid = match &subject.sid {
            Some(_) if !san_rules.upn => {
                return Err(CaError::BadSubject(format!(
                    "profile {} carries no SID",
                    profile.name
                )))
            }
            Some(sid) => {
                tessera_issuer_types::identity::check_sid(sid).map_err(CaError::BadSubject)?;
                let value = der::Any::encode_from(
                    &OctetString::new(sid.as_bytes().to_vec()).map_err(internal)?,
                )
                .map_err(internal)?;
                Some(SubjectAltName(vec![GeneralName::OtherName(OtherName {
                    type_id: profile::OTHER_NAME_NTDS_OBJECTSID,
                    value,
                })]))
            }
            None => None,
        };

        let ku = match kind {
            KeyKind::Rsa => profile.rsa_key_usage,
            KeyKind::Ec => profile.ec_key_usage,
        };
        let uri = |u: &str| -> Result<GeneralName, CaError> {
            Ok(GeneralName::UniformResourceIdentifier(
                Ia5String::new(u).map_err(internal)?,
            ))
        };
        let mut exts = vec![
            ext(oid::ID_CE_KEY_USAGE, true, &ku).map_err(internal)?,
            ext(
                oid::ID_CE_EXT_KEY_USAGE,
                false,
                &ExtendedKeyUsage(profile.extended_key_usage.to_vec()),
            )
            .map_err(internal)?,
            ext(
                oid::ID_CE_CERTIFICATE_POLICIES,
                false,
                &CertificatePolicies(vec![PolicyInformation {
                    policy_identifier: self.urls.policy,
                    policy_qualifiers: None,
                }]),
            )
            .map_err(internal)?,
            ext(
                oid::ID_CE_CRL_DISTRIBUTION_POINTS,
                false,
                &CrlDistributionPoints(vec![DistributionPoint {
                    distribution_point: Some(DistributionPointName::FullName(vec![uri(&self
                        .urls
                        .crl)?])),
                    reasons: None,
                    crl_issuer: None,
                }]),
            )
            .map_err(internal)?,
            ext(
                const_oid::db::rfc5912::ID_PE_AUTHORITY_INFO_ACCESS,
                false,
                &AuthorityInfoAccessSyntax(vec![
                    AccessDescription {
                        access_method: const_oid::db::rfc5912::ID_AD_OCSP,
                        access_location: uri(&self.urls.ocsp)?,
                    },
                    AccessDescription {
                        access_method: const_oid::db::rfc5912::ID_AD_CA_ISSUERS,
                        access_location: uri(&self.urls.ca_issuers)?,
                    },
                ]),
            )
            .map_err(internal)?,
            ext(
                oid::ID_CE_AUTHORITY_KEY_IDENTIFIER,
                false,
                &AuthorityKeyIdentifier {
                    key_identifier: Some(OctetString::new(self.key_id.clone()).map_err(internal)?),
                    authority_cert_issuer: None,
                    authority_cert_serial_number: None,
                },
            )
            .map_err(internal)?,
            ext(
                oid::ID_CE_SUBJECT_KEY_IDENTIFIER,
                false,
                &SubjectKeyIdentifier(
                    OctetString::new(key_identifier(spki_der).map_err(internal)?)
                        .map_err(internal)?,
                ),
            )
            .map_err(internal)?,
        ];
        if !san.is_empty() {
            exts.push(
                ext(oid::ID_CE_SUBJECT_ALT_NAME, false, &SubjectAltName(san)).map_err(internal)?,
            );
        }
        if let Some(sid) = sid {
            exts.push(ext(profile::EXT_NTDS_CA_SECURITY, false, &sid).map_err(internal)?);
        }
        Ok(TbsCertificate {
            version: Version::V3,
            serial_number: SerialNumber::new(&random_serial()).map_err(internal)?,
            signature: crate::signature_algorithm(self.alg),
            issuer: self.cert.tbs_certificate.subject.clone(),
            validity: Validity {
                not_before: time(now).map_err(internal)?,
                // Never beyond the issuing CA: such a certificate fails path validation
                // from the CA's expiry on (RFC 5280 §6), so it is cut to it.
                not_after: time(
                    (now + Duration::from_secs(u64::from(days) * 86_400)).min(
                        self.cert
                            .tbs_certificate
                            .validity
                            .not_after
                            .to_unix_duration(),
                    ),
                )
                .map_err(internal)?,
            },
            subject: RdnSequence(rdns),
            subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(spki_der)
                .map_err(internal)?,
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(exts),
        })
    }
}

fn internal(e: impl std::fmt::Display) -> CaError {
    signing(e)
}

fn rdn(
    oid: const_oid::ObjectIdentifier,
    value: &str,
) -> Result<RelativeDistinguishedName, CaError> {
    let value =
        der::Any::encode_from(&Utf8StringRef::new(value).map_err(internal)?).map_err(internal)?;
    let atv = AttributeTypeAndValue { oid, value };
    Ok(RelativeDistinguishedName(
        SetOfVec::try_from(vec![atv]).map_err(internal)?,
    ))
}

fn organization(name: &Name) -> Option<String> {
    name.0.iter().find_map(|rdn| {
        rdn.0.iter().find_map(|atv| {
            (atv.oid == const_oid::db::rfc4519::O)
                .then(|| {
                    atv.value
                        .decode_as::<Utf8StringRef<'_>>()
                        .ok()
                        .map(|s| s.as_str().to_owned())
                })
                .flatten()
        })
    })
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

//! The issuing authority: end-entity certificates by profile, revocation and CRLs.
//!
//! Issuance follows Boulder's order: the TBS certificate (with its serial, unique by
//! constraint) is checked against its profile ("lint before sign") and committed as an
//! intent with its audit record *before* the token signs; the signed certificate is stored
//! afterwards. A certificate whose final store failed is therefore still known, and still
//! revocable.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context};
use der::asn1::{Ia5String, OctetString, SetOfVec, Utf8StringRef};
use der::{Decode, Encode};
use diesel::prelude::*;
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::crl::RevokedCert;
use x509_cert::ext::pkix::certpolicy::PolicyInformation;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName, OtherName};
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, CertificatePolicies,
    CrlDistributionPoints, CrlNumber, CrlReason, ExtendedKeyUsage, KeyUsage, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;

use crate::audit;
use crate::clock::Clock;
use crate::db::schema::{authorities, certificates, crls};
use crate::hsm::{self, Hsm, KeyAlg};
use crate::init::{ISSUING_KEY, TOKEN_LABEL};
use crate::profile::{self, Profile};
use crate::x509::{ext, key_identifier, random_serial, time};

/// Why a request was refused. Each variant has a stable code for API clients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    #[error("unknown profile {0:?}")]
    UnknownProfile(String),
    #[error("public key not acceptable: {0}")]
    BadPublicKey(String),
    #[error("subject not acceptable: {0}")]
    BadSubject(String),
    #[error("validity of {0} days is beyond the profile's maximum of {1}")]
    ValidityTooLong(u32, u32),
    #[error("no certificate with serial {0}")]
    NotFound(String),
    #[error("unknown revocation reason {0:?}")]
    BadReason(String),
    #[error("certificate {0} is already revoked")]
    AlreadyRevoked(String),
    #[error("certificate {0} is not on hold")]
    NotOnHold(String),
    #[error("the certificate failed its profile check before signing: {0}")]
    Lint(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl IssueError {
    /// The stable error code API clients see.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownProfile(_) => "unknown_profile",
            Self::BadPublicKey(_) => "bad_public_key",
            Self::BadSubject(_) => "bad_subject",
            Self::ValidityTooLong(..) => "validity_too_long",
            Self::NotFound(_) => "not_found",
            Self::BadReason(_) => "bad_reason",
            Self::AlreadyRevoked(_) => "already_revoked",
            Self::NotOnHold(_) => "not_on_hold",
            Self::Lint(_) => "lint_failed",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<diesel::result::Error> for IssueError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Internal(e.into())
    }
}

type Result<T> = std::result::Result<T, IssueError>;

fn internal(e: impl std::fmt::Display) -> IssueError {
    IssueError::Internal(anyhow!("{e}"))
}

/// Who the certificate is for.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub common_name: String,
    #[serde(default)]
    pub upn: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub card_uuid: Option<String>,
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

/// The issuing CA with its key in the token.
pub struct IssuingCa {
    token: Hsm,
    /// Keeps the PKCS#11 module initialised for as long as the CA is open.
    _module: cryptoki::context::Pkcs11,
    alg: KeyAlg,
    cert: Certificate,
    spki: Vec<u8>,
    /// The delegated OCSP responder's certificate (its key is in the token).
    ocsp_cert: Certificate,
    profiles: Vec<Profile>,
    pub urls: Urls,
}

impl std::fmt::Debug for IssuingCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuingCa")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// What to issue.
#[derive(Debug, Clone, Copy)]
pub struct IssueRequest<'a> {
    /// The profile's name (`authentication`, `signature`, `encryption`,
    /// `card-authentication`).
    pub profile: &'a str,
    pub subject: &'a Subject,
    /// The DER SubjectPublicKeyInfo of the key generated on the card.
    pub public_key: &'a [u8],
    /// Days of validity; the profile's default when absent.
    pub validity_days: Option<u32>,
}

/// A signed certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub serial: String,
    pub der: Vec<u8>,
}

impl IssuingCa {
    /// Opens the issuing CA of an embedded deployment: its token (activated with the 1-of-1
    /// secret in the data directory) and its certificate from the database.
    pub fn open(
        data_dir: &Path,
        conn: &mut crate::db::Conn,
        urls: Urls,
        shares: &[std::path::PathBuf],
    ) -> anyhow::Result<Self> {
        crate::init::ensure_complete(data_dir)?;
        let profiles = profile::profiles();
        profile::validate(&profiles).map_err(|e| anyhow!("certificate profiles: {e}"))?;
        let p11 = hsm::load(
            Path::new(hsm::SOFTHSM2_MODULE),
            Some(&data_dir.join("softhsm2.conf")),
        )?;
        let secret = crate::custody::activation_secret(data_dir, shares)?;
        let token = Hsm::open(&p11, TOKEN_LABEL, &secret)?;
        let (alg, der): (String, Vec<u8>) = authorities::table
            .filter(authorities::role.eq("issuing"))
            .select((authorities::key_alg, authorities::certificate))
            .first(conn)
            .context("reading the issuing CA")?;
        let alg = match alg.as_str() {
            "P256" => KeyAlg::P256,
            "P384" => KeyAlg::P384,
            "Rsa2048" => KeyAlg::Rsa2048,
            "Rsa3072" => KeyAlg::Rsa3072,
            other => anyhow::bail!("unknown key algorithm {other:?} in the database"),
        };
        let cert = Certificate::from_der(&der)?;
        let spki = cert.tbs_certificate.subject_public_key_info.to_der()?;
        let ocsp_der: Vec<u8> = authorities::table
            .filter(authorities::role.eq("ocsp"))
            .select(authorities::certificate)
            .first(conn)
            .context("reading the OCSP responder certificate")?;
        let ocsp_cert = Certificate::from_der(&ocsp_der)?;
        Ok(Self {
            token,
            _module: p11,
            alg,
            cert,
            spki,
            ocsp_cert,
            profiles,
            urls,
        })
    }

    /// The DER of the issuing CA's subject name.
    pub fn subject_der(&self) -> anyhow::Result<Vec<u8>> {
        Ok(self.cert.tbs_certificate.subject.to_der()?)
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
    pub fn ocsp_public_key_bits(&self) -> &[u8] {
        self.ocsp_cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes()
    }

    /// The delegated OCSP responder certificate.
    pub fn ocsp_certificate(&self) -> &Certificate {
        &self.ocsp_cert
    }

    /// Signs OCSP response data with the responder key in the token.
    pub fn sign_as_ocsp_responder(
        &self,
        tbs: &[u8],
    ) -> anyhow::Result<(spki::AlgorithmIdentifierOwned, Vec<u8>)> {
        Ok((
            self.alg.signature_algorithm(),
            self.token.sign(crate::init::OCSP_KEY, self.alg, tbs)?,
        ))
    }

    /// The issuing CA certificate (DER).
    pub fn certificate_der(&self) -> anyhow::Result<Vec<u8>> {
        Ok(self.cert.to_der()?)
    }

    fn profile(&self, name: &str) -> Result<&Profile> {
        self.profiles
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| IssueError::UnknownProfile(name.to_owned()))
    }

    /// Issues a certificate: check, commit the intent, sign, store.
    pub fn issue(
        &self,
        conn: &mut crate::db::Conn,
        clock: &dyn Clock,
        actor: &str,
        req: &IssueRequest<'_>,
    ) -> Result<Issued> {
        let (subject, spki_der, validity_days) = (req.subject, req.public_key, req.validity_days);
        let profile = self.profile(req.profile)?.clone();
        let is_rsa = check_public_key(spki_der)?;
        let days = validity_days.unwrap_or(profile.default_validity_days);
        if days == 0 || days > profile.max_validity_days {
            return Err(IssueError::ValidityTooLong(days, profile.max_validity_days));
        }
        let now = clock.now();
        let tbs = self.tbs(&profile, subject, spki_der, is_rsa, now, days)?;
        let tbs_der = tbs.to_der().map_err(internal)?;
        lint(&profile, &tbs_der, &self.cert, days).map_err(IssueError::Lint)?;
        let serial = hex::encode(tbs.serial_number.as_bytes());
        let at = secs(now);
        let not_after = secs(now + Duration::from_secs(u64::from(days) * 86_400));

        // 1. The intent, durably recorded before anything is signed.
        crate::db::write_transaction(conn, |c| -> anyhow::Result<()> {
            diesel::insert_into(certificates::table)
                .values((
                    certificates::serial.eq(&serial),
                    certificates::authority.eq("issuing"),
                    certificates::profile.eq(profile.name),
                    certificates::status.eq("intent"),
                    certificates::tbs.eq(&tbs_der),
                    certificates::not_after.eq(not_after),
                    certificates::created_at.eq(at),
                ))
                .execute(c)?;
            audit::append(
                c,
                clock,
                actor,
                "certificate.intent",
                &serde_json::json!({ "serial": serial, "profile": profile.name, "subject": subject.common_name }),
            )?;
            Ok(())
        })?;

        // 2. The token signs.
        let signature = self.token.sign(ISSUING_KEY, self.alg, &tbs_der)?;
        let cert = Certificate {
            tbs_certificate: tbs,
            signature_algorithm: self.alg.signature_algorithm(),
            signature: der::asn1::BitString::from_bytes(&signature).map_err(internal)?,
        };
        let der = cert.to_der().map_err(internal)?;

        // 3. The final store. If it fails, the intent stays: the serial is revocable.
        crate::db::write_transaction(conn, |c| -> anyhow::Result<()> {
            diesel::update(certificates::table.filter(certificates::serial.eq(&serial)))
                .set((
                    certificates::certificate.eq(&der),
                    certificates::status.eq("issued"),
                ))
                .execute(c)?;
            audit::append(
                c,
                clock,
                actor,
                "certificate.issued",
                &serde_json::json!({ "serial": serial }),
            )?;
            Ok(())
        })?;
        Ok(Issued { serial, der })
    }

    fn tbs(
        &self,
        profile: &Profile,
        subject: &Subject,
        spki_der: &[u8],
        is_rsa: bool,
        now: Duration,
        days: u32,
    ) -> Result<TbsCertificate> {
        use const_oid::db::rfc5280 as oid;
        let cn = subject.common_name.trim();
        if cn.is_empty() || cn.chars().count() > 64 || cn.chars().any(char::is_control) {
            return Err(IssueError::BadSubject(
                "common_name must be 1–64 printable characters".into(),
            ));
        }
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
                return Err(IssueError::BadSubject(format!(
                    "profile {} carries no UPN",
                    profile.name
                )));
            }
            if !upn.contains('@') || upn.chars().any(char::is_control) {
                return Err(IssueError::BadSubject(
                    "upn must look like user@domain".into(),
                ));
            }
            let value = der::Any::encode_from(&Utf8StringRef::new(upn).map_err(internal)?)
                .map_err(internal)?;
            san.push(GeneralName::OtherName(OtherName {
                type_id: profile::OTHER_NAME_UPN,
                value,
            }));
        }
        if let Some(email) = &subject.email {
            if !san_rules.email {
                return Err(IssueError::BadSubject(format!(
                    "profile {} carries no e-mail",
                    profile.name
                )));
            }
            let ia5 = Ia5String::new(email)
                .map_err(|_| IssueError::BadSubject("email must be ASCII".into()))?;
            if !email.contains('@') {
                return Err(IssueError::BadSubject(
                    "email must look like user@domain".into(),
                ));
            }
            san.push(GeneralName::Rfc822Name(ia5));
        }
        if san_rules.card_uuid {
            let uuid = subject.card_uuid.as_deref().ok_or_else(|| {
                IssueError::BadSubject("card-authentication needs card_uuid".into())
            })?;
            if !is_uuid(uuid) {
                return Err(IssueError::BadSubject("card_uuid must be a UUID".into()));
            }
            let uri = Ia5String::new(&format!("urn:uuid:{}", uuid.to_ascii_lowercase()))
                .map_err(internal)?;
            san.push(GeneralName::UniformResourceIdentifier(uri));
        } else if subject.card_uuid.is_some() {
            return Err(IssueError::BadSubject(format!(
                "profile {} carries no card UUID",
                profile.name
            )));
        }

        let ku = if is_rsa {
            profile.rsa_key_usage
        } else {
            profile.ec_key_usage
        };
        let uri = |u: &str| -> Result<GeneralName> {
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
                    key_identifier: Some(
                        OctetString::new(key_identifier(&self.spki).map_err(internal)?)
                            .map_err(internal)?,
                    ),
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
        Ok(TbsCertificate {
            version: Version::V3,
            serial_number: SerialNumber::new(&random_serial()).map_err(internal)?,
            signature: self.alg.signature_algorithm(),
            issuer: self.cert.tbs_certificate.subject.clone(),
            validity: Validity {
                not_before: time(now).map_err(internal)?,
                not_after: time(now + Duration::from_secs(u64::from(days) * 86_400))
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

    /// Revokes (or, with `certificateHold`, suspends) a certificate, then issues a new CRL.
    pub fn revoke(
        &self,
        conn: &mut crate::db::Conn,
        clock: &dyn Clock,
        actor: &str,
        serial: &str,
        reason: &str,
    ) -> Result<()> {
        let reason_code =
            reason_code(reason).ok_or_else(|| IssueError::BadReason(reason.to_owned()))?;
        let serial = serial.to_ascii_lowercase();
        crate::db::write_transaction(conn, |c| -> Result<()> {
            let row: Option<(Option<i64>, Option<String>)> = certificates::table
                .filter(certificates::serial.eq(&serial))
                .select((certificates::revoked_at, certificates::revocation_reason))
                .first(c)
                .optional()
                .map_err(internal)?;
            match row {
                None => return Err(IssueError::NotFound(serial.clone())),
                // A held certificate may be revoked for good; anything else revoked stays so.
                Some((Some(_), r))
                    if !(r.as_deref() == Some("certificateHold")
                        && reason_code != CrlReason::CertificateHold) =>
                {
                    return Err(IssueError::AlreadyRevoked(serial.clone()))
                }
                Some(_) => {}
            }
            diesel::update(certificates::table.filter(certificates::serial.eq(&serial)))
                .set((
                    certificates::revoked_at.eq(secs(clock.now())),
                    certificates::revocation_reason.eq(reason),
                ))
                .execute(c)
                .map_err(internal)?;
            audit::append(
                c,
                clock,
                actor,
                "certificate.revoked",
                &serde_json::json!({ "serial": serial, "reason": reason }),
            )?;
            Ok(())
        })?;
        self.generate_crl(conn, clock)?;
        Ok(())
    }

    /// Releases a `certificateHold` (RFC 5280 §5.3.1), then issues a new CRL.
    pub fn release_hold(
        &self,
        conn: &mut crate::db::Conn,
        clock: &dyn Clock,
        actor: &str,
        serial: &str,
    ) -> Result<()> {
        let serial = serial.to_ascii_lowercase();
        crate::db::write_transaction(conn, |c| -> Result<()> {
            let reason: Option<Option<String>> = certificates::table
                .filter(certificates::serial.eq(&serial))
                .select(certificates::revocation_reason)
                .first(c)
                .optional()
                .map_err(internal)?;
            match reason {
                None => return Err(IssueError::NotFound(serial.clone())),
                Some(Some(r)) if r == "certificateHold" => {}
                Some(_) => return Err(IssueError::NotOnHold(serial.clone())),
            }
            diesel::update(certificates::table.filter(certificates::serial.eq(&serial)))
                .set((
                    certificates::revoked_at.eq(None::<i64>),
                    certificates::revocation_reason.eq(None::<String>),
                ))
                .execute(c)
                .map_err(internal)?;
            audit::append(
                c,
                clock,
                actor,
                "certificate.hold_released",
                &serde_json::json!({ "serial": serial }),
            )?;
            Ok(())
        })?;
        self.generate_crl(conn, clock)?;
        Ok(())
    }

    /// Issues a new CRL of every revoked, unexpired certificate (RFC 5280 §5), signed by
    /// the issuing CA's key in the token; stores it (keeping the [`KEEP_CRLS`] newest) and
    /// returns it.
    ///
    /// The entries are read in pages and encoded as they come ([`crate::crl`]), so a CRL
    /// of a million entries needs about its own size in memory.
    pub fn generate_crl(&self, conn: &mut crate::db::Conn, clock: &dyn Clock) -> Result<Vec<u8>> {
        Ok(self.issue_crl(conn, clock)?.der)
    }

    /// [`Self::generate_crl`], telling also the CRL's number and how many entries it has.
    pub fn issue_crl(&self, conn: &mut crate::db::Conn, clock: &dyn Clock) -> Result<IssuedCrl> {
        const PAGE: i64 = 20_000;
        let now = clock.now();
        let number: i64 = crls::table
            .filter(crls::authority.eq("issuing"))
            .select(diesel::dsl::max(crls::number))
            .first::<Option<i64>>(conn)
            .map_err(internal)?
            .unwrap_or(0)
            + 1;
        let revoked = certificates::table
            .filter(certificates::revoked_at.is_not_null())
            .filter(certificates::not_after.gt(secs(now)));
        let expected: i64 = revoked.count().get_result(conn).map_err(internal)?;
        let signature = self.alg.signature_algorithm();
        let header = crate::crl::CrlHeader {
            signature: &signature,
            issuer: &self.cert.tbs_certificate.subject,
            this_update: time(now).map_err(internal)?,
            next_update: Some(time(now + Duration::from_secs(86_400)).map_err(internal)?),
        };
        let mut crl = crate::crl::CrlBuilder::new(&header, usize::try_from(expected).unwrap_or(0))
            .map_err(internal)?;
        // Keyset pagination on the primary key: each page is an index range scan.
        let mut after = String::new();
        loop {
            let page: Vec<(String, Option<i64>, Option<String>)> = revoked
                .filter(certificates::serial.gt(&after))
                .select((
                    certificates::serial,
                    certificates::revoked_at,
                    certificates::revocation_reason,
                ))
                .order(certificates::serial.asc())
                .limit(PAGE)
                .load(conn)
                .map_err(internal)?;
            let Some((last, _, _)) = page.last() else {
                break;
            };
            after = last.clone();
            for (serial, at, reason) in &page {
                crl.push(&revoked_entry(serial, *at, reason.as_deref())?)
                    .map_err(internal)?;
            }
        }
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(
                OctetString::new(key_identifier(&self.spki).map_err(internal)?)
                    .map_err(internal)?,
            ),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        };
        let number_uint = der::asn1::Uint::new(&number.to_be_bytes()).map_err(internal)?;
        let extensions = vec![
            ext(
                const_oid::db::rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER,
                false,
                &aki,
            )
            .map_err(internal)?,
            ext(
                const_oid::db::rfc5280::ID_CE_CRL_NUMBER,
                false,
                &CrlNumber(number_uint),
            )
            .map_err(internal)?,
        ];
        let crl_entries = crl.len();
        let der = crl
            .finish(&extensions, |tbs| -> anyhow::Result<_> {
                Ok((
                    signature.clone(),
                    self.token.sign(ISSUING_KEY, self.alg, tbs)?,
                ))
            })
            .map_err(IssueError::Internal)?;
        crate::db::write_transaction(conn, |c| -> anyhow::Result<()> {
            diesel::insert_into(crls::table)
                .values((
                    crls::authority.eq("issuing"),
                    crls::number.eq(number),
                    crls::this_update.eq(secs(now)),
                    crls::crl.eq(&der),
                ))
                .execute(c)?;
            diesel::delete(
                crls::table
                    .filter(crls::authority.eq("issuing"))
                    .filter(crls::number.le(number - KEEP_CRLS)),
            )
            .execute(c)?;
            Ok(())
        })?;
        Ok(IssuedCrl {
            entries: crl_entries,
            number,
            der,
        })
    }
}

/// A CRL just issued.
#[derive(Debug)]
pub struct IssuedCrl {
    pub der: Vec<u8>,
    pub number: i64,
    pub entries: usize,
}

/// How many of the newest CRLs the database keeps (each can be tens of megabytes).
pub const KEEP_CRLS: i64 = 10;

/// One CRL entry from a certificate row.
fn revoked_entry(serial: &str, at: Option<i64>, reason: Option<&str>) -> Result<RevokedCert> {
    let bytes = hex::decode(serial).map_err(internal)?;
    let reason = reason
        .and_then(reason_code)
        .unwrap_or(CrlReason::Unspecified);
    let at = Duration::from_secs(u64::try_from(at.unwrap_or(0)).unwrap_or(0));
    Ok(RevokedCert {
        serial_number: SerialNumber::new(&bytes).map_err(internal)?,
        revocation_date: time(at).map_err(internal)?,
        // RFC 5280 §5.3.1: omit the reason code rather than say "unspecified".
        crl_entry_extensions: (reason != CrlReason::Unspecified)
            .then(|| {
                ext(const_oid::db::rfc5280::ID_CE_CRL_REASONS, false, &reason).map(|e| vec![e])
            })
            .transpose()
            .map_err(internal)?,
    })
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The RFC 5280 §5.3.1 reason by its ASN.1 name.
pub fn reason_code(name: &str) -> Option<CrlReason> {
    Some(match name {
        "unspecified" => CrlReason::Unspecified,
        "keyCompromise" => CrlReason::KeyCompromise,
        "cACompromise" => CrlReason::CaCompromise,
        "affiliationChanged" => CrlReason::AffiliationChanged,
        "superseded" => CrlReason::Superseded,
        "cessationOfOperation" => CrlReason::CessationOfOperation,
        "certificateHold" => CrlReason::CertificateHold,
        "privilegeWithdrawn" => CrlReason::PrivilegeWithdrawn,
        _ => return None,
    })
}

fn rdn(oid: const_oid::ObjectIdentifier, value: &str) -> Result<RelativeDistinguishedName> {
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

/// Accepts P-256, P-384 and RSA 2048–4096 with an odd exponent ≥ 3; returns whether RSA.
pub fn check_public_key(spki_der: &[u8]) -> Result<bool> {
    let bad = |m: &str| IssueError::BadPublicKey(m.to_owned());
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der)
        .map_err(|_| bad("not a DER SubjectPublicKeyInfo"))?;
    if spki.algorithm.oid == const_oid::db::rfc5912::ID_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<const_oid::ObjectIdentifier>().ok())
            .ok_or_else(|| bad("EC key without a named curve"))?;
        let point = spki.subject_public_key.raw_bytes();
        if curve == const_oid::db::rfc5912::SECP_256_R_1 {
            p256::PublicKey::from_sec1_bytes(point).map_err(|_| bad("not a point on P-256"))?;
        } else if curve == const_oid::db::rfc5912::SECP_384_R_1 {
            p384::PublicKey::from_sec1_bytes(point).map_err(|_| bad("not a point on P-384"))?;
        } else {
            return Err(bad("curve not allowed (P-256 or P-384)"));
        }
        Ok(false)
    } else if spki.algorithm.oid == const_oid::db::rfc5912::RSA_ENCRYPTION {
        #[derive(der::Sequence)]
        struct RsaKey {
            n: der::asn1::Uint,
            e: der::asn1::Uint,
        }
        let key = RsaKey::from_der(spki.subject_public_key.raw_bytes())
            .map_err(|_| bad("malformed RSA key"))?;
        let n = key.n.as_bytes();
        let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
        if !(2048..=4096).contains(&bits) {
            return Err(bad("RSA modulus must have 2048–4096 bits"));
        }
        let e = key.e.as_bytes();
        if e.last().is_none_or(|b| b & 1 == 0) || (e.len() == 1 && e[0] < 3) {
            return Err(bad("RSA exponent must be odd and at least 3"));
        }
        Ok(true)
    } else {
        Err(bad("key algorithm not allowed (EC P-256/P-384 or RSA)"))
    }
}

/// Lint before sign: re-reads the encoded TBS certificate and checks it against its
/// profile and issuer (Boulder `linter`).
pub fn lint(
    profile: &Profile,
    tbs_der: &[u8],
    issuer: &Certificate,
    days: u32,
) -> std::result::Result<(), String> {
    let tbs =
        TbsCertificate::from_der(tbs_der).map_err(|e| format!("TBS does not re-parse: {e}"))?;
    let serial = tbs.serial_number.as_bytes();
    if serial.len() < 9 || serial.len() > 20 || serial[0] & 0x80 != 0 {
        return Err(
            "serial must be positive with at least 64 random bits and at most 20 bytes".into(),
        );
    }
    if tbs.issuer != issuer.tbs_certificate.subject {
        return Err("issuer name is not the issuing CA's subject".into());
    }
    let nb = tbs.validity.not_before.to_unix_duration();
    let na = tbs.validity.not_after.to_unix_duration();
    if na <= nb
        || na - nb > Duration::from_secs(u64::from(days.min(profile.max_validity_days)) * 86_400)
    {
        return Err("validity outside the profile".into());
    }
    let exts = tbs.extensions.as_deref().unwrap_or_default();
    let get = |oid| exts.iter().find(|e| e.extn_id == oid);
    let ku = get(const_oid::db::rfc5280::ID_CE_KEY_USAGE).ok_or("no key usage")?;
    if !ku.critical {
        return Err("key usage must be critical".into());
    }
    let ku = KeyUsage::from_der(ku.extn_value.as_bytes()).map_err(|e| e.to_string())?;
    if ku.0 != profile.ec_key_usage.0 && ku.0 != profile.rsa_key_usage.0 {
        return Err("key usage differs from the profile".into());
    }
    let eku = get(const_oid::db::rfc5280::ID_CE_EXT_KEY_USAGE).ok_or("no extended key usage")?;
    let eku = ExtendedKeyUsage::from_der(eku.extn_value.as_bytes()).map_err(|e| e.to_string())?;
    if eku.0 != profile.extended_key_usage {
        return Err("extended key usage differs from the profile".into());
    }
    for required in [
        const_oid::db::rfc5280::ID_CE_CRL_DISTRIBUTION_POINTS,
        const_oid::db::rfc5912::ID_PE_AUTHORITY_INFO_ACCESS,
        const_oid::db::rfc5280::ID_CE_CERTIFICATE_POLICIES,
        const_oid::db::rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER,
    ] {
        if get(required).is_none() {
            return Err(format!("extension {required} missing"));
        }
    }
    Ok(())
}

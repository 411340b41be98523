//! The IdP's keys, in a PKCS#11 token (K4.3): made there by `init` as sensitive,
//! non-extractable objects, with self-signed certificates for the metadata (SAML trusts
//! keys through metadata, not through a CA); used through [`Signer`], which signs XML and
//! nothing else.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use der::{DecodePem, Encode, EncodePem};
use tessera_hsm::Token;
use tessera_issuer_types::config::KeyAlg;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use crate::config::{self, Config, KeyRef};

/// How long a self-signed metadata certificate is valid: its key is rolled over through
/// the metadata, not by its expiry, but relying parties' software may check the dates.
const CERTIFICATE_YEARS: u64 = 5;

/// Makes a key pair labelled `label` in the token and its self-signed certificate
/// (`CN=<common name>`, valid from `now`, since the epoch); returns the certificate's PEM.
pub fn make_key(
    token: &Token,
    label: &str,
    alg: KeyAlg,
    common_name: &str,
    now: Duration,
) -> Result<String> {
    make_certified_key(token, label, alg, common_name, now, None)
}

/// Makes the login host's TLS key (P-256) in the token and a self-signed certificate for
/// `host` (subjectAltName, serverAuth), PEM.
pub fn make_tls_key(token: &Token, label: &str, host: &str, now: Duration) -> Result<String> {
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName};
    let name = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => {
            GeneralName::IpAddress(der::asn1::OctetString::new(ip.octets().to_vec())?)
        }
        Ok(std::net::IpAddr::V6(ip)) => {
            GeneralName::IpAddress(der::asn1::OctetString::new(ip.octets().to_vec())?)
        }
        Err(_) => GeneralName::DnsName(der::asn1::Ia5String::new(host)?),
    };
    let ext = |oid, critical, value: Vec<u8>| -> Result<x509_cert::ext::Extension> {
        Ok(x509_cert::ext::Extension {
            extn_id: oid,
            critical,
            extn_value: der::asn1::OctetString::new(value)?,
        })
    };
    let extensions = vec![
        ext(
            const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME,
            false,
            SubjectAltName(vec![name]).to_der()?,
        )?,
        ext(
            const_oid::db::rfc5280::ID_CE_KEY_USAGE,
            true,
            KeyUsage(KeyUsages::DigitalSignature.into()).to_der()?,
        )?,
        ext(
            const_oid::db::rfc5280::ID_CE_EXT_KEY_USAGE,
            false,
            ExtendedKeyUsage(vec![const_oid::db::rfc5280::ID_KP_SERVER_AUTH]).to_der()?,
        )?,
    ];
    make_certified_key(
        token,
        label,
        KeyAlg::P256,
        &format!("{host} card login"),
        now,
        Some(extensions),
    )
}

fn make_certified_key(
    token: &Token,
    label: &str,
    alg: KeyAlg,
    common_name: &str,
    now: Duration,
    extensions: Option<Vec<x509_cert::ext::Extension>>,
) -> Result<String> {
    let spki_der = token.generate(label, alg)?;
    let spki = spki::SubjectPublicKeyInfoOwned::try_from(spki_der.as_slice())
        .map_err(|e| anyhow!("the token's public key: {e}"))?;
    let name: Name = format!(
        "CN={}",
        common_name.replace([',', '+', '=', '\\', '"'], " ")
    )
    .parse()
    .map_err(|e| anyhow!("certificate name: {e}"))?;
    let mut serial = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut serial);
    serial[0] = (serial[0] & 0x7f) | 0x01;
    let algorithm = tessera_hsm::signature_algorithm(alg);
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial)?,
        signature: algorithm.clone(),
        issuer: name.clone(),
        validity: Validity {
            not_before: time(now - Duration::from_secs(300))?,
            not_after: time(now + Duration::from_secs(CERTIFICATE_YEARS * 365 * 86_400))?,
        },
        subject: name,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions,
    };
    let signature = token.sign(label, alg, &tbs.to_der()?)?;
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm,
        signature: der::asn1::BitString::from_bytes(&signature)?,
    };
    Ok(cert.to_pem(der::pem::LineEnding::LF)?)
}

/// RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
fn time(since_epoch: Duration) -> Result<Time> {
    let whole = Duration::from_secs(since_epoch.as_secs());
    Ok(match der::asn1::UtcTime::from_unix_duration(whole) {
        Ok(t) => Time::UtcTime(t),
        Err(_) => Time::GeneralTime(der::asn1::GeneralizedTime::from_unix_duration(whole)?),
    })
}

/// A key's certificate (DER) from its PEM file.
pub fn certificate(dir: &Path, key: &KeyRef) -> Result<Vec<u8>> {
    certificate_file(&Config::resolve(dir, &key.certificate))
}

/// A certificate (DER) from a PEM file.
pub fn certificate_file(path: &Path) -> Result<Vec<u8>> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Certificate::from_pem(pem.as_bytes())
        .with_context(|| format!("{} is not a PEM certificate", path.display()))?
        .to_der()?)
}

/// Signs the IdP's XML with the active signing key in the token.
pub struct Signer {
    token: std::sync::Mutex<Token>,
    name_id_key: String,
    key: KeyRef,
    alg: tessera_xmlsec::SignatureAlg,
    certificate: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key", &self.key.label)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// The signer of a deployment: the token opened with its activation secret (custody
    /// shares in `shares` when it is M-of-N), the first signing key.
    pub fn open(dir: &Path, config: &Config, shares: &[std::path::PathBuf]) -> Result<Self> {
        let secret = tessera_hsm::custody::activation_secret_from(
            &dir.join(crate::config::files::ACTIVATION_SECRET),
            config.custody,
            shares,
        )?;
        let token = tessera_hsm::open_configured(&config.token, &secret)?;
        let key = config
            .signing
            .first()
            .ok_or_else(|| anyhow!("no signing key configured"))?
            .clone();
        let certificate = certificate(dir, &key)?;
        Ok(Self {
            alg: config::signature_alg(key.alg)?,
            token: std::sync::Mutex::new(token),
            name_id_key: config.name_id_key.clone(),
            key,
            certificate,
        })
    }

    /// Another session on the signer's token (see [`Token::another_session`]).
    pub fn another_session(&self) -> Result<Token> {
        self.token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .another_session()
    }

    /// The signing key's XML signature algorithm.
    pub fn alg(&self) -> tessera_xmlsec::SignatureAlg {
        self.alg
    }

    /// The signing certificate (DER).
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// The persistent pseudonymous NameID of `person` (the issuer's person id) at the
    /// relying party `entity_id` (DP 6.2): HMAC-SHA256 in the token over both, length
    /// prefixed, as 64 hex digits. The same pair always gives the same NameID; another
    /// relying party gets an unrelated one; without the token nobody can compute or link
    /// them.
    pub fn name_id(&self, entity_id: &str, person: &str) -> Result<String> {
        let mut data = Vec::with_capacity(16 + entity_id.len() + person.len());
        for part in [entity_id, person] {
            data.extend_from_slice(&(part.len() as u64).to_be_bytes());
            data.extend_from_slice(part.as_bytes());
        }
        let mac = self
            .token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hmac_sha256(&self.name_id_key, &data)?;
        Ok(mac.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Whether the token answers (for `/readyz`).
    pub fn ping(&self) -> Result<()> {
        self.token.lock().unwrap_or_else(|p| p.into_inner()).ping()
    }

    /// The signature value XML-DSig wants over `bytes` (PKCS#1 v1.5 for RSA, r || s for
    /// P-256), made by the token: what [`tessera_xmlsec::sign_root`] and
    /// `tessera_saml::response::seal` ask for.
    pub fn sign_raw(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        // The token is held only while it signs (not while xmlsec works).
        let sig = self.token.lock().unwrap_or_else(|p| p.into_inner()).sign(
            &self.key.label,
            self.key.alg,
            bytes,
        )?;
        match self.key.alg {
            // XML-DSig's ECDSA value is r || s, not X.509's DER.
            KeyAlg::P256 => Ok(p256::ecdsa::Signature::from_der(&sig)
                .map_err(|e| anyhow!("the token's signature: {e}"))?
                .to_bytes()
                .to_vec()),
            _ => Ok(sig),
        }
    }

    /// Signs the root of `xml` (see [`tessera_xmlsec::sign_root`]).
    pub fn sign_xml(&self, xml: &[u8]) -> Result<Vec<u8>> {
        Ok(tessera_xmlsec::sign_root(
            xml,
            self.alg,
            &self.certificate,
            |bytes| self.sign_raw(bytes).map_err(|e| format!("{e:#}")),
        )?)
    }
}

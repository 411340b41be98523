//! Key ceremonies for the production path, where the root stays offline (Boulder
//! `cmd/ceremony`): each run is driven by one reviewed configuration file, does one thing,
//! and prints a transcript that starts with the SHA-256 of that file, so that what was
//! reviewed is what ran.
//!
//! - `root`: generates the root key in an (offline) PKCS#11 token and self-signs the root
//!   certificate;
//! - `intermediate`: signs an issuing-CA certificate with the root key for a certificate
//!   request, but only the request the reviewed file names by its SHA-256, for the subject
//!   it expects, with a key no weaker than RSA 2048 or a named curve, and a valid
//!   self-signature. The certificate carries the certificate policy and the root CRL's
//!   location.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use der::{Decode, Encode};
use sha2::Digest;
use tessera_hsm::{self as token, Token};
use tessera_issuer_ca::authority::{self, IssuingProfile, Period};
use tessera_issuer_ca::{lint, x509};
use tessera_issuer_types::config::{plain_name, KeyAlg};
use tessera_issuer_types::Clock;
use x509_cert::name::Name;
use x509_cert::request::CertReq;
use x509_cert::Certificate;
use zeroize::Zeroizing;

use crate::files::write_new;

/// The token a ceremony uses.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The PKCS#11 module of the (offline) HSM.
    pub module: PathBuf,
    /// For SoftHSM2: its configuration file.
    #[serde(default)]
    pub softhsm_conf: Option<PathBuf>,
    /// Other environment the module needs.
    #[serde(default)]
    pub environment: Vec<(String, String)>,
    /// The token's label.
    pub label: String,
    /// A file with the token's user PIN (entered by the custodians for the ceremony).
    pub pin_file: PathBuf,
}

/// One ceremony.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "kebab-case")]
pub enum Ceremony {
    Root {
        token: TokenConfig,
        key_label: String,
        key_alg: KeyAlg,
        organization: String,
        common_name: String,
        validity_days: u32,
        certificate_out: PathBuf,
    },
    Intermediate {
        token: TokenConfig,
        /// The root key's label in the token.
        key_label: String,
        key_alg: KeyAlg,
        root_certificate: PathBuf,
        csr: PathBuf,
        /// The SHA-256 (hex) of the DER request, as `init --external-root` printed it: the
        /// file reviewed names exactly one request.
        csr_sha256: String,
        /// The subject the request must carry, as `CN=…,O=…`.
        expected_subject: String,
        /// The certificate policy the issuing CA issues under.
        policy_oid: String,
        /// Where the root's CRL is published (its CRL distribution point).
        root_crl_url: String,
        validity_days: u32,
        certificate_out: PathBuf,
    },
}

fn open(token: &TokenConfig) -> Result<Token> {
    let mut environment = token.environment.clone();
    if let Some(conf) = &token.softhsm_conf {
        environment.push((
            "SOFTHSM2_CONF".to_owned(),
            conf.to_string_lossy().into_owned(),
        ));
    }
    let p11 = token::load(&token.module, &environment)?;
    let pin = Zeroizing::new(
        std::fs::read_to_string(&token.pin_file)
            .with_context(|| format!("reading {}", token.pin_file.display()))?
            .trim()
            .to_owned(),
    );
    Token::open(p11, &token.label, &pin)
}

fn name(organization: &str, common_name: &str) -> Result<Name> {
    for v in [organization, common_name] {
        plain_name(v).map_err(|e| anyhow::anyhow!("{v:?}: {e}"))?;
    }
    Ok(Name::from_str(&format!(
        "CN={common_name},O={organization}"
    ))?)
}

/// Runs the ceremony a configuration file describes; returns the transcript.
pub fn run(config_path: &Path, clock: &dyn Clock) -> Result<String> {
    let raw =
        std::fs::read(config_path).with_context(|| format!("reading {}", config_path.display()))?;
    let config: Ceremony = serde_json::from_slice(&raw).context("the ceremony configuration")?;
    let mut transcript = format!(
        "ceremony configuration {} SHA-256 {}\n",
        config_path.display(),
        hex::encode(sha2::Sha256::digest(&raw))
    );
    let now = clock.now();
    match config {
        Ceremony::Root {
            token,
            key_label,
            key_alg,
            organization,
            common_name,
            validity_days,
            certificate_out,
        } => {
            ensure!(
                (1..=30 * 365).contains(&validity_days),
                "validity_days must be 1..=10950"
            );
            let subject = name(&organization, &common_name)?;
            let h = open(&token)?;
            h.generate(&key_label, key_alg)?;
            let der = authority::root_certificate(
                &h,
                &key_label,
                key_alg,
                subject,
                Period {
                    not_before: now,
                    not_after: now + Duration::from_secs(u64::from(validity_days) * 86_400),
                },
            )?;
            write_new(&certificate_out, x509::to_pem(&der)?.as_bytes())?;
            transcript.push_str(&format!(
                "generated key {key_label:?} ({key_alg}) in token {:?}\nroot certificate {} SHA-256 {}\n",
                token.label,
                certificate_out.display(),
                x509::fingerprint(&der)
            ));
        }
        Ceremony::Intermediate {
            token,
            key_label,
            key_alg,
            root_certificate,
            csr,
            csr_sha256,
            expected_subject,
            policy_oid,
            root_crl_url,
            validity_days,
            certificate_out,
        } => {
            ensure!(
                (1..=15 * 365).contains(&validity_days),
                "validity_days must be 1..=5475"
            );
            let root_der = x509::read_certificate(&root_certificate)?;
            let root = Certificate::from_der(&root_der)?;
            let csr_text =
                std::fs::read(&csr).with_context(|| format!("reading {}", csr.display()))?;
            let csr_der = match der::pem::decode_vec(&csr_text) {
                Ok(("CERTIFICATE REQUEST", d)) => d,
                Ok((label, _)) => bail!(
                    "{}: a PEM {label}, not a CERTIFICATE REQUEST",
                    csr.display()
                ),
                Err(_) => csr_text,
            };
            let actual = hex::encode(sha2::Sha256::digest(&csr_der));
            transcript.push_str(&format!(
                "certificate request {} SHA-256 {actual}\n",
                csr.display()
            ));
            ensure!(
                actual.eq_ignore_ascii_case(csr_sha256.trim()),
                "the certificate request's SHA-256 is {actual}, not the {} the reviewed \
                 configuration names: refusing to sign it",
                csr_sha256.trim()
            );
            let req = CertReq::from_der(&csr_der).context("the certificate request")?;
            let expected = Name::from_str(&expected_subject)
                .with_context(|| format!("expected_subject {expected_subject:?}"))?;
            ensure!(
                req.info.subject == expected,
                "the request is for {}, not the expected {expected}: refusing to sign it",
                req.info.subject
            );
            let subject_spki = req.info.public_key.to_der()?;
            lint::check_public_key(&subject_spki)
                .map_err(|e| anyhow::anyhow!("the request's key is refused: {e}"))?;
            verify_csr(&req)?;
            let policy = x509::parse_oid(&policy_oid).context("policy_oid")?;
            tessera_issuer_types::config::check_url(&root_crl_url)
                .map_err(|e| anyhow::anyhow!("root_crl_url: {e}"))?;
            let h = open(&token)?;
            // The key in the token must be the root certificate's key.
            let root_spki = root.tbs_certificate.subject_public_key_info.to_der()?;
            ensure!(
                h.public_key(&key_label, key_alg)? == root_spki,
                "the key {key_label:?} in the token is not the key of {}",
                root_certificate.display()
            );
            let not_after = now + Duration::from_secs(u64::from(validity_days) * 86_400);
            ensure!(
                not_after <= root.tbs_certificate.validity.not_after.to_unix_duration(),
                "the issuing CA would outlive the root"
            );
            let der = authority::issuing_certificate(
                &h,
                &key_label,
                key_alg,
                &root,
                req.info.subject.clone(),
                &subject_spki,
                &IssuingProfile {
                    period: Period {
                        not_before: now,
                        not_after,
                    },
                    policy,
                    root_crl_url,
                },
            )?;
            write_new(&certificate_out, x509::to_pem(&der)?.as_bytes())?;
            transcript.push_str(&format!(
                "request for {} verified (self-signature, key, subject)\nissuing CA certificate {} SHA-256 {}\n",
                req.info.subject,
                certificate_out.display(),
                x509::fingerprint(&der)
            ));
        }
    }
    Ok(transcript)
}

/// Checks the request's self-signature (proof of possession of the issuing CA key).
fn verify_csr(req: &CertReq) -> Result<()> {
    x509::verify_signature(
        &req.info.public_key,
        &req.algorithm,
        &req.info.to_der()?,
        req.signature.raw_bytes(),
    )
    .context("the certificate request's signature does not verify")
}

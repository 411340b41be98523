//! Key ceremonies for the production path, where the root stays offline (Boulder
//! `cmd/ceremony`): each run is driven by one reviewed configuration file, does one thing,
//! and prints a transcript that starts with the SHA-256 of that file, so that what was
//! reviewed is what ran.
//!
//! - `root`: generates the root key in an (offline) PKCS#11 token and self-signs the root
//!   certificate;
//! - `intermediate`: checks an issuing CA's certificate request (its self-signature) and
//!   signs an issuing-CA certificate for it with the root key.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use der::{Decode, Encode};
use sha2::Digest;
use x509_cert::name::Name;
use x509_cert::request::CertReq;
use x509_cert::Certificate;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::hsm::{self, Hsm, KeyAlg};
use crate::x509::{self, CaCertificate, CaRole};

/// The token a ceremony uses.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The PKCS#11 module of the (offline) HSM.
    pub module: PathBuf,
    /// For SoftHSM2: its configuration file.
    #[serde(default)]
    pub softhsm_conf: Option<PathBuf>,
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
        validity_days: u32,
        certificate_out: PathBuf,
    },
}

fn open(token: &TokenConfig) -> Result<(cryptoki::context::Pkcs11, Hsm)> {
    let p11 = hsm::load(&token.module, token.softhsm_conf.as_deref())?;
    let pin = Zeroizing::new(
        std::fs::read_to_string(&token.pin_file)
            .with_context(|| format!("reading {}", token.pin_file.display()))?
            .trim()
            .to_owned(),
    );
    let h = Hsm::open(&p11, &token.label, &pin)?;
    Ok((p11, h))
}

fn write_new(path: &Path, content: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    f.write_all(content.as_bytes())?;
    Ok(())
}

fn plain_name(organization: &str, common_name: &str) -> Result<Name> {
    for v in [organization, common_name] {
        ensure!(
            !v.trim().is_empty() && !v.contains([',', '=', '+', '\\', '"']),
            "names must be plain text without , = + \\ or \": {v:?}"
        );
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
            let name = plain_name(&organization, &common_name)?;
            let (_p11, h) = open(&token)?;
            let spki = h.generate(&key_label, key_alg)?;
            let der = x509::build(
                CaCertificate {
                    role: CaRole::Root,
                    subject: name.clone(),
                    issuer: name,
                    subject_spki: &spki,
                    issuer_spki: &spki,
                    not_before: now,
                    not_after: now + Duration::from_secs(u64::from(validity_days) * 86_400),
                    signature_algorithm: key_alg.signature_algorithm(),
                    san: Vec::new(),
                },
                |tbs| h.sign(&key_label, key_alg, tbs),
            )?;
            write_new(&certificate_out, &x509::to_pem(&der)?)?;
            transcript.push_str(&format!(
                "generated key {key_label:?} ({key_alg:?}) in token {:?}\nroot certificate {} SHA-256 {}\n",
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
            validity_days,
            certificate_out,
        } => {
            ensure!(
                (1..=15 * 365).contains(&validity_days),
                "validity_days must be 1..=5475"
            );
            let root_pem = std::fs::read_to_string(&root_certificate)
                .with_context(|| format!("reading {}", root_certificate.display()))?;
            let (_, root_der) = der::pem::decode_vec(root_pem.as_bytes())
                .map_err(|e| anyhow::anyhow!("root PEM: {e}"))?;
            let root = Certificate::from_der(&root_der)?;
            let csr_text =
                std::fs::read(&csr).with_context(|| format!("reading {}", csr.display()))?;
            let csr_der = match der::pem::decode_vec(&csr_text) {
                Ok((_, d)) => d,
                Err(_) => csr_text,
            };
            let req = CertReq::from_der(&csr_der).context("the certificate request")?;
            verify_csr(&req)?;
            let (_p11, h) = open(&token)?;
            // The key in the token must be the root certificate's key.
            let root_spki = root.tbs_certificate.subject_public_key_info.to_der()?;
            ensure!(
                h.public_key(&key_label, key_alg)? == root_spki,
                "the key {key_label:?} in the token is not the key of {}",
                root_certificate.display()
            );
            let subject_spki = req.info.public_key.to_der()?;
            let not_after = now + Duration::from_secs(u64::from(validity_days) * 86_400);
            ensure!(
                not_after <= root.tbs_certificate.validity.not_after.to_unix_duration(),
                "the issuing CA would outlive the root"
            );
            let der = x509::build(
                CaCertificate {
                    role: CaRole::Issuing,
                    subject: req.info.subject.clone(),
                    issuer: root.tbs_certificate.subject.clone(),
                    subject_spki: &subject_spki,
                    issuer_spki: &root_spki,
                    not_before: now,
                    not_after,
                    signature_algorithm: key_alg.signature_algorithm(),
                    san: Vec::new(),
                },
                |tbs| h.sign(&key_label, key_alg, tbs),
            )?;
            write_new(&certificate_out, &x509::to_pem(&der)?)?;
            transcript.push_str(&format!(
                "certificate request {} for {} verified\nissuing CA certificate {} SHA-256 {}\n",
                csr.display(),
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

//! A deployment opened for work: its validated configuration, the database, the token
//! behind the [`Signer`] (activated with the custody's secret) and the issuing CA. Every
//! command that runs the CA (`serve`, `crl`, `renew`, `audit checkpoint`) starts here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tessera_hsm as token;
use tessera_issuer_ca::signer::Timed;
use tessera_issuer_ca::{IssuingCa, Signer, TokenSigner, Urls};
use tessera_issuer_store::{AuthorityRole, Store};
use tessera_issuer_types::config::{files, Config};

/// An opened deployment.
pub(crate) struct Deployment {
    pub dir: PathBuf,
    pub config: Config,
    pub store: Store,
    pub signer: Arc<dyn Signer>,
    pub ca: Arc<IssuingCa>,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Refuses a deployment that still awaits its issuing-CA certificate, saying what to do.
pub(crate) fn ensure_complete(dir: &Path) -> Result<()> {
    if dir.join(files::PENDING).exists() {
        bail!(
            "{} awaits its issuing-CA certificate from the root ceremony (for {}); install it \
             with `tessera-issuer install-ca-cert --data-dir {} --certificate FILE`",
            dir.display(),
            dir.join(files::ISSUING_CSR).display(),
            dir.display()
        );
    }
    Ok(())
}

/// Where certificates send relying parties, under `base`.
pub(crate) fn urls(base: &str, policy_oid: &str) -> Result<Urls> {
    let base = base.trim_end_matches('/');
    tessera_issuer_types::config::check_url(base)
        .map_err(|e| anyhow::anyhow!("public URL {base:?}: {e}"))?;
    Ok(Urls {
        crl: format!("{base}/crl/issuing-ca-1.crl"),
        ocsp: format!("{base}/ocsp"),
        ca_issuers: format!("{base}/ca/issuing-ca-1.crt"),
        policy: tessera_issuer_ca::x509::parse_oid(policy_oid)
            .context("the certificate policy OID")?,
    })
}

/// The CA certificates read from the database must chain to the root in the data
/// directory (the one relying parties pinned): a certificate someone with write access to
/// the database put in for the same key, with another name or validity, is refused.
fn check_chain(dir: &Path, issuing: &[u8], ocsp: &[u8]) -> Result<()> {
    use der::{Decode, Encode};
    use x509_cert::Certificate;
    let root = Certificate::from_der(&tessera_issuer_ca::x509::read_certificate(
        &dir.join(files::ROOT_PEM),
    )?)?;
    let issuing = Certificate::from_der(issuing)?;
    let ocsp = Certificate::from_der(ocsp)?;
    for (cert, by, what) in [
        (
            &issuing,
            &root,
            "the issuing CA certificate in the database is not the root's",
        ),
        (
            &ocsp,
            &issuing,
            "the OCSP responder certificate in the database is not the issuing CA's",
        ),
    ] {
        tessera_issuer_ca::x509::verify_signature(
            &by.tbs_certificate.subject_public_key_info,
            &cert.signature_algorithm,
            &cert.tbs_certificate.to_der()?,
            cert.signature.raw_bytes(),
        )
        .context(what)?;
        anyhow::ensure!(
            cert.tbs_certificate.issuer == by.tbs_certificate.subject,
            "{what}"
        );
    }
    Ok(())
}

impl Deployment {
    /// Opens the deployment in `dir`: configuration, database, token (activated with the
    /// 1-of-1 secret or the custodians' `shares`), the CA certificates from the database.
    /// `public_url` overrides the configured one; `observe` sees each signature's time.
    pub(crate) fn open(
        dir: &Path,
        shares: &[PathBuf],
        public_url: Option<&str>,
        observe: impl Fn(std::time::Duration) + Send + Sync + 'static,
    ) -> Result<Self> {
        ensure_complete(dir)?;
        let config = Config::load(dir)?;
        if !config.custody.is_single() {
            let left: Vec<String> = std::fs::read_dir(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("custodian-") && n.ends_with(".share"))
                .collect();
            if !left.is_empty() {
                bail!(
                    "{} still holds custodian shares ({}): with them, the data directory (and \
                     any backup of it) activates the CA keys alone. Hand each to its custodian \
                     and remove it from the directory",
                    dir.display(),
                    left.join(", ")
                );
            }
        }
        let store = Store::open_configured(&config.database, dir)?;
        let secret = tessera_hsm::custody::activation_secret(dir, config.custody, shares)?;
        let token = token::open_configured(&config.token, &secret)?;
        ensure_escrow_key(&token);
        let signer: Arc<dyn Signer> =
            Arc::new(Timed::new(TokenSigner::new(token, config.key_alg), observe));
        let (issuing, ocsp) = store.read(|tx| -> Result<_> {
            let get = |tx: &mut tessera_issuer_store::Tx<'_>, role| -> Result<Vec<u8>> {
                Ok(tx
                    .authority(role)?
                    .with_context(|| format!("the database has no {role:?} authority"))?
                    .certificate)
            };
            Ok((
                get(tx, AuthorityRole::Issuing)?,
                get(tx, AuthorityRole::Ocsp)?,
            ))
        })?;
        check_chain(dir, &issuing, &ocsp)?;
        let base = public_url.unwrap_or(&config.public_url);
        let ca = IssuingCa::new(
            Arc::clone(&signer),
            &issuing,
            &ocsp,
            urls(base, &config.policy_oid)?,
            config.upn_domains.clone(),
        )?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            store,
            signer,
            ca: Arc::new(ca),
        })
    }
}

/// Whether the token's AES key that seals card PUKs works (`init` makes it). A token
/// without one, or without AES-GCM (tpm2-pkcs11), still serves everything else; escrowing
/// a card's PUK then fails with the token's reason.
fn ensure_escrow_key(token: &token::Token) {
    if let Err(e) = token.check_secret_key(tessera_issuer_ca::signer::labels::ESCROW) {
        tracing::warn!(error = %format!("{e:#}"), "the token cannot seal PUKs: PIN unblock by escrowed PUK is unavailable");
    }
}

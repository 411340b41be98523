//! The IdP's configuration, `DIR/idp.json`, written by `tessera-idp init` and read by
//! `serve`: who we are in the federation, where the issuer is, and which keys in which
//! token sign and decrypt.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tessera_issuer_types::config::{Custody, DatabaseConfig, KeyAlg, TokenConfig};

/// The configuration file in the data directory.
pub const CONFIG_FILE: &str = "idp.json";
/// The format this build reads and writes.
pub const FORMAT: u32 = 1;

/// Files in the data directory.
pub mod files {
    /// The token's activation secret (1-of-1 custody). SoftHSM2's configuration and token
    /// directory are named as the issuer names them (`tessera_hsm::softhsm_config`).
    pub const ACTIVATION_SECRET: &str = "activation.secret";
    /// The IdP's API token at the issuer (mode 0600).
    pub const ISSUER_TOKEN: &str = "issuer-api.token";
    /// The administrators' token for the IdP's own API (mode 0600; its hash is in
    /// `idp.json`).
    pub const ADMIN_TOKEN: &str = "admin.token";
}

/// The deployment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub format: u32,
    /// Our SAML entityID.
    pub entity_id: String,
    /// The base URL browsers and relying parties reach the IdP at (no trailing slash):
    /// the SSO endpoints are under it.
    pub base_url: String,
    /// The issuer's base URL (its API: people, carriers, the status feed).
    pub issuer_url: String,
    pub organisation: Organisation,
    pub token: TokenConfig,
    pub custody: Custody,
    /// The keys that sign (the first signs; all are published, for a rollover).
    pub signing: Vec<KeyRef>,
    /// The keys relying parties may encrypt to us with (all published).
    pub encryption: Vec<KeyRef>,
    /// The label of the HMAC key in the token that derives persistent pseudonymous NameIDs
    /// (one per person and relying party, DP 6.2). Never changed: every NameID would.
    pub name_id_key: String,
    /// Connection rules 1.2.3: the certified `loa3` URI only when both the issuer and
    /// this IdP are approved by DIGG; otherwise `uncertified-loa3`. Off by default.
    #[serde(default)]
    pub certified_loa3: bool,
    /// How long the metadata we publish is valid (its `validUntil`), in days.
    pub metadata_valid_days: u32,
    /// A technical contact's e-mail address, published in the metadata.
    pub contact_email: String,
    /// The federation whose signed aggregate lists relying parties (none: only the local
    /// registry, `DIR/relying-parties`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation: Option<Federation>,
    /// The IdP's own database (sessions, consents, audit): SQLite in the data directory
    /// by default, or PostgreSQL.
    #[serde(default = "default_database")]
    pub database: DatabaseConfig,
    /// The card login (none: nobody can log in yet; `serve` says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<Login>,
    /// How long an SSO session answers without a new login, in minutes (K8.3: at most 60).
    #[serde(default = "sixty")]
    pub session_minutes: u32,
    /// The SHA-256 (hex) of the administrators' API token (`DIR/admin.token`, written by
    /// `init`), for `/admin/api/…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token_sha256: Option<String>,
    /// The CA (PEM) relying parties' SOAP logout endpoints must chain to, when their
    /// https certificates are not from a public CA (none: the public roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logout_ca: Option<PathBuf>,
}

fn default_database() -> DatabaseConfig {
    DatabaseConfig::Sqlite {
        path: PathBuf::from("idp.sqlite"),
    }
}

fn sixty() -> u32 {
    60
}

/// The card login: a host of its own where TLS asks every client for its certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// Where browsers reach the login host (no trailing slash), e.g.
    /// `https://login.idp.example.org`.
    pub base_url: String,
    /// The login host's TLS key in the token (P-256) and its certificate chain (PEM).
    pub tls_key: String,
    pub tls_certificate: PathBuf,
    /// The issuing CAs whose service IDs log in (PEM files).
    pub card_cas: Vec<PathBuf>,
    /// The organisation's certificate-policy OID for the service ID at LoA3.
    pub card_policy: String,
    /// An OCSP responder to ask instead of the one a certificate names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocsp_url: Option<String>,
    /// The IdP's API token at the issuer (an officer with the `identity_provider` role),
    /// a file (mode 0600).
    pub issuer_token: PathBuf,
    /// The issuer's TLS CA (PEM), when the issuer's https certificate is from it rather
    /// than from a public CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ca: Option<PathBuf>,
}

/// A federation's metadata aggregate and how to trust it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Federation {
    /// Where the aggregate is: an `https://` URL, or a file (relative to the data
    /// directory or absolute).
    pub source: String,
    /// The federation's metadata-signing certificates (PEM files; several during its key
    /// rollover).
    pub certificates: Vec<PathBuf>,
    /// How often it is fetched again, in minutes.
    pub refresh_minutes: u32,
}

/// The organisation whose employees this IdP serves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    /// Its name (`o`; OrganizationName).
    pub name: String,
    /// The organisation number (10 digits, Swedish; `orgAffiliation` is `uid@number`),
    /// published as our `shibmd:Scope`.
    pub number: String,
    /// Its web site (OrganizationURL).
    pub url: String,
}

/// A key in the token and the certificate published for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    /// The key's label in the token.
    pub label: String,
    pub alg: KeyAlg,
    /// Its certificate (PEM), relative to the data directory.
    pub certificate: PathBuf,
}

impl Config {
    /// Reads `DIR/idp.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no IdP deployment in {} (no {CONFIG_FILE}); run `tessera-idp init --data-dir {}` first",
                dir.display(),
                dir.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let config: Self = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid", path.display()))?;
        if config.format != FORMAT {
            bail!(
                "{} has format {}; this tessera-idp reads format {FORMAT}",
                path.display(),
                config.format
            );
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what a hand edit could break.
    pub fn validate(&self) -> Result<()> {
        for (what, url) in [
            ("entity_id", &self.entity_id),
            ("base_url", &self.base_url),
            ("issuer_url", &self.issuer_url),
            ("organisation.url", &self.organisation.url),
        ] {
            tessera_issuer_types::config::check_url(url)
                .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        }
        if self.base_url.ends_with('/') {
            bail!("base_url: without a trailing slash");
        }
        if self.organisation.number.len() != 10
            || !self.organisation.number.bytes().all(|b| b.is_ascii_digit())
        {
            bail!("organisation.number: ten digits (an organisation number)");
        }
        if self.signing.is_empty() {
            bail!("signing: at least one key");
        }
        for k in &self.signing {
            signature_alg(k.alg)?;
        }
        for k in &self.encryption {
            if !matches!(k.alg, KeyAlg::Rsa2048 | KeyAlg::Rsa3072) {
                bail!(
                    "encryption key {}: RSA (libxmlsec1 1.2 has no ECDH-ES key agreement)",
                    k.label
                );
            }
        }
        if !(1..=30).contains(&self.metadata_valid_days) {
            bail!("metadata_valid_days: 1 to 30");
        }
        if let Some(f) = &self.federation {
            if f.certificates.is_empty() {
                bail!("federation.certificates: at least one (its metadata is used only when its signature verifies)");
            }
            if !(5..=24 * 60).contains(&f.refresh_minutes) {
                bail!("federation.refresh_minutes: 5 to 1440");
            }
        }
        if !(1..=60).contains(&self.session_minutes) {
            bail!("session_minutes: 1 to 60 (K8.3)");
        }
        if let Some(login) = &self.login {
            tessera_issuer_types::config::check_url(&login.base_url)
                .map_err(|e| anyhow::anyhow!("login.base_url: {e}"))?;
            if !login.base_url.starts_with("https://") || login.base_url.ends_with('/') {
                bail!("login.base_url: https://, without a trailing slash (the login is TLS with client certificates)");
            }
            if login.base_url == self.base_url {
                bail!("login.base_url: a host of its own (TLS there asks every client for a certificate)");
            }
            if login.card_cas.is_empty() {
                bail!("login.card_cas: at least one issuing CA");
            }
            login
                .card_policy
                .parse::<const_oid::ObjectIdentifier>()
                .map_err(|e| anyhow::anyhow!("login.card_policy: {e}"))?;
            crate::issuer::check_link(&self.issuer_url)?;
        }
        if !self.contact_email.contains('@') {
            bail!("contact_email: an e-mail address");
        }
        Ok(())
    }

    /// The file `path` names, relative to the data directory.
    pub fn resolve(dir: &Path, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            dir.join(path)
        }
    }
}

/// The XML signature algorithm a signing key of this kind uses: RSA-SHA256 or
/// ECDSA-SHA256 with P-256 (PROFILES.md's list); P-384 would need ECDSA-SHA384, which
/// relying parties under the Swedish profile need not accept.
pub fn signature_alg(alg: KeyAlg) -> Result<tessera_xmlsec::SignatureAlg> {
    match alg {
        KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => Ok(tessera_xmlsec::SignatureAlg::RsaSha256),
        KeyAlg::P256 => Ok(tessera_xmlsec::SignatureAlg::EcdsaP256Sha256),
        KeyAlg::P384 => bail!("a SAML signing key is RSA or P-256"),
    }
}

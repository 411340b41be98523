//! The deployment's configuration: one file, `issuer.json`, in the data directory, written
//! by `init` and read and validated once at start-up by every command that runs the
//! issuer. Paths in it are relative to the data directory (so the directory can move),
//! except the PKCS#11 module's. An invalid file stops the process with a message that names
//! the key (Boulder `docs/config-validation.md`).

use std::path::{Path, PathBuf};

/// The configuration file in the data directory.
pub const CONFIG_FILE: &str = "issuer.json";
/// The format this program writes and reads.
pub const FORMAT: u32 = 1;

/// Files of a deployment besides the configuration, relative to its data directory.
pub mod files {
    pub const DATABASE: &str = "tessera.db";
    /// The CA token's activation secret when one custodian holds it (1-of-1).
    pub const ACTIVATION_SECRET: &str = "ca-activation.secret";
    pub const BOOTSTRAP_TOKEN: &str = "bootstrap-admin.token";
    pub const ROOT_PEM: &str = "root-ca.pem";
    pub const ROOT_CRL: &str = "root-ca.crl";
    pub const ISSUING_PEM: &str = "issuing-ca.pem";
    pub const OCSP_PEM: &str = "ocsp-responder.pem";
    /// The audit signer's certificate (checkpoints verify against it).
    pub const AUDIT_PEM: &str = "audit-signer.pem";
    /// The issuer's HTTPS key (0600) and certificate chain, from its own TLS CA.
    pub const TLS_KEY: &str = "tls-key.pem";
    pub const TLS_CERT: &str = "tls-cert.pem";
    pub const TLS_CA_PEM: &str = "tls-ca.pem";
    /// SoftHSM2's configuration and token directory (the embedded default).
    pub const SOFTHSM_CONF: &str = "softhsm2.conf";
    pub const SOFTHSM_TOKENS: &str = "tokens";
    /// Manufacturer CA certificates trusted for PIV attestations (PEM files).
    pub const ATTESTATION_ROOTS: &str = "attestation-roots";
    /// TPM manufacturer CAs trusted to sign endorsement-key certificates (PEM files): the
    /// CA that signs the EK certificates (for swtpm, swtpm-localca's `issuercert.pem`).
    pub const TPM_ROOTS: &str = "tpm-roots";
    /// Authenticator models whose passkeys officers may register in the portal: one
    /// `AAGUID.pem` each, the model's attestation CA.
    pub const PASSKEY_AUTHENTICATORS: &str = "passkey-authenticators";
    /// Between `init --external-root` and `install-ca-cert`.
    pub const PENDING: &str = "pending-ca.json";
    pub const PENDING_ROOT: &str = "pending-root-ca.pem";
    pub const ISSUING_CSR: &str = "issuing-ca.csr";
}

/// Key algorithms the CA can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyAlg {
    P256,
    P384,
    Rsa2048,
    Rsa3072,
}

impl KeyAlg {
    pub const ALL: [Self; 4] = [Self::P256, Self::P384, Self::Rsa2048, Self::Rsa3072];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::P256 => "p256",
            Self::P384 => "p384",
            Self::Rsa2048 => "rsa2048",
            Self::Rsa3072 => "rsa3072",
        }
    }
}

impl std::fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for KeyAlg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("{s:?}: one of p256, p384, rsa2048, rsa3072"))
    }
}

/// The PKCS#11 token that holds the CA keys.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The PKCS#11 module (an absolute path): SoftHSM2 by default, any HSM's library.
    pub module: PathBuf,
    /// The token's label.
    pub label: String,
    /// Environment the module needs, set before it is loaded (SoftHSM2's
    /// `SOFTHSM2_CONF`, tpm2-pkcs11's `TPM2_PKCS11_STORE` and TCTI). Values that are paths
    /// relative to the data directory are written as such.
    #[serde(default)]
    pub environment: Vec<(String, String)>,
}

/// Where the database is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase", tag = "kind")]
pub enum DatabaseConfig {
    /// An SQLite file, relative to the data directory.
    Sqlite { path: PathBuf },
    /// PostgreSQL: a `postgres://` URL without a password, and the file that holds the
    /// password, if any (relative to the data directory or absolute; mode 0600).
    Postgres {
        url: String,
        #[serde(default)]
        password_file: Option<PathBuf>,
    },
}

/// How many custodians hold shares of the token's activation secret, and how many must
/// come together (LoA3 K4.3); 1-of-1 keeps the secret in the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Custody {
    pub threshold: u8,
    pub shares: u8,
}

impl std::str::FromStr for Custody {
    type Err = String;

    /// `M-of-N`, e.g. `2-of-3`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (m, n) = s.split_once("-of-").ok_or("write M-of-N, e.g. 2-of-3")?;
        let threshold: u8 = m.parse().map_err(|_| format!("{m:?} is not a number"))?;
        let shares: u8 = n.parse().map_err(|_| format!("{n:?} is not a number"))?;
        let c = Self { threshold, shares };
        c.check()?;
        Ok(c)
    }
}

impl std::fmt::Display for Custody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-of-{}", self.threshold, self.shares)
    }
}

impl Custody {
    pub const SINGLE: Self = Self {
        threshold: 1,
        shares: 1,
    };

    fn check(self) -> Result<(), String> {
        if self.threshold == 0 || self.threshold > self.shares {
            return Err("need 1 ≤ M ≤ N".into());
        }
        Ok(())
    }

    pub fn is_single(self) -> bool {
        self == Self::SINGLE
    }
}

/// The deployment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub format: u32,
    /// The organisation named in the CA certificates.
    pub organization: String,
    pub key_alg: KeyAlg,
    pub token: TokenConfig,
    pub database: DatabaseConfig,
    pub custody: Custody,
    /// The certificate-policy OID put in certificates (the organisation's registered OID
    /// for the service ID at LoA3; `init` writes a trial placeholder).
    pub policy_oid: String,
    /// The domains UPNs may be in (`user@domain`); empty: no UPN is accepted.
    #[serde(default)]
    pub upn_domains: Vec<String>,
    /// Host names and addresses of the issuer's HTTPS certificate.
    pub tls_hosts: Vec<String>,
    /// The base URL relying parties reach this issuer at (CRL, OCSP, CA certificate);
    /// `serve --public-url` overrides it.
    pub public_url: String,
    /// Profiles that accept a bare public key, without proof of possession (audited as
    /// such). Empty by default: a CSR or a PIV attestation is needed.
    #[serde(default)]
    pub bare_key_profiles: Vec<crate::ProfileName>,
    /// The SHA-256 (hex) of the audit key's SubjectPublicKeyInfo, written by `init`:
    /// `audit verify` accepts checkpoints only from this key, so a certificate put into
    /// the database for another key does not make forged checkpoints pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_key_sha256: Option<String>,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("no Tessera deployment in {0} (no {CONFIG_FILE}); run `tessera-issuer init --data-dir {0}` first")]
    Missing(String),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid configuration: {source}")]
    Syntax {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// A key has a value the issuer cannot use; names the key.
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

impl Config {
    /// Reads and validates `DIR/issuer.json`.
    pub fn load(data_dir: &Path) -> Result<Self, ConfigError> {
        let path = data_dir.join(CONFIG_FILE);
        let raw = match std::fs::read(&path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::Missing(data_dir.display().to_string()))
            }
            Err(source) => {
                return Err(ConfigError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let config: Self = serde_json::from_slice(&raw).map_err(|source| ConfigError::Syntax {
            path: path.display().to_string(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The JSON `init` writes.
    pub fn to_json(&self) -> String {
        // Serialising plain data cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every key; the first bad one is named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.format != FORMAT {
            return Err(invalid(
                "format",
                format!(
                    "{} (this program reads format {FORMAT}; make the deployment again with \
                     this version's `init`)",
                    self.format
                ),
            ));
        }
        plain_name(&self.organization).map_err(|m| invalid("organization", m))?;
        if !self.token.module.is_absolute() {
            return Err(invalid("token.module", "must be an absolute path"));
        }
        if self.token.label.trim().is_empty() || self.token.label.len() > 32 {
            return Err(invalid("token.label", "1 to 32 characters"));
        }
        match &self.database {
            DatabaseConfig::Sqlite { path } if path.as_os_str().is_empty() => {
                return Err(invalid("database.path", "empty"))
            }
            DatabaseConfig::Postgres { url, .. }
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) =>
            {
                return Err(invalid("database.url", "a postgres:// URL"))
            }
            DatabaseConfig::Postgres { url, .. } if url_has_password(url) => {
                return Err(invalid(
                    "database.url",
                    "holds a password; put it in database.password_file (mode 0600)",
                ))
            }
            _ => {}
        }
        self.custody.check().map_err(|m| invalid("custody", m))?;
        check_oid(&self.policy_oid).map_err(|m| invalid("policy_oid", m))?;
        for d in &self.upn_domains {
            check_domain(d).map_err(|m| invalid("upn_domains", m))?;
        }
        if self.tls_hosts.is_empty() {
            return Err(invalid("tls_hosts", "at least one host name or address"));
        }
        check_url(&self.public_url).map_err(|m| invalid("public_url", m))?;
        Ok(())
    }

    /// A path from the configuration, resolved against the data directory.
    pub fn resolve(data_dir: &Path, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            data_dir.join(path)
        }
    }
}

/// An http(s) base URL without query or fragment (certificates name URLs under it).
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?}: an http:// or https:// URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty()
        || url.contains(['?', '#', ' '])
        || !url.is_ascii()
        || url.chars().any(|c| c.is_ascii_control())
    {
        return Err(format!(
            "{url:?}: a base URL with a host, no query or fragment"
        ));
    }
    Ok(())
}

/// A name for a distinguished name attribute: plain text, none of `, = + \ "`.
pub fn plain_name(s: &str) -> Result<(), String> {
    if s.trim().is_empty()
        || s.chars().count() > 64
        || s.contains([',', '=', '+', '\\', '"'])
        || s.chars().any(char::is_control)
    {
        return Err(format!(
            "{s:?}: 1–64 characters of plain text without , = + \\ or \""
        ));
    }
    Ok(())
}

fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// A dotted OID whose arcs fit 28 bits (what `const-oid` 0.9 encodes and pkilint accepts).
pub fn check_oid(s: &str) -> Result<(), String> {
    let arcs: Vec<&str> = s.split('.').collect();
    if arcs.len() < 2 {
        return Err(format!("{s:?}: an OID has at least two arcs"));
    }
    let mut values = Vec::new();
    for arc in &arcs {
        let v = arc
            .parse::<u32>()
            .ok()
            .filter(|v| *v < 1 << 28 && !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("{s:?}: arcs are decimal numbers below 2^28"))?;
        values.push(v);
    }
    if values[0] > 2 || (values[0] < 2 && values[1] >= 40) {
        return Err(format!("{s:?}: not a valid OID"));
    }
    Ok(())
}

/// A DNS domain name: labels of letters, digits and hyphens, 1–63 each, 253 in all.
pub fn check_domain(d: &str) -> Result<(), String> {
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{d:?} is not a domain name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Config {
        Config {
            format: FORMAT,
            organization: "Example".into(),
            key_alg: KeyAlg::P256,
            token: TokenConfig {
                module: "/usr/lib/softhsm/libsofthsm2.so".into(),
                label: "tessera-ca".into(),
                environment: vec![],
            },
            database: DatabaseConfig::Sqlite {
                path: "tessera.db".into(),
            },
            custody: Custody::SINGLE,
            policy_oid: "2.25.12345".into(),
            upn_domains: vec!["example.org".into()],
            tls_hosts: vec!["localhost".into()],
            public_url: "http://127.0.0.1:8080".into(),
            bare_key_profiles: vec![],
            audit_key_sha256: None,
        }
    }

    /// A configuration key and a change that makes it invalid.
    type Spoil = (&'static str, Box<dyn Fn(&mut Config)>);

    #[test]
    fn a_bad_value_is_refused_with_its_key() {
        assert!(sample().validate().is_ok());
        let cases: Vec<Spoil> = vec![
            ("format", Box::new(|c| c.format = 9)),
            ("organization", Box::new(|c| c.organization = "A,B".into())),
            (
                "token.module",
                Box::new(|c| c.token.module = "lib.so".into()),
            ),
            (
                "policy_oid",
                Box::new(|c| c.policy_oid = "2.25.268435456".into()),
            ),
            (
                "upn_domains",
                Box::new(|c| c.upn_domains = vec!["a..b".into()]),
            ),
            (
                "database.url",
                Box::new(|c| {
                    c.database = DatabaseConfig::Postgres {
                        url: "postgres://u:secret@h/db".into(),
                        password_file: None,
                    }
                }),
            ),
            (
                "custody",
                Box::new(|c| {
                    c.custody = Custody {
                        threshold: 3,
                        shares: 2,
                    }
                }),
            ),
            ("public_url", Box::new(|c| c.public_url = "ftp://x".into())),
        ];
        for (key, break_it) in cases {
            let mut c = sample();
            break_it(&mut c);
            match c.validate() {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
        let json = sample().to_json();
        let back: Config = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sample());
        assert!("2-of-3".parse::<Custody>().is_ok());
        assert!("0-of-2".parse::<Custody>().is_err());
    }
}

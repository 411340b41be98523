//! `tessera-idp init`: a new deployment in a new data directory: a SoftHSM2 token there
//! (the embedded default; an HSM's module and token through the configuration later), its
//! activation secret in custody, the signing and encryption keys made inside it with their
//! metadata certificates, and `idp.json`. A failure removes what was made.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tessera_issuer_types::config::{Custody, KeyAlg, TokenConfig};
use zeroize::Zeroizing;

use crate::config::{self, files, Config, KeyRef, Organisation};
use crate::keys;

/// What `init` is told.
#[derive(Debug, Clone)]
pub struct Options {
    pub entity_id: Option<String>,
    pub base_url: String,
    pub issuer_url: String,
    pub organisation: Organisation,
    pub signing_alg: KeyAlg,
    pub contact_email: String,
    /// The federation's aggregate (URL or file) and its signing certificate (PEM file,
    /// copied into the directory).
    pub federation: Option<(String, PathBuf)>,
    /// The card login, when the issuer's side is given: where browsers reach it, the
    /// issuing CAs (PEM files, copied in), the policy OID and the issuer API token file.
    pub login: Option<LoginOptions>,
    /// PostgreSQL instead of the embedded SQLite file.
    pub database_url: Option<String>,
    /// The CA relying parties' SOAP logout endpoints chain to (PEM, copied in).
    pub logout_ca: Option<PathBuf>,
}

/// What the card login needs from the issuer's deployment.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    pub base_url: String,
    pub card_cas: Vec<PathBuf>,
    pub card_policy: String,
    /// The IdP's issuer API token, copied in; without one, put it in
    /// `DIR/issuer-api.token` later (read at each use).
    pub issuer_token: Option<PathBuf>,
    /// The issuer's TLS CA (PEM), copied in.
    pub issuer_ca: Option<PathBuf>,
}

/// The token label of the embedded default.
const TOKEN_LABEL: &str = "tessera-idp";

/// Makes the deployment in `dir` (which must not exist, or be empty); returns its
/// configuration.
pub fn run(dir: &Path, opts: &Options) -> Result<Config> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty; refusing to overwrite a deployment (choose a new directory)",
            dir.display()
        );
    }
    let made_dir = !dir.exists();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{}", dir.display()))?;
    let result = make(&dir, opts);
    if result.is_err() {
        // Nothing half made stays behind: the token's files, the secret, the certificates.
        if made_dir {
            let _ = std::fs::remove_dir_all(&dir);
        } else if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }
    result
}

fn make(dir: &Path, opts: &Options) -> Result<Config> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    config::signature_alg(opts.signing_alg)?;
    let conf = tessera_hsm::softhsm_config(dir)?;
    // The configuration file by its absolute path, as the issuer writes it (it names the
    // token directory absolutely too: the data directory is not moved).
    let token_config = TokenConfig {
        module: PathBuf::from(tessera_hsm::SOFTHSM2_MODULE),
        label: TOKEN_LABEL.to_owned(),
        environment: vec![(
            "SOFTHSM2_CONF".to_owned(),
            conf.to_string_lossy().into_owned(),
        )],
    };
    let secret = Zeroizing::new(tessera_hsm::random_pin());
    let p11 = tessera_hsm::load(&token_config.module, &token_config.environment)?;
    tessera_hsm::init_token(&p11, TOKEN_LABEL, &secret)?;
    write_secret(dir, &secret)?;
    let token = tessera_hsm::Token::open(p11, TOKEN_LABEL, &secret)?;

    let host = url_host(&opts.base_url);
    let mut made = Vec::new();
    for (role, alg) in [
        ("signing", opts.signing_alg),
        ("encryption", KeyAlg::Rsa2048),
    ] {
        let label = format!("saml-{role}-1");
        let pem = keys::make_key(
            &token,
            &label,
            alg,
            &format!("{host} SAML {role}"),
            tessera_issuer_types::clock::Clock::now(&tessera_issuer_types::SystemClock),
        )?;
        let file = PathBuf::from(format!("saml-{role}-1.pem"));
        std::fs::write(dir.join(&file), pem)
            .with_context(|| format!("writing {}", file.display()))?;
        made.push(KeyRef {
            label,
            alg,
            certificate: file,
        });
    }
    let encryption = made.pop().into_iter().collect();
    let name_id_key = "nameid-1".to_owned();
    token.ensure_hmac_key(&name_id_key)?;
    let federation = match &opts.federation {
        None => None,
        Some((source, cert)) => {
            // Checked now, kept beside the deployment.
            let file = copy_certificate_in(dir, cert, "federation-signer-1.pem")?;
            Some(config::Federation {
                source: source.clone(),
                certificates: vec![file],
                refresh_minutes: 60,
            })
        }
    };
    let login = match &opts.login {
        None => None,
        Some(l) => Some(login(dir, &token, l)?),
    };
    let database = match &opts.database_url {
        None => tessera_issuer_types::config::DatabaseConfig::Sqlite {
            path: PathBuf::from("idp.sqlite"),
        },
        Some(url) => tessera_issuer_types::config::DatabaseConfig::Postgres {
            url: url.clone(),
            password_file: None,
        },
    };
    let admin_token = {
        let mut b = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
        Zeroizing::new(b.iter().map(|x| format!("{x:02x}")).collect::<String>())
    };
    write_private(dir, files::ADMIN_TOKEN, &admin_token)?;
    let logout_ca = match &opts.logout_ca {
        None => None,
        Some(ca) => Some(copy_certificate_in(dir, ca, "logout-tls-ca.pem")?),
    };
    let config = Config {
        logout_ca,
        database,
        login,
        session_minutes: 60,
        admin_token_sha256: Some(crate::web::sha256_hex(admin_token.as_bytes())),
        format: config::FORMAT,
        entity_id: opts
            .entity_id
            .clone()
            .unwrap_or_else(|| format!("{}/saml/metadata", opts.base_url)),
        base_url: opts.base_url.clone(),
        issuer_url: opts.issuer_url.clone(),
        organisation: opts.organisation.clone(),
        token: token_config,
        custody: Custody::SINGLE,
        signing: made,
        encryption,
        name_id_key,
        certified_loa3: false,
        metadata_valid_days: 7,
        contact_email: opts.contact_email.clone(),
        federation,
    };
    config.validate()?;
    let path = dir.join(config::CONFIG_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(&config)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(config)
}

/// The login host: its TLS key made in the token (P-256) with a self-signed certificate
/// naming the host (replace it with one from a CA browsers trust: the key stays), the
/// issuing CAs copied in, and the issuer API token kept in a file of its own.
fn login(dir: &Path, token: &tessera_hsm::Token, l: &LoginOptions) -> Result<config::Login> {
    let host = url_host(&l.base_url);
    let label = "tls-login-1";
    let pem = keys::make_tls_key(
        token,
        label,
        host,
        tessera_issuer_types::clock::Clock::now(&tessera_issuer_types::SystemClock),
    )?;
    let tls_certificate = PathBuf::from("tls-login-1.pem");
    std::fs::write(dir.join(&tls_certificate), pem)?;
    let mut card_cas = Vec::new();
    for (i, ca) in l.card_cas.iter().enumerate() {
        card_cas.push(copy_certificate_in(
            dir,
            ca,
            &format!("card-ca-{}.pem", i + 1),
        )?);
    }
    let issuer_ca = match &l.issuer_ca {
        None => None,
        Some(ca) => Some(copy_certificate_in(dir, ca, "issuer-tls-ca.pem")?),
    };
    if let Some(file) = &l.issuer_token {
        let secret = Zeroizing::new(
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?,
        );
        let secret = secret.trim();
        if secret.is_empty() || secret.contains(char::is_whitespace) {
            bail!("{}: one API token expected", file.display());
        }
        write_private(dir, files::ISSUER_TOKEN, secret)?;
    }
    Ok(config::Login {
        base_url: l.base_url.clone(),
        tls_key: label.to_owned(),
        tls_certificate,
        card_cas,
        card_policy: l.card_policy.clone(),
        ocsp_url: None,
        issuer_token: PathBuf::from(files::ISSUER_TOKEN),
        issuer_ca,
    })
}

/// A certificate file (PEM, checked) copied into the data directory as `name`; the
/// configuration names it relative to the directory.
fn copy_certificate_in(dir: &Path, from: &Path, name: &str) -> Result<PathBuf> {
    keys::certificate_file(from)?;
    let file = PathBuf::from(name);
    std::fs::copy(from, dir.join(&file)).with_context(|| format!("copying {}", from.display()))?;
    Ok(file)
}

/// The activation secret in the data directory (1-of-1 custody), mode 0600.
fn write_secret(dir: &Path, secret: &str) -> Result<()> {
    write_private(dir, files::ACTIVATION_SECRET, secret)
}

/// A new file in the data directory that only its owner reads (mode 0600).
fn write_private(dir: &Path, name: &str, secret: &str) -> Result<()> {
    let path = dir.join(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut f, secret.as_bytes())?;
    Ok(())
}

/// The host of a URL (for certificate names), or the URL itself.
fn url_host(url: &str) -> &str {
    url.split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(url)
        .split(['/', ':'])
        .next()
        .unwrap_or(url)
}

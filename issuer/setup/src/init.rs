//! `tessera-issuer init` and `install-ca-cert`: a new deployment in a data directory.
//!
//! Takes the CA token (a new SoftHSM2 token in the directory, or an HSM's token handed over
//! with its PIN, which is changed), generates the CA keys inside it, makes the CA's
//! certificates, creates the database with the authorities, a bootstrap administrator token
//! and the audit records of all this, and writes the validated configuration
//! (`issuer.json`) that every later command reads. On any failure it removes what it
//! created in the directory: a half-made deployment is never left behind.
//!
//! The token's security-officer PIN is never kept (finding 1 of the security review): a new
//! token's is random and wiped after setting the user PIN; a handed-over token's user PIN is
//! changed to the activation secret, whose custody (1-of-1, or M-of-N shares) is the only
//! way to sign.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use der::{Decode, Encode};
use sha2::Digest;
use tessera_hsm::{self as token, Token};
use tessera_issuer_ca::authority::{
    self, IssuingProfile, OwnCertificate as OwnKind, OwnRequest, Period,
};
use tessera_issuer_ca::signer::labels;
use tessera_issuer_ca::x509;
use tessera_issuer_ca::{KeyRole, Signer, TokenSigner};
use tessera_issuer_store::audit::AuditEvent;
use tessera_issuer_store::{AuthorityRole, AuthorityRow, OwnCertificate, Store, StoreError};
use tessera_issuer_types::config::{
    self, files, Config, Custody, DatabaseConfig, KeyAlg, TokenConfig, CONFIG_FILE,
};
use tessera_issuer_types::Clock;
use x509_cert::name::Name;
use x509_cert::Certificate;
use zeroize::Zeroizing;

use crate::files::{write_new, write_private};
use tessera_issuer_ca::x509::read_certificate;

/// The token the CA keys go in.
#[derive(Debug, Clone)]
pub enum TokenChoice {
    /// A new SoftHSM2 token in the data directory (the embedded default).
    SoftHsm,
    /// A token that exists already (an HSM's, or tpm2-pkcs11's, made with its own tool),
    /// handed over with its user PIN in a file; `init` changes that PIN to the activation
    /// secret, so the PIN handed over no longer opens it.
    Existing {
        module: PathBuf,
        label: String,
        pin_file: PathBuf,
        /// The security officer's PIN, which `init` replaces with a random one it forgets.
        so_pin_file: PathBuf,
        /// Environment the module needs (`NAME=VALUE`), kept in the configuration.
        environment: Vec<(String, String)>,
    },
}

/// Where the database goes.
#[derive(Debug, Clone)]
pub enum DatabaseChoice {
    /// An SQLite file in the data directory (the embedded default).
    Sqlite,
    /// PostgreSQL: a URL without a password, and the file that holds it, if any.
    Postgres {
        url: String,
        password_file: Option<PathBuf>,
    },
}

/// What `init` needs to know.
#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: PathBuf,
    pub key_alg: KeyAlg,
    pub organization: String,
    pub token: TokenChoice,
    pub database: DatabaseChoice,
    /// Host names and addresses of the issuer's HTTPS certificate.
    pub tls_hosts: Vec<String>,
    /// Custody of the activation secret (default 1-of-1).
    pub custody: Custody,
    /// Where M-of-N share files are written (default: the data directory, from which
    /// they must be taken away before the deployment runs).
    pub share_dir: Option<PathBuf>,
    /// The base URL relying parties reach the issuer at.
    pub public_url: String,
    /// The certificate-policy OID; a trial placeholder when absent.
    pub policy_oid: Option<String>,
    /// The domains UPNs may be in.
    pub upn_domains: Vec<String>,
}

/// What `init` made.
#[derive(Debug, Clone)]
pub struct Report {
    pub root_fingerprint: String,
    pub issuing_fingerprint: String,
    pub ocsp_fingerprint: String,
    pub tls_ca_fingerprint: String,
    pub bootstrap_token_path: PathBuf,
    /// Share files to hand to the custodians (M-of-N), empty for 1-of-1.
    pub shares: Vec<PathBuf>,
}

/// What the first half of an offline-root `init` made.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    pub csr_path: PathBuf,
    pub csr_sha256: String,
    pub root_fingerprint: String,
    #[serde(default)]
    pub shares: Vec<PathBuf>,
}

/// Validity of the CA's own certificates.
const ROOT_YEARS: u64 = 20;
const ISSUING_YEARS: u64 = 10;
const TLS_CA_YEARS: u64 = 10;
/// The OCSP responder's, the audit signer's and the HTTPS certificates: renewed by
/// `serve` (and `renew`) when a third of this is left.
pub const OWN_CERTIFICATE_DAYS: u64 = 365;
/// The root CRL (an embedded root): re-signed by `renew` before it runs out.
pub const ROOT_CRL_DAYS: u64 = 365;

/// Runs `init`. Refuses a directory that already holds anything.
pub fn run(opts: &Options, clock: &dyn Clock) -> Result<Report> {
    let config = configuration(opts)?;
    in_new_directory(&opts.data_dir, |dir| create(opts, dir, &config, clock))
}

/// The configuration `init` will write, checked before anything is made.
fn configuration(opts: &Options) -> Result<Config> {
    let policy_oid = match &opts.policy_oid {
        Some(p) => p.clone(),
        // The organisation's registered certificate-policy OID belongs here. Until it is
        // configured, a trial placeholder under the UUID arc (ITU-T X.667, 2.25) with a
        // random 28-bit value (const-oid holds 32-bit arcs; pkilint rejects arcs of more
        // than four base-128 bytes). Never for production (docs/issuer.md says so).
        None => format!(
            "2.25.{}",
            rand::Rng::gen_range(&mut rand::rngs::OsRng, 1..1u32 << 28)
        ),
    };
    let (module, label, environment) = match &opts.token {
        TokenChoice::SoftHsm => (
            PathBuf::from(token::SOFTHSM2_MODULE),
            labels::TOKEN.to_owned(),
            Vec::new(),
        ),
        TokenChoice::Existing {
            module,
            label,
            environment,
            ..
        } => (module.clone(), label.clone(), environment.clone()),
    };
    let database = match &opts.database {
        DatabaseChoice::Sqlite => DatabaseConfig::Sqlite {
            path: PathBuf::from(files::DATABASE),
        },
        DatabaseChoice::Postgres { url, password_file } => DatabaseConfig::Postgres {
            url: url.clone(),
            password_file: password_file.clone(),
        },
    };
    let config = Config {
        format: config::FORMAT,
        organization: opts.organization.trim().to_owned(),
        key_alg: opts.key_alg,
        token: TokenConfig {
            module,
            label,
            environment,
        },
        database,
        custody: opts.custody,
        policy_oid,
        upn_domains: opts.upn_domains.clone(),
        tls_hosts: opts.tls_hosts.clone(),
        public_url: opts.public_url.trim_end_matches('/').to_owned(),
        bare_key_profiles: Vec::new(),
        audit_key_sha256: None,
    };
    config.validate().map_err(|e| match e {
        // Name the option the user gave, not the configuration key it becomes.
        config::ConfigError::Invalid { key, message } => {
            let option = match key {
                "organization" => "--organization",
                "policy_oid" => "--policy-oid",
                "upn_domains" => "--upn-domain",
                "tls_hosts" => "--tls-host",
                "public_url" => "--public-url",
                "database.url" => "--database-url",
                "token.module" => "--token-module",
                "token.label" => "--token-label",
                other => other,
            };
            anyhow::anyhow!("{option}: {message}")
        }
        other => other.into(),
    })?;
    if let TokenChoice::Existing {
        pin_file,
        so_pin_file,
        ..
    } = &opts.token
    {
        for (option, file) in [
            ("--token-pin-file", pin_file),
            ("--token-so-pin-file", so_pin_file),
        ] {
            anyhow::ensure!(file.is_file(), "{option} {}: no such file", file.display());
        }
    }
    Ok(config)
}

/// Runs `make` in the new (or empty) data directory, given as an absolute path, and leaves
/// nothing behind if it fails.
fn in_new_directory<T>(dir: &Path, make: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    use std::os::unix::fs::PermissionsExt;
    let existed = dir.exists();
    if existed {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        if entries.next().is_some() {
            if dir.join(CONFIG_FILE).exists() {
                bail!(
                    "{} already holds a Tessera deployment; refusing to overwrite it",
                    dir.display()
                );
            }
            bail!(
                "{} is not empty; init needs a new or empty directory",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let absolute = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    match make(&absolute) {
        Ok(made) => Ok(made),
        Err(e) => {
            // Leave nothing half-made: the directory was new or empty.
            if existed {
                if let Ok(entries) = std::fs::read_dir(dir) {
                    for entry in entries.flatten() {
                        let p = entry.path();
                        let _ = if p.is_dir() {
                            std::fs::remove_dir_all(&p)
                        } else {
                            std::fs::remove_file(&p)
                        };
                    }
                }
            } else {
                let _ = std::fs::remove_dir_all(dir);
            }
            Err(e)
        }
    }
}

/// The database and the CA token (initialised or adopted, logged in with the new
/// activation secret, whose custody files are written) for a new deployment; the
/// configuration gets the token's environment.
fn prepare(
    opts: &Options,
    dir: &Path,
    config: &mut Config,
) -> Result<(Store, Token, Vec<PathBuf>)> {
    // The database first: a PostgreSQL database that already holds a deployment is
    // refused before anything else is made.
    let store = Store::open_configured(&config.database, dir)?;
    let existing = store.read(|tx| tx.authority_count())?;
    if existing > 0 {
        bail!("the database already holds a Tessera deployment; refusing to overwrite it");
    }
    let secret = Zeroizing::new(token::random_pin());
    let p11 = match &opts.token {
        TokenChoice::SoftHsm => {
            let conf = token::softhsm_config(dir)?;
            config.token.environment = vec![(
                "SOFTHSM2_CONF".to_owned(),
                conf.to_string_lossy().into_owned(),
            )];
            let p11 = token::load(&config.token.module, &config.token.environment)?;
            token::init_token(&p11, &config.token.label, &secret)?;
            p11
        }
        TokenChoice::Existing { pin_file, .. } => {
            let p11 = token::load(&config.token.module, &config.token.environment)?;
            token::adopt_token(&p11, &config.token.label, &read_pin(pin_file)?, &secret)?;
            p11
        }
    };
    if let Some(away) = &opts.share_dir {
        let away = away
            .canonicalize()
            .with_context(|| format!("--share-dir {}", away.display()))?;
        anyhow::ensure!(
            !away.starts_with(dir),
            "--share-dir {} is inside the data directory: the shares would stay with it",
            away.display()
        );
    }
    let shares = write_custody(
        opts.share_dir.as_deref().unwrap_or(dir),
        config.custody,
        &secret,
    )?;
    let token = Token::open(p11, &config.token.label, &secret)?;
    Ok((store, token, shares))
}

fn read_pin(f: &Path) -> Result<Zeroizing<String>> {
    Ok(Zeroizing::new(
        std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))?
            .trim()
            .to_owned(),
    ))
}

/// The last step of taking over a token, once the deployment is made (the token closed):
/// its security officer's PIN is replaced and forgotten. Done last because until then it
/// is the way back: if setting up fails, the directory (with the new activation secret) is
/// removed, and whoever handed the token over resets its user PIN with it.
fn retire_handed_over_so_pin(opts: &Options, config: &Config) -> Result<()> {
    if let TokenChoice::Existing { so_pin_file, .. } = &opts.token {
        token::retire_so_pin(&config.token, &read_pin(so_pin_file)?)?;
    }
    Ok(())
}

/// The activation secret's custody: the secret itself in the directory (1-of-1), or one
/// share file per custodian in `dir` (the data directory unless `--share-dir` says
/// otherwise), to be handed over; the deployment refuses to run while any is left in the
/// data directory.
fn write_custody(dir: &Path, custody: Custody, secret: &str) -> Result<Vec<PathBuf>> {
    if custody.is_single() {
        write_private(&dir.join(files::ACTIVATION_SECRET), secret.as_bytes())?;
        return Ok(Vec::new());
    }
    let mut paths = Vec::new();
    for (i, share) in tessera_hsm::custody::split(secret.as_bytes(), custody)
        .iter()
        .enumerate()
    {
        let n = u8::try_from(i + 1).unwrap_or(u8::MAX);
        let path = tessera_hsm::custody::share_path(dir, n);
        write_private(&path, share.as_bytes())?;
        paths.push(path);
    }
    Ok(paths)
}

/// The issuing CA's subject name.
fn issuing_name(org: &str) -> Result<Name> {
    Ok(Name::from_str(&format!("CN={org} Issuing CA 1,O={org}"))?)
}

/// From an hour back (a relying party whose clock lags a little accepts certificates)
/// for `days`, never past `cap`.
fn period(now: Duration, days: u64, cap: Option<Duration>) -> Period {
    let not_after = now + Duration::from_secs(days * 86_400);
    Period {
        not_before: now.saturating_sub(Duration::from_secs(3600)),
        not_after: cap.map_or(not_after, |c| not_after.min(c)),
    }
}

fn create(opts: &Options, dir: &Path, config: &Config, clock: &dyn Clock) -> Result<Report> {
    let mut config = config.clone();
    let (store, token, shares) = prepare(opts, dir, &mut config)?;
    let alg = config.key_alg;
    for label in [
        labels::ROOT,
        labels::ISSUING,
        labels::OCSP,
        labels::AUDIT,
        labels::TLS_CA,
    ] {
        token.generate(label, alg)?;
    }
    let org = config.organization.clone();
    let now = clock.now();
    let root_name = Name::from_str(&format!("CN={org} Root CA,O={org}"))?;
    let root = authority::root_certificate(
        &token,
        labels::ROOT,
        alg,
        root_name,
        period(now, ROOT_YEARS * 365, None),
    )?;
    let root_cert = Certificate::from_der(&root)?;
    let issuing = authority::issuing_certificate(
        &token,
        labels::ROOT,
        alg,
        &root_cert,
        issuing_name(&org)?,
        &token.public_key(labels::ISSUING, alg)?,
        &IssuingProfile {
            period: period(
                now,
                ISSUING_YEARS * 365,
                Some(
                    root_cert
                        .tbs_certificate
                        .validity
                        .not_after
                        .to_unix_duration(),
                ),
            ),
            policy: x509::parse_oid(&config.policy_oid)?,
            root_crl_url: format!("{}/crl/root-ca.crl", config.public_url),
        },
    )?;
    let report = complete(
        &store,
        token,
        clock,
        &Completion {
            dir,
            config: &config,
            root: &root,
            root_key_label: labels::ROOT,
            issuing: &issuing,
            shares,
        },
    )?;
    retire_handed_over_so_pin(opts, &config)?;
    Ok(report)
}

/// What the deployment's last step needs: the CA certificates and the configuration.
struct Completion<'a> {
    dir: &'a Path,
    config: &'a Config,
    root: &'a [u8],
    /// The root key's label in the token, or `offline`.
    root_key_label: &'a str,
    issuing: &'a [u8],
    shares: Vec<PathBuf>,
}

/// One of the issuer's own certificates, made and to be recorded.
struct Own {
    role: AuthorityRole,
    key_label: String,
    /// The authority that issued it and the profile it is recorded under.
    authority: &'static str,
    profile: &'static str,
    der: Vec<u8>,
}

/// With the root and issuing-CA certificates in hand: makes the TLS CA (self-signed: the
/// issuer's HTTPS is apart from the workforce PKI), the OCSP responder's, the audit
/// signer's and the HTTPS certificates; records the authorities, those certificates, the
/// bootstrap token and their audit records in one transaction; writes the files and the
/// configuration last.
fn complete(store: &Store, token: Token, clock: &dyn Clock, c: &Completion<'_>) -> Result<Report> {
    let (dir, config) = (c.dir, c.config);
    let (alg, org) = (config.key_alg, config.organization.as_str());
    let now = clock.now();
    let issuing_cert = Certificate::from_der(c.issuing)?;
    let issuing_end = issuing_cert
        .tbs_certificate
        .validity
        .not_after
        .to_unix_duration();
    let tls_ca = authority::root_certificate(
        &token,
        labels::TLS_CA,
        alg,
        Name::from_str(&format!("CN={org} Issuer TLS CA,O={org}"))?,
        period(now, TLS_CA_YEARS * 365, None),
    )?;
    let tls_ca_cert = Certificate::from_der(&tls_ca)?;
    // The key that seals card PUKs (LIFECYCLE.md): a token without AES-GCM (tpm2-pkcs11)
    // serves without escrow.
    if let Err(e) = token.ensure_secret_key(labels::ESCROW) {
        eprintln!(
            "warning: the token cannot hold a PUK escrow key, PUKs will not be escrowed: {e:#}"
        );
    }
    let signer = TokenSigner::new(token, alg);
    if c.root_key_label == labels::ROOT {
        let root_cert = Certificate::from_der(c.root)?;
        let root_crl = authority::root_crl(
            &signer,
            &root_cert,
            1,
            now,
            now + Duration::from_secs(ROOT_CRL_DAYS * 86_400),
        )?;
        write_new(&dir.join(files::ROOT_CRL), &root_crl)?;
    }
    let own_period = period(now, OWN_CERTIFICATE_DAYS, Some(issuing_end));
    // Nothing to record before these signatures: the whole deployment is committed in one
    // transaction below, or the directory is emptied.
    let ocsp = authority::own_certificate(
        &signer,
        &issuing_cert,
        OwnKind::OcspResponder,
        OwnRequest {
            subject: Name::from_str(&format!("CN={org} OCSP Responder 1,O={org}"))?,
            subject_spki: &signer.public_key(KeyRole::Ocsp)?,
            period: own_period,
        },
        &mut |_| Ok(()),
    )?;
    let audit = authority::own_certificate(
        &signer,
        &issuing_cert,
        OwnKind::AuditSigner,
        OwnRequest {
            subject: Name::from_str(&format!("CN={org} Audit Signer 1,O={org}"))?,
            subject_spki: &signer.public_key(KeyRole::Audit)?,
            period: own_period,
        },
        &mut |_| Ok(()),
    )?;
    // The issuer's HTTPS key: an ordinary server key in a 0600 file (it protects the API's
    // transport and signs nothing the CA vouches for), under the TLS CA.
    let tls_key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let tls_spki = pkcs8::EncodePublicKey::to_public_key_der(&tls_key.public_key())?.into_vec();
    let hosts = authority::tls_names(&config.tls_hosts)?;
    let tls_cert = authority::own_certificate(
        &signer,
        &tls_ca_cert,
        OwnKind::TlsServer { hosts: &hosts },
        OwnRequest {
            subject: Name::from_str(&format!("CN={},O={org}", config.tls_hosts[0]))?,
            subject_spki: &tls_spki,
            period: period(now, OWN_CERTIFICATE_DAYS, None),
        },
        &mut |_| Ok(()),
    )?;

    let bootstrap = Zeroizing::new(format!("tsr_{}", token::random_pin()));
    let report = Report {
        root_fingerprint: x509::fingerprint(c.root),
        issuing_fingerprint: x509::fingerprint(c.issuing),
        ocsp_fingerprint: x509::fingerprint(&ocsp),
        tls_ca_fingerprint: x509::fingerprint(&tls_ca),
        bootstrap_token_path: dir.join(files::BOOTSTRAP_TOKEN),
        shares: c.shares.clone(),
    };
    let own = [
        Own {
            role: AuthorityRole::Ocsp,
            key_label: labels::OCSP.to_owned(),
            authority: "issuing",
            profile: "ocsp-responder",
            der: ocsp.clone(),
        },
        Own {
            role: AuthorityRole::Audit,
            key_label: labels::AUDIT.to_owned(),
            authority: "issuing",
            profile: "audit-signer",
            der: audit.clone(),
        },
        Own {
            role: AuthorityRole::TlsServer,
            key_label: format!("file:{}", files::TLS_KEY),
            authority: "tls-ca",
            profile: "tls-server",
            der: tls_cert.clone(),
        },
    ];

    // The files first, then the transaction that makes the deployment real; if anything
    // fails, the caller removes the directory's contents.
    let pem = x509::to_pem;
    write_new(&dir.join(files::ROOT_PEM), pem(c.root)?.as_bytes())?;
    write_new(&dir.join(files::ISSUING_PEM), pem(c.issuing)?.as_bytes())?;
    write_new(&dir.join(files::OCSP_PEM), pem(&ocsp)?.as_bytes())?;
    write_new(&dir.join(files::AUDIT_PEM), pem(&audit)?.as_bytes())?;
    write_new(&dir.join(files::TLS_CA_PEM), pem(&tls_ca)?.as_bytes())?;
    write_private(&dir.join(files::BOOTSTRAP_TOKEN), bootstrap.as_bytes())?;
    let key_pem = pkcs8::EncodePrivateKey::to_pkcs8_pem(&tls_key, der::pem::LineEnding::LF)?;
    write_private(&dir.join(files::TLS_KEY), key_pem.as_bytes())?;
    let chain = format!("{}{}", pem(&tls_cert)?, pem(&tls_ca)?);
    write_new(&dir.join(files::TLS_CERT), chain.as_bytes())?;

    let at = tessera_issuer_store::secs(now);
    let alg_name = alg.as_str().to_owned();
    store.write(|tx| -> Result<(), StoreError> {
        for (role, label, cert) in [
            (AuthorityRole::Root, c.root_key_label, c.root),
            (AuthorityRole::Issuing, labels::ISSUING, c.issuing),
            (AuthorityRole::TlsCa, labels::TLS_CA, &tls_ca[..]),
        ] {
            tx.insert_authority(
                role,
                &AuthorityRow {
                    key_label: label.to_owned(),
                    key_alg: alg_name.clone(),
                    certificate: cert.to_vec(),
                },
                at,
            )?;
        }
        tx.audit(
            "init",
            &AuditEvent::CaCreated {
                token: config.token.label.clone(),
                key_alg: alg_name.clone(),
                root_key: c.root_key_label.to_owned(),
                root_sha256: report.root_fingerprint.clone(),
                issuing_sha256: report.issuing_fingerprint.clone(),
                ocsp_sha256: report.ocsp_fingerprint.clone(),
            },
            at,
        )?;
        for o in &own {
            tx.insert_authority(
                o.role,
                &AuthorityRow {
                    key_label: o.key_label.clone(),
                    key_alg: alg_name.clone(),
                    certificate: o.der.clone(),
                },
                at,
            )?;
            let d = x509::describe(&o.der)
                .map_err(|e| StoreError::Corrupt(format!("own certificate: {e}")))?;
            tx.record_own_certificate(
                &OwnCertificate {
                    serial: &d.serial,
                    authority: o.authority,
                    profile: o.profile,
                    tbs: &d.tbs,
                    der: &o.der,
                    not_after: d.not_after,
                    fingerprint: &d.fingerprint,
                },
                at,
                "init",
            )?;
        }
        tx.insert_api_token(
            &sha2::Sha256::digest(bootstrap.as_bytes()),
            "bootstrap-admin",
            "admin",
            at,
        )?;
        tx.audit(
            "init",
            &AuditEvent::ApiTokenCreated {
                name: "bootstrap-admin".into(),
                role: "admin".into(),
            },
            at,
        )?;
        Ok(())
    })?;
    // The configuration last: its presence is what makes a deployment. It pins the audit
    // key, which checkpoints must verify with.
    let mut config = config.clone();
    config.audit_key_sha256 = Some(tessera_issuer_ca::checkpoint::key_id(
        &signer.public_key(KeyRole::Audit)?,
    ));
    write_new(&dir.join(CONFIG_FILE), config.to_json().as_bytes())?;
    Ok(report)
}

/// The online half of the production path, first step: a deployment whose root stays
/// offline. Checks the root certificate (made by `ceremony`), creates the database and
/// token, generates the keys (all but the root) in the token and writes the issuing CA's
/// certificate request to DIR/issuing-ca.csr, for the root ceremony to sign. The
/// deployment is complete after [`install_issuing_certificate`].
pub fn run_external(opts: &Options, root_file: &Path, clock: &dyn Clock) -> Result<Pending> {
    let config = configuration(opts)?;
    let root = read_certificate(root_file)?;
    check_root(&root).with_context(|| format!("{} as the root", root_file.display()))?;
    in_new_directory(&opts.data_dir, |dir| {
        create_pending(opts, dir, &config, &root, clock)
    })
}

fn create_pending(
    opts: &Options,
    dir: &Path,
    config: &Config,
    root: &[u8],
    clock: &dyn Clock,
) -> Result<Pending> {
    let mut config = config.clone();
    let (store, token, shares) = prepare(opts, dir, &mut config)?;
    let alg = config.key_alg;
    for label in [labels::ISSUING, labels::OCSP, labels::AUDIT, labels::TLS_CA] {
        token.generate(label, alg)?;
    }
    let csr = authority::certificate_request(
        &token,
        labels::ISSUING,
        alg,
        issuing_name(&config.organization)?,
    )?;
    let csr_pem = der::pem::encode_string("CERTIFICATE REQUEST", der::pem::LineEnding::LF, &csr)
        .map_err(|e| anyhow::anyhow!("PEM: {e}"))?;
    let pending = Pending {
        csr_path: dir.join(files::ISSUING_CSR),
        csr_sha256: hex::encode(sha2::Sha256::digest(&csr)),
        root_fingerprint: x509::fingerprint(root),
        shares,
    };
    write_new(&pending.csr_path, csr_pem.as_bytes())?;
    write_new(
        &dir.join(files::PENDING_ROOT),
        x509::to_pem(root)?.as_bytes(),
    )?;
    write_new(
        &dir.join(files::PENDING),
        serde_json::to_string_pretty(&pending)?.as_bytes(),
    )?;
    let at = tessera_issuer_store::secs(clock.now());
    store.write(|tx| {
        tx.audit(
            "init",
            &AuditEvent::CaRequested {
                token: config.token.label.clone(),
                key_alg: alg.as_str().to_owned(),
                offline_root_sha256: pending.root_fingerprint.clone(),
                issuing_csr_sha256: pending.csr_sha256.clone(),
            },
            at,
        )
        .map(drop)
    })?;
    write_new(&dir.join(CONFIG_FILE), config.to_json().as_bytes())?;
    drop(token);
    retire_handed_over_so_pin(opts, &config)?;
    Ok(pending)
}

/// The online half of the production path, second step: installs the issuing-CA
/// certificate the root ceremony signed for DIR/issuing-ca.csr, after checking that it is
/// for this deployment's key, was issued by the offline root, is a CA certificate valid
/// now and carries the deployment's certificate policy. Then completes the deployment as
/// `init` does. A refused certificate changes nothing.
pub fn install_issuing_certificate(
    dir: &Path,
    certificate: &Path,
    shares: &[PathBuf],
    clock: &dyn Clock,
) -> Result<Report> {
    let dir = &dir
        .canonicalize()
        .with_context(|| format!("{}", dir.display()))?;
    let config = Config::load(dir)?;
    let pending_file = dir.join(files::PENDING);
    if !pending_file.exists() {
        bail!(
            "{} awaits no issuing-CA certificate (only `init --external-root` makes such a \
             deployment)",
            dir.display()
        );
    }
    let root = read_certificate(&dir.join(files::PENDING_ROOT))?;
    let issuing = read_certificate(certificate)?;
    let store = Store::open_configured(&config.database, dir)?;
    let secret = tessera_hsm::custody::activation_secret(dir, config.custody, shares)?;
    let token = token::open_configured(&config.token, &secret)?;
    check_issuing(
        &issuing,
        &root,
        &token.public_key(labels::ISSUING, config.key_alg)?,
        &issuing_name(&config.organization)?,
        clock.now(),
    )
    .with_context(|| format!("refusing {}", certificate.display()))?;
    // Files `complete` writes must not exist yet; the configuration is rewritten by it.
    std::fs::remove_file(dir.join(CONFIG_FILE)).context("replacing the configuration")?;
    let report = complete(
        &store,
        token,
        clock,
        &Completion {
            dir,
            config: &config,
            root: &root,
            root_key_label: "offline",
            issuing: &issuing,
            shares: Vec::new(),
        },
    );
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            // Put the configuration back: the deployment still awaits its certificate.
            let _ = std::fs::write(dir.join(CONFIG_FILE), config.to_json());
            return Err(e);
        }
    };
    for done in [files::PENDING, files::PENDING_ROOT] {
        std::fs::remove_file(dir.join(done)).with_context(|| format!("removing {done}"))?;
    }
    Ok(report)
}

/// Whether the certificate's basicConstraints say CA and its key usage allows signing
/// certificates and CRLs.
fn is_ca(cert: &Certificate) -> Result<()> {
    use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
    let bc = cert.tbs_certificate.get::<BasicConstraints>()?;
    if !bc.is_some_and(|(_, b)| b.ca) {
        bail!("not a CA certificate (basicConstraints cA is not true)");
    }
    let ku = cert.tbs_certificate.get::<KeyUsage>()?;
    if !ku.is_some_and(|(_, k)| {
        k.0.contains(KeyUsages::KeyCertSign) && k.0.contains(KeyUsages::CRLSign)
    }) {
        bail!("its key usage does not allow signing certificates and CRLs");
    }
    Ok(())
}

/// The offline root: a self-signed CA certificate.
fn check_root(der: &[u8]) -> Result<()> {
    let root = Certificate::from_der(der)?;
    let tbs = &root.tbs_certificate;
    if tbs.issuer != tbs.subject {
        bail!("not self-issued (its issuer is not its subject)");
    }
    x509::verify_signature(
        &tbs.subject_public_key_info,
        &root.signature_algorithm,
        &tbs.to_der()?,
        root.signature.raw_bytes(),
    )
    .context("its self-signature")?;
    is_ca(&root)
}

/// The issuing-CA certificate from the root ceremony, checked against the root, the key in
/// the token and the name requested.
fn check_issuing(
    der: &[u8],
    root_der: &[u8],
    token_spki: &[u8],
    requested: &Name,
    now: Duration,
) -> Result<()> {
    let cert = Certificate::from_der(der)?;
    let root = Certificate::from_der(root_der)?;
    let tbs = &cert.tbs_certificate;
    if tbs.subject_public_key_info.to_der()? != token_spki {
        bail!("it is not for this deployment's issuing-CA key (see issuing-ca.csr)");
    }
    if tbs.subject != *requested {
        bail!(
            "its subject {} is not the requested {requested}",
            tbs.subject
        );
    }
    if tbs.issuer != root.tbs_certificate.subject {
        bail!(
            "it was not issued by the offline root {}",
            root.tbs_certificate.subject
        );
    }
    x509::verify_signature(
        &root.tbs_certificate.subject_public_key_info,
        &cert.signature_algorithm,
        &tbs.to_der()?,
        cert.signature.raw_bytes(),
    )
    .context("the root's signature on it")?;
    is_ca(&cert)?;
    let (nb, na) = (
        tbs.validity.not_before.to_unix_duration(),
        tbs.validity.not_after.to_unix_duration(),
    );
    if nb > now + Duration::from_secs(300) || na <= now {
        bail!("it is not valid now");
    }
    Ok(())
}

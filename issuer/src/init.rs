//! `tessera-issuer init`: a new embedded deployment in a data directory.
//!
//! Creates the CA token (SoftHSM2, in the directory), generates the root, issuing-CA and
//! OCSP-responder keys inside it, issues their certificates, creates the database with the
//! authorities, a bootstrap administrator token and the audit records of all this. On any
//! failure it removes what it created: a half-made deployment is never left behind.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use diesel::prelude::*;
use sha2::Digest;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::db::schema::{api_tokens, authorities};
use crate::hsm::{self, Hsm, KeyAlg};
use crate::x509::{self, CaCertificate, CaRole};
use crate::{audit, db};

/// The token label of the CA token.
pub const TOKEN_LABEL: &str = "tessera-ca";
/// Key labels in the token.
pub const ROOT_KEY: &str = "root-ca";
pub const ISSUING_KEY: &str = "issuing-ca-1";
pub const OCSP_KEY: &str = "ocsp-responder-1";

/// What `init` needs to know.
#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: PathBuf,
    pub key_alg: KeyAlg,
    pub organization: String,
    /// A PKCS#11 module other than SoftHSM2 (its token must be free for initialisation).
    pub pkcs11_module: Option<PathBuf>,
    /// A PostgreSQL URL; without one the database is SQLite in the data directory.
    pub database_url: Option<String>,
    /// Host names and addresses of the issuer's HTTPS certificate.
    pub tls_hosts: Vec<String>,
    /// Custody of the activation secret (default 1-of-1).
    pub custody: crate::custody::Scheme,
}

/// What `init` made.
#[derive(Debug, Clone)]
pub struct Report {
    pub root_fingerprint: String,
    pub issuing_fingerprint: String,
    pub ocsp_fingerprint: String,
    pub bootstrap_token_path: PathBuf,
}

/// Files of a deployment, relative to its data directory.
pub mod files {
    pub const DATABASE: &str = "tessera.db";
    pub const ACTIVATION_SECRET: &str = "ca-activation.secret";
    pub const SO_PIN: &str = "token-so.pin";
    pub const BOOTSTRAP_TOKEN: &str = "bootstrap-admin.token";
    pub const ROOT_PEM: &str = "root-ca.pem";
    pub const ISSUING_PEM: &str = "issuing-ca.pem";
    pub const OCSP_PEM: &str = "ocsp-responder.pem";
    pub const POLICY_OID: &str = "certificate-policy.oid";
    /// The issuer's HTTPS key (0600) and certificate chain.
    pub const TLS_KEY: &str = "tls-key.pem";
    pub const TLS_CERT: &str = "tls-cert.pem";
    /// The custody scheme (M-of-N) when the activation secret is shared.
    pub const CUSTODY: &str = "custody.json";
    /// The PostgreSQL URL of a deployment that uses PostgreSQL (mode 0600: it may hold a
    /// password).
    pub const DATABASE_URL: &str = "database.url";
}

/// Runs `init`. Refuses a directory that already holds anything.
pub fn run(opts: &Options, clock: &dyn Clock) -> Result<Report> {
    let dir = &opts.data_dir;
    let existed = dir.exists();
    if existed {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        if entries.next().is_some() {
            if dir.join(files::DATABASE).exists() {
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
    match create(opts, clock) {
        Ok(report) => Ok(report),
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

fn create(opts: &Options, clock: &dyn Clock) -> Result<Report> {
    let dir = &opts.data_dir;
    // The database first: a PostgreSQL database that already holds a deployment is
    // refused before anything else is made.
    let mut conn = db::open(&dir.join(files::DATABASE), opts.database_url.as_deref())?;
    let existing: i64 = authorities::table.count().get_result(&mut conn)?;
    if existing > 0 {
        bail!("the database already holds a Tessera deployment; refusing to overwrite it");
    }
    if let Some(url) = &opts.database_url {
        write_private(&dir.join(files::DATABASE_URL), url.as_bytes())?;
    }
    let (module, conf) = match &opts.pkcs11_module {
        Some(m) => (m.clone(), None),
        None => (
            PathBuf::from(hsm::SOFTHSM2_MODULE),
            Some(hsm::softhsm_config(dir)?),
        ),
    };
    let p11 = hsm::load(&module, conf.as_deref())?;

    // The token's activation secret. The embedded default keeps it as the single share of
    // a 1-of-1 custodian scheme in the data directory (LoA3 K4.3 asks for M-of-N control
    // in production, through the key ceremony).
    let so_pin = Zeroizing::new(random_secret());
    let user_pin = Zeroizing::new(random_secret());
    write_private(&dir.join(files::SO_PIN), so_pin.as_bytes())?;
    if opts.custody.threshold == 1 && opts.custody.shares == 1 {
        write_private(&dir.join(files::ACTIVATION_SECRET), user_pin.as_bytes())?;
    } else {
        // One file per custodian, to be handed over and removed from the directory.
        for (i, share) in crate::custody::split(user_pin.as_bytes(), opts.custody)
            .iter()
            .enumerate()
        {
            let n = u8::try_from(i + 1).unwrap_or(u8::MAX);
            write_private(&crate::custody::share_path(dir, n), share.as_bytes())?;
        }
        std::fs::write(
            dir.join(files::CUSTODY),
            serde_json::to_string(&opts.custody)?,
        )?;
    }
    hsm::init_token(&p11, TOKEN_LABEL, &so_pin, &user_pin)?;
    let token = Hsm::open(&p11, TOKEN_LABEL, &user_pin)?;

    let alg = opts.key_alg;
    let root_spki = token.generate(ROOT_KEY, alg)?;
    let issuing_spki = token.generate(ISSUING_KEY, alg)?;
    let ocsp_spki = token.generate(OCSP_KEY, alg)?;

    let org = opts.organization.trim();
    if org.is_empty() || org.contains([',', '=', '+', '\\', '"']) {
        bail!("--organization {org:?}: give a plain name without , = + \\ or \"");
    }
    let name = |cn: &str| Name::from_str(&format!("CN={org} {cn},O={org}"));
    let root_name = name("Root CA")?;
    let issuing_name = name("Issuing CA 1")?;
    let ocsp_name = name("OCSP Responder 1")?;
    let now = clock.now();
    let years = |y: u64| now + Duration::from_secs(y * 365 * 86_400);
    // An hour back, so that a relying party whose clock lags a little accepts them.
    let start = now.saturating_sub(Duration::from_secs(3600));

    let sig_alg = alg.signature_algorithm();
    let root = x509::build(
        CaCertificate {
            role: CaRole::Root,
            subject: root_name.clone(),
            issuer: root_name.clone(),
            subject_spki: &root_spki,
            issuer_spki: &root_spki,
            not_before: start,
            not_after: years(20),
            signature_algorithm: sig_alg.clone(),
            san: Vec::new(),
        },
        |tbs| token.sign(ROOT_KEY, alg, tbs),
    )?;
    let issuing = x509::build(
        CaCertificate {
            role: CaRole::Issuing,
            subject: issuing_name.clone(),
            issuer: root_name,
            subject_spki: &issuing_spki,
            issuer_spki: &root_spki,
            not_before: start,
            not_after: years(10),
            signature_algorithm: sig_alg.clone(),
            san: Vec::new(),
        },
        |tbs| token.sign(ROOT_KEY, alg, tbs),
    )?;
    let ocsp = x509::build(
        CaCertificate {
            role: CaRole::OcspResponder,
            subject: ocsp_name,
            issuer: issuing_name.clone(),
            subject_spki: &ocsp_spki,
            issuer_spki: &issuing_spki,
            not_before: start,
            not_after: years(1),
            signature_algorithm: sig_alg.clone(),
            san: Vec::new(),
        },
        |tbs| token.sign(ISSUING_KEY, alg, tbs),
    )?;

    // The issuer's own HTTPS certificate. Its key is an ordinary server key in a 0600 file
    // (it protects the API's transport, it signs nothing the CA vouches for).
    let tls_key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let tls_spki = pkcs8::EncodePublicKey::to_public_key_der(&tls_key.public_key())?.into_vec();
    let mut san = Vec::new();
    for host in &opts.tls_hosts {
        san.push(match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(v4)) => {
                GeneralName::IpAddress(der::asn1::OctetString::new(v4.octets())?)
            }
            Ok(std::net::IpAddr::V6(v6)) => {
                GeneralName::IpAddress(der::asn1::OctetString::new(v6.octets())?)
            }
            Err(_) => {
                if host.is_empty()
                    || !host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                {
                    bail!("--tls-host {host:?} is neither a host name nor an IP address");
                }
                GeneralName::DnsName(der::asn1::Ia5String::new(host)?)
            }
        });
    }
    let tls_cert = x509::build(
        CaCertificate {
            role: CaRole::TlsServer,
            subject: Name::from_str(&format!(
                "CN={},O={org}",
                opts.tls_hosts
                    .first()
                    .map(String::as_str)
                    .unwrap_or("localhost")
            ))?,
            issuer: issuing_name,
            subject_spki: &tls_spki,
            issuer_spki: &issuing_spki,
            not_before: start,
            not_after: years(1),
            signature_algorithm: sig_alg,
            san,
        },
        |tbs| token.sign(ISSUING_KEY, alg, tbs),
    )?;

    let bootstrap = Zeroizing::new(format!("tsr_{}", random_secret()));
    let report = Report {
        root_fingerprint: x509::fingerprint(&root),
        issuing_fingerprint: x509::fingerprint(&issuing),
        ocsp_fingerprint: x509::fingerprint(&ocsp),
        bootstrap_token_path: dir.join(files::BOOTSTRAP_TOKEN),
    };

    let at = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let alg_name = format!("{alg:?}");
    crate::db::write_transaction(&mut conn, |conn| -> Result<()> {
        for (role, label, cert) in [
            ("root", ROOT_KEY, &root),
            ("issuing", ISSUING_KEY, &issuing),
            ("ocsp", OCSP_KEY, &ocsp),
        ] {
            diesel::insert_into(authorities::table)
                .values((
                    authorities::role.eq(role),
                    authorities::key_label.eq(label),
                    authorities::key_alg.eq(&alg_name),
                    authorities::certificate.eq(cert),
                    authorities::created_at.eq(at),
                ))
                .execute(conn)?;
        }
        audit::append(
            conn,
            clock,
            "init",
            "ca.created",
            &serde_json::json!({
                "token": TOKEN_LABEL,
                "key_alg": alg_name,
                "root_sha256": report.root_fingerprint,
                "issuing_sha256": report.issuing_fingerprint,
                "ocsp_sha256": report.ocsp_fingerprint,
            }),
        )?;
        diesel::insert_into(api_tokens::table)
            .values((
                api_tokens::token_hash.eq(sha2::Sha256::digest(bootstrap.as_bytes()).to_vec()),
                api_tokens::name.eq("bootstrap-admin"),
                api_tokens::role.eq("admin"),
                api_tokens::created_at.eq(at),
            ))
            .execute(conn)?;
        audit::append(
            conn,
            clock,
            "init",
            "api_token.created",
            &serde_json::json!({ "name": "bootstrap-admin", "role": "admin" }),
        )?;
        Ok(())
    })?;

    for (file, der) in [
        (files::ROOT_PEM, &root),
        (files::ISSUING_PEM, &issuing),
        (files::OCSP_PEM, &ocsp),
    ] {
        std::fs::write(dir.join(file), x509::to_pem(der)?)
            .with_context(|| format!("writing {file}"))?;
    }
    write_private(&report.bootstrap_token_path, bootstrap.as_bytes())?;
    let key_pem = pkcs8::EncodePrivateKey::to_pkcs8_pem(&tls_key, der::pem::LineEnding::LF)?;
    write_private(&dir.join(files::TLS_KEY), key_pem.as_bytes())?;
    std::fs::write(
        dir.join(files::TLS_CERT),
        format!("{}{}", x509::to_pem(&tls_cert)?, x509::to_pem(&issuing)?),
    )
    .context("writing the TLS certificate")?;
    // The organisation's registered certificate-policy OID belongs here. Until it is
    // configured, a trial placeholder under the UUID arc (ITU-T X.667, 2.25) with a random
    // 28-bit value: const-oid holds 32-bit arcs, and pkilint rejects arcs of more than four
    // base-128 bytes. Unlikely to clash in a trial; never for production (docs say so).
    let trial: u32 = rand::Rng::gen_range(&mut rand::rngs::OsRng, 1..1 << 28);
    std::fs::write(dir.join(files::POLICY_OID), format!("2.25.{trial}\n"))
        .context("writing the certificate policy OID")?;
    Ok(report)
}

/// 32 hex digits from the OS's CSPRNG.
fn random_secret() -> String {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    hex::encode(b)
}

/// Writes a secret file readable only by its owner (mode 0600, created new).
fn write_private(path: &Path, content: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(content)?;
    f.sync_all()?;
    Ok(())
}

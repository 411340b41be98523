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
use der::{Decode, Encode};
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
    /// Between `init --external-root` and `install-ca-cert`: the choices made, the offline
    /// root's certificate, and the issuing CA's certificate request for the root ceremony.
    pub const PENDING: &str = "pending-ca.json";
    pub const PENDING_ROOT: &str = "pending-root-ca.pem";
    pub const ISSUING_CSR: &str = "issuing-ca.csr";
}

/// Runs `init`. Refuses a directory that already holds anything.
pub fn run(opts: &Options, clock: &dyn Clock) -> Result<Report> {
    in_new_directory(opts, || create(opts, clock))
}

/// Runs `make` in the new (or empty) data directory, and leaves nothing behind if it fails.
fn in_new_directory<T>(opts: &Options, make: impl FnOnce() -> Result<T>) -> Result<T> {
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
    match make() {
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

/// The database, the token (initialised, logged in) and its module, for a new deployment.
struct Fresh {
    conn: db::Conn,
    p11: cryptoki::context::Pkcs11,
    token: Hsm,
}

/// Creates the database and the CA token with its activation secret (the embedded default
/// keeps it as the single share of a 1-of-1 custodian scheme in the data directory; LoA3
/// K4.3 asks for M-of-N control in production).
fn prepare(opts: &Options) -> Result<Fresh> {
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
    Ok(Fresh { conn, p11, token })
}

/// The organisation's name, checked to be plain text.
fn organization(org: &str) -> Result<&str> {
    let org = org.trim();
    if org.is_empty() || org.contains([',', '=', '+', '\\', '"']) {
        bail!("--organization {org:?}: give a plain name without , = + \\ or \"");
    }
    Ok(org)
}

/// The issuing CA's subject name.
fn issuing_name(org: &str) -> Result<Name> {
    Ok(Name::from_str(&format!("CN={org} Issuing CA 1,O={org}"))?)
}

/// An hour back, so that a relying party whose clock lags a little accepts certificates.
fn backdated(now: Duration) -> Duration {
    now.saturating_sub(Duration::from_secs(3600))
}

fn years(now: Duration, y: u64) -> Duration {
    now + Duration::from_secs(y * 365 * 86_400)
}

fn create(opts: &Options, clock: &dyn Clock) -> Result<Report> {
    let Fresh {
        mut conn,
        p11: _p11,
        token,
    } = prepare(opts)?;
    let alg = opts.key_alg;
    let root_spki = token.generate(ROOT_KEY, alg)?;
    let issuing_spki = token.generate(ISSUING_KEY, alg)?;
    token.generate(OCSP_KEY, alg)?;

    let org = organization(&opts.organization)?;
    let root_name = Name::from_str(&format!("CN={org} Root CA,O={org}"))?;
    let now = clock.now();
    let start = backdated(now);
    let sig_alg = alg.signature_algorithm();
    let root = x509::build(
        CaCertificate {
            role: CaRole::Root,
            subject: root_name.clone(),
            issuer: root_name.clone(),
            subject_spki: &root_spki,
            issuer_spki: &root_spki,
            not_before: start,
            not_after: years(now, 20),
            signature_algorithm: sig_alg.clone(),
            san: Vec::new(),
        },
        |tbs| token.sign(ROOT_KEY, alg, tbs),
    )?;
    let issuing = x509::build(
        CaCertificate {
            role: CaRole::Issuing,
            subject: issuing_name(org)?,
            issuer: root_name,
            subject_spki: &issuing_spki,
            issuer_spki: &root_spki,
            not_before: start,
            not_after: years(now, 10),
            signature_algorithm: sig_alg,
            san: Vec::new(),
        },
        |tbs| token.sign(ROOT_KEY, alg, tbs),
    )?;
    complete(
        &mut conn,
        &token,
        clock,
        &Completion {
            dir: &opts.data_dir,
            alg,
            org,
            tls_hosts: &opts.tls_hosts,
            root: &root,
            root_key_label: ROOT_KEY,
            issuing: &issuing,
        },
    )
}

/// What the deployment's last step needs: the CA certificates and the choices `init` made.
struct Completion<'a> {
    dir: &'a Path,
    alg: KeyAlg,
    org: &'a str,
    tls_hosts: &'a [String],
    root: &'a [u8],
    /// The root key's label in the token, or a note that the root is offline.
    root_key_label: &'a str,
    issuing: &'a [u8],
}

/// With the root and issuing-CA certificates in hand: issues the OCSP responder's and the
/// HTTPS certificates with the issuing key, records the authorities, the bootstrap token
/// and their audit records in one transaction, and writes the deployment's files.
fn complete(
    conn: &mut db::Conn,
    token: &Hsm,
    clock: &dyn Clock,
    c: &Completion<'_>,
) -> Result<Report> {
    let (dir, alg, org) = (c.dir, c.alg, c.org);
    let issuing_cert = x509_cert::Certificate::from_der(c.issuing)?;
    let issuing_name = issuing_cert.tbs_certificate.subject.clone();
    let issuing_spki = issuing_cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()?;
    let ocsp_spki = token.public_key(OCSP_KEY, alg)?;
    let now = clock.now();
    let start = backdated(now);
    let sig_alg = alg.signature_algorithm();
    let ocsp = x509::build(
        CaCertificate {
            role: CaRole::OcspResponder,
            subject: Name::from_str(&format!("CN={org} OCSP Responder 1,O={org}"))?,
            issuer: issuing_name.clone(),
            subject_spki: &ocsp_spki,
            issuer_spki: &issuing_spki,
            not_before: start,
            not_after: years(now, 1),
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
    for host in c.tls_hosts {
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
                c.tls_hosts
                    .first()
                    .map(String::as_str)
                    .unwrap_or("localhost")
            ))?,
            issuer: issuing_name,
            subject_spki: &tls_spki,
            issuer_spki: &issuing_spki,
            not_before: start,
            not_after: years(now, 1),
            signature_algorithm: sig_alg,
            san,
        },
        |tbs| token.sign(ISSUING_KEY, alg, tbs),
    )?;

    let bootstrap = Zeroizing::new(format!("tsr_{}", random_secret()));
    let report = Report {
        root_fingerprint: x509::fingerprint(c.root),
        issuing_fingerprint: x509::fingerprint(c.issuing),
        ocsp_fingerprint: x509::fingerprint(&ocsp),
        bootstrap_token_path: dir.join(files::BOOTSTRAP_TOKEN),
    };

    // The files first, then the transaction that makes the deployment real; if anything
    // fails, the files made here go again.
    let mut made = Vec::new();
    let written = write_files(dir, c, &ocsp, &tls_key, &tls_cert, &bootstrap, &mut made)
        .and_then(|()| record(conn, clock, c, &ocsp, &report, &bootstrap));
    if let Err(e) = written {
        for path in made {
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    Ok(report)
}

fn write_files(
    dir: &Path,
    c: &Completion<'_>,
    ocsp: &[u8],
    tls_key: &p256::SecretKey,
    tls_cert: &[u8],
    bootstrap: &str,
    made: &mut Vec<PathBuf>,
) -> Result<()> {
    let mut put = |file: &str, content: &[u8], private: bool| -> Result<()> {
        let path = dir.join(file);
        if private {
            write_private(&path, content)?;
        } else {
            std::fs::write(&path, content).with_context(|| format!("writing {file}"))?;
        }
        made.push(path);
        Ok(())
    };
    put(files::ROOT_PEM, x509::to_pem(c.root)?.as_bytes(), false)?;
    put(
        files::ISSUING_PEM,
        x509::to_pem(c.issuing)?.as_bytes(),
        false,
    )?;
    put(files::OCSP_PEM, x509::to_pem(ocsp)?.as_bytes(), false)?;
    put(files::BOOTSTRAP_TOKEN, bootstrap.as_bytes(), true)?;
    let key_pem = pkcs8::EncodePrivateKey::to_pkcs8_pem(tls_key, der::pem::LineEnding::LF)?;
    put(files::TLS_KEY, key_pem.as_bytes(), true)?;
    let chain = format!("{}{}", x509::to_pem(tls_cert)?, x509::to_pem(c.issuing)?);
    put(files::TLS_CERT, chain.as_bytes(), false)?;
    // The organisation's registered certificate-policy OID belongs here. Until it is
    // configured, a trial placeholder under the UUID arc (ITU-T X.667, 2.25) with a random
    // 28-bit value: const-oid holds 32-bit arcs, and pkilint rejects arcs of more than four
    // base-128 bytes. Unlikely to clash in a trial; never for production (docs say so).
    let trial: u32 = rand::Rng::gen_range(&mut rand::rngs::OsRng, 1..1 << 28);
    put(
        files::POLICY_OID,
        format!("2.25.{trial}\n").as_bytes(),
        false,
    )?;
    Ok(())
}

/// The authorities, the bootstrap token and their audit records, in one transaction.
fn record(
    conn: &mut db::Conn,
    clock: &dyn Clock,
    c: &Completion<'_>,
    ocsp: &[u8],
    report: &Report,
    bootstrap: &str,
) -> Result<()> {
    let at = i64::try_from(clock.now().as_secs()).unwrap_or(i64::MAX);
    let alg_name = format!("{:?}", c.alg);
    crate::db::write_transaction(conn, |conn| -> Result<()> {
        for (role, label, cert) in [
            ("root", c.root_key_label, c.root),
            ("issuing", ISSUING_KEY, c.issuing),
            ("ocsp", OCSP_KEY, ocsp),
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
                "root_key": c.root_key_label,
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
    })
}

/// What the first half of an offline-root `init` made.
#[derive(Debug, Clone)]
pub struct Pending {
    pub csr_path: PathBuf,
    pub csr_sha256: String,
    pub root_fingerprint: String,
}

/// The choices of `init --external-root`, kept for `install-ca-cert`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PendingChoices {
    key_alg: KeyAlg,
    organization: String,
    tls_hosts: Vec<String>,
    pkcs11_module: Option<PathBuf>,
}

/// The online half of the production path, first step: a deployment whose root stays
/// offline. Checks the root certificate (made by `ceremony`), creates the database and
/// token, generates the issuing-CA and OCSP keys in the token and writes the issuing CA's
/// certificate request to DIR/issuing-ca.csr, for the root ceremony to sign. The
/// deployment is complete after [`install_issuing_certificate`].
pub fn run_external(opts: &Options, root_file: &Path, clock: &dyn Clock) -> Result<Pending> {
    let root = read_certificate(root_file)?;
    check_root(&root).with_context(|| format!("{} as the root", root_file.display()))?;
    in_new_directory(opts, || create_pending(opts, &root, clock))
}

fn create_pending(opts: &Options, root: &[u8], clock: &dyn Clock) -> Result<Pending> {
    let dir = &opts.data_dir;
    let org = organization(&opts.organization)?;
    let Fresh {
        mut conn,
        p11: _p11,
        token,
    } = prepare(opts)?;
    let alg = opts.key_alg;
    let issuing_spki = token.generate(ISSUING_KEY, alg)?;
    token.generate(OCSP_KEY, alg)?;
    let info = x509_cert::request::CertReqInfo {
        version: x509_cert::request::Version::V1,
        subject: issuing_name(org)?,
        public_key: spki::SubjectPublicKeyInfoOwned::from_der(&issuing_spki)?,
        attributes: Default::default(),
    };
    let signature = token.sign(ISSUING_KEY, alg, &info.to_der()?)?;
    let csr = x509_cert::request::CertReq {
        info,
        algorithm: alg.signature_algorithm(),
        signature: der::asn1::BitString::from_bytes(&signature)?,
    }
    .to_der()?;
    let csr_pem = der::pem::encode_string("CERTIFICATE REQUEST", der::pem::LineEnding::LF, &csr)
        .map_err(|e| anyhow::anyhow!("PEM: {e}"))?;
    let pending = Pending {
        csr_path: dir.join(files::ISSUING_CSR),
        csr_sha256: hex::encode(sha2::Sha256::digest(&csr)),
        root_fingerprint: x509::fingerprint(root),
    };
    std::fs::write(&pending.csr_path, csr_pem).context("writing the certificate request")?;
    std::fs::write(dir.join(files::PENDING_ROOT), x509::to_pem(root)?)
        .context("writing the root certificate")?;
    let choices = PendingChoices {
        key_alg: alg,
        organization: org.to_owned(),
        tls_hosts: opts.tls_hosts.clone(),
        pkcs11_module: opts.pkcs11_module.clone(),
    };
    std::fs::write(
        dir.join(files::PENDING),
        serde_json::to_vec_pretty(&choices)?,
    )
    .context("writing the pending choices")?;
    crate::db::write_transaction(&mut conn, |c| {
        audit::append(
            c,
            clock,
            "init",
            "ca.requested",
            &serde_json::json!({
                "token": TOKEN_LABEL,
                "key_alg": format!("{alg:?}"),
                "offline_root_sha256": pending.root_fingerprint,
                "issuing_csr_sha256": pending.csr_sha256,
            }),
        )
    })?;
    Ok(pending)
}

/// The online half of the production path, second step: installs the issuing-CA
/// certificate the root ceremony signed for DIR/issuing-ca.csr, after checking that it
/// is for this deployment's key, was issued by the offline root, and is a CA certificate
/// valid now. Then completes the deployment as `init` does. A refused certificate changes
/// nothing.
pub fn install_issuing_certificate(
    dir: &Path,
    certificate: &Path,
    shares: &[PathBuf],
    clock: &dyn Clock,
) -> Result<Report> {
    let pending_file = dir.join(files::PENDING);
    let raw = std::fs::read(&pending_file).map_err(|_| {
        anyhow::anyhow!(
            "{} awaits no issuing-CA certificate (only `init --external-root` makes such a \
             deployment)",
            dir.display()
        )
    })?;
    let choices: PendingChoices = serde_json::from_slice(&raw)
        .with_context(|| format!("reading {}", pending_file.display()))?;
    let root = read_certificate(&dir.join(files::PENDING_ROOT))?;
    let issuing = read_certificate(certificate)?;
    let mut conn = if dir.join(files::DATABASE_URL).exists() {
        let url = std::fs::read_to_string(dir.join(files::DATABASE_URL))?;
        db::open_postgres(url.trim())?
    } else {
        db::open_sqlite(&dir.join(files::DATABASE))?
    };
    let (module, conf) = match &choices.pkcs11_module {
        Some(m) => (m.clone(), None),
        None => (
            PathBuf::from(hsm::SOFTHSM2_MODULE),
            Some(dir.join("softhsm2.conf")),
        ),
    };
    let p11 = hsm::load(&module, conf.as_deref())?;
    let secret = crate::custody::activation_secret(dir, shares)?;
    let token = Hsm::open(&p11, TOKEN_LABEL, &secret)?;
    let org = organization(&choices.organization)?;
    check_issuing(
        &issuing,
        &root,
        &token.public_key(ISSUING_KEY, choices.key_alg)?,
        &issuing_name(org)?,
        clock.now(),
    )
    .with_context(|| format!("refusing {}", certificate.display()))?;
    let report = complete(
        &mut conn,
        &token,
        clock,
        &Completion {
            dir,
            alg: choices.key_alg,
            org,
            tls_hosts: &choices.tls_hosts,
            root: &root,
            root_key_label: "offline",
            issuing: &issuing,
        },
    )?;
    for done in [files::PENDING, files::PENDING_ROOT] {
        std::fs::remove_file(dir.join(done)).with_context(|| format!("removing {done}"))?;
    }
    Ok(report)
}

/// Refuses a deployment that still awaits its issuing-CA certificate, saying what to do.
pub fn ensure_complete(data_dir: &Path) -> Result<()> {
    if data_dir.join(files::PENDING).exists() {
        bail!(
            "{} awaits its issuing-CA certificate from the root ceremony (for {}); install it \
             with `tessera-issuer install-ca-cert --data-dir {} --certificate FILE`",
            data_dir.display(),
            data_dir.join(files::ISSUING_CSR).display(),
            data_dir.display()
        );
    }
    Ok(())
}

/// A certificate from a PEM or DER file.
fn read_certificate(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let der = match der::pem::decode_vec(&raw) {
        Ok(("CERTIFICATE", der)) => der,
        Ok((label, _)) => bail!("{}: a PEM {label}, not a CERTIFICATE", path.display()),
        Err(_) => raw,
    };
    x509_cert::Certificate::from_der(&der)
        .with_context(|| format!("{}: not an X.509 certificate", path.display()))?;
    Ok(der)
}

/// Whether the certificate's basicConstraints say CA and its key usage allows signing
/// certificates and CRLs.
fn is_ca(cert: &x509_cert::Certificate) -> Result<()> {
    use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
    let exts = cert
        .tbs_certificate
        .extensions
        .as_deref()
        .unwrap_or_default();
    let get = |oid| exts.iter().find(|e| e.extn_id == oid);
    let bc = get(const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS)
        .map(|e| BasicConstraints::from_der(e.extn_value.as_bytes()))
        .transpose()?;
    if !bc.is_some_and(|b| b.ca) {
        bail!("not a CA certificate (basicConstraints cA is not true)");
    }
    let ku = get(const_oid::db::rfc5280::ID_CE_KEY_USAGE)
        .map(|e| KeyUsage::from_der(e.extn_value.as_bytes()))
        .transpose()?;
    if !ku.is_some_and(|k| k.0.contains(KeyUsages::KeyCertSign) && k.0.contains(KeyUsages::CRLSign))
    {
        bail!("its key usage does not allow signing certificates and CRLs");
    }
    Ok(())
}

/// The offline root: a self-signed CA certificate.
fn check_root(der: &[u8]) -> Result<()> {
    let root = x509_cert::Certificate::from_der(der)?;
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
    let cert = x509_cert::Certificate::from_der(der)?;
    let root = x509_cert::Certificate::from_der(root_der)?;
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

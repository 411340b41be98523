//! `tessera-issuer`: the issuer's command line. It wires the issuer's crates together
//! (docs/ARCHITECTURE.md): setup commands through `tessera-issuer-setup`, the running
//! issuer through the store, CA, status, RA and web crates.
#![forbid(unsafe_code)]

mod audit;
mod deployment;
mod renew;
mod serve;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tessera_issuer_setup::init::{self, DatabaseChoice, Options, TokenChoice};
use tessera_issuer_types::config::{files, Custody, KeyAlg};
use tessera_issuer_types::SystemClock;

/// The Tessera issuer: certificate authorities for LoA3 service IDs.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a deployment in a new data directory.
    ///
    /// Makes a SoftHSM2 token in the directory (or takes over an existing token: an HSM's,
    /// or tpm2-pkcs11's, with --token-module, --token-label and --token-pin-file; its user
    /// PIN is changed, and no security-officer PIN is ever kept), generates the CA keys
    /// inside it, issues the CA's certificates, creates the database (SQLite in the
    /// directory, or PostgreSQL with --database-url), writes the configuration
    /// DIR/issuer.json and a bootstrap administrator API token (DIR/bootstrap-admin.token,
    /// mode 0600). Prints the CA fingerprints.
    ///
    /// With --external-root the root stays offline (the production path): its key is not
    /// made here, and DIR/issuing-ca.csr goes to the root ceremony (`ceremony`, type
    /// intermediate); `install-ca-cert` then completes the deployment.
    Init(InitArgs),
    /// Complete an `init --external-root` deployment with the issuing-CA certificate the
    /// root ceremony signed for DIR/issuing-ca.csr.
    ///
    /// Checks that the certificate is for the issuing-CA key in this deployment's token, was
    /// signed by the offline root, is a CA certificate and is valid now; then makes the
    /// issuer's own certificates and the bootstrap token, as `init` does. A refused
    /// certificate changes nothing.
    InstallCaCert {
        /// The data directory made by `init --external-root`.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The issuing-CA certificate (PEM or DER).
        #[arg(long, value_name = "FILE")]
        certificate: PathBuf,
        /// A custodian's share file (repeat for M of them) when the activation secret is
        /// shared M-of-N.
        #[arg(long = "share", value_name = "FILE")]
        shares: Vec<PathBuf>,
    },
    /// Serve the API, OCSP, the CRLs and the CA certificate over HTTP(S).
    ///
    /// Certificates name URLs under the public URL: the CRL at /crl/issuing-ca-1.crl, the
    /// CA certificate at /ca/issuing-ca-1.crt, OCSP at /ocsp. A CRL follows every status
    /// change within --crl-delay, whichever server on the database made it.
    Serve(serve::ServeArgs),
    /// Run a key ceremony described by a reviewed configuration file (JSON).
    ///
    /// `"type": "root"` generates the root key in an offline token and self-signs the root
    /// certificate; `"type": "intermediate"` signs an issuing-CA certificate with the root
    /// key, for the one request whose SHA-256 and subject the file names. Prints a
    /// transcript starting with the SHA-256 of the configuration file. Outputs are never
    /// overwritten.
    Ceremony {
        /// The ceremony configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Publish a CRL now (as `serve` does after every status change and on schedule) and
    /// write it, DER-encoded, to FILE. Prints the CRL number, entries, size and time taken.
    Crl {
        /// The data directory made by `init`.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Where to write the CRL (replaced atomically if it exists).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// A custodian's share file (repeat for M of them).
        #[arg(long = "share", value_name = "FILE")]
        shares: Vec<PathBuf>,
    },
    /// Renew the issuer's own certificates (OCSP responder, audit signer, HTTPS) and an
    /// embedded root's CRL when a third of their lifetime is left (`serve` does this every
    /// hour), or now with --force.
    Renew {
        /// The data directory made by `init`.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Renew everything now, due or not.
        #[arg(long)]
        force: bool,
        /// A custodian's share file (repeat for M of them).
        #[arg(long = "share", value_name = "FILE")]
        shares: Vec<PathBuf>,
    },
    /// Audit trail commands.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// The data directory; must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The CA key algorithm.
    #[arg(long, default_value_t = KeyAlg::P256, value_parser = parse_alg)]
    key_alg: KeyAlg,
    /// The organisation named in the CA certificates.
    #[arg(long, default_value = "Tessera")]
    organization: String,
    /// The PKCS#11 module of an existing token to take over (an HSM's library, or
    /// libtpm2_pkcs11.so) instead of a new SoftHSM2 token in DIR.
    #[arg(long, value_name = "PATH", requires_all = ["token_label", "token_pin_file", "token_so_pin_file"])]
    token_module: Option<PathBuf>,
    /// The label of the token to take over.
    #[arg(long, value_name = "LABEL", requires = "token_module")]
    token_label: Option<String>,
    /// A file holding the token's current user PIN; init changes the PIN to the new
    /// activation secret (under --custodians), so this PIN no longer opens the token.
    #[arg(long, value_name = "FILE", requires = "token_module")]
    token_pin_file: Option<PathBuf>,
    /// A file holding the token's current security-officer PIN; init replaces it with a
    /// random PIN it forgets (whoever set the token up could otherwise reset the user PIN).
    #[arg(long, value_name = "FILE", requires = "token_module")]
    token_so_pin_file: Option<PathBuf>,
    /// Environment the module needs, NAME=VALUE (repeatable; kept in the configuration),
    /// e.g. TPM2_PKCS11_STORE=/var/lib/tpm2-pkcs11.
    #[arg(long = "token-env", value_name = "NAME=VALUE", value_parser = parse_env, requires = "token_module")]
    token_env: Vec<(String, String)>,
    /// Keep the database in PostgreSQL (postgres://user@host/db, without a password)
    /// instead of SQLite in DIR.
    #[arg(long, value_name = "URL", env = "TESSERA_DATABASE_URL")]
    database_url: Option<String>,
    /// A file holding the PostgreSQL password (mode 0600).
    #[arg(long, value_name = "FILE", requires = "database_url")]
    database_password_file: Option<PathBuf>,
    /// Custody of the CA activation secret: M-of-N Shamir shares written as
    /// DIR/custodian-<i>.share for the custodians to take away (1-of-1: the secret itself
    /// stays in DIR).
    #[arg(long, value_name = "M-of-N", default_value = "1-of-1")]
    custodians: Custody,
    /// Where to write the custodians' share files (e.g. removable media; default DIR,
    /// from which they must be removed before the deployment runs).
    #[arg(long, value_name = "DIR")]
    share_dir: Option<PathBuf>,
    /// Host names and IP addresses for the issuer's HTTPS certificate (repeatable).
    #[arg(long = "tls-host", value_name = "NAME", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
    tls_hosts: Vec<String>,
    /// The base URL relying parties reach the issuer at (named in certificates).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    public_url: String,
    /// The organisation's certificate-policy OID (default: a random trial OID under
    /// 2.25, never for production).
    #[arg(long, value_name = "OID")]
    policy_oid: Option<String>,
    /// A domain UPNs may be in (repeatable); without one no UPN is accepted.
    #[arg(long = "upn-domain", value_name = "DOMAIN")]
    upn_domains: Vec<String>,
    /// The offline root's certificate (PEM or DER, from `ceremony`, type root): keep the
    /// root key out of this deployment.
    #[arg(long, value_name = "FILE")]
    external_root: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the audit hash chain and its signed checkpoints; names the first edited,
    /// missing or reordered record, a forged or contradicted checkpoint, records cut from
    /// the end or appended after an expected head.
    ///
    /// Exits 0 with the record count and head hash when everything holds (keep the head
    /// hash, or a checkpoint file, elsewhere), 1 when not.
    Verify {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The head hash (hex) the chain must end with.
        #[arg(long, value_name = "HEX")]
        expect_head: Option<String>,
        /// A checkpoint file from `audit checkpoint --out`, kept outside the database.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// The root certificate the audit signer must chain to (default DIR/root-ca.pem).
        #[arg(long, value_name = "FILE")]
        root: Option<PathBuf>,
        /// The SHA-256 (hex) of the audit key's public key, kept outside the issuer
        /// (default: `audit_key_sha256` in DIR/issuer.json, as init wrote it).
        #[arg(long, value_name = "HEX")]
        audit_key: Option<String>,
    },
    /// Sign a checkpoint of the chain's head with the audit key in the token, store it
    /// and write it to FILE (keep it outside the issuer: it anchors the chain).
    Checkpoint {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Where to write the checkpoint (JSON; must not exist).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// A custodian's share file (repeat for M of them).
        #[arg(long = "share", value_name = "FILE")]
        shares: Vec<PathBuf>,
    },
}

fn parse_alg(s: &str) -> Result<KeyAlg, String> {
    s.parse()
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("write NAME=VALUE")?;
    if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("{k:?} is not an environment variable name"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = run(Args::parse().command) {
        eprintln!("tessera-issuer: {e:#}");
        std::process::exit(if e.downcast_ref::<audit::Broken>().is_some() {
            1
        } else {
            2
        });
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Init(args) => init_command(args),
        Command::InstallCaCert {
            data_dir,
            certificate,
            shares,
        } => {
            let report =
                init::install_issuing_certificate(&data_dir, &certificate, &shares, &SystemClock)?;
            print_ready(&data_dir, &report);
            Ok(())
        }
        Command::Serve(args) => serve::serve(args),
        Command::Ceremony { config } => {
            print!(
                "{}",
                tessera_issuer_setup::ceremony::run(&config, &SystemClock)?
            );
            Ok(())
        }
        Command::Crl {
            data_dir,
            out,
            shares,
        } => crl_command(&data_dir, &out, &shares),
        Command::Renew {
            data_dir,
            force,
            shares,
        } => {
            let dep = deployment::Deployment::open(&data_dir, &shares, None, |_| {})?;
            let renewed = renew::renew(&dep, &SystemClock, force)?;
            if renewed.is_empty() {
                println!("nothing due for renewal");
            }
            for r in renewed {
                println!("renewed {} (valid until {})", r.what, r.until);
            }
            Ok(())
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    data_dir,
                    expect_head,
                    checkpoint,
                    root,
                    audit_key,
                },
        } => {
            deployment::ensure_complete(&data_dir)?;
            let config = tessera_issuer_types::config::Config::load(&data_dir)?;
            let store = tessera_issuer_store::Store::open_configured(&config.database, &data_dir)?;
            let report = audit::verify(
                &data_dir,
                &store,
                &audit::Expectations {
                    expect_head: expect_head.as_deref(),
                    checkpoint: checkpoint.as_deref(),
                    root: root.as_deref(),
                    audit_key: audit_key.as_deref().or(config.audit_key_sha256.as_deref()),
                },
            )
            .map_err(|e| match e.downcast::<audit::Broken>() {
                Ok(broken) => anyhow::Error::new(broken),
                // Anything that contradicts the chain is a verification failure too.
                Err(other) => anyhow::Error::new(audit::Broken(
                    tessera_issuer_store::audit::Tamper::Anchor(format!("{other:#}")),
                )),
            })?;
            print!("{report}");
            Ok(())
        }
        Command::Audit {
            command:
                AuditCommand::Checkpoint {
                    data_dir,
                    out,
                    shares,
                },
        } => {
            let dep = deployment::Deployment::open(&data_dir, &shares, None, |_| {})?;
            let signed = audit::make(&dep, &SystemClock)?;
            let json = serde_json::to_string_pretty(&signed)?;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&out)
                .and_then(|mut f| std::io::Write::write_all(&mut f, json.as_bytes()))
                .with_context(|| format!("writing {} (it must not exist)", out.display()))?;
            println!(
                "checkpoint of {} records, head {}, written to {}",
                signed.checkpoint.records,
                signed.checkpoint.head,
                out.display()
            );
            Ok(())
        }
    }
}

fn init_command(a: InitArgs) -> Result<()> {
    let token = match a.token_module {
        None => TokenChoice::SoftHsm,
        Some(module) => TokenChoice::Existing {
            module,
            label: a.token_label.context("--token-label")?,
            pin_file: a.token_pin_file.context("--token-pin-file")?,
            so_pin_file: a.token_so_pin_file.context("--token-so-pin-file")?,
            environment: a.token_env,
        },
    };
    let database = match a.database_url {
        None => DatabaseChoice::Sqlite,
        Some(url) => DatabaseChoice::Postgres {
            url,
            password_file: a.database_password_file,
        },
    };
    let opts = Options {
        data_dir: a.data_dir.clone(),
        key_alg: a.key_alg,
        organization: a.organization,
        token,
        database,
        tls_hosts: a.tls_hosts,
        custody: a.custodians,
        share_dir: a.share_dir,
        public_url: a.public_url,
        policy_oid: a.policy_oid,
        upn_domains: a.upn_domains,
    };
    if let Some(root) = a.external_root {
        let pending = init::run_external(&opts, &root, &SystemClock)?;
        println!(
            "Tessera issuer prepared in {} for the offline root",
            a.data_dir.display()
        );
        println!("  offline root   SHA-256 {}", pending.root_fingerprint);
        println!(
            "  issuing-CA certificate request {} SHA-256 {}",
            pending.csr_path.display(),
            pending.csr_sha256
        );
        print_shares(&pending.shares);
        println!();
        println!("Next:");
        println!(
            "  - take the request to the root ceremony (`tessera-issuer ceremony`, type \
             intermediate, with csr_sha256 {})",
            pending.csr_sha256
        );
        println!(
            "  - then: tessera-issuer install-ca-cert --data-dir {} --certificate FILE",
            a.data_dir.display()
        );
        return Ok(());
    }
    let report = init::run(&opts, &SystemClock)?;
    print_ready(&a.data_dir, &report);
    Ok(())
}

fn crl_command(
    data_dir: &std::path::Path,
    out: &std::path::Path,
    shares: &[PathBuf],
) -> Result<()> {
    use std::sync::Arc;
    let started = std::time::Instant::now();
    let dep = deployment::Deployment::open(data_dir, shares, None, |_| {})?;
    let status = tessera_issuer_status::Status::new(
        Arc::clone(&dep.ca),
        dep.store.clone(),
        Arc::new(SystemClock),
        tessera_issuer_status::Settings::default(),
    );
    let published = status
        .publish_crl()
        .map_err(|e| anyhow::anyhow!("issuing the CRL: {e}"))?;
    let (what, crl) = match published {
        tessera_issuer_status::crl::Published::New {
            number,
            entries,
            der,
            ..
        } => (
            format!("CRL number {number} with {entries} entries"),
            bytes::Bytes::from(der),
        ),
        // Another server published a newer one meanwhile: write that.
        tessera_issuer_status::crl::Published::Superseded => (
            "the newest CRL (another server published it)".to_owned(),
            status
                .crl()
                .map_err(|e| anyhow::anyhow!("reading the CRL: {e}"))?,
        ),
    };
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, &crl).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "{what}, {} bytes, written to {} in {:.2} s",
        crl.len(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn print_shares(shares: &[PathBuf]) {
    if !shares.is_empty() {
        println!("  custodian shares (hand each to its custodian, then remove it from here):");
        for s in shares {
            println!("    {}", s.display());
        }
    }
}

/// What `init` made and what to do next.
fn print_ready(data_dir: &std::path::Path, report: &init::Report) {
    println!("Tessera issuer initialised in {}", data_dir.display());
    println!("  root CA        SHA-256 {}", report.root_fingerprint);
    println!("  issuing CA     SHA-256 {}", report.issuing_fingerprint);
    println!("  OCSP responder SHA-256 {}", report.ocsp_fingerprint);
    println!("  issuer TLS CA  SHA-256 {}", report.tls_ca_fingerprint);
    print_shares(&report.shares);
    println!();
    println!("Next:");
    println!(
        "  - compare the root fingerprint with the one your relying parties will pin, and \
         distribute {}",
        data_dir.join(files::ROOT_PEM).display()
    );
    println!(
        "  - API clients trust the issuer's HTTPS through {}",
        data_dir.join(files::TLS_CA_PEM).display()
    );
    println!(
        "  - the bootstrap administrator API token is in {} (mode 0600); use it once to \
         create named officers, then revoke it",
        report.bootstrap_token_path.display()
    );
    if report.shares.is_empty() {
        println!(
            "  - {} activates the CA keys: keep the directory readable only by the issuer",
            data_dir.join(files::ACTIVATION_SECRET).display()
        );
    }
}

//! `tessera-issuer`: the issuer's command line.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tessera_issuer::clock::SystemClock;
use tessera_issuer::hsm::KeyAlg;
use tessera_issuer::init::{self, files};
use tessera_issuer::{audit, db};

/// The Tessera issuer: certificate authorities for LoA3 service IDs.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an embedded deployment in a new data directory.
    ///
    /// Makes a SoftHSM2 token in the directory (or uses --pkcs11-module), generates the
    /// root, issuing-CA and OCSP-responder keys inside it, issues their certificates,
    /// creates the SQLite database and writes a bootstrap administrator API token to
    /// DIR/bootstrap-admin.token (mode 0600). Prints the CA fingerprints.
    Init {
        /// The data directory; must not exist or be empty.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The CA key algorithm.
        #[arg(long, value_enum, default_value_t = KeyAlg::P256)]
        key_alg: KeyAlg,
        /// The organisation named in the CA certificates.
        #[arg(long, default_value = "Tessera")]
        organization: String,
        /// A PKCS#11 module to use instead of SoftHSM2 (an HSM's library).
        #[arg(long, value_name = "PATH")]
        pkcs11_module: Option<PathBuf>,
    },
    /// Audit trail commands.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the audit hash chain; names the first edited, missing or reordered record.
    ///
    /// Exits 0 and prints the record count and head hash when the chain is intact (keep the
    /// head hash elsewhere: it also reveals records cut from the end), 1 when it is not.
    Verify {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
}

fn main() -> Result<()> {
    match Args::parse().command {
        Command::Init {
            data_dir,
            key_alg,
            organization,
            pkcs11_module,
        } => {
            let report = init::run(
                &init::Options {
                    data_dir: data_dir.clone(),
                    key_alg,
                    organization,
                    pkcs11_module,
                },
                &SystemClock,
            )?;
            println!("Tessera issuer initialised in {}", data_dir.display());
            println!("  root CA        SHA-256 {}", report.root_fingerprint);
            println!("  issuing CA     SHA-256 {}", report.issuing_fingerprint);
            println!("  OCSP responder SHA-256 {}", report.ocsp_fingerprint);
            println!();
            println!("Next:");
            println!(
                "  - compare the root fingerprint with the one your relying parties will pin, and \
                 distribute {}",
                data_dir.join(files::ROOT_PEM).display()
            );
            println!(
                "  - the bootstrap administrator API token is in {} (mode 0600); use it once to \
                 create named officers, then revoke it",
                report.bootstrap_token_path.display()
            );
            println!(
                "  - {} activates the CA keys: keep the directory readable only by the issuer",
                data_dir.join(files::ACTIVATION_SECRET).display()
            );
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Verify { data_dir },
        } => {
            let db_path = data_dir.join(files::DATABASE);
            anyhow::ensure!(
                db_path.exists(),
                "no Tessera database in {}",
                data_dir.display()
            );
            let mut conn = db::open_sqlite(&db_path)?;
            match audit::verify(&mut conn).context("verifying the audit chain")? {
                Ok(v) => {
                    println!(
                        "audit chain intact: {} records, head {}",
                        v.records,
                        hex::encode(&v.head)
                    );
                    Ok(())
                }
                Err(tamper) => {
                    eprintln!("audit chain BROKEN: {tamper}");
                    std::process::exit(1);
                }
            }
        }
    }
}

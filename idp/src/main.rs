//! `tessera-idp`: the IdP's command line.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tessera_idp::config::Organisation;
use tessera_idp::{init, serve};
use tessera_issuer_types::config::KeyAlg;

/// The Tessera identity provider: employees sign in to e-services with their service ID.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start; boxing would only obscure clap's derive
enum Command {
    /// Create an IdP deployment in a new data directory.
    ///
    /// Makes a SoftHSM2 token in the directory with a random activation secret
    /// (DIR/activation.secret, mode 0600), generates the SAML signing key and an RSA
    /// encryption key inside it (never exportable), writes their self-signed metadata
    /// certificates (DIR/saml-*.pem) and the configuration DIR/idp.json. Prints the
    /// entityID and where the metadata will be.
    Init {
        /// The new data directory (created; must be empty if it exists).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The issuer's base URL (its API: people, cards, the status feed).
        #[arg(long, value_name = "URL")]
        issuer_url: String,
        /// The base URL browsers and relying parties reach this IdP at.
        #[arg(long, value_name = "URL", default_value = "https://localhost:8445")]
        base_url: String,
        /// Our SAML entityID [default: BASE_URL/saml/metadata].
        #[arg(long, value_name = "URI")]
        entity_id: Option<String>,
        /// The organisation's name (metadata, the `o` attribute).
        #[arg(long, default_value = "Tessera Trial Organisation")]
        organisation: String,
        /// The organisation number (ten digits; our scope, `orgAffiliation`'s domain).
        #[arg(long, value_name = "NUMBER", default_value = "5590000001")]
        organisation_number: String,
        /// The organisation's web site.
        #[arg(long, value_name = "URL", default_value = "https://www.example.org")]
        organisation_url: String,
        /// The technical contact's e-mail address, published in the metadata.
        #[arg(long, value_name = "ADDRESS", default_value = "idp-admin@example.org")]
        contact: String,
        /// The signing key's algorithm: rsa2048, rsa3072 or p256.
        #[arg(long, value_name = "ALG", default_value = "rsa2048")]
        signing_alg: KeyAlg,
        /// The federation's metadata aggregate (an https URL or a file), fetched hourly
        /// and used only when its signature verifies; relying parties can also be put in
        /// DIR/relying-parties/*.xml.
        #[arg(long, value_name = "SOURCE", requires = "federation_certificate")]
        federation_metadata: Option<String>,
        /// The federation's metadata-signing certificate (PEM; copied into DIR).
        #[arg(long, value_name = "FILE", requires = "federation_metadata")]
        federation_certificate: Option<PathBuf>,
        /// An issuing CA whose service IDs log in (PEM; repeat for several). With
        /// --card-policy this sets up the card login.
        #[arg(long = "card-ca", value_name = "FILE", requires = "card_policy")]
        card_cas: Vec<PathBuf>,
        /// The organisation's certificate-policy OID for the service ID at LoA3 (the
        /// issuer's `policy_oid`).
        #[arg(long, value_name = "OID", requires = "card_cas")]
        card_policy: Option<String>,
        /// A file holding the IdP's API token at the issuer: an officer with the
        /// identity_provider role (`tessera officer add idp --role identity_provider`).
        /// Copied in; without it, put the token in DIR/issuer-api.token later (it is read
        /// at each use, so a rotated token needs no restart).
        #[arg(long, value_name = "FILE", requires = "card_cas")]
        issuer_token_file: Option<PathBuf>,
        /// The issuer's TLS CA (PEM; the issuer's DIR/tls-ca.pem) when its https
        /// certificate is not from a public CA. The issuer URL must be https, or http to
        /// the issuer on this machine.
        #[arg(long, value_name = "FILE", requires = "card_cas")]
        issuer_ca: Option<PathBuf>,
        /// Where browsers reach the card login (a host or port of its own: TLS there asks
        /// for the card's certificate).
        #[arg(long, value_name = "URL", default_value = "https://localhost:8446")]
        login_url: String,
        /// PostgreSQL for the IdP's sessions and audit (postgres://user@host/db) instead
        /// of SQLite in the data directory.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// The CA (PEM; copied in) that relying parties' SOAP logout endpoints chain to,
        /// when their https certificates are not from a public CA. When a session ends,
        /// each relying party it answered and whose metadata lists a SOAP
        /// SingleLogoutService is sent a signed LogoutRequest.
        #[arg(long, value_name = "FILE")]
        logout_ca: Option<PathBuf>,
    },
    /// Run the IdP: our signed metadata at /saml/metadata, /healthz, /readyz, /metrics.
    Serve {
        /// The data directory made by `init`.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The address to listen on (plain HTTP, for a TLS-terminating proxy in front, or
        /// loopback).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8445")]
        listen: SocketAddr,
        /// The card login's address (TLS in-process, client certificate required); only
        /// with a login configured by `init --card-ca`.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8446")]
        login_listen: SocketAddr,
        /// A custodian's share file (repeat for M of them) when the activation secret is
        /// shared M-of-N.
        #[arg(long = "share", value_name = "FILE")]
        shares: Vec<PathBuf>,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Args::parse().command {
        Command::Init {
            data_dir,
            issuer_url,
            base_url,
            entity_id,
            organisation,
            organisation_number,
            organisation_url,
            contact,
            signing_alg,
            federation_metadata,
            federation_certificate,
            card_cas,
            card_policy,
            issuer_token_file,
            issuer_ca,
            login_url,
            database_url,
            logout_ca,
        } => {
            let login = match (card_policy, issuer_token_file) {
                (Some(card_policy), issuer_token) => Some(init::LoginOptions {
                    base_url: login_url.trim_end_matches('/').to_owned(),
                    card_cas,
                    card_policy,
                    issuer_token,
                    issuer_ca,
                }),
                _ => None,
            };
            let config = init::run(
                &data_dir,
                &init::Options {
                    entity_id,
                    base_url: base_url.trim_end_matches('/').to_owned(),
                    issuer_url,
                    organisation: Organisation {
                        name: organisation,
                        number: organisation_number,
                        url: organisation_url,
                    },
                    signing_alg,
                    contact_email: contact,
                    federation: federation_metadata.zip(federation_certificate),
                    login,
                    database_url,
                    logout_ca,
                },
            )?;
            println!("IdP deployment made in {}", data_dir.display());
            println!("entityID: {}", config.entity_id);
            println!(
                "metadata: {}/saml/metadata (after `tessera-idp serve --data-dir {}`)",
                config.base_url,
                data_dir.display()
            );
            Ok(())
        }
        Command::Serve {
            data_dir,
            listen,
            login_listen,
            shares,
        } => serve::run(&data_dir, listen, login_listen, &shares),
    }
}

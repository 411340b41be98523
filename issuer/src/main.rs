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
    ///
    /// With --external-root the root stays offline (the production path): only the
    /// issuing-CA and OCSP keys are generated, and DIR/issuing-ca.csr goes to the root
    /// ceremony (`ceremony`, type intermediate); `install-ca-cert` then completes the
    /// deployment with the certificate the ceremony signed.
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
        /// Keep the database in PostgreSQL (postgres://…) instead of SQLite in DIR.
        #[arg(long, value_name = "URL", env = "TESSERA_DATABASE_URL")]
        database_url: Option<String>,
        /// Custody of the CA activation secret: M-of-N Shamir shares written as
        /// DIR/custodian-<i>.share for the custodians to take away (1-of-1: the secret itself
        /// stays in DIR).
        #[arg(long, value_name = "M-of-N", default_value = "1-of-1")]
        custodians: tessera_issuer::custody::Scheme,
        /// Host names and IP addresses for the issuer's HTTPS certificate (repeatable).
        #[arg(long = "tls-host", value_name = "NAME", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
        tls_hosts: Vec<String>,
        /// The offline root's certificate (PEM or DER, from `ceremony`, type root): keep the
        /// root key out of this deployment.
        #[arg(long, value_name = "FILE")]
        external_root: Option<PathBuf>,
    },
    /// Complete an `init --external-root` deployment with the issuing-CA certificate the
    /// root ceremony signed for DIR/issuing-ca.csr.
    ///
    /// Checks that the certificate is for the issuing-CA key in this deployment's token, was
    /// signed by the offline root, is a CA certificate and is valid now; then issues the
    /// OCSP responder's and the HTTPS certificates and writes the bootstrap token, as `init`
    /// does. A refused certificate changes nothing.
    InstallCaCert {
        /// The data directory made by `init --external-root`.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The issuing-CA certificate (PEM or DER).
        #[arg(long, value_name = "FILE")]
        certificate: PathBuf,
        /// A custodian's share file (repeat for M of them) when the deployment's activation
        /// secret is shared M-of-N.
        #[arg(long = "share", value_name = "FILE")]
        shares: Vec<PathBuf>,
    },
    /// Serve the issuance API, the CRL and the CA certificate over HTTP.
    ///
    /// Certificates name URLs under --public-url: the CRL at /crl/issuing-ca-1.crl, the CA
    /// certificate at /ca/issuing-ca-1.crt, OCSP at /ocsp. The CRL is reissued on every
    /// status change and every --crl-interval seconds.
    Serve(ServeArgs),
    /// Run a key ceremony described by a reviewed configuration file (JSON).
    ///
    /// `"type": "root"` generates the root key in an offline token and self-signs the root
    /// certificate; `"type": "intermediate"` verifies an issuing CA's certificate request
    /// and signs its certificate with the root key. Prints a transcript starting with the
    /// SHA-256 of the configuration file. Outputs are never overwritten.
    Ceremony {
        /// The ceremony configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Issue a CRL now (as `serve` does on every status change and on schedule) and write
    /// it, DER-encoded, to FILE. For publishing by other means, or when `serve` is not
    /// running. Prints the CRL number, entries, size and time taken.
    Crl {
        /// The data directory made by `init`.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Where to write the CRL (replaced atomically if it exists).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// A custodian's share file (repeat for M of them) when the deployment's activation
        /// secret is shared M-of-N.
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
struct ServeArgs {
    /// The data directory made by `init`.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// The base URL relying parties reach this server at (default: http://ADDR).
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// The certificate-policy OID put in certificates (default: the one `init` chose,
    /// in DIR/certificate-policy.oid).
    #[arg(long, value_name = "OID")]
    policy_oid: Option<String>,
    /// Seconds between scheduled CRLs.
    #[arg(long, default_value_t = 3600)]
    crl_interval: u64,
    /// A custodian's share file (repeat for M of them) when the deployment's activation
    /// secret is shared M-of-N.
    #[arg(long = "share", value_name = "FILE")]
    shares: Vec<PathBuf>,
    /// Serve the API over HTTPS on this address (with DIR/tls-cert.pem and
    /// DIR/tls-key.pem, made by `init`); --listen then serves only the CRL, OCSP and the
    /// CA certificate, over plain HTTP as relying parties expect.
    #[arg(long, value_name = "ADDR")]
    tls_listen: Option<std::net::SocketAddr>,
    /// Seconds a pre-signed OCSP response (one certificate, no nonce) is served before
    /// it is signed again; 0 signs every response. This server invalidates a
    /// certificate's responses on every status change it makes; other servers sharing
    /// the same PostgreSQL database see the change after at most this long.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    ocsp_cache_seconds: u64,
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
            database_url,
            tls_hosts,
            custodians,
            external_root,
        } => {
            let opts = init::Options {
                data_dir: data_dir.clone(),
                key_alg,
                organization,
                pkcs11_module,
                database_url,
                tls_hosts,
                custody: custodians,
            };
            if let Some(root) = external_root {
                let pending = init::run_external(&opts, &root, &SystemClock)?;
                println!(
                    "Tessera issuer prepared in {} for the offline root",
                    data_dir.display()
                );
                println!("  offline root   SHA-256 {}", pending.root_fingerprint);
                println!(
                    "  issuing-CA certificate request {} SHA-256 {}",
                    pending.csr_path.display(),
                    pending.csr_sha256
                );
                println!();
                println!("Next:");
                println!(
                    "  - take the request to the root ceremony (`tessera-issuer ceremony`, type \
                     intermediate) and compare its SHA-256 there"
                );
                println!(
                    "  - then: tessera-issuer install-ca-cert --data-dir {} --certificate FILE",
                    data_dir.display()
                );
                return Ok(());
            }
            let report = init::run(&opts, &SystemClock)?;
            print_ready(&data_dir, &report);
            Ok(())
        }
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
        Command::Serve(args) => serve(args),
        Command::Ceremony { config } => {
            print!("{}", tessera_issuer::ceremony::run(&config, &SystemClock)?);
            Ok(())
        }
        Command::Crl {
            data_dir,
            out,
            shares,
        } => {
            let started = std::time::Instant::now();
            init::ensure_complete(&data_dir)?;
            let urls = urls(&data_dir, "http://127.0.0.1:8080", None)?;
            let mut conn = open_db(&data_dir)?;
            let ca = tessera_issuer::ca::IssuingCa::open(&data_dir, &mut conn, urls, &shares)?;
            let crl = ca
                .issue_crl(&mut conn, &SystemClock)
                .map_err(|e| anyhow::anyhow!("issuing the CRL: {e:#}"))?;
            let tmp = out.with_extension("tmp");
            std::fs::write(&tmp, &crl.der).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &out).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "CRL number {} with {} entries, {} bytes, written to {} in {:.2} s",
                crl.number,
                crl.entries,
                crl.der.len(),
                out.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Verify { data_dir },
        } => {
            let mut conn = open_db(&data_dir)?;
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

fn serve(args: ServeArgs) -> Result<()> {
    use std::sync::Arc;
    let ServeArgs {
        data_dir,
        listen,
        public_url,
        policy_oid,
        crl_interval,
        shares,
        tls_listen,
        ocsp_cache_seconds,
    } = args;

    init::ensure_complete(&data_dir)?;
    let base = public_url.unwrap_or_else(|| format!("http://{listen}"));
    let base = base.trim_end_matches('/').to_owned();
    let urls = urls(&data_dir, &base, policy_oid)?;
    let mut conn = open_db(&data_dir)?;
    let ca = tessera_issuer::ca::IssuingCa::open(&data_dir, &mut conn, urls, &shares)?;
    let state = Arc::new(tessera_issuer::api::AppState::new(
        ca,
        conn,
        Box::new(SystemClock),
        std::time::Duration::from_secs(ocsp_cache_seconds),
    ));
    let tls = match tls_listen {
        Some(addr) => Some((addr, tls_config(&data_dir)?)),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers = runtime.block_on(async move {
        // Scheduled CRLs, so relying parties always find one before nextUpdate.
        let scheduled = Arc::clone(&state);
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(std::time::Duration::from_secs(crl_interval.max(60)));
            loop {
                tick.tick().await;
                let s = Arc::clone(&scheduled);
                let _ = tokio::task::spawn_blocking(move || {
                    let mut guard = s.inner.lock().unwrap_or_else(|p| p.into_inner());
                    let (ca, conn) = &mut *guard;
                    if let Err(e) = ca.generate_crl(conn, s.clock.as_ref()) {
                        eprintln!("tessera-issuer: scheduled CRL failed: {e:#}");
                    }
                })
                .await;
            }
        });
        let plain = match tls {
            Some((addr, config)) => {
                let tls_listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listening on {addr}"))?;
                let app = tessera_issuer::api::router(Arc::clone(&state));
                tokio::spawn(serve_tls(tls_listener, config, app));
                println!("tessera-issuer API on https://{addr}");
                tessera_issuer::api::public_router(state)
            }
            None => tessera_issuer::api::router(state),
        };
        let (bound, workers) = serve_per_core(listen, plain, &stopped)?;
        println!("tessera-issuer serving on http://{bound} (public URL {base})");
        let _ = tokio::signal::ctrl_c().await;
        anyhow::Ok(workers)
    })?;
    // Stop accepting, let requests in flight finish, then leave.
    let _ = stop.send(true);
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("an HTTP worker panicked"))??;
    }
    Ok(())
}

/// Serves `app` on `addr` from one single-threaded runtime per core, each accepting on a
/// socket of its own bound to the same port (SO_REUSEPORT: the kernel hands each connection
/// to one of them). A connection then lives on one thread, with no cross-thread wake-up
/// per request; on the OCSP hot path (pre-signed answers) that wake-up was the largest cost
/// after the kernel's TCP. Returns the bound address and the worker threads, which stop
/// when `stopped` turns true.
fn serve_per_core(
    addr: std::net::SocketAddr,
    app: axum::Router,
    stopped: &tokio::sync::watch::Receiver<bool>,
) -> Result<(
    std::net::SocketAddr,
    Vec<std::thread::JoinHandle<Result<()>>>,
)> {
    // SO_REUSEPORT would let a second issuer on the same port silently share the
    // connections; an ordinary bind first refuses a port anyone holds (and resolves port 0).
    let addr = std::net::TcpListener::bind(addr)
        .and_then(|probe| probe.local_addr())
        .with_context(|| format!("listening on {addr}"))?;
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut workers = Vec::with_capacity(threads);
    for i in 0..threads {
        let (app, mut stopped) = (app.clone(), stopped.clone());
        let (ready, bound) = std::sync::mpsc::channel();
        let worker = std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || -> Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting an HTTP worker")?;
                runtime.block_on(async move {
                    let listener = match reuseport_listener(addr) {
                        Ok(l) => {
                            let _ = ready.send(Ok(()));
                            l
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return Ok(());
                        }
                    };
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stopped.wait_for(|stop| *stop).await;
                        })
                        .await
                        .context("serving")
                })
            })
            .context("starting an HTTP worker")?;
        bound
            .recv()
            .context("an HTTP worker ended before listening")?
            .with_context(|| format!("listening on {addr}"))?;
        workers.push(worker);
    }
    Ok((addr, workers))
}

fn reuseport_listener(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    Ok(socket.listen(1024)?)
}

/// What `init` made and what to do next.
fn print_ready(data_dir: &std::path::Path, report: &init::Report) {
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
}

/// Where certificates send relying parties, under `base`, and the certificate policy
/// (`init`'s choice in DIR unless given).
fn urls(
    data_dir: &std::path::Path,
    base: &str,
    policy_oid: Option<String>,
) -> Result<tessera_issuer::ca::Urls> {
    anyhow::ensure!(
        base.starts_with("http://") || base.starts_with("https://"),
        "--public-url must be an http(s) URL"
    );
    let policy = match policy_oid {
        Some(p) => p,
        None => std::fs::read_to_string(data_dir.join(files::POLICY_OID))
            .context("reading the certificate policy OID (give --policy-oid)")?
            .trim()
            .to_owned(),
    };
    let policy = tessera_issuer::x509::parse_oid(&policy).context("the certificate policy OID")?;
    Ok(tessera_issuer::ca::Urls {
        crl: format!("{base}/crl/issuing-ca-1.crl"),
        ocsp: format!("{base}/ocsp"),
        ca_issuers: format!("{base}/ca/issuing-ca-1.crt"),
        policy,
    })
}

/// The deployment's database: PostgreSQL when `init` recorded a URL (DIR/database.url),
/// else the SQLite file in DIR.
fn open_db(data_dir: &std::path::Path) -> Result<db::Conn> {
    let url_file = data_dir.join(files::DATABASE_URL);
    let sqlite = data_dir.join(files::DATABASE);
    if url_file.exists() {
        let url = std::fs::read_to_string(&url_file).context("reading the database URL")?;
        return db::open_postgres(url.trim());
    }
    anyhow::ensure!(
        sqlite.exists(),
        "no Tessera deployment in {}; run `tessera-issuer init --data-dir {}` first",
        data_dir.display(),
        data_dir.display()
    );
    db::open_sqlite(&sqlite)
}

/// The issuer's HTTPS server configuration (rustls with its safe defaults).
fn tls_config(data_dir: &std::path::Path) -> Result<std::sync::Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_path = data_dir.join(files::TLS_CERT);
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(data_dir.join(files::TLS_KEY))
        .context("reading the TLS key")?;
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("the TLS certificate and key")?;
    Ok(std::sync::Arc::new(config))
}

/// Accepts TLS connections and serves the router on each (HTTP/1.1).
async fn serve_tls(
    listener: tokio::net::TcpListener,
    config: std::sync::Arc<rustls::ServerConfig>,
    app: axum::Router,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            // A failed handshake concerns that client only.
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}

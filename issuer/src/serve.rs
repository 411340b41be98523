//! `tessera-issuer serve`: wires the layers together — the deployment (configuration,
//! database, token), the status layer and its outbox follower, the registration authority,
//! the HTTP edge — and runs the maintenance that keeps the issuer's own certificates
//! current and the audit chain anchored.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tessera_issuer_ra::{PopPolicy, Ra};
use tessera_issuer_status::{Settings, Status};
use tessera_issuer_types::config::files;
use tessera_issuer_types::{Clock, SystemClock};
use tessera_issuer_web::metrics::Metrics;
use tessera_issuer_web::App;

use crate::deployment::Deployment;

/// How `serve` runs.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The data directory made by `init`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Address to listen on (plain HTTP). On an address other than loopback, plain HTTP
    /// serves relying parties only (CRL, OCSP, CA certificate, health, metrics): the API
    /// needs --tls-listen there.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The base URL relying parties reach this server at (default: the configuration's
    /// `public_url`); required when --listen is not a loopback address.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Serve the API over HTTPS on this address, with DIR/tls-cert.pem and DIR/tls-key.pem
    /// (from the issuer's own TLS CA, DIR/tls-ca.pem; renewed automatically); --listen
    /// then serves relying parties only.
    #[arg(long, value_name = "ADDR")]
    pub tls_listen: Option<SocketAddr>,
    /// Serve the admin portal (/admin/) over HTTPS on this address, with the same server
    /// certificate as --tls-listen. The listener asks browsers for a client certificate
    /// from the issuing CA: officers sign in with their own service ID.
    #[arg(long, value_name = "ADDR")]
    pub portal_listen: Option<SocketAddr>,
    /// The portal's origin as officers' browsers reach it (https://admin.example.org):
    /// its host name is the relying-party id of officers' passkeys, so a name, never an IP
    /// address. Without it passkeys are off. Passkeys are registered from the
    /// authenticator models trusted in DIR/passkey-authenticators (AAGUID.pem: the model's
    /// attestation CA; a file that is not one stops the server).
    #[arg(long, value_name = "URL")]
    pub portal_origin: Option<String>,
    /// A custodian's share file (repeat for M of them) when the deployment's activation
    /// secret is shared M-of-N.
    #[arg(long = "share", value_name = "FILE")]
    pub shares: Vec<PathBuf>,
    /// Seconds a pre-signed OCSP response (one certificate, no nonce) is served; 0 signs
    /// every response. A status change made by any server on the same database
    /// invalidates it within a second (the status outbox).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub ocsp_cache_seconds: u64,
    /// Bytes of pre-signed OCSP responses kept in memory.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub ocsp_cache_bytes: usize,
    /// Seconds from a revocation (or hold, or release) to a CRL that lists it.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub crl_delay: f64,
    /// Seconds between CRLs when nothing changes.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub crl_interval: u64,
    /// Seconds between signed checkpoints of the audit chain (when it grew).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub checkpoint_interval: u64,
    /// Testing only: a file holding seconds to add to the system clock, read at every
    /// look at the time, so a test can let deadlines pass without waiting for them.
    #[arg(long, value_name = "FILE", hide = true)]
    pub clock_offset_file: Option<PathBuf>,
}

/// The system clock moved by the number of seconds in a file (tests of deadlines against
/// a running server); a missing or unreadable file moves it by nothing.
#[derive(Debug)]
struct OffsetClock(PathBuf);

impl Clock for OffsetClock {
    fn now(&self) -> Duration {
        let offset = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        SystemClock.now() + Duration::from_secs(offset)
    }
}

/// The HTTPS certificate, replaced in place when it is renewed.
#[derive(Debug)]
struct Reloadable(RwLock<Arc<rustls::sign::CertifiedKey>>);

impl rustls::server::ResolvesServerCert for Reloadable {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

fn certified_key(dir: &std::path::Path) -> Result<rustls::sign::CertifiedKey> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_path = dir.join(files::TLS_CERT);
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert_path.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(dir.join(files::TLS_KEY)).context("reading the TLS key")?;
    let key = rustls::crypto::ring::sign::any_supported_type(&key).context("the TLS key")?;
    Ok(rustls::sign::CertifiedKey::new(certs, key))
}

/// The portal's TLS: the issuer's server certificate, and a client certificate asked for
/// and, when given, chained to the issuing CA (with the clientAuth EKU). Without one the
/// sign-in page says what to do; the RA then checks the certificate is a good service ID
/// of an officer.
fn portal_tls(dep: &Deployment, resolver: &Arc<Reloadable>) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            dep.ca.certificate_der().to_vec(),
        ))
        .context("the issuing CA as the portal's client-certificate root")?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .allow_unauthenticated()
    .build()
    .context("the portal's client-certificate verifier")?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::clone(resolver) as Arc<dyn rustls::server::ResolvesServerCert>);
    Ok(Arc::new(config))
}

/// The CA certificates in `roots_dir/*.pem` (none if it does not exist): card
/// manufacturers' CAs for PIV attestations (DIR/attestation-roots), TPM manufacturers' EK
/// CAs for TPM enrolment (DIR/tpm-roots).
fn trusted_cas(roots_dir: &std::path::Path) -> Result<Vec<x509_cert::Certificate>> {
    use der::Decode;
    let mut roots = Vec::new();
    let Ok(entries) = std::fs::read_dir(roots_dir) else {
        return Ok(roots);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pem") {
            continue;
        }
        let der = tessera_issuer_ca::x509::read_certificate(&path)?;
        roots.push(x509_cert::Certificate::from_der(&der)?);
    }
    Ok(roots)
}

/// Runs the issuer until SIGINT or SIGTERM.
pub(crate) fn serve(args: ServeArgs) -> Result<()> {
    let loopback = args.listen.ip().is_loopback();
    if !loopback && args.public_url.is_none() {
        bail!(
            "--listen {} is not a loopback address: give --public-url, the URL relying \
             parties reach this server at (certificates name it)",
            args.listen
        );
    }
    let metrics = Arc::new(Metrics::new());
    let observer = Arc::clone(&metrics);
    let dep = Arc::new(Deployment::open(
        &args.data_dir,
        &args.shares,
        args.public_url.as_deref(),
        move |took| observer.observe_signature(took),
    )?);
    let clock: Arc<dyn Clock> = match &args.clock_offset_file {
        Some(f) => {
            tracing::warn!(file = %f.display(), "the clock is moved by a test's offset file");
            Arc::new(OffsetClock(f.clone()))
        }
        None => Arc::new(SystemClock),
    };
    for r in crate::renew::renew(&dep, clock.as_ref(), false)? {
        tracing::info!(what = r.what, until = r.until, "renewed at start-up");
    }
    let settings = Settings {
        ocsp_cache_age: Duration::from_secs(args.ocsp_cache_seconds),
        ocsp_cache_bytes: args.ocsp_cache_bytes,
        crl_delay: Duration::try_from_secs_f64(args.crl_delay.max(0.0)).context("--crl-delay")?,
        crl_interval: Duration::from_secs(args.crl_interval.max(1)),
        ..Settings::default()
    };
    let status = Arc::new(Status::new(
        Arc::clone(&dep.ca),
        dep.store.clone(),
        Arc::clone(&clock),
        settings,
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let follower = status
        .follow(Arc::clone(&stop))
        .context("starting the status follower")?;
    let changed = Arc::clone(&status);
    let ra = Arc::new(Ra::new(
        Arc::clone(&dep.ca),
        dep.store.clone(),
        Arc::clone(&clock),
        PopPolicy {
            attestation_roots: trusted_cas(&dep.dir.join(files::ATTESTATION_ROOTS))?,
            bare_key_profiles: dep.config.bare_key_profiles.clone(),
            tpm_roots: trusted_cas(&dep.dir.join(files::TPM_ROOTS))?,
        },
        Arc::new(move |serial| changed.changed(serial)),
    ));
    let root_crl = std::fs::read(dep.dir.join(files::ROOT_CRL))
        .ok()
        .map(bytes::Bytes::from);
    let app = Arc::new(App {
        ra,
        status,
        metrics,
        root_crl: RwLock::new(root_crl),
    });

    let tls = match args.tls_listen {
        Some(addr) => {
            let resolver = Arc::new(Reloadable(RwLock::new(Arc::new(certified_key(&dep.dir)?))));
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(
                Arc::clone(&resolver) as Arc<dyn rustls::server::ResolvesServerCert>
            );
            Some((addr, Arc::new(config), resolver))
        }
        None => None,
    };
    let portal_config = match args.portal_listen {
        Some(_) => {
            let origin = match &args.portal_origin {
                Some(o) => Some(
                    tessera_issuer_portal::Url::parse(o)
                        .with_context(|| format!("--portal-origin {o}"))?,
                ),
                None => None,
            };
            let authenticators = tessera_issuer_portal::Authenticator::load_dir(
                &dep.dir.join(files::PASSKEY_AUTHENTICATORS),
            )
            .map_err(anyhow::Error::msg)?;
            tessera_issuer_portal::Config {
                origin,
                authenticators,
            }
        }
        None => tessera_issuer_portal::Config::default(),
    };
    // One server certificate for the API's and the portal's HTTPS, renewed in place.
    let portal = match args.portal_listen {
        Some(addr) => {
            let resolver = match &tls {
                Some((_, _, r)) => Arc::clone(r),
                None => Arc::new(Reloadable(RwLock::new(Arc::new(certified_key(&dep.dir)?)))),
            };
            Some((addr, portal_tls(&dep, &resolver)?, resolver))
        }
        None => None,
    };
    let maintenance = {
        let (dep, clock, stop) = (Arc::clone(&dep), Arc::clone(&clock), Arc::clone(&stop));
        let app = Arc::clone(&app);
        let resolver = tls
            .as_ref()
            .map(|(_, _, r)| Arc::clone(r))
            .or_else(|| portal.as_ref().map(|(_, _, r)| Arc::clone(r)));
        let every = Duration::from_secs(args.checkpoint_interval.max(1));
        std::thread::Builder::new()
            .name("maintenance".into())
            .spawn(move || {
                maintain(
                    &dep,
                    &app,
                    clock.as_ref(),
                    &stop,
                    every,
                    resolver.as_deref(),
                )
            })
            .context("starting the maintenance thread")?
    };

    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let api_in_clear = args.tls_listen.is_none() && loopback;
    let plain = if api_in_clear {
        tessera_issuer_web::router(Arc::clone(&app))
    } else {
        tessera_issuer_web::public_router(Arc::clone(&app))
    };
    let tls_task = match tls {
        Some((addr, config, _)) => {
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind(addr))
                .with_context(|| format!("listening on {addr}"))?;
            let bound = listener.local_addr()?;
            let router = tessera_issuer_web::router(Arc::clone(&app));
            let stopped = stopped.clone();
            println!("tessera-issuer API on https://{bound}");
            Some(runtime.spawn(tessera_issuer_web::serve::tls(
                listener, config, router, stopped,
            )))
        }
        None => None,
    };
    let portal_task = match portal {
        Some((addr, config, _)) => {
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind(addr))
                .with_context(|| format!("listening on {addr}"))?;
            let bound = listener.local_addr()?;
            let router = tessera_issuer_portal::router(Arc::clone(&app.ra), portal_config.clone());
            let stopped = stopped.clone();
            println!("tessera-issuer admin portal on https://{bound}/admin/");
            Some(runtime.spawn(tessera_issuer_web::serve::tls(
                listener, config, router, stopped,
            )))
        }
        None => None,
    };
    let (bound, workers) = tessera_issuer_web::serve::plain_per_core(args.listen, plain, &stopped)?;
    println!(
        "tessera-issuer serving on http://{bound} (public URL {}{})",
        args.public_url.as_deref().unwrap_or(&dep.config.public_url),
        if api_in_clear {
            ""
        } else {
            "; API over HTTPS only"
        }
    );
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    tracing::info!("stopping: no new connections, finishing requests in flight");
    let _ = stopping.send(true);
    for w in workers {
        let _ = w.join();
    }
    for t in [tls_task, portal_task].into_iter().flatten() {
        let _ = runtime.block_on(t);
    }
    stop.store(true, Ordering::SeqCst);
    let _ = follower.join();
    let _ = maintenance.join();
    Ok(())
}

/// Renews the issuer's own certificates when due (hourly), signs audit checkpoints (every
/// `checkpoint_every`, when the chain grew), revokes carriers whose deadline passed, and
/// reconciles carriers with their certificates, until `stop`.
fn maintain(
    dep: &Deployment,
    app: &App,
    clock: &dyn Clock,
    stop: &AtomicBool,
    checkpoint_every: Duration,
    tls: Option<&Reloadable>,
) {
    let renew_every = Duration::from_secs(3600);
    let mut next_renewal = Instant::now() + renew_every;
    let mut next_checkpoint = Instant::now() + checkpoint_every;
    // Deadlines are swept every few seconds (a suspension that ran out is a revocation
    // relying parties must see promptly); carrier states and certificate statuses are
    // reconciled hourly and at start.
    let sweep_every = Duration::from_secs(5);
    let mut next_sweep = Instant::now();
    let reconcile_every = Duration::from_secs(3600);
    let mut next_reconcile = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        let now = Instant::now();
        if now >= next_renewal {
            next_renewal = now + renew_every;
            match crate::renew::renew(dep, clock, false) {
                Ok(renewed) => {
                    for r in &renewed {
                        tracing::info!(what = r.what, until = r.until, "renewed");
                    }
                    if renewed.iter().any(|r| r.what == "root-crl") {
                        match std::fs::read(dep.dir.join(files::ROOT_CRL)) {
                            Ok(crl) => {
                                *app.root_crl.write().unwrap_or_else(|p| p.into_inner()) =
                                    Some(bytes::Bytes::from(crl))
                            }
                            Err(e) => tracing::error!(error = %e, "reading the renewed root CRL"),
                        }
                    }
                    if renewed.iter().any(|r| r.what == "tls-server") {
                        if let Some(tls) = tls {
                            match certified_key(&dep.dir) {
                                Ok(k) => {
                                    *tls.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(k)
                                }
                                Err(e) => {
                                    tracing::error!(error = %e, "loading the renewed HTTPS certificate")
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "renewal failed; retrying in an hour"),
            }
        }
        if now >= next_sweep {
            next_sweep = now + sweep_every;
            match app.ra.sweep_deadlines() {
                Ok(swept) => {
                    for carrier in &swept.revoked {
                        tracing::info!(carrier, "deadline passed: carrier revoked");
                    }
                }
                Err(e) => tracing::error!(error = %e, "sweeping deadlines"),
            }
        }
        if now >= next_reconcile {
            next_reconcile = now + reconcile_every;
            // Portal sessions ended (or past their limit) a month ago: gone from the
            // table; their sign-in and end stay in the audit trail.
            match app.ra.purge_sessions(30) {
                Ok(0) => {}
                Ok(n) => tracing::info!(sessions = n, "old portal sessions purged"),
                Err(e) => tracing::warn!(error = %e, "purging old portal sessions"),
            }
            match app.ra.reconcile_all() {
                Ok(differences) => {
                    for d in &differences {
                        tracing::error!(
                            carrier = d.carrier_id,
                            state = %d.carrier_state,
                            serial = %d.serial,
                            certificate = d.certificate_status,
                            "reconciliation: carrier state and certificate status disagree"
                        );
                    }
                }
                Err(e) => tracing::error!(error = %e, "reconciling carriers and certificates"),
            }
        }
        if now >= next_checkpoint {
            next_checkpoint = now + checkpoint_every;
            match crate::audit::make_if_grown(dep, clock) {
                Ok(Some(c)) => {
                    tracing::info!(records = c.checkpoint.records, "audit checkpoint signed")
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "signing an audit checkpoint"),
            }
        }
    }
}

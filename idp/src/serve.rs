//! `tessera-idp serve`: the IdP's HTTP service. Today it publishes our signed metadata at
//! `/saml/metadata` (signed at start and again every six hours, well inside its validity),
//! with `/healthz`, `/readyz` (the token answers, the metadata is valid) and `/metrics`
//! (Prometheus text) as the issuer has them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tessera_issuer_types::clock::Clock;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::keys::Signer;
use crate::metadata;
use crate::parties::{self, Refreshed, Registry as Parties};

/// How often the metadata is signed afresh.
const RESIGN_EVERY: Duration = Duration::from_secs(6 * 3600);

struct Metrics {
    registry: Registry,
    metadata_served: Counter,
    metadata_signed: Counter,
    signing_failures: Counter,
    federation_refreshes: Counter,
    federation_refusals: Counter,
    relying_parties: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("tessera_idp");
        let (metadata_served, metadata_signed, signing_failures) =
            (Counter::default(), Counter::default(), Counter::default());
        registry.register(
            "metadata_served",
            "Metadata documents served",
            metadata_served.clone(),
        );
        registry.register(
            "metadata_signed",
            "Times the metadata was signed",
            metadata_signed.clone(),
        );
        registry.register(
            "signing_failures",
            "Signatures the token failed to make",
            signing_failures.clone(),
        );
        let (federation_refreshes, federation_refusals, relying_parties) =
            (Counter::default(), Counter::default(), Gauge::default());
        registry.register(
            "federation_refreshes",
            "Federation aggregates taken",
            federation_refreshes.clone(),
        );
        registry.register(
            "federation_refusals",
            "Federation aggregates refused (the last good copy stays in use)",
            federation_refusals.clone(),
        );
        registry.register(
            "relying_parties",
            "Relying parties known and valid",
            relying_parties.clone(),
        );
        Self {
            registry,
            metadata_served,
            metadata_signed,
            signing_failures,
            federation_refreshes,
            federation_refusals,
            relying_parties,
        }
    }
}

/// The signed metadata and until when it is valid (since the epoch).
struct Published {
    xml: Vec<u8>,
    valid_until: Duration,
}

struct Idp {
    clock: Arc<dyn Clock>,
    dir: PathBuf,
    config: Config,
    signer: Signer,
    metadata: RwLock<Published>,
    parties: Parties,
    metrics: Metrics,
}

impl Idp {
    /// Fetches the federation's aggregate and takes it if it verifies (else keeps the
    /// last good copy), counting either way.
    fn refresh_federation(&self) {
        let Some(federation) = &self.config.federation else {
            return;
        };
        let now = self.clock.now();
        let outcome = match parties::fetch(&self.dir, &federation.source) {
            Ok(bytes) => self.parties.refresh(&self.dir, federation, &bytes, now),
            Err(e) => Refreshed::Refused(format!("{e:#}")),
        };
        match outcome {
            Refreshed::Taken(n) => {
                self.metrics.federation_refreshes.inc();
                tracing::info!(relying_parties = n, "federation metadata taken");
            }
            Refreshed::Refused(why) => {
                self.metrics.federation_refusals.inc();
                tracing::warn!(%why, "federation metadata refused; the last good copy stays in use");
            }
        }
        self.metrics
            .relying_parties
            .set(i64::try_from(self.parties.count(now)).unwrap_or(i64::MAX));
    }

    fn sign_metadata(&self) -> Result<()> {
        let now = self.clock.now();
        match metadata::signed(&self.dir, &self.config, &self.signer, now) {
            Ok(xml) => {
                let valid_until =
                    now + Duration::from_secs(u64::from(self.config.metadata_valid_days) * 86_400);
                *self.metadata.write().unwrap_or_else(|p| p.into_inner()) =
                    Published { xml, valid_until };
                self.metrics.metadata_signed.inc();
                Ok(())
            }
            Err(e) => {
                self.metrics.signing_failures.inc();
                Err(e)
            }
        }
    }
}

/// Runs the IdP until SIGINT or SIGTERM.
pub fn run(dir: &Path, listen: SocketAddr, shares: &[PathBuf]) -> Result<()> {
    let config = Config::load(dir)?;
    let signer = Signer::open(dir, &config, shares)?;
    let metrics = Metrics::new();
    let clock: Arc<dyn Clock> = Arc::new(tessera_issuer_types::SystemClock);
    let now = clock.now();
    let xml = metadata::signed(dir, &config, &signer, now)?;
    metrics.metadata_signed.inc();
    let parties = Parties::load(dir, &config, now)?;
    metrics
        .relying_parties
        .set(i64::try_from(parties.count(now)).unwrap_or(i64::MAX));
    let idp = Arc::new(Idp {
        parties,
        clock,
        dir: dir.to_owned(),
        metadata: RwLock::new(Published {
            xml,
            valid_until: now + Duration::from_secs(u64::from(config.metadata_valid_days) * 86_400),
        }),
        config,
        signer,
        metrics,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let local = listener.local_addr()?;
        println!("tessera-idp on http://{local} (metadata at /saml/metadata)");
        {
            let idp = Arc::clone(&idp);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(RESIGN_EVERY);
                every.tick().await;
                loop {
                    every.tick().await;
                    let idp = Arc::clone(&idp);
                    match tokio::task::spawn_blocking(move || idp.sign_metadata()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "signing the metadata failed; the last copy is served until it expires"),
                        Err(e) => tracing::error!(error = %e, "signing the metadata panicked"),
                    }
                }
            });
        }
        if let Some(federation) = idp.config.federation.clone() {
            let idp = Arc::clone(&idp);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(
                    u64::from(federation.refresh_minutes) * 60,
                ));
                loop {
                    every.tick().await;
                    let idp = Arc::clone(&idp);
                    if let Err(e) = tokio::task::spawn_blocking(move || idp.refresh_federation()).await {
                        tracing::error!(error = %e, "refreshing the federation metadata panicked");
                    }
                }
            });
        }
        axum::serve(listener, router(idp))
            .with_graceful_shutdown(shutdown())
            .await
            .context("serving")
    })
}

fn router(idp: Arc<Idp>) -> Router {
    Router::new()
        .route("/saml/metadata", get(saml_metadata))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(idp)
}

async fn saml_metadata(State(idp): State<Arc<Idp>>) -> Response {
    let xml = idp
        .metadata
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .xml
        .clone();
    idp.metrics.metadata_served.inc();
    (
        [
            (header::CONTENT_TYPE, "application/samlmetadata+xml"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        xml,
    )
        .into_response()
}

async fn readyz(State(idp): State<Arc<Idp>>) -> Response {
    let fresh = idp
        .metadata
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .valid_until
        > idp.clock.now();
    let token = {
        let idp = Arc::clone(&idp);
        tokio::task::spawn_blocking(move || idp.signer.ping())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|r| r)
    };
    match (token, fresh) {
        (Ok(()), true) => (StatusCode::OK, "ready\n").into_response(),
        (Err(e), _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the token does not answer: {e:#}\n"),
        )
            .into_response(),
        (Ok(()), false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the published metadata has expired (signing has failed since)\n",
        )
            .into_response(),
    }
}

async fn metrics(State(idp): State<Arc<Idp>>) -> Response {
    let mut body = String::new();
    match encode(&mut body, &idp.metrics.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn shutdown() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

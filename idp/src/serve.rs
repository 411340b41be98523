//! `tessera-idp serve`: the IdP's HTTP service. The SSO host (plain HTTP on `--listen`,
//! for loopback or a TLS-terminating proxy): our signed metadata at `/saml/metadata`
//! (signed at start and again every six hours, well inside its validity), SSO at
//! `/saml/sso` (`sso`), the user's page `/my` and the administrators' API (`admin`),
//! `/healthz`, `/readyz` (the token answers, the metadata is valid, the database answers)
//! and `/metrics` (Prometheus text) as the issuer has them. The card login host (TLS with
//! client certificates, on `--login-listen`: `login`). And in the background: the
//! federation refresh, and the follower of the issuer's status feed, which ends the
//! sessions of a suspended or revoked certificate within seconds.

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
use crate::login::Login;
use crate::metadata;
use crate::parties::{self, Refreshed, Registry as Parties};

/// How often the issuer's status feed is read.
const FEED_EVERY: Duration = Duration::from_secs(1);
/// How old the last good reading of the status feed may be before sessions stop
/// answering (every request then needs a new login, whose status check is live).
const FEED_STALE: i64 = 30;
/// How often due logout notices are sent.
const LOGOUT_EVERY: Duration = Duration::from_secs(1);

/// How often the metadata is signed afresh.
const RESIGN_EVERY: Duration = Duration::from_secs(6 * 3600);

pub(crate) struct Metrics {
    registry: Registry,
    metadata_served: Counter,
    metadata_signed: Counter,
    pub(crate) signing_failures: Counter,
    federation_refreshes: Counter,
    federation_refusals: Counter,
    relying_parties: Gauge,
    pub(crate) requests: Counter,
    pub(crate) requests_refused: Counter,
    pub(crate) responses: Counter,
    pub(crate) logins: Counter,
    pub(crate) login_refusals: Counter,
    pub(crate) sessions_ended: Counter,
    feed_failures: Counter,
    pub(crate) logouts_sent: Counter,
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
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let requests = counter(&mut registry, "sso_requests", "AuthnRequests accepted");
        let requests_refused = counter(
            &mut registry,
            "sso_refusals",
            "AuthnRequests refused (shown to the user; nothing sent)",
        );
        let responses = counter(&mut registry, "sso_responses", "Successful Responses sent");
        let logins = counter(&mut registry, "logins", "Card logins");
        let login_refusals = counter(&mut registry, "login_refusals", "Card logins refused");
        let sessions_ended = counter(
            &mut registry,
            "sessions_ended",
            "Sessions ended by the status feed, the user or an administrator",
        );
        let feed_failures = counter(
            &mut registry,
            "status_feed_failures",
            "Times the issuer's status feed could not be read",
        );
        let logouts_sent = counter(
            &mut registry,
            "logout_notices",
            "Logout notices to relying parties finished (answered, not needed, or given up)",
        );
        Self {
            logouts_sent,
            requests,
            requests_refused,
            responses,
            logins,
            login_refusals,
            sessions_ended,
            feed_failures,
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

pub(crate) struct Idp {
    pub(crate) clock: Arc<dyn Clock>,
    dir: PathBuf,
    pub(crate) config: Config,
    pub(crate) signer: Signer,
    metadata: RwLock<Published>,
    pub(crate) parties: Parties,
    pub(crate) metrics: Metrics,
    pub(crate) store: tessera_idp_store::Store,
    pub(crate) login: Option<Login>,
    /// The LoA URI we assert.
    pub(crate) loa: &'static str,
    /// When the issuer's status feed was last read to its end (seconds since the epoch).
    feed_ok: std::sync::atomic::AtomicI64,
    /// Single Logout's client for relying parties' SOAP endpoints.
    pub(crate) logout: crate::logout::Sender,
}

impl Idp {
    /// Whether browsers reach the SSO host over https (the cookies' flags follow).
    pub(crate) fn https(&self) -> bool {
        self.config.base_url.starts_with("https://")
    }

    /// Reads the issuer's status feed from where this IdP left it, page by page until it
    /// is current, and ends the sessions of every certificate held or revoked since; the
    /// position moves in the same transaction, so two servers on one database never
    /// handle an event twice and a crash never skips one. A new IdP (position 0) starts
    /// at the head: it has no sessions that older events could concern.
    fn follow_feed(&self) -> Result<usize> {
        let Some(login) = self.login.as_ref().filter(|l| l.issuer.has_token()) else {
            return Ok(0);
        };
        let mut ended = 0;
        loop {
            let cursor = self.store.read(|tx| tx.feed_cursor())?;
            let feed = login.issuer.feed(cursor)?;
            if cursor == 0 || feed.head < cursor {
                if feed.head < cursor {
                    self.metrics.feed_failures.inc();
                    tracing::error!(
                        head = feed.head,
                        cursor,
                        "the issuer's status feed is behind this IdP's position (the issuer restored from a backup?); following it from its head now"
                    );
                }
                self.store.write(|tx| {
                    if tx.feed_cursor()? == cursor {
                        tx.set_feed_cursor(feed.head)?;
                    }
                    Ok::<_, tessera_idp_store::StoreError>(())
                })?;
                self.feed_ok.store(
                    crate::sso::secs(self.clock.now()),
                    std::sync::atomic::Ordering::Relaxed,
                );
                return Ok(ended);
            }
            let Some(last) = feed.events.last().map(|e| e.seq) else {
                self.feed_ok.store(
                    crate::sso::secs(self.clock.now()),
                    std::sync::atomic::Ordering::Relaxed,
                );
                return Ok(ended);
            };
            let at = crate::sso::secs(self.clock.now());
            let page = self.store.write(|tx| {
                if tx.feed_cursor()? != cursor {
                    return Ok(0); // another server took these
                }
                let mut page = 0;
                for e in &feed.events {
                    let reason = match e.change.as_str() {
                        "revoked" => "certificate revoked",
                        "held" => "certificate suspended",
                        "released" => {
                            tx.serial_released(&e.serial)?;
                            continue;
                        }
                        _ => continue,
                    };
                    tx.serial_ended(&e.serial, e.seq)?;
                    for s in tx.end_sessions_of(&e.serial, reason, at)? {
                        let details = serde_json::json!({
                            "session": s.id, "serial": e.serial, "reason": reason, "feed_seq": e.seq,
                        });
                        tx.audit("status-feed", "session.ended", &details.to_string(), at)?;
                        page += 1;
                    }
                }
                tx.set_feed_cursor(last)?;
                Ok::<_, tessera_idp_store::StoreError>(page)
            })?;
            self.metrics.sessions_ended.inc_by(page as u64);
            ended += page;
            if feed.events.len() < crate::issuer::FEED_PAGE {
                self.feed_ok.store(at, std::sync::atomic::Ordering::Relaxed);
                return Ok(ended);
            }
        }
    }

    /// Whether the status feed was read successfully lately: sessions answer only then
    /// (a revocation the IdP cannot hear about must not leave sessions running).
    pub(crate) fn feed_is_current(&self) -> bool {
        if self.login.is_none() {
            return true;
        }
        let last = self.feed_ok.load(std::sync::atomic::Ordering::Relaxed);
        crate::sso::secs(self.clock.now()).saturating_sub(last) <= FEED_STALE
    }

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
pub fn run(
    dir: &Path,
    listen: SocketAddr,
    login_listen: SocketAddr,
    shares: &[PathBuf],
) -> Result<()> {
    let config = Config::load(dir)?;
    let signer = Signer::open(dir, &config, shares)?;
    let store = match &config.database {
        tessera_issuer_types::config::DatabaseConfig::Sqlite { path } => {
            tessera_idp_store::Store::open(tessera_idp_store::Location::Sqlite(&Config::resolve(
                dir, path,
            )))
        }
        tessera_issuer_types::config::DatabaseConfig::Postgres {
            url,
            password_file: None,
        } => tessera_idp_store::Store::open(tessera_idp_store::Location::Postgres(url)),
        tessera_issuer_types::config::DatabaseConfig::Postgres {
            password_file: Some(_),
            ..
        } => anyhow::bail!(
            "database.password_file: not read by the IdP; give the password to libpq instead (a ~/.pgpass file, or PGPASSFILE)"
        ),
    }
    .context("opening the IdP database")?;
    let loa = metadata::loa(&config);
    let login = match &config.login {
        None => None,
        Some(l) => Some(Login::open(
            dir,
            &config,
            l,
            signer.another_session()?,
            loa,
        )?),
    };
    let logout = crate::logout::Sender::new(
        config
            .logout_ca
            .as_ref()
            .map(|ca| Config::resolve(dir, ca))
            .as_deref(),
    )?;
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
        store,
        login,
        loa,
        feed_ok: std::sync::atomic::AtomicI64::new(0),
        logout,
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
        let login_listener = match &idp.login {
            None => None,
            Some(_) => Some(
                tokio::net::TcpListener::bind(login_listen)
                    .await
                    .with_context(|| format!("listening on {login_listen} (the card login)"))?,
            ),
        };
        // One line, once both listen (scripts and tests read it, then may stop reading).
        match &login_listener {
            Some(l) => println!(
                "tessera-idp on http://{local} (metadata at /saml/metadata); card login on https://{} (client certificate required)",
                l.local_addr()?
            ),
            None => println!(
                "tessera-idp on http://{local} (metadata at /saml/metadata); no card login set up (init --card-ca …), so requests cannot be answered yet"
            ),
        }
        every(
            &idp,
            RESIGN_EVERY,
            true,
            Idp::sign_metadata,
            "signing the metadata (the last copy is served until it expires)",
        );
        if let Some(federation) = &idp.config.federation {
            let period = Duration::from_secs(u64::from(federation.refresh_minutes) * 60);
            every(
                &idp,
                period,
                false,
                |idp| {
                    idp.refresh_federation();
                    Ok(())
                },
                "refreshing the federation metadata",
            );
        }
        every(
            &idp,
            LOGOUT_EVERY,
            false,
            |idp| idp.send_logouts().map(drop),
            "sending logout notices",
        );
        if let Some(login_listener) = login_listener {
            tokio::spawn(crate::login::serve(Arc::clone(&idp), login_listener, shutdown()));
            every(
                &idp,
                FEED_EVERY,
                false,
                |idp| {
                    idp.follow_feed()
                        .map(drop)
                        .inspect_err(|_| {
                            idp.metrics.feed_failures.inc();
                        })
                },
                "reading the issuer's status feed",
            );
        }
        axum::serve(
            listener,
            router(idp).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown())
        .await
        .context("serving")
    })
}

/// Runs `job` on a blocking thread every `period` (first after one period when
/// `wait_first`, else at once), never two at a time (a slow run delays the next); a
/// failure is logged and the next period tries again.
fn every(
    idp: &Arc<Idp>,
    period: Duration,
    wait_first: bool,
    job: fn(&Idp) -> Result<()>,
    what: &'static str,
) {
    let idp = Arc::clone(idp);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if wait_first {
            every.tick().await;
        }
        loop {
            every.tick().await;
            let idp = Arc::clone(&idp);
            match tokio::task::spawn_blocking(move || job(&idp)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "{what} failed; trying again")
                }
                Err(e) => tracing::error!(error = %e, "{what} panicked"),
            }
        }
    });
}

fn router(idp: Arc<Idp>) -> Router {
    Router::new()
        .route("/saml/metadata", get(saml_metadata))
        .route(
            "/saml/sso",
            get(crate::sso::sso_redirect).post(crate::sso::sso_post),
        )
        .route("/saml/continue", get(crate::sso::continue_))
        .route("/saml/consent", axum::routing::post(crate::sso::consent))
        .route("/saml/failed", get(crate::sso::failed))
        .route("/static/idp.css", get(stylesheet))
        .route("/static/post.js", get(script))
        .merge(crate::admin::routes())
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

pub(crate) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        crate::web::CSS,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        crate::web::POST_JS,
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

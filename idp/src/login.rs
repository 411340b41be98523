//! The card login host: TLS in-process (rustls) that requires a client certificate
//! chained to one of our issuing CAs, then `card::check` on it (usage, policy → LoA,
//! OCSP with the CRL as fallback, fail closed: K7.1–7.2), then the person and carrier
//! behind it from the issuer's API. A login makes a session and a one-time ticket (a
//! minute) that the browser carries back to the SSO host, which sets the session cookie.
//!
//! The host's TLS key is in the token like the SAML keys. Every login is a full handshake
//! (no TLS session resumption, and the connection is closed after the login), so a login
//! always means the card signed just now: what ForceAuthn asks for.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::CertificateDer;
use tessera_idp_store::Session;
use tessera_issuer_types::config::KeyAlg;
use tessera_issuer_types::lifecycle::{CarrierState, PersonState};

use crate::card;
use crate::config::{Config, Login as LoginConfig};
use crate::issuer::{HolderError, Issuer};
use crate::serve::Idp;
use crate::sso::{self, Browser};
use crate::web;

/// How long the hand-over ticket is good for.
const TICKET_LIFE: i64 = 60;
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once (each needs a signature from the token before any
/// client certificate is seen): more wait, rather than starve the SSO host.
const HANDSHAKES: usize = 64;

/// The login host's parts.
pub(crate) struct Login {
    pub base_url: String,
    pub issuer: Issuer,
    pub trust: card::Trust,
    pub tls: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Login {
    /// Sets up the login host from the configuration, with a token session of its own for
    /// the TLS key (handshakes never wait behind SAML signing).
    pub(crate) fn open(
        dir: &std::path::Path,
        config: &Config,
        login: &LoginConfig,
        token: tessera_hsm::Token,
        loa: &str,
    ) -> Result<Self> {
        let mut cas = Vec::new();
        for ca in &login.card_cas {
            cas.push(crate::keys::certificate_file(&Config::resolve(dir, ca))?);
        }
        let trust = card::Trust {
            issuing_cas: cas.clone(),
            policy: login
                .card_policy
                .parse()
                .map_err(|e| anyhow!("login.card_policy: {e}"))?,
            loa: loa.to_owned(),
            ocsp_url: login.ocsp_url.clone(),
            skew: Duration::from_secs(60),
            max_status_age: Duration::from_secs(3600),
            max_crl_age: Duration::from_secs(3600),
            require_nonce: true,
            timeout: Duration::from_secs(5),
        };
        let issuer = Issuer::new(
            &config.issuer_url,
            &Config::resolve(dir, &login.issuer_token),
            login
                .issuer_ca
                .as_ref()
                .map(|ca| Config::resolve(dir, ca))
                .as_deref(),
        )?;
        if !issuer.has_token() {
            tracing::warn!(
                file = %Config::resolve(dir, &login.issuer_token).display(),
                "no issuer token yet: cards cannot log in until an officer with the identity_provider role's token is put there"
            );
        }
        let tls = tls_config(dir, login, token, &cas)?;
        Ok(Self {
            base_url: login.base_url.clone(),
            issuer,
            trust,
            tls,
        })
    }
}

/// The TLS key in the token, as rustls signs with it.
struct TokenKey {
    token: Arc<Mutex<tessera_hsm::Token>>,
    label: String,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("label", &self.label)
            .finish()
    }
}

impl rustls::sign::SigningKey for TokenKey {
    fn choose_scheme(
        &self,
        offered: &[rustls::SignatureScheme],
    ) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&rustls::SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| {
                Box::new(TokenSigner {
                    token: Arc::clone(&self.token),
                    label: self.label.clone(),
                }) as Box<dyn rustls::sign::Signer>
            })
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::ECDSA
    }
}

struct TokenSigner {
    token: Arc<Mutex<tessera_hsm::Token>>,
    label: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("label", &self.label)
            .finish()
    }
}

impl rustls::sign::Signer for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        // The token hashes with SHA-256 and gives the DER signature TLS wants. A token call
        // blocks (an HSM may be slow): the runtime moves other work off this thread.
        let sign = || {
            self.token
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sign(&self.label, KeyAlg::P256, message)
                .map_err(|e| rustls::Error::General(format!("the token's TLS signature: {e:#}")))
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(sign)
            }
            _ => sign(),
        }
    }

    fn scheme(&self) -> rustls::SignatureScheme {
        rustls::SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

fn tls_config(
    dir: &std::path::Path,
    login: &LoginConfig,
    token: tessera_hsm::Token,
    cas: &[Vec<u8>],
) -> Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots
            .add(CertificateDer::from(ca.clone()))
            .context("an issuing CA as the login host's client-certificate root")?;
    }
    // A client certificate is required: the verifier chains it to our issuing CAs (and
    // checks its validity and clientAuth); `card::check` then does the rest.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .context("the login host's client-certificate verifier")?;
    let path = Config::resolve(dir, &login.tls_certificate);
    let chain = CertificateDer::pem_file_iter(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    let key = Arc::new(TokenKey {
        token: Arc::new(Mutex::new(token)),
        label: login.tls_key.clone(),
    });
    let certified = Arc::new(rustls::sign::CertifiedKey::new(chain, key));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(OneCertificate(certified)));
    // Every login a full handshake: the card signs each time.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The login host's one certificate, whatever name the client asks for.
#[derive(Debug)]
struct OneCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for OneCertificate {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// The client's certificate and address, as the login handler sees them.
#[derive(Debug, Clone)]
struct Peer {
    certificate: Option<Vec<u8>>,
    address: SocketAddr,
}

/// Serves the login host on `listener` until `stop` resolves.
pub(crate) async fn serve(
    idp: Arc<Idp>,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()>,
) {
    let Some(login) = &idp.login else { return };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&login.tls));
    let router = Router::new()
        .route("/login", get(login_page))
        .route("/static/idp.css", get(crate::serve::stylesheet))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Arc::clone(&idp));
    let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES));
    tokio::pin!(stop);
    loop {
        let (tcp, address) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a login connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => return,
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
            return;
        };
        tokio::spawn(async move {
            // A failed handshake (no certificate, another CA) concerns that client only.
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop(permit);
            let stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%address, error = %e, "login handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let peer = Peer {
                certificate: stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.as_ref().to_vec()),
                address,
            };
            let service = TowerToHyperService::new(router.layer(Extension(peer)));
            // One request per connection: a later login on a kept-alive connection would
            // not make the card sign again (ForceAuthn, a shared PC's next user).
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().keep_alive(false);
            let _ = builder
                .http1_only()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[derive(Debug, serde::Deserialize)]
struct LoginQuery {
    p: String,
}

async fn login_page(
    State(idp): State<Arc<Idp>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let b = Browser::of(&headers, peer.address, idp.https());
    // A login is a page the user goes to, never something another site embeds (an image
    // or a script would make the card log in behind the user's back). Browsers say which
    // (Fetch Metadata); clients that say nothing (gnutls-cli, curl) are let through.
    let embedded = headers
        .get("sec-fetch-dest")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|d| d != "document");
    let mut r = if embedded {
        web::error(
            StatusCode::FORBIDDEN,
            b.tr,
            "a login is not embedded in another page",
        )
    } else {
        sso::blocking(idp, move |idp| {
            log_in(idp, &b, peer.certificate.as_deref(), &q.p)
        })
        .await
    };
    // The next login is a new connection, so a new handshake.
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    r
}

fn log_in(idp: &Idp, b: &Browser, certificate: Option<&[u8]>, pending: &str) -> Response {
    let Some(login) = &idp.login else {
        return web::error(StatusCode::SERVICE_UNAVAILABLE, b.tr, "no card login here");
    };
    let principal =
        match sso::pending_principal(idp, pending) {
            Ok(Some(p)) => p,
            Ok(None) => return web::error(
                StatusCode::BAD_REQUEST,
                b.tr,
                "this login has expired or was finished; go back to the e-service and start again",
            ),
            Err(e) => return sso::unavailable(b, &e),
        };
    let refused = |serial: Option<&str>, why: String, status: StatusCode| {
        idp.metrics.login_refusals.inc();
        sso::audit_alone(
            idp,
            &b.address,
            "login.refused",
            serde_json::json!({ "serial": serial, "reason": why }),
        );
        // The way back tells the relying party (AuthnFailed), as the profile wants.
        let back = format!("{}/saml/failed?p={pending}", idp.config.base_url);
        web::error_with_way_back(
            status,
            b.tr,
            &format!("{}: {why}", b.tr.card_refused),
            Some(&back),
        )
    };
    let Some(certificate) = certificate else {
        return refused(
            None,
            "no card certificate was presented".into(),
            StatusCode::FORBIDDEN,
        );
    };
    let now = idp.clock.now();
    let card = match card::check(certificate, &login.trust, now) {
        Ok(c) => c,
        Err(e) => return refused(None, e.to_string(), StatusCode::FORBIDDEN),
    };
    let holder = match login.issuer.holder(&card.serial) {
        Ok(h) => h,
        Err(HolderError::Unknown) => {
            return refused(
                Some(&card.serial),
                "the issuer knows no holder of this card".into(),
                StatusCode::FORBIDDEN,
            )
        }
        Err(HolderError::Unavailable(e)) => {
            tracing::error!(error = %e, "the issuer could not be asked who holds a card");
            return refused(
                Some(&card.serial),
                "the issuer cannot be reached just now".into(),
                StatusCode::SERVICE_UNAVAILABLE,
            );
        }
    };
    if !holder.certificate_good {
        return refused(
            Some(&card.serial),
            "the issuer says the certificate is revoked or suspended".into(),
            StatusCode::FORBIDDEN,
        );
    }
    if holder.carrier_state != CarrierState::Active || holder.person_state != PersonState::Proofed {
        return refused(
            Some(&card.serial),
            format!(
                "the card is {} and its holder {}",
                holder.carrier_state, holder.person_state
            ),
            StatusCode::FORBIDDEN,
        );
    }
    if let Some(why) = sso::principal_mismatch(idp, &principal, &holder) {
        return refused(Some(&card.serial), why, StatusCode::FORBIDDEN);
    }
    let at = sso::secs(now);
    let session = Session {
        id: web::random_token()[..32].to_owned(),
        cookie_hash: None,
        person_id: holder.person_id.clone(),
        serial: card.serial.clone(),
        loa: card.loa.clone(),
        holder: match serde_json::to_string(&holder) {
            Ok(h) => h,
            Err(e) => return web::error(StatusCode::INTERNAL_SERVER_ERROR, b.tr, &e.to_string()),
        },
        address: b.address.clone(),
        authn_instant: at,
        expires_at: at + i64::from(idp.config.session_minutes) * 60,
        ended_at: None,
        end_reason: None,
    };
    let ticket = web::random_token();
    let details = serde_json::json!({
        "session": session.id, "serial": card.serial, "subject": card.subject,
        "carrier": holder.carrier_id, "loa": card.loa,
        "status_from": format!("{:?}", card.status_from), "address": b.address,
    });
    let made = idp.store.write(|tx| {
        // The status feed may have said more since the issuer answered: a revocation or
        // hold after that answer refuses this login (and one that comes later ends it).
        if tx
            .ended_at_seq(&card.serial)?
            .is_some_and(|seq| seq > holder.feed_head)
        {
            return Ok(false);
        }
        tx.create_session(&session)?;
        tx.put_ticket(
            &web::sha256_hex(ticket.as_bytes()),
            &session.id,
            pending,
            at + TICKET_LIFE,
        )?;
        tx.audit(&holder.person_id, "login", &details.to_string(), at)?;
        Ok::<_, tessera_idp_store::StoreError>(true)
    });
    match made {
        Ok(true) => {}
        Ok(false) => {
            return refused(
                Some(&card.serial),
                "the certificate was revoked or suspended a moment ago".into(),
                StatusCode::FORBIDDEN,
            )
        }
        Err(e) => return sso::unavailable(b, &e),
    }
    idp.metrics.logins.inc();
    web::redirect(
        &format!(
            "{}/saml/continue?p={pending}&t={ticket}",
            idp.config.base_url
        ),
        &[],
    )
}

//! The routes and their handlers. Blocking work (the database, the token) runs off the
//! async threads; pre-signed OCSP answers are served without touching either.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tessera_issuer_ra::{Actor, Ra};
use tessera_issuer_status::Status;
use tessera_issuer_types::api::{IssueRequest, IssueResponse, RevocationResponse, RevokeRequest};
use tessera_issuer_types::{ErrorCode, ProfileName, RevocationReason, Serial};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// How long a client has to send its request body.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest request body accepted (a certificate request with an attestation is a few
/// kilobytes).
pub const MAX_BODY: usize = 64 * 1024;

/// Every route, as the OpenAPI document names it: the document and the router are checked
/// against this one list (`issuer/tests/tidy.rs`).
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/certificates"),
    ("get", "/api/v1/certificates/{serial}"),
    ("get", "/api/v1/certificates/{serial}/holder"),
    ("get", "/api/v1/status-feed"),
    ("get", "/api/v1/audit"),
    ("post", "/api/v1/certificates/{serial}/revocation"),
    ("delete", "/api/v1/certificates/{serial}/revocation"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/officers"),
    ("get", "/api/v1/officers"),
    ("delete", "/api/v1/officers/{id}"),
    ("post", "/api/v1/officers/{id}/tokens"),
    ("get", "/api/v1/officers/{id}/tokens"),
    ("delete", "/api/v1/officers/{id}/tokens/{token}"),
    ("post", "/api/v1/people"),
    ("get", "/api/v1/people"),
    ("post", "/api/v1/people/import"),
    ("get", "/api/v1/people/{id}"),
    ("post", "/api/v1/people/{id}/proofing"),
    ("post", "/api/v1/people/{id}/employment-end"),
    ("get", "/api/v1/people/{id}/carriers"),
    ("post", "/api/v1/people/{id}/temporary-card"),
    ("post", "/api/v1/people/{id}/substitute-card"),
    ("post", "/api/v1/carriers"),
    ("get", "/api/v1/carriers/{id}"),
    ("post", "/api/v1/carriers/{id}/assignment"),
    ("post", "/api/v1/carriers/{id}/keys"),
    ("post", "/api/v1/carriers/{id}/tpm-challenge"),
    ("post", "/api/v1/carriers/{id}/activation"),
    ("post", "/api/v1/carriers/{id}/suspension"),
    ("delete", "/api/v1/carriers/{id}/suspension"),
    ("post", "/api/v1/carriers/{id}/revocation"),
    ("post", "/api/v1/carriers/{id}/extension"),
    ("post", "/api/v1/carriers/{id}/return"),
    ("post", "/api/v1/carriers/{id}/retirement"),
    ("post", "/api/v1/carriers/{id}/unblock"),
    ("post", "/api/v1/carriers/{id}/puk-release"),
    ("post", "/api/v1/carriers/{id}/puk-rotation"),
    ("post", "/api/v1/carriers/{id}/renewal-challenge"),
    ("post", "/api/v1/carriers/{id}/renewal"),
    ("post", "/api/v1/carriers/{id}/renewal-confirmation"),
    ("get", "/api/v1/approvals"),
    ("post", "/api/v1/approvals/{id}/approval"),
    ("post", "/api/v1/approvals/{id}/refusal"),
    ("get", "/api/v1/reconciliation"),
    ("post", "/api/v1/loss-report"),
    ("post", "/api/v1/bulk-revocations"),
    ("get", "/api/v1/bulk-revocations"),
    ("post", "/api/v1/bulk-revocations/{id}/approval"),
    ("post", "/api/v1/bulk-revocations/{id}/refusal"),
    ("get", "/scim/v2/ServiceProviderConfig"),
    ("get", "/scim/v2/ResourceTypes"),
    ("get", "/scim/v2/ResourceTypes/{id}"),
    ("get", "/scim/v2/Schemas"),
    ("get", "/scim/v2/Schemas/{id}"),
    ("get", "/scim/v2/Users"),
    ("post", "/scim/v2/Users"),
    ("post", "/scim/v2/Users/.search"),
    ("get", "/scim/v2/Users/{id}"),
    ("put", "/scim/v2/Users/{id}"),
    ("patch", "/scim/v2/Users/{id}"),
    ("delete", "/scim/v2/Users/{id}"),
    ("post", "/scim/v2/.search"),
    ("post", "/ocsp"),
    ("get", "/ocsp/{request}"),
    ("get", "/crl/issuing-ca-1.crl"),
    ("get", "/crl/root-ca.crl"),
    ("get", "/ca/issuing-ca-1.crt"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

/// The API description (OpenAPI 3.1), kept beside the handlers it describes.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the handlers share.
pub struct App {
    pub ra: Arc<Ra>,
    pub status: Arc<Status>,
    pub metrics: Arc<Metrics>,
    /// The root's CRL, when this deployment keeps one (an embedded root); replaced when
    /// renewal re-signs it.
    pub root_crl: std::sync::RwLock<Option<Bytes>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

pub(crate) type Shared = Arc<App>;

/// Request IDs (`x-request-id`: the caller's, or a new UUID, echoed on the answer) and a
/// tracing span per request that carries it.
fn observed(router: Router) -> Router {
    let id = HeaderName::from_static("x-request-id");
    router
        // A client that trickles its body is cut off instead of holding a connection (the
        // header timeout covers only the headers). No timeout on the whole request: one that
        // answered 408 while its issuance went on would invite a retry and a second
        // certificate; a request's own waits (token, database) are bounded where they are.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            BODY_TIMEOUT,
        ))
        .layer(PropagateRequestIdLayer::new(id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", id, method = %req.method(), path = %req.uri().path())
            }),
        )
        .layer(SetRequestIdLayer::new(id, MakeRequestUuid))
}

/// Every route: the API, the relying parties' routes, health and metrics.
pub fn router(app: Shared) -> Router {
    observed(
        Router::new()
            .route("/api/v1/certificates", post(issue))
            .route(
                "/api/v1/certificates/{serial}/revocation",
                post(revoke).delete(release_hold),
            )
            .route("/api/v1/openapi.json", get(openapi))
            .merge(crate::registration::routes())
            .merge(crate::scim::routes())
            .merge(public_routes())
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(app),
    )
}

/// Only what relying parties fetch over plain HTTP (CRL, OCSP, CA certificate), health and
/// metrics: for a plain listener when the API is served over HTTPS, or on a non-loopback
/// address, where the API is never served in the clear.
pub fn public_router(app: Shared) -> Router {
    observed(
        public_routes()
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(app),
    )
}

fn public_routes() -> Router<Shared> {
    Router::new()
        .route("/ocsp", post(ocsp_post))
        .route("/ocsp/{*request}", get(ocsp_get))
        .route("/crl/issuing-ca-1.crl", get(crl))
        .route("/crl/root-ca.crl", get(root_crl))
        .route("/ca/issuing-ca-1.crt", get(ca_certificate))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Runs `f` off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

pub(crate) fn bearer(headers: &HeaderMap) -> Result<String, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110 §11.1); SCIM clients send "bearer" too.
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned())
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "a valid Bearer token is required"))
}

pub(crate) fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {MAX_BODY} bytes"),
        ),
        _ => ApiError::new(ErrorCode::MalformedJson, e.body_text()),
    })
}

/// Parses a request body. A well-formed body whose `profile` or `reason` is not one the
/// issuer knows gets that field's own code (`unknown_profile`, `bad_reason`), not
/// `malformed_json`: clients act on the code.
pub(crate) fn json<T: for<'de> serde::Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let field = |name: &str| {
            value
                .as_ref()
                .and_then(|v| v.get(name))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        if let Some(p) = field("profile").filter(|p| p.parse::<ProfileName>().is_err()) {
            return ApiError::new(ErrorCode::UnknownProfile, format!("no profile {p:?}"));
        }
        if let Some(r) = field("reason").filter(|r| r.parse::<RevocationReason>().is_err()) {
            return ApiError::new(ErrorCode::BadReason, format!("no revocation reason {r:?}"));
        }
        ApiError::new(ErrorCode::MalformedJson, e.to_string())
    })
}

fn serial(s: &str) -> Result<Serial, ApiError> {
    Serial::parse(s).map_err(|e| ApiError::new(ErrorCode::BadSerial, e.to_string()))
}

fn authenticated(ra: &Ra, token: &str) -> Result<Actor, ApiError> {
    ra.authenticate(token).map_err(ApiError::from)
}

async fn issue(
    State(app): State<Shared>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let raw = body(raw)?;
    let shared = Arc::clone(&app);
    let issued = blocking(move || {
        let actor = authenticated(&shared.ra, &token)?;
        let req: IssueRequest = json(&raw)?;
        Ok(shared.ra.issue(&actor, &req)?)
    })
    .await?;
    app.metrics.issuances.inc();
    let pem = pem("CERTIFICATE", &issued.der)?;
    Ok((
        StatusCode::CREATED,
        Json(IssueResponse {
            serial: issued.serial,
            certificate: pem,
        }),
    )
        .into_response())
}

fn pem(label: &str, der: &[u8]) -> Result<String, ApiError> {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).map_err(ApiError::internal)
}

async fn revoke(
    State(app): State<Shared>,
    UrlPath(serial_text): UrlPath<String>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let raw = body(raw)?;
    let shared = Arc::clone(&app);
    let (serial, reason) = blocking(move || {
        let actor = authenticated(&shared.ra, &token)?;
        let serial = serial(&serial_text)?;
        let req: RevokeRequest = json(&raw)?;
        shared.ra.revoke(&actor, &serial, req.reason)?;
        Ok((serial, req.reason))
    })
    .await?;
    app.metrics.revocations.inc();
    Ok(Json(RevocationResponse {
        serial,
        status: "revoked".into(),
        reason: Some(reason),
    })
    .into_response())
}

async fn release_hold(
    State(app): State<Shared>,
    UrlPath(serial_text): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let serial = blocking(move || {
        let actor = authenticated(&app.ra, &token)?;
        let serial = serial(&serial_text)?;
        app.ra.release_hold(&actor, &serial)?;
        Ok(serial)
    })
    .await?;
    Ok(Json(RevocationResponse {
        serial,
        status: "good".into(),
        reason: None::<RevocationReason>,
    })
    .into_response())
}

async fn crl(State(app): State<Shared>) -> Result<Response, ApiError> {
    let der = blocking(move || Ok(app.status.crl()?)).await?;
    Ok(([(header::CONTENT_TYPE, "application/pkix-crl")], der).into_response())
}

async fn root_crl(State(app): State<Shared>) -> Response {
    let current = app
        .root_crl
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    match current {
        Some(der) => ([(header::CONTENT_TYPE, "application/pkix-crl")], der).into_response(),
        None => ApiError::new(
            ErrorCode::NotFound,
            "this deployment's root is offline; its CRL is published with it",
        )
        .into_response(),
    }
}

async fn ca_certificate(State(app): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/pkix-cert")],
        app.status.ca_certificate(),
    )
        .into_response()
}

const OCSP_TYPE: (header::HeaderName, &str) = (header::CONTENT_TYPE, "application/ocsp-response");

/// OCSP over POST (RFC 6960 Appendix A.1: the DER request is the body).
async fn ocsp_post(
    State(app): State<Shared>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // An oversized body still gets an OCSP answer (malformedRequest), not an HTTP error.
    let raw = raw.unwrap_or_default();
    ocsp(app, raw).await
}

/// OCSP over GET: the base64 of the DER request, URL-encoded, as the last path part.
async fn ocsp_get(
    State(app): State<Shared>,
    UrlPath(request): UrlPath<String>,
) -> Result<Response, ApiError> {
    use base64ct::Encoding;
    let der = base64ct::Base64::decode_vec(request.trim_start_matches('/')).unwrap_or_default();
    ocsp(app, Bytes::from(der)).await
}

async fn ocsp(app: Shared, request: Bytes) -> Result<Response, ApiError> {
    if let Some(answer) = app.status.ocsp_quick(&request) {
        return Ok(([OCSP_TYPE], answer).into_response());
    }
    let answer = blocking(move || Ok(app.status.ocsp(&request))).await?;
    Ok(([OCSP_TYPE], answer).into_response())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Shared>) -> Response {
    let ready = blocking(move || Ok(app.status.ready())).await;
    match ready {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(why)) => {
            // The details (database or token errors) go to the log, not to whoever asks.
            tracing::warn!(reason = %why, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn metrics(State(app): State<Shared>) -> Response {
    let text = blocking(move || Ok(app.metrics.render(&app.status))).await;
    match text {
        Ok(t) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            t,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

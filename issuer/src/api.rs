//! The issuer's HTTP interface: the issuance API (JSON, Bearer token), the CRL and the CA
//! certificate at the URLs certificates name. Every error reaches the client as a stable
//! code and a message; internals stay in the server's log.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use diesel::prelude::*;
use serde::Deserialize;
use sha2::Digest;

use crate::ca::{IssueError, IssueRequest, IssuingCa, Subject};
use crate::clock::Clock;
use crate::db::schema::{api_tokens, crls};

/// Largest request body accepted (a certificate request is a few kilobytes).
pub const MAX_BODY: usize = 64 * 1024;

/// What the handlers share. The CA's token session and the database connection are used
/// one request at a time; pre-signed OCSP responses are served without either.
pub struct AppState {
    pub inner: Mutex<(IssuingCa, crate::db::Conn)>,
    pub clock: Box<dyn Clock>,
    pub ocsp_cache: crate::ocsp::Cache,
    /// The newest CRL served, by number (a CRL of a million entries is ~44 MB: it is read
    /// from the database once, not per request).
    latest_crl: std::sync::RwLock<Option<(i64, Bytes)>>,
}

impl AppState {
    /// `ocsp_cache_age`: how long a pre-signed OCSP response is served (see
    /// [`crate::ocsp::Cache`]).
    pub fn new(
        ca: IssuingCa,
        conn: crate::db::Conn,
        clock: Box<dyn Clock>,
        ocsp_cache_age: std::time::Duration,
    ) -> Self {
        Self {
            inner: Mutex::new((ca, conn)),
            clock,
            ocsp_cache: crate::ocsp::Cache::new(ocsp_cache_age),
            latest_crl: std::sync::RwLock::new(None),
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The service error, converted at the HTTP edge.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<IssueError> for ApiError {
    fn from(e: IssueError) -> Self {
        let status = match &e {
            IssueError::NotFound(_) => StatusCode::NOT_FOUND,
            IssueError::AlreadyRevoked(_) | IssueError::NotOnHold(_) => StatusCode::CONFLICT,
            IssueError::Internal(_) | IssueError::Lint(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            eprintln!("tessera-issuer: {e:#}");
            "internal error; the issuer's log has the details".to_owned()
        } else {
            e.to_string()
        };
        Self::new(status, e.code(), message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

/// Every route: the API and the public relying-party endpoints.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v1/certificates", post(issue))
        .route(
            "/api/v1/certificates/{serial}/revocation",
            post(revoke).delete(release_hold),
        )
        .route("/api/v1/openapi.json", get(openapi))
        .merge(public_routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Only what relying parties fetch over plain HTTP (CRL, OCSP, CA certificate), for when the
/// API itself is served over HTTPS.
pub fn public_router(state: Arc<AppState>) -> Router {
    public_routes()
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn public_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ocsp", post(ocsp_post))
        .route("/ocsp/{*request}", get(ocsp_get))
        .route("/crl/issuing-ca-1.crl", get(crl))
        .route("/ca/issuing-ca-1.crt", get(ca_certificate))
}

/// The caller behind a Bearer token (only the token's SHA-256 is stored).
fn authenticate(conn: &mut crate::db::Conn, headers: &HeaderMap) -> Result<String, ApiError> {
    let unauthorized = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid Bearer token is required",
        )
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?;
    let hash = sha2::Sha256::digest(token.trim().as_bytes()).to_vec();
    // Looked up by hash: the comparison is the database's index lookup on a digest, which
    // leaks nothing useful about the token itself.
    api_tokens::table
        .filter(api_tokens::token_hash.eq(hash))
        .select(api_tokens::name)
        .first::<String>(conn)
        .optional()
        .map_err(|e| ApiError::from(IssueError::from(e)))?
        .ok_or_else(unauthorized)
}

fn json<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", e.to_string()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueBody {
    profile: String,
    subject: Subject,
    /// PEM SubjectPublicKeyInfo.
    public_key: String,
    #[serde(default)]
    validity_days: Option<u32>,
}

/// Runs `f` with the CA and the database off the async threads.
async fn with_ca<T: Send + 'static>(
    state: Arc<AppState>,
    f: impl FnOnce(&IssuingCa, &mut crate::db::Conn, &dyn Clock) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || {
        let mut guard = state.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (ca, conn) = &mut *guard;
        f(ca, conn, state.clock.as_ref())
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
}

async fn issue(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    with_ca(state, move |ca, conn, clock| {
        let actor = authenticate(conn, &headers)?;
        let req: IssueBody = json(&body)?;
        let (label, der) = der::pem::decode_vec(req.public_key.as_bytes())
            .map_err(|_| IssueError::BadPublicKey("public_key is not PEM".into()))?;
        if label != "PUBLIC KEY" {
            return Err(IssueError::BadPublicKey(format!(
                "PEM label {label:?}, expected PUBLIC KEY"
            ))
            .into());
        }
        let issued = ca.issue(
            conn,
            clock,
            &actor,
            &IssueRequest {
                profile: &req.profile,
                subject: &req.subject,
                public_key: &der,
                validity_days: req.validity_days,
            },
        )?;
        let pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &issued.der)
            .map_err(|e| IssueError::Internal(anyhow::anyhow!("PEM: {e}")))?;
        Ok((
            StatusCode::CREATED,
            Json(serde_json::json!({ "serial": issued.serial, "certificate": pem })),
        )
            .into_response())
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    reason: String,
}

fn valid_serial(serial: &str) -> Result<(), ApiError> {
    if serial.is_empty() || serial.len() > 40 || !serial.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_serial",
            "serial must be hexadecimal",
        ));
    }
    Ok(())
}

async fn revoke(
    State(state): State<Arc<AppState>>,
    UrlPath(serial): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let shared = Arc::clone(&state);
    with_ca(state, move |ca, conn, clock| {
        let actor = authenticate(conn, &headers)?;
        valid_serial(&serial)?;
        let req: RevokeBody = json(&body)?;
        let revoked = ca.revoke(conn, clock, &actor, &serial, &req.reason);
        // Even when a later step failed, the status may have changed: forget the responses.
        shared.ocsp_cache.invalidate(&serial.to_ascii_lowercase());
        revoked?;
        Ok(Json(serde_json::json!({ "serial": serial.to_ascii_lowercase(), "status": "revoked", "reason": req.reason })).into_response())
    })
    .await
}

async fn release_hold(
    State(state): State<Arc<AppState>>,
    UrlPath(serial): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let shared = Arc::clone(&state);
    with_ca(state, move |ca, conn, clock| {
        let actor = authenticate(conn, &headers)?;
        valid_serial(&serial)?;
        let released = ca.release_hold(conn, clock, &actor, &serial);
        shared.ocsp_cache.invalidate(&serial.to_ascii_lowercase());
        released?;
        Ok(
            Json(serde_json::json!({ "serial": serial.to_ascii_lowercase(), "status": "good" }))
                .into_response(),
        )
    })
    .await
}

async fn crl(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let shared = Arc::clone(&state);
    with_ca(state, move |ca, conn, clock| {
        let newest: Option<i64> = crls::table
            .filter(crls::authority.eq("issuing"))
            .select(diesel::dsl::max(crls::number))
            .first(conn)
            .map_err(IssueError::from)?;
        let cached = shared
            .latest_crl
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let der = match (newest, cached) {
            (Some(n), Some((m, der))) if n == m => der,
            (Some(n), _) => {
                let der: Vec<u8> = crls::table
                    .filter(crls::authority.eq("issuing"))
                    .filter(crls::number.eq(n))
                    .select(crls::crl)
                    .first(conn)
                    .map_err(IssueError::from)?;
                let der = Bytes::from(der);
                *shared.latest_crl.write().unwrap_or_else(|p| p.into_inner()) =
                    Some((n, der.clone()));
                der
            }
            (None, _) => Bytes::from(ca.generate_crl(conn, clock)?),
        };
        Ok(([(header::CONTENT_TYPE, "application/pkix-crl")], der).into_response())
    })
    .await
}

async fn ca_certificate(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    with_ca(state, |ca, _, _| {
        let der = ca.certificate_der().map_err(IssueError::Internal)?;
        Ok(([(header::CONTENT_TYPE, "application/pkix-cert")], der).into_response())
    })
    .await
}

/// OCSP over POST (RFC 6960 Appendix A.1: the DER request is the body).
async fn ocsp_post(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    ocsp_answer(state, body).await
}

/// OCSP over GET: the base64 of the DER request, URL-encoded, as the last path part.
async fn ocsp_get(
    State(state): State<Arc<AppState>>,
    UrlPath(request): UrlPath<String>,
) -> Result<Response, ApiError> {
    use base64ct::Encoding;
    let der = base64ct::Base64::decode_vec(request.trim_start_matches('/')).unwrap_or_default();
    ocsp_answer(state, Bytes::from(der)).await
}

/// A pre-signed response when one is fresh (no lock, no token, no database); otherwise one
/// signed now, kept for the next asker if it may be cached.
async fn ocsp_answer(state: Arc<AppState>, request: Bytes) -> Result<Response, ApiError> {
    const TYPE: (header::HeaderName, &str) = (header::CONTENT_TYPE, "application/ocsp-response");
    if let Some(der) = state.ocsp_cache.lookup(&request, state.clock.now()) {
        return Ok(([TYPE], der).into_response());
    }
    let shared = Arc::clone(&state);
    with_ca(state, move |ca, conn, clock| {
        let answer = crate::ocsp::respond(ca, conn, clock, &request);
        // Still under the lock revocations take, so no invalidation falls in between.
        shared.ocsp_cache.store(&request, &answer, clock.now());
        Ok(([TYPE], answer.der).into_response())
    })
    .await
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The API description (OpenAPI 3.1), kept beside the handlers it describes.
pub const OPENAPI: &str = include_str!("openapi.json");

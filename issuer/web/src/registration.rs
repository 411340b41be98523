//! The registration authority's routes (`/api/v1/officers`, `/people`, `/carriers`,
//! `/approvals`, `/reconciliation`): each parses its body, authenticates the caller and
//! hands both to one RA operation off the async threads; the RA decides everything else.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_issuer_ra::{Actor, Ra, RaError};

use crate::error::ApiError;
use crate::routes::{bearer, blocking, body, json, Shared};

/// Largest import body (a batch of at most 5,000 people).
pub(crate) const IMPORT_BODY: usize = 8 << 20;

/// The RA's routes, as [`crate::ROUTES`] lists them.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/officers", post(create_officer).get(officers))
        .route(
            "/api/v1/officers/{id}",
            axum::routing::delete(disable_officer),
        )
        .route(
            "/api/v1/officers/{id}/tokens",
            post(create_token).get(tokens),
        )
        .route(
            "/api/v1/officers/{id}/tokens/{token}",
            axum::routing::delete(revoke_token),
        )
        .route("/api/v1/certificates/{serial}", get(certificate))
        .route("/api/v1/certificates/{serial}/holder", get(holder))
        .route("/api/v1/status-feed", get(status_feed))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/people", post(create_person).get(people))
        .route(
            "/api/v1/people/import",
            // A batch of up to 5,000 people is a few megabytes.
            post(import).layer(axum::extract::DefaultBodyLimit::max(IMPORT_BODY)),
        )
        .route("/api/v1/people/{id}", get(person))
        .route("/api/v1/people/{id}/proofing", post(proof))
        .route("/api/v1/people/{id}/employment-end", post(end_person))
        .route("/api/v1/people/{id}/carriers", get(carriers_of))
        .route("/api/v1/people/{id}/temporary-card", post(temporary))
        .route("/api/v1/people/{id}/substitute-card", post(substitute))
        .route("/api/v1/carriers", post(create_carrier))
        .route("/api/v1/carriers/{id}", get(carrier))
        .route("/api/v1/carriers/{id}/assignment", post(assign))
        .route("/api/v1/carriers/{id}/keys", post(keys))
        .route("/api/v1/carriers/{id}/tpm-challenge", post(tpm_challenge))
        .route("/api/v1/carriers/{id}/activation", post(activate))
        .route(
            "/api/v1/carriers/{id}/suspension",
            post(suspend).delete(resume),
        )
        .route("/api/v1/carriers/{id}/revocation", post(revoke))
        .route("/api/v1/carriers/{id}/extension", post(extend))
        .route("/api/v1/carriers/{id}/return", post(give_back))
        .route("/api/v1/carriers/{id}/retirement", post(retire))
        .route("/api/v1/carriers/{id}/unblock", post(unblock))
        .route("/api/v1/carriers/{id}/puk-release", post(puk_release))
        .route("/api/v1/carriers/{id}/puk-rotation", post(puk_rotation))
        .route(
            "/api/v1/carriers/{id}/renewal-challenge",
            post(renewal_challenge),
        )
        .route("/api/v1/carriers/{id}/renewal", post(renewal))
        .route(
            "/api/v1/carriers/{id}/renewal-confirmation",
            post(renewal_confirmation),
        )
        .route("/api/v1/approvals", get(approvals))
        .route("/api/v1/approvals/{id}/approval", post(approve))
        .route("/api/v1/approvals/{id}/refusal", post(refuse))
        .route("/api/v1/reconciliation", get(reconciliation))
        .route("/api/v1/loss-report", post(loss_report))
        .route(
            "/api/v1/bulk-revocations",
            // Up to 10 000 carrier ids.
            post(request_bulk)
                .get(bulks)
                .layer(axum::extract::DefaultBodyLimit::max(IMPORT_BODY)),
        )
        .route("/api/v1/bulk-revocations/{id}/approval", post(approve_bulk))
        .route("/api/v1/bulk-revocations/{id}/refusal", post(refuse_bulk))
        // Tokens, release codes, PUKs and personal data: no answer is kept by a cache on
        // the way.
        .layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        ))
}

/// Authenticates, parses the body as `B`, and runs `f` off the async threads; answers
/// `status` with `f`'s result as JSON.
async fn with_body<B, T>(
    app: Shared,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
    status: StatusCode,
    f: impl FnOnce(&Ra, &Actor, B) -> Result<T, RaError> + Send + 'static,
) -> Result<Response, ApiError>
where
    B: DeserializeOwned + Send + 'static,
    T: Serialize + Send + 'static,
{
    let token = bearer(&headers)?;
    let raw = body(raw)?;
    let out = blocking(move || {
        let actor = app.ra.authenticate(&token)?;
        let req: B = json(&raw)?;
        Ok(f(&app.ra, &actor, req)?)
    })
    .await?;
    Ok((status, Json(out)).into_response())
}

/// Authenticates and runs `f` (no body).
async fn without_body<T>(
    app: Shared,
    headers: HeaderMap,
    f: impl FnOnce(&Ra, &Actor) -> Result<T, RaError> + Send + 'static,
) -> Result<Response, ApiError>
where
    T: Serialize + Send + 'static,
{
    let token = bearer(&headers)?;
    let out = blocking(move || {
        let actor = app.ra.authenticate(&token)?;
        Ok(f(&app.ra, &actor)?)
    })
    .await?;
    Ok(Json(out).into_response())
}

type Body = Result<Bytes, BytesRejection>;
type Answer = Result<Response, ApiError>;

async fn create_officer(State(app): State<Shared>, h: HeaderMap, raw: Body) -> Answer {
    with_body(app, h, raw, StatusCode::CREATED, |ra, a, b| {
        ra.create_officer(a, &b)
    })
    .await
}

async fn officers(State(app): State<Shared>, h: HeaderMap) -> Answer {
    without_body(app, h, |ra, a| ra.officers(a)).await
}

async fn create_token(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    raw: Body,
) -> Answer {
    with_body(app, h, raw, StatusCode::CREATED, move |ra, a, b| {
        ra.create_token(a, &id, &b)
    })
    .await
}

async fn tokens(State(app): State<Shared>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Answer {
    without_body(app, h, move |ra, a| ra.tokens(a, &id)).await
}

async fn disable_officer(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
) -> Answer {
    without_body(app, h, move |ra, a| ra.disable_officer(a, &id)).await
}

async fn revoke_token(
    State(app): State<Shared>,
    UrlPath((id, token)): UrlPath<(String, String)>,
    h: HeaderMap,
) -> Answer {
    without_body(app, h, move |ra, a| {
        ra.revoke_token(a, &id, &token)
            .map(|()| serde_json::json!({ "revoked": token }))
    })
    .await
}

async fn create_person(State(app): State<Shared>, h: HeaderMap, raw: Body) -> Answer {
    with_body(app, h, raw, StatusCode::CREATED, |ra, a, b| {
        ra.create_person(a, &b)
    })
    .await
}

/// `?after=<employee number>&limit=<n>`: a page of people in employee-number order.
#[derive(Debug, serde::Deserialize)]
struct Page {
    #[serde(default)]
    after: String,
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

async fn people(State(app): State<Shared>, Query(page): Query<Page>, h: HeaderMap) -> Answer {
    without_body(app, h, move |ra, a| ra.people(a, &page.after, page.limit)).await
}

async fn import(State(app): State<Shared>, h: HeaderMap, raw: Body) -> Answer {
    with_body(app, h, raw, StatusCode::OK, |ra, a, b| {
        ra.import_people(a, &b)
    })
    .await
}

async fn person(State(app): State<Shared>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Answer {
    without_body(app, h, move |ra, a| ra.person(a, &id)).await
}

async fn proof(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    raw: Body,
) -> Answer {
    with_body(app, h, raw, StatusCode::OK, move |ra, a, b| {
        ra.proof(a, &id, &b)
    })
    .await
}

async fn end_person(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
) -> Answer {
    without_body(app, h, move |ra, a| ra.end_person(a, &id)).await
}

async fn carriers_of(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
) -> Answer {
    without_body(app, h, move |ra, a| ra.carriers_of(a, &id)).await
}

async fn temporary(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    raw: Body,
) -> Answer {
    with_body(app, h, raw, StatusCode::CREATED, move |ra, a, b| {
        ra.request_temporary(a, &id, &b)
    })
    .await
}

async fn substitute(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    raw: Body,
) -> Answer {
    with_body(app, h, raw, StatusCode::CREATED, move |ra, a, b| {
        ra.request_substitute(a, &id, &b)
    })
    .await
}

async fn retire(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    raw: Body,
) -> Answer {
    with_body(app, h, raw, StatusCode::OK, move |ra, a, b| {
        ra.retire(a, &id, &b)
    })
    .await
}

async fn create_carrier(State(app): State<Shared>, h: HeaderMap, raw: Body) -> Answer {
    with_body(app, h, raw, StatusCode::CREATED, |ra, a, b| {
        ra.create_carrier(a, &b)
    })
    .await
}

async fn carrier(State(app): State<Shared>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Answer {
    without_body(app, h, move |ra, a| ra.carrier(a, &id)).await
}

async fn assign(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    raw: Body,
) -> Answer {
    with_body(app, h, raw, StatusCode::CREATED, move |ra, a, b| {
        ra.assign(a, &id, &b)
    })
    .await
}

async fn keys(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    raw: Body,
) -> Answer {
    with_body(app, h, raw, StatusCode::OK, move |ra, a, b| {
        ra.register_keys(a, &id, &b)
    })
    .await
}

async fn tpm_challenge(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    raw: Body,
) -> Answer {
    with_body(app, h, raw, StatusCode::OK, move |ra, a, b| {
        ra.tpm_challenge(a, &id, &b)
    })
    .await
}

async fn activate(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    raw: Body,
) -> Answer {
    with_body(app, h, raw, StatusCode::OK, move |ra, a, b| {
        ra.activate(a, &id, &b)
    })
    .await
}

async fn suspend(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    raw: Body,
) -> Answer {
    with_body(app, h, raw, StatusCode::OK, move |ra, a, b| {
        ra.suspend(a, &id, &b)
    })
    .await
}

async fn resume(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    raw: Body,
) -> Answer {
    with_body(app, h, raw, StatusCode::OK, move |ra, a, b| {
        ra.resume(a, &id, &b)
    })
    .await
}

async fn revoke(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    raw: Body,
) -> Answer {
    with_body(app, h, raw, StatusCode::OK, move |ra, a, b| {
        ra.revoke_carrier(a, &id, &b)
    })
    .await
}

async fn extend(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    raw: Body,
) -> Answer {
    with_body(app, h, raw, StatusCode::OK, move |ra, a, b| {
        ra.extend(a, &id, &b)
    })
    .await
}

async fn give_back(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    raw: Body,
) -> Answer {
    with_body(app, h, raw, StatusCode::OK, move |ra, a, b| {
        ra.return_temporary(a, &id, &b)
    })
    .await
}

async fn approvals(State(app): State<Shared>, h: HeaderMap) -> Answer {
    without_body(app, h, |ra, a| ra.approvals_pending(a)).await
}

async fn approve(State(app): State<Shared>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Answer {
    without_body(app, h, move |ra, a| ra.decide(a, &id, true)).await
}

async fn refuse(State(app): State<Shared>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Answer {
    without_body(app, h, move |ra, a| ra.decide(a, &id, false)).await
}

/// The holder's loss report: no officer token, the code is the credential.
async fn loss_report(State(app): State<Shared>, raw: Body) -> Answer {
    let raw = body(raw)?;
    let answer = blocking(move || {
        let report: tessera_issuer_types::api::LossReport = json(&raw)?;
        Ok(app.ra.report_loss(&report)?)
    })
    .await?;
    Ok(Json(answer).into_response())
}

async fn unblock(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    raw: Body,
) -> Answer {
    with_body(app, h, raw, StatusCode::CREATED, move |ra, a, b| {
        ra.request_unblock(a, &id, &b)
    })
    .await
}

/// The card's channel takes the PUK: no officer, the card proves itself.
async fn puk_release(State(app): State<Shared>, UrlPath(id): UrlPath<String>, raw: Body) -> Answer {
    let raw = body(raw)?;
    let answer = blocking(move || {
        let req: tessera_issuer_types::api::PukReleaseRequest = json(&raw)?;
        Ok(app.ra.release_puk(&id, &req)?)
    })
    .await?;
    Ok(Json(answer).into_response())
}

/// A TPM virtual card's own renewal: no officer; the renewal itself is signed by the
/// card's authentication key.
async fn renewal_challenge(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    raw: Body,
) -> Answer {
    let raw = body(raw)?;
    let answer = blocking(move || {
        let req: tessera_issuer_types::api::TpmChallengeRequest = json(&raw)?;
        Ok(app.ra.renewal_challenge(&id, &req)?)
    })
    .await?;
    Ok(Json(answer).into_response())
}

/// The renewal, signed by the card's authentication key (which needs the holder's PIN).
async fn renewal(State(app): State<Shared>, UrlPath(id): UrlPath<String>, raw: Body) -> Answer {
    let raw = body(raw)?;
    let answer = blocking(move || {
        let req: tessera_issuer_types::api::RenewalRequest = json(&raw)?;
        Ok(app.ra.renew(&id, &req)?)
    })
    .await?;
    Ok(Json(answer).into_response())
}

/// The card carries its renewed certificates (signed by the new authentication key).
async fn renewal_confirmation(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    raw: Body,
) -> Answer {
    let raw = body(raw)?;
    let answer = blocking(move || {
        let req: tessera_issuer_types::api::RenewalConfirmation = json(&raw)?;
        Ok(app.ra.confirm_renewal(&id, &req)?)
    })
    .await?;
    Ok(Json(answer).into_response())
}

/// The card's channel escrows the new PUK it set on the card: no officer, the card
/// proves itself.
async fn puk_rotation(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    raw: Body,
) -> Answer {
    let raw = body(raw)?;
    blocking(move || {
        let req: tessera_issuer_types::api::PukRotation = json(&raw)?;
        Ok(app.ra.rotate_puk(&id, &req)?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `?after=SEQ&limit=N`.
#[derive(Debug, serde::Deserialize)]
struct AuditPage {
    #[serde(default)]
    after: i64,
    #[serde(default = "thousand")]
    limit: u32,
}

fn thousand() -> u32 {
    1000
}

async fn audit(State(app): State<Shared>, Query(page): Query<AuditPage>, h: HeaderMap) -> Answer {
    without_body(app, h, move |ra, a| {
        ra.audit_page(a, page.after, page.limit)
    })
    .await
}

async fn certificate(
    State(app): State<Shared>,
    UrlPath(serial): UrlPath<String>,
    h: HeaderMap,
) -> Answer {
    without_body(app, h, move |ra, a| ra.certificate(a, &serial)).await
}

async fn holder(
    State(app): State<Shared>,
    UrlPath(serial): UrlPath<String>,
    h: HeaderMap,
) -> Answer {
    without_body(app, h, move |ra, a| ra.holder(a, &serial)).await
}

async fn status_feed(
    State(app): State<Shared>,
    Query(page): Query<AuditPage>,
    h: HeaderMap,
) -> Answer {
    without_body(app, h, move |ra, a| {
        ra.status_feed(a, page.after, page.limit)
    })
    .await
}

async fn request_bulk(State(app): State<Shared>, h: HeaderMap, raw: Body) -> Answer {
    with_body(app, h, raw, StatusCode::CREATED, |ra, a, b| {
        ra.request_bulk_revocation(a, &b)
    })
    .await
}

async fn bulks(State(app): State<Shared>, h: HeaderMap) -> Answer {
    without_body(app, h, |ra, a| ra.bulk_revocations_pending(a)).await
}

async fn approve_bulk(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
) -> Answer {
    without_body(app, h, move |ra, a| ra.decide_bulk_revocation(a, &id, true)).await
}

async fn refuse_bulk(
    State(app): State<Shared>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
) -> Answer {
    without_body(app, h, move |ra, a| {
        ra.decide_bulk_revocation(a, &id, false)
    })
    .await
}

async fn reconciliation(State(app): State<Shared>, h: HeaderMap) -> Answer {
    without_body(app, h, |ra, a| ra.reconcile(a)).await
}

//! The pages and forms. Each handler finds the language and the session, runs one RA
//! operation off the async threads, and renders a template; an RA refusal becomes a page
//! that says why, with the matching status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use askama::Template;
use axum::extract::{DefaultBodyLimit, Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use tessera_issuer_ra::portal::{Chain, Session};
use tessera_issuer_ra::{Actor, RaError};
use tessera_issuer_types::api::{Approval, Carrier, Person};
use tessera_issuer_types::audit::AuditRecord;
use tessera_issuer_types::lifecycle::{CarrierKind, CarrierState, OfficerRole, PersonState};
use tessera_issuer_web::serve::PeerCertificate;

use crate::i18n::{Lang, Texts};
use crate::{
    cards, cookie, import, officers, passkeys, same_secret, Portal, LANG_COOKIE, SESSION_COOKIE,
    SIGN_IN_COOKIE,
};

type St = State<Arc<Portal>>;

pub(crate) fn routes() -> Router<Arc<Portal>> {
    Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/") }))
        .route("/admin/", get(dashboard))
        .route("/admin/sign-in", get(sign_in_page).post(sign_in))
        .route("/admin/sign-out", post(sign_out))
        .route("/admin/people", get(people))
        .route("/admin/people/{id}", get(person))
        .route("/admin/approvals", get(approvals))
        .route("/admin/approvals/{id}/decision", post(decide))
        .route("/admin/audit", get(audit))
        .route("/admin/audit/export", post(audit_export))
        .route(
            "/admin/import",
            get(import::form)
                .post(import::upload)
                .layer(DefaultBodyLimit::max(import::MAX_FILE + 64 * 1024)),
        )
        .route("/admin/import/{id}", get(import::job))
        .route("/admin/people/{id}/proofing", post(cards::proof))
        .route("/admin/people/{id}/issuance", post(cards::request_issuance))
        .route(
            "/admin/people/{id}/temporary-card",
            post(cards::request_temporary),
        )
        .route("/admin/carriers/{id}", get(cards::carrier))
        .route("/admin/carriers/{id}/keys", post(cards::keys))
        .route("/admin/carriers/{id}/activation", post(cards::activate))
        .route("/admin/carriers/{id}/suspension", post(cards::suspend))
        .route("/admin/carriers/{id}/resumption", post(cards::resume))
        .route("/admin/carriers/{id}/revocation", post(cards::revoke))
        .route("/admin/carriers/{id}/extension", post(cards::extend))
        .route("/admin/carriers/{id}/return", post(cards::give_back))
        .route("/admin/carriers/{id}/unblock", post(cards::unblock))
        .route(
            "/admin/carriers/{id}/substitute-end",
            post(cards::end_substitute),
        )
        .route("/admin/carriers/{id}/retirement", post(cards::retire))
        .route(
            "/admin/people/{id}/substitute-card",
            post(cards::request_substitute),
        )
        .route("/admin/import/{id}/apply", post(import::apply))
        .route("/admin/static/portal.css", get(stylesheet))
        .route("/admin/static/passkey.js", get(script))
        .route("/admin/officers", get(officers::list).post(officers::add))
        .route("/admin/officers/{id}", get(officers::show))
        .route("/admin/officers/{id}/tokens", post(officers::new_token))
        .route(
            "/admin/officers/{id}/tokens/{token}/revocation",
            post(officers::revoke_token),
        )
        .route(
            "/admin/officers/{id}/passkeys/{passkey}/removal",
            post(officers::remove_passkey),
        )
        .route("/admin/officers/{id}/disabling", post(officers::disable))
        .route(
            "/admin/passkeys",
            get(passkeys::list).post(passkeys::register),
        )
        .route(
            "/admin/passkeys/options",
            post(passkeys::registration_options),
        )
        .route("/admin/passkeys/{id}/removal", post(passkeys::remove))
        .route("/admin/sign-in/passkey", post(passkeys::sign_in))
        .route(
            "/admin/sign-in/passkey/options",
            post(passkeys::sign_in_options),
        )
}

/// What every page shows around its content.
pub(crate) struct Frame {
    pub tr: &'static Texts,
    pub lang: &'static str,
    pub other_lang: &'static str,
    /// The page's own path and query, for the language link.
    pub here: String,
    pub title: String,
    pub who: Option<Who>,
}

/// The signed-in officer, as the page header shows them.
pub(crate) struct Who {
    pub name: String,
    pub display_name: String,
    pub role: String,
    pub ends: String,
    pub csrf: String,
    /// An auditor: nothing on any page changes anything.
    pub read_only: bool,
    pub may_audit: bool,
    pub may_import: bool,
    pub may_administer: bool,
}

/// The request's language and session.
pub(crate) struct Ctx {
    lang: Lang,
    /// Set when `?lang=` chose it: remembered in a cookie.
    chosen: bool,
    here: String,
    session: Option<(String, Session)>,
    /// Why a session cookie was not accepted, if one was sent.
    ended: Option<String>,
    pub(crate) headers: HeaderMap,
    /// The client certificate presented on this connection.
    pub(crate) peer: PeerCertificate,
}

impl Ctx {
    pub(crate) fn frame(&self, title: &str) -> Frame {
        let tr = self.lang.texts();
        Frame {
            tr,
            lang: self.lang.code(),
            other_lang: tr.other_language,
            here: self.here.clone(),
            title: title.to_owned(),
            who: self.session.as_ref().map(|(_, s)| who(s)),
        }
    }

    pub(crate) fn tr(&self) -> &'static Texts {
        self.lang.texts()
    }
}

fn who(s: &Session) -> Who {
    let roles: Vec<&str> = s.actor.roles.iter().map(|r| r.as_str()).collect();
    Who {
        name: s.actor.name.clone(),
        display_name: s.display_name.clone(),
        role: roles.join(", "),
        ends: time_of(s.ends_at),
        csrf: s.csrf.clone(),
        read_only: s.actor.roles == [OfficerRole::Auditor],
        may_audit: s.actor.has(OfficerRole::Auditor) || s.actor.has(OfficerRole::Administrator),
        may_import: s.actor.has(OfficerRole::HrAdmin),
        may_administer: s.actor.has(OfficerRole::Administrator),
    }
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM` (UTC).
pub(crate) fn time_of(secs: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// Runs RA work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RaError> + Send + 'static,
) -> Result<T, RaError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(RaError::Invalid(format!("the request failed: {e}"))))
}

/// Reads the language and the session (checking it with the RA: idle and hard limits, the
/// credential still good).
async fn context(
    portal: &Arc<Portal>,
    headers: HeaderMap,
    uri: &axum::http::Uri,
    peer: PeerCertificate,
) -> Ctx {
    let query_lang = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("lang="))
        .and_then(Lang::parse);
    let lang = query_lang
        .or_else(|| cookie(&headers, LANG_COOKIE).and_then(Lang::parse))
        .unwrap_or_else(|| {
            Lang::from_accept_language(
                headers
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            )
        });
    // The page's address without its lang= parameter, for the other language's link.
    let rest: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("lang="))
        .collect();
    let here = if rest.is_empty() {
        format!("{}?", uri.path())
    } else {
        format!("{}?{}&", uri.path(), rest.join("&"))
    };
    let (mut session, mut ended) = (None, None);
    if let Some(token) = cookie(&headers, SESSION_COOKIE).map(str::to_owned) {
        let ra = Arc::clone(&portal.ra);
        let t = token.clone();
        let der = peer.0.clone();
        match blocking(move || ra.session(&t, der.as_deref())).await {
            Ok(s) => session = Some((token, s)),
            Err(RaError::SessionEnded(why)) => ended = Some(why),
            Err(e) => {
                tracing::error!(error = %e, "checking a portal session");
                ended = Some(e.to_string());
            }
        }
    }
    Ctx {
        lang,
        chosen: query_lang.is_some(),
        here,
        session,
        ended,
        headers,
        peer,
    }
}

/// Every page's first step, as an extractor: the language and the session (see
/// [`context`]). A request without the TLS listener's [`PeerCertificate`] counts as one
/// without a certificate.
impl axum::extract::FromRequestParts<Arc<Portal>> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        portal: &Arc<Portal>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<PeerCertificate>()
            .cloned()
            .unwrap_or(PeerCertificate(None));
        Ok(context(portal, parts.headers.clone(), &parts.uri, peer).await)
    }
}

/// A rendered page with its status; remembers a language chosen by `?lang=`.
pub(crate) fn page(ctx: &Ctx, status: StatusCode, t: impl Template) -> Response {
    match t.render() {
        Ok(html) => {
            let mut r = (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                html,
            )
                .into_response();
            if ctx.chosen {
                if let Ok(v) = HeaderValue::from_str(&format!(
                    "{LANG_COOKIE}={}; Path=/; Secure; SameSite=Lax; Max-Age=31536000",
                    ctx.lang.code()
                )) {
                    r.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "rendering a portal page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    f: Frame,
    message: String,
}

#[derive(Template)]
#[template(path = "shown_once.html")]
struct ShownOncePage {
    f: Frame,
    intro: &'static str,
    secret: String,
}

/// A secret that was made (a token, a release code) but whose page could not be read
/// again: shown with 200 and as done, so that nobody retries and makes a second one.
pub(crate) fn shown_once(ctx: &Ctx, intro: &'static str, secret: String) -> Response {
    let f = ctx.frame(ctx.tr().done_title);
    page(ctx, StatusCode::OK, ShownOncePage { f, intro, secret })
}

/// The page for an RA refusal or failure: why, with the matching status. A session that
/// ended sends the officer to sign in again.
pub(crate) fn refusal(ctx: &Ctx, e: RaError) -> Response {
    let status = match &e {
        RaError::SessionEnded(_) | RaError::Unauthorized | RaError::TokenRefused(_) => {
            return Redirect::to("/admin/sign-in").into_response();
        }
        RaError::Forbidden(_) | RaError::FourEyes(_) => StatusCode::FORBIDDEN,
        RaError::Missing(_) | RaError::NotFound(_) => StatusCode::NOT_FOUND,
        RaError::InvalidTransition { .. } | RaError::Exists(_) => StatusCode::CONFLICT,
        RaError::Invalid(_) | RaError::BadRequest(_) => StatusCode::BAD_REQUEST,
        RaError::Store(tessera_issuer_ra::StoreError::Unavailable(_)) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => {
            tracing::error!(error = %e, "a portal request failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    let f = ctx.frame(ctx.tr().error_title);
    // A server-side failure's details are for the log, not the page.
    let message = if status.is_server_error() {
        ctx.tr().server_failed.to_owned()
    } else {
        e.to_string()
    };
    page(ctx, status, ErrorPage { f, message })
}

/// The signed-in officer's session and its cookie.
pub(crate) fn signed_in(ctx: &Ctx) -> Option<(&str, &Session)> {
    ctx.session.as_ref().map(|(t, s)| (t.as_str(), s))
}

pub(crate) fn to_sign_in() -> Response {
    Redirect::to("/admin/sign-in").into_response()
}

/// A form's anti-forgery check: the session's token, and the portal's own origin where the
/// browser names one. Refused: 403, nothing changed.
pub(crate) fn forged(ctx: &Ctx, expected: &str, given: &str) -> Option<Response> {
    let headers = &ctx.headers;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let cross_origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| o != format!("https://{host}"));
    if cross_origin || expected.is_empty() || !same_secret(expected, given) {
        tracing::warn!("a portal form without a valid anti-forgery token refused");
        let f = ctx.frame(ctx.tr().error_title);
        return Some(page(
            ctx,
            StatusCode::FORBIDDEN,
            ErrorPage {
                f,
                message: ctx.tr().forbidden_csrf.to_owned(),
            },
        ));
    }
    None
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../static/passkey.js"),
    )
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../static/portal.css"),
    )
}

// ---- Sign-in and sign-out ----

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    f: Frame,
    csrf: String,
    message: Option<String>,
    problem: bool,
}

fn sign_in_form(ctx: &Ctx, status: StatusCode, message: Option<String>, problem: bool) -> Response {
    let csrf = hex_random();
    let mut r = crate::with_script(page(
        ctx,
        status,
        SignInPage {
            f: Frame {
                who: None,
                ..ctx.frame(ctx.tr().sign_in)
            },
            csrf: csrf.clone(),
            message,
            problem,
        },
    ));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SIGN_IN_COOKIE}={csrf}; Path=/; Secure; HttpOnly; SameSite=Strict"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// 256 random bits, hex: the sign-in form's anti-forgery value (against login CSRF).
fn hex_random() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn sign_in_page(ctx: Ctx) -> Response {
    if ctx.session.is_some() {
        return Redirect::to("/admin/").into_response();
    }
    let message = ctx.ended.as_ref().map(|_| ctx.tr().session_over.to_owned());
    sign_in_form(&ctx, StatusCode::OK, message, false)
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn sign_in(State(portal): St, ctx: Ctx, Form(form): Form<CsrfForm>) -> Response {
    let expected = cookie(&ctx.headers, SIGN_IN_COOKIE)
        .unwrap_or("")
        .to_owned();
    if let Some(r) = forged(&ctx, &expected, &form.csrf) {
        return r;
    }
    let Some(der) = ctx.peer.0.clone() else {
        return sign_in_form(
            &ctx,
            StatusCode::UNAUTHORIZED,
            Some(ctx.tr().sign_in_no_certificate.to_owned()),
            true,
        );
    };
    let ra = Arc::clone(&portal.ra);
    match blocking(move || ra.sign_in_with_certificate(&der)).await {
        Ok((token, _)) => with_session(Redirect::to("/admin/").into_response(), &token),
        Err(RaError::Forbidden(why)) => sign_in_form(
            &ctx,
            StatusCode::FORBIDDEN,
            Some(format!("{}: {why}", ctx.tr().sign_in_refused)),
            true,
        ),
        Err(e) => refusal(&ctx, e),
    }
}

/// Every simple form's steps: the session, the form's anti-forgery token `csrf`, `op` on
/// the RA off the async threads, then a redirect to `then` — or a page that says why not.
pub(crate) async fn submit<T: Send + 'static>(
    portal: &Arc<Portal>,
    ctx: &Ctx,
    csrf: &str,
    then: impl FnOnce(&T) -> String,
    op: impl FnOnce(&tessera_issuer_ra::Ra, &Actor) -> Result<T, RaError> + Send + 'static,
) -> Response {
    let Some((_, session)) = signed_in(ctx) else {
        return to_sign_in();
    };
    if let Some(r) = forged(ctx, &session.csrf, csrf) {
        return r;
    }
    let (ra, actor) = (Arc::clone(&portal.ra), session.actor.clone());
    match blocking(move || op(&ra, &actor)).await {
        Ok(v) => Redirect::to(&then(&v)).into_response(),
        Err(e) => refusal(ctx, e),
    }
}

/// `r` setting a new session's cookie (and clearing the sign-in form's).
pub(crate) fn with_session(mut r: Response, token: &str) -> Response {
    for c in [
        format!("{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict"),
        format!("{SIGN_IN_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

async fn sign_out(State(portal): St, ctx: Ctx, Form(form): Form<CsrfForm>) -> Response {
    let Some((token, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    if let Some(r) = forged(&ctx, &session.csrf, &form.csrf) {
        return r;
    }
    let ra = Arc::clone(&portal.ra);
    let token = token.to_owned();
    if let Err(e) = blocking(move || ra.sign_out(&token)).await {
        return refusal(&ctx, e);
    }
    let mut r = Redirect::to("/admin/sign-in").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

// ---- Dashboard and approvals ----

/// An approval as a page shows it, with whether this officer may decide it and why not.
pub(crate) struct ApprovalRow {
    pub a: Approval,
    pub requested_at: String,
    pub may_decide: bool,
}

fn approval_rows(actor: &Actor, list: Vec<Approval>) -> Vec<ApprovalRow> {
    list.into_iter()
        .map(|a| ApprovalRow {
            requested_at: time_of(a.requested_at),
            may_decide: actor.has(OfficerRole::RegistrationOfficer)
                && a.requested_by != actor.name
                && actor.person_id.as_deref() != Some(a.person_id.as_str()),
            a,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    f: Frame,
    approvals: Vec<ApprovalRow>,
    suspensions: Vec<CarrierRow>,
    due_back: Vec<CarrierRow>,
    /// The last reconciliation: when (as shown), and what this officer may see of it.
    reconciled: Option<(String, tessera_issuer_ra::portal::Reconciled)>,
    bars: Vec<Bar>,
    chart_width: usize,
}

/// One week of the dashboard's chart, laid out (an inline SVG: no script, no image).
pub(crate) struct Bar {
    x: usize,
    issued_h: u64,
    revoked_h: u64,
    issued: u64,
    revoked: u64,
    /// The week's first day, `MM-DD` under its bars and `YYYY-MM-DD` in the table.
    label: String,
    week: String,
}

/// Bars scaled to 100 px for the busiest week.
fn bars(weeks: &[tessera_issuer_ra::portal::Week]) -> Vec<Bar> {
    let max = weeks
        .iter()
        .map(|w| w.issued.max(w.revoked))
        .max()
        .unwrap_or(0)
        .max(1);
    weeks
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let day = time_of(w.start);
            Bar {
                x: 10 + i * 50,
                issued_h: w.issued * 100 / max,
                revoked_h: w.revoked * 100 / max,
                issued: w.issued,
                revoked: w.revoked,
                label: day.get(5..10).unwrap_or("").to_owned(),
                week: day.get(..10).unwrap_or("").to_owned(),
            }
        })
        .collect()
}

/// How far ahead the dashboard looks for deadlines.
const ATTENTION_DAYS: u32 = 7;

fn carrier_rows(list: Vec<Carrier>) -> Vec<CarrierRow> {
    list.into_iter()
        .map(|c| CarrierRow {
            deadline: c.deadline.map(time_of),
            ends: c.ends_at.map(time_of),
            c,
        })
        .collect()
}

async fn dashboard(State(portal): St, ctx: Ctx) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    let (ra, actor) = (Arc::clone(&portal.ra), session.actor.clone());
    let found = blocking(move || {
        Ok((
            ra.approvals_pending(&actor)?,
            ra.attention(&actor, ATTENTION_DAYS)?,
        ))
    })
    .await;
    match found {
        Ok((list, attention)) => {
            let approvals = approval_rows(&session.actor, list);
            page(
                &ctx,
                StatusCode::OK,
                DashboardPage {
                    f: ctx.frame(ctx.tr().dashboard),
                    approvals,
                    suspensions: carrier_rows(attention.suspensions),
                    due_back: carrier_rows(attention.due_back),
                    reconciled: attention.reconciled.map(|r| (time_of(r.at), r)),
                    chart_width: 20 + attention.weeks.len() * 50,
                    bars: bars(&attention.weeks),
                },
            )
        }
        Err(e) => refusal(&ctx, e),
    }
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    f: Frame,
    approvals: Vec<ApprovalRow>,
    /// Shown once, after approving a PIN unblock: the approver's release code.
    release_code: Option<String>,
}

async fn approvals(State(portal): St, ctx: Ctx) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    let (ra, actor) = (Arc::clone(&portal.ra), session.actor.clone());
    match blocking(move || ra.approvals_pending(&actor)).await {
        Ok(list) => {
            let approvals = approval_rows(&session.actor, list);
            page(
                &ctx,
                StatusCode::OK,
                ApprovalsPage {
                    f: ctx.frame(ctx.tr().approvals),
                    approvals,
                    release_code: None,
                },
            )
        }
        Err(e) => refusal(&ctx, e),
    }
}

#[derive(Deserialize)]
struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
}

async fn decide(
    State(portal): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    if let Some(r) = forged(&ctx, &session.csrf, &form.csrf) {
        return r;
    }
    let approve = match form.decision.as_str() {
        "approve" => true,
        "refuse" => false,
        other => {
            return refusal(
                &ctx,
                RaError::Invalid(format!("decision {other:?}: approve or refuse")),
            )
        }
    };
    let (ra, actor) = (Arc::clone(&portal.ra), session.actor.clone());
    let decided = blocking(move || {
        let a = ra.decide(&actor, &id, approve)?;
        // An approver's release code is shown once: a failed re-read must not lose it.
        Ok((a, ra.approvals_pending(&actor).unwrap_or_default()))
    })
    .await;
    match decided {
        // A PIN unblock approved: the approver's release code, shown on this answer only.
        Ok((
            Approval {
                release_code: Some(code),
                ..
            },
            list,
        )) => page(
            &ctx,
            StatusCode::OK,
            ApprovalsPage {
                f: ctx.frame(ctx.tr().approvals),
                approvals: approval_rows(&session.actor, list),
                release_code: Some(code),
            },
        ),
        Ok(_) => Redirect::to("/admin/approvals").into_response(),
        Err(e) => refusal(&ctx, e),
    }
}

// ---- People ----

#[derive(Template)]
#[template(path = "people.html")]
struct PeoplePage {
    f: Frame,
    q: String,
    searched: bool,
    people: Vec<Person>,
}

#[derive(Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

async fn people(State(portal): St, ctx: Ctx, Query(query): Query<SearchQuery>) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    let q = query.q.trim().to_owned();
    let searched = q.chars().count() >= 2;
    let (ra, actor, text) = (Arc::clone(&portal.ra), session.actor.clone(), q.clone());
    let found = blocking(move || {
        if searched {
            ra.search_people(&actor, &text, 50)
        } else {
            ra.people(&actor, "", 50)
        }
    })
    .await;
    match found {
        Ok(people) => page(
            &ctx,
            StatusCode::OK,
            PeoplePage {
                f: ctx.frame(ctx.tr().people),
                q,
                searched,
                people,
            },
        ),
        Err(e) => refusal(&ctx, e),
    }
}

/// A card as the person page shows it.
pub(crate) struct CarrierRow {
    pub c: Carrier,
    pub deadline: Option<String>,
    pub ends: Option<String>,
}

#[derive(Template)]
#[template(path = "person.html")]
struct PersonPage {
    f: Frame,
    p: Person,
    proofed: Option<String>,
    carriers: Vec<CarrierRow>,
    may_proof: bool,
    may_issue: bool,
    may_temporary: bool,
    /// The person's active personal cards (id, serial): the temporary card form asks which
    /// was left at home when there are several.
    active_cards: Vec<(String, String)>,
}

async fn person(State(portal): St, ctx: Ctx, Path(id): Path<String>) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    let (ra, actor) = (Arc::clone(&portal.ra), session.actor.clone());
    let found = blocking(move || Ok((ra.person(&actor, &id)?, ra.carriers_of(&actor, &id)?))).await;
    match found {
        Ok((p, carriers)) => {
            let title = format!("{} {}", p.given_name, p.family_name);
            // The forms this officer may use here (the RA checks again): a registration
            // officer's, never on their own record.
            let actor = &session.actor;
            let officer = actor.has(OfficerRole::RegistrationOfficer)
                && actor.person_id.as_deref() != Some(p.id.as_str());
            let proofed = p.state == PersonState::Proofed;
            let active_cards: Vec<(String, String)> = carriers
                .iter()
                .filter(|c| {
                    c.state == CarrierState::Active
                        && matches!(c.kind, CarrierKind::SmartCard | CarrierKind::TpmVirtualCard)
                })
                .map(|c| (c.id.clone(), c.serial_number.clone()))
                .collect();
            page(
                &ctx,
                StatusCode::OK,
                PersonPage {
                    f: ctx.frame(&title),
                    proofed: p.proofed_at.map(time_of),
                    carriers: carrier_rows(carriers),
                    may_proof: officer && p.state != PersonState::Ended,
                    may_issue: officer && proofed,
                    may_temporary: officer && proofed && !active_cards.is_empty(),
                    active_cards,
                    p,
                },
            )
        }
        Err(e) => refusal(&ctx, e),
    }
}

// ---- Audit trail ----

/// An audit record as the page shows it.
pub(crate) struct AuditRow {
    pub r: AuditRecord,
    pub at: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    f: Frame,
    chain: Chain,
    records: Vec<AuditRow>,
    action: String,
    actor: String,
    /// The link to older records, when there may be more.
    older: Option<String>,
}

#[derive(Deserialize)]
struct AuditQuery {
    before: Option<i64>,
    #[serde(default)]
    action: String,
    #[serde(default)]
    actor: String,
}

/// Records per audit page.
const AUDIT_PAGE: u32 = 50;

async fn audit(State(portal): St, ctx: Ctx, Query(query): Query<AuditQuery>) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    let (ra, actor) = (Arc::clone(&portal.ra), session.actor.clone());
    let (action, by) = (
        query.action.trim().to_owned(),
        query.actor.trim().to_owned(),
    );
    let (a, b) = (action.clone(), by.clone());
    let found = blocking(move || {
        let records = ra.audit_recent(
            &actor,
            query.before,
            AUDIT_PAGE,
            Some(a.as_str()).filter(|s| !s.is_empty()),
            Some(b.as_str()).filter(|s| !s.is_empty()),
        )?;
        Ok((records, ra.audit_chain(&actor)?))
    })
    .await;
    match found {
        Ok((records, chain)) => {
            let older = (records.len() == AUDIT_PAGE as usize)
                .then(|| records.last().map(|r| r.seq))
                .flatten()
                .map(|seq| {
                    format!(
                        "/admin/audit?before={seq}&action={}&actor={}",
                        urlencode(&action),
                        urlencode(&by)
                    )
                });
            page(
                &ctx,
                StatusCode::OK,
                AuditPage {
                    f: ctx.frame(ctx.tr().audit_trail),
                    chain,
                    records: records
                        .into_iter()
                        .map(|r| AuditRow {
                            at: time_of(r.at),
                            r,
                        })
                        .collect(),
                    action,
                    actor: by,
                    older,
                },
            )
        }
        Err(e) => refusal(&ctx, e),
    }
}

#[derive(Deserialize)]
struct ExportForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    after: String,
}

/// Evidence exports running, per officer: each holds one of the runtime's blocking
/// threads (shared with the API) for as long as the download lasts.
#[derive(Debug, Default, Clone)]
pub(crate) struct Exports(Arc<Mutex<HashMap<String, usize>>>);

/// Exports one officer may run at once.
const EXPORTS_PER_OFFICER: usize = 2;
/// Exports the server runs at once.
const EXPORTS_MAX: usize = 8;

/// One running export; ends it when dropped.
#[derive(Debug)]
struct ExportSlot(Exports, String);

impl Exports {
    fn begin(&self, officer: &str) -> Result<ExportSlot, RaError> {
        let mut running = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if running.get(officer).copied().unwrap_or(0) >= EXPORTS_PER_OFFICER {
            return Err(RaError::Invalid(format!(
                "you already have {EXPORTS_PER_OFFICER} exports running; let one finish first"
            )));
        }
        if running.values().sum::<usize>() >= EXPORTS_MAX {
            return Err(RaError::Invalid(
                "too many exports are running on this server; try again in a while".into(),
            ));
        }
        *running.entry(officer.to_owned()).or_default() += 1;
        Ok(ExportSlot(self.clone(), officer.to_owned()))
    }
}

impl Drop for ExportSlot {
    fn drop(&mut self) {
        let mut running = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = running.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.1);
            }
        }
    }
}

/// `POST /admin/audit/export`: the audit trail from record `after` on, as JSON lines (each
/// record with its hash and the previous record's, as `tessera audit export` writes them),
/// streamed a thousand records at a time. The export is audited before the first record is
/// read (K2.9).
async fn audit_export(State(portal): St, ctx: Ctx, Form(form): Form<ExportForm>) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    if let Some(r) = forged(&ctx, &session.csrf, &form.csrf) {
        return r;
    }
    let after = match form.after.trim() {
        "" => 0,
        a => match a.parse::<i64>() {
            Ok(n) if n >= 0 => n,
            _ => {
                return refusal(
                    &ctx,
                    RaError::Invalid(format!("after: {a:?} is not a record number")),
                )
            }
        },
    };
    let (ra, actor) = (Arc::clone(&portal.ra), session.actor.clone());
    let slot = match portal.exports.begin(&actor.name) {
        Ok(slot) => slot,
        Err(e) => {
            let mut r = refusal(&ctx, e);
            *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            return r;
        }
    };
    {
        let (ra, actor) = (Arc::clone(&ra), actor.clone());
        if let Err(e) = blocking(move || ra.audit_export_started(&actor, after)).await {
            return refusal(&ctx, e);
        }
    }
    // Every page re-checks the officer's session (ended, card suspended, disabled: the
    // export stops there).
    let token = signed_in(&ctx)
        .map(|(t, _)| t.to_owned())
        .unwrap_or_default();
    let peer = ctx.peer.0.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let _running = slot;
        let _ = actor;
        let mut from = after;
        // The chain is checked as it is read (as `tessera audit export` does): a record
        // that does not hold fails the download there, never passes as evidence.
        let mut chain = tessera_issuer_types::audit::ChainCheck::after(after);
        // A browser that stops reading does not hold a blocking thread for ever.
        let send = |item: Result<axum::body::Bytes, std::io::Error>| {
            tokio::runtime::Handle::current()
                .block_on(tx.send_timeout(item, std::time::Duration::from_secs(60)))
                .is_ok()
        };
        loop {
            let page = match ra
                .session(&token, peer.as_deref())
                .and_then(|s| ra.audit_page(&s.actor, from, 1000))
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "exporting the audit trail stopped");
                    send(Err(std::io::Error::other(e.to_string())));
                    return;
                }
            };
            let Some(last) = page.last().map(|r| r.seq) else {
                return;
            };
            let mut chunk = Vec::with_capacity(page.len() * 400);
            for r in &page {
                if let Err(broken) = chain.next(r) {
                    tracing::error!(%broken, "the audit trail's chain is broken");
                    let _ = send(Ok(chunk.into()));
                    send(Err(std::io::Error::other(broken)));
                    return;
                }
                if let Err(e) = serde_json::to_writer(&mut chunk, r) {
                    // The download fails, not ends as if complete.
                    send(Err(std::io::Error::other(e.to_string())));
                    return;
                }
                chunk.push(b'\n');
            }
            if !send(Ok(chunk.into())) {
                return; // the browser went away, or stopped reading
            }
            from = last;
        }
    });
    let body = axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|item| (item, rx))
    }));
    let name = format!("attachment; filename=\"tessera-audit-after-{after}.jsonl\"");
    let mut r = (
        [(header::CONTENT_TYPE, "application/x-ndjson; charset=utf-8")],
        body,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&name) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// Percent-encodes a query value (everything but unreserved characters).
pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_are_limited_per_officer_and_in_all_and_end_when_dropped() {
        let exports = Exports::default();
        let a1 = exports.begin("anna").unwrap();
        let _a2 = exports.begin("anna").unwrap();
        assert!(exports.begin("anna").is_err(), "a third at once");
        drop(a1);
        let _a3 = exports.begin("anna").unwrap();
        let others: Vec<_> = (0..3)
            .flat_map(|i| {
                let name = format!("officer-{i}");
                [exports.begin(&name).unwrap(), exports.begin(&name).unwrap()]
            })
            .collect();
        assert_eq!(others.len(), 6);
        assert!(exports.begin("bo").is_err(), "the server's limit");
        drop(others);
        assert!(exports.begin("bo").is_ok());
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(urlencode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn times_are_utc_minutes() {
        assert_eq!(time_of(0), "1970-01-01 00:00");
        assert_eq!(time_of(i64::MAX), i64::MAX.to_string());
    }

    #[test]
    fn the_language_follows_the_browser_then_defaults_to_english() {
        assert_eq!(
            Lang::from_accept_language("sv-SE,sv;q=0.9,en;q=0.8"),
            Lang::Sv
        );
        assert_eq!(Lang::from_accept_language("en-GB,sv;q=0.5"), Lang::En);
        assert_eq!(Lang::from_accept_language("de-DE"), Lang::En);
        assert_eq!(Lang::from_accept_language(""), Lang::En);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", "x"));
    }
}

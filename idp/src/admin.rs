//! The user's own page (`/my`: the session, remembered approvals to withdraw, logging
//! out) and the administrators' API (`/admin/api/…`, with the token `init` wrote to
//! `DIR/admin.token`): live sessions listed and ended, and the audit trail read.
//! Every change is audited in the transaction that makes it.

use std::sync::Arc;

use askama::Template;
use axum::extract::{ConnectInfo, Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Form, Json, Router};
use tessera_idp_store::{EndedBy, StoreError};

use crate::serve::Idp;
use crate::sso::{self, Browser, SESSION_COOKIE};
use crate::web::{self, Tr};

pub(crate) fn routes() -> Router<Arc<Idp>> {
    Router::new()
        .route("/my", get(my))
        .route("/my/consents/withdrawal", post(withdraw))
        .route("/my/logout", post(logout))
        .route("/admin/api/sessions", get(sessions))
        .route("/admin/api/sessions/{id}", delete(end_session))
        .route("/admin/api/audit", get(audit))
}

/// The form token of the user's page: derived from the session cookie, which a page on
/// another site cannot read.
fn my_token(cookie: &str) -> String {
    web::sha256_hex(format!("tessera-idp-my\0{cookie}").as_bytes())
}

#[derive(Template)]
#[template(path = "my.html")]
struct MyPage<'a> {
    tr: &'a Tr,
    title: &'a str,
    name: String,
    until: String,
    consents: Vec<(String, String)>,
    token: String,
}

async fn my(
    State(idp): State<Arc<Idp>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let b = Browser::of(&headers, peer, idp.https());
    sso::blocking(idp, move |idp| {
        let now = sso::secs(idp.clock.now());
        let session = match sso::live_session(idp, &b, now) {
            Ok(Some(s)) => s,
            Ok(None) => return web::error(StatusCode::OK, b.tr, b.tr.no_session),
            Err(e) => return sso::unavailable(&b, &e),
        };
        let holder: tessera_issuer_types::api::Holder = match serde_json::from_str(&session.holder)
        {
            Ok(h) => h,
            Err(e) => {
                return web::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    b.tr,
                    &format!("the session's record: {e}"),
                )
            }
        };
        let consents = match idp.store.read(|tx| tx.consents_of(&session.person_id)) {
            Ok(c) => c,
            Err(e) => return sso::unavailable(&b, &e),
        };
        web::html(
            StatusCode::OK,
            MyPage {
                tr: b.tr,
                title: b.tr.my_title,
                name: format!("{} {}", holder.given_name, holder.family_name),
                until: tessera_saml::response::instant(std::time::Duration::from_secs(
                    u64::try_from(session.expires_at).unwrap_or(0),
                ))
                .replace('T', " ")
                .trim_end_matches('Z')
                .to_owned(),
                consents: consents
                    .into_iter()
                    .map(|c| (c.relying_party, c.attributes))
                    .collect(),
                token: my_token(b.session.as_deref().unwrap_or_default()),
            }
            .render(),
        )
    })
    .await
}

#[derive(Debug, serde::Deserialize)]
struct Withdrawal {
    token: String,
    relying_party: String,
}

async fn withdraw(
    State(idp): State<Arc<Idp>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<Withdrawal>, axum::extract::rejection::FormRejection>,
) -> Response {
    let b = Browser::of(&headers, peer, idp.https());
    let Ok(Form(w)) = form else {
        return web::error(StatusCode::BAD_REQUEST, b.tr, "the form is incomplete");
    };
    sso::blocking(idp, move |idp| {
        let now = sso::secs(idp.clock.now());
        let (Ok(Some(session)), Some(cookie)) = (sso::live_session(idp, &b, now), &b.session)
        else {
            return web::error(StatusCode::FORBIDDEN, b.tr, b.tr.no_session);
        };
        if !web::same_secret(&w.token, &my_token(cookie)) {
            return web::error(
                StatusCode::FORBIDDEN,
                b.tr,
                "the form does not belong to your session",
            );
        }
        let details = serde_json::json!({ "relying_party": w.relying_party });
        let r = idp.store.write(|tx| {
            if tx.withdraw_consent(&session.person_id, &w.relying_party)? {
                tx.audit(
                    &session.person_id,
                    "consent.withdrawn",
                    &details.to_string(),
                    now,
                )?;
            }
            Ok::<_, StoreError>(())
        });
        match r {
            Ok(()) => web::redirect("/my", &[]),
            Err(e) => sso::unavailable(&b, &e),
        }
    })
    .await
}

#[derive(Debug, serde::Deserialize)]
struct Logout {
    token: String,
}

async fn logout(
    State(idp): State<Arc<Idp>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<Logout>, axum::extract::rejection::FormRejection>,
) -> Response {
    let b = Browser::of(&headers, peer, idp.https());
    let Ok(Form(l)) = form else {
        return web::error(StatusCode::BAD_REQUEST, b.tr, "the form is incomplete");
    };
    sso::blocking(idp, move |idp| {
        let now = sso::secs(idp.clock.now());
        let (Ok(Some(session)), Some(cookie)) = (sso::live_session(idp, &b, now), &b.session)
        else {
            return web::error(StatusCode::OK, b.tr, b.tr.no_session);
        };
        if !web::same_secret(&l.token, &my_token(cookie)) {
            return web::error(
                StatusCode::FORBIDDEN,
                b.tr,
                "the form does not belong to your session",
            );
        }
        let details = serde_json::json!({ "session": session.id, "reason": "logged out" });
        let r = idp.store.write(|tx| {
            if tx.end_session(&session.id, "logged out", EndedBy::User, now)? {
                tx.audit(
                    &session.person_id,
                    "session.ended",
                    &details.to_string(),
                    now,
                )?;
            }
            Ok::<_, StoreError>(())
        });
        if let Err(e) = r {
            return sso::unavailable(&b, &e);
        }
        idp.metrics.sessions_ended.inc();
        let mut page = web::error(StatusCode::OK, b.tr, b.tr.logged_out);
        if let Ok(v) = axum::http::HeaderValue::from_str(&web::set_cookie(
            SESSION_COOKIE,
            "",
            idp.https(),
            Some(0),
        )) {
            page.headers_mut().append(header::SET_COOKIE, v);
        }
        page
    })
    .await
}

/// The refusal, unless the administrators' token (checked against its hash in constant
/// time) is given.
fn not_administrator(idp: &Idp, headers: &HeaderMap) -> Option<Response> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = match (given, &idp.config.admin_token_sha256) {
        (Some(t), Some(hash)) => web::same_secret(&web::sha256_hex(t.trim().as_bytes()), hash),
        _ => false,
    };
    (!ok).then(|| {
        (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({ "error": "the administrators' token (DIR/admin.token) is needed" })),
        )
            .into_response()
    })
}

fn failed(e: &StoreError) -> Response {
    tracing::error!(error = %e, "the IdP database failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "error": e.to_string() })),
    )
        .into_response()
}

async fn sessions(State(idp): State<Arc<Idp>>, headers: HeaderMap) -> Response {
    if let Some(r) = not_administrator(&idp, &headers) {
        return r;
    }
    sso::blocking(idp, |idp| {
        let now = sso::secs(idp.clock.now());
        let listed = idp.store.read(|tx| {
            let mut out = Vec::new();
            for s in tx.live_sessions(now, 1000)? {
                let parties: Vec<String> = tx.uses(&s.id)?.into_iter().map(|(rp, _)| rp).collect();
                out.push(serde_json::json!({
                    "id": s.id, "person_id": s.person_id, "serial": s.serial, "loa": s.loa,
                    "address": s.address, "authn_instant": s.authn_instant,
                    "expires_at": s.expires_at, "relying_parties": parties,
                }));
            }
            Ok::<_, StoreError>(out)
        });
        match listed {
            Ok(l) => Json(l).into_response(),
            Err(e) => failed(&e),
        }
    })
    .await
}

async fn end_session(
    State(idp): State<Arc<Idp>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if let Some(r) = not_administrator(&idp, &headers) {
        return r;
    }
    sso::blocking(idp, move |idp| {
        let now = sso::secs(idp.clock.now());
        let details = serde_json::json!({ "session": id, "reason": "ended by an administrator" });
        let r = idp.store.write(|tx| {
            let ended = tx.end_session(&id, "ended by an administrator", EndedBy::Admin, now)?;
            if ended {
                tx.audit("administrator", "session.ended", &details.to_string(), now)?;
            }
            Ok::<_, StoreError>(ended)
        });
        match r {
            Ok(true) => {
                idp.metrics.sessions_ended.inc();
                StatusCode::NO_CONTENT.into_response()
            }
            Ok(false) => (
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({ "error": "no live session with this id" })),
            )
                .into_response(),
            Err(e) => failed(&e),
        }
    })
    .await
}

#[derive(Debug, serde::Deserialize)]
struct Page {
    #[serde(default)]
    after: i64,
    #[serde(default = "thousand")]
    limit: u32,
}

fn thousand() -> u32 {
    1000
}

async fn audit(State(idp): State<Arc<Idp>>, headers: HeaderMap, Query(p): Query<Page>) -> Response {
    if let Some(r) = not_administrator(&idp, &headers) {
        return r;
    }
    sso::blocking(idp, move |idp| {
        match idp
            .store
            .read(|tx| tx.audit_page(p.after, i64::from(p.limit.clamp(1, 1000))))
        {
            Ok(records) => Json(records).into_response(),
            Err(e) => failed(&e),
        }
    })
    .await
}

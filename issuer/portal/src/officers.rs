//! Officer management, for administrators: the officers and their roles (one each:
//! separation of duties, K2.4), a new officer with their first API token, an officer's
//! tokens (made, shown once, revoked), their passkeys (removed), and disabling an officer.
//! Each form is one RA operation, which checks the administrator's role and audits; an
//! officer's own page lets them see and revoke their own tokens too.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tessera_issuer_ra::portal::PasskeyInfo;
use tessera_issuer_ra::RaError;
use tessera_issuer_types::api::{NewOfficer, NewToken, Officer, TokenInfo};
use tessera_issuer_types::lifecycle::OfficerRole;

use crate::pages::submit;
use crate::pages::{
    blocking, forged, page, refusal, shown_once, signed_in, time_of, to_sign_in, Ctx, Frame,
};
use crate::Portal;

type St = State<Arc<Portal>>;

#[derive(Template)]
#[template(path = "officers.html")]
struct OfficersPage {
    f: Frame,
    officers: Vec<(Officer, String)>,
    roles: Vec<&'static str>,
    /// After adding an officer: their id, and their first token if one was asked for
    /// (shown once).
    added: Option<(String, Option<String>)>,
}

fn administrator(ctx: &Ctx) -> Option<Response> {
    let (_, s) = signed_in(ctx)?;
    (!s.actor.has(OfficerRole::Administrator)).then(|| {
        refusal(
            ctx,
            RaError::Forbidden(ctx.tr().officers_admin_only.to_owned()),
        )
    })
}

/// Credentials are made (and officers disabled) only in a session begun with the
/// administrator's card: a passkey session's cookie is not bound to a card, so it must not
/// mint lasting access (an API token, a new officer's first token). Refused and audited.
fn card_session(portal: &Portal, ctx: &Ctx, action: &str) -> Option<Response> {
    let (_, s) = signed_in(ctx)?;
    if s.credential.starts_with("certificate:") {
        return None;
    }
    let (ra, actor, action) = (Arc::clone(&portal.ra), s.actor.clone(), action.to_owned());
    tokio::task::spawn_blocking(move || {
        ra.audit_refusal(
            &actor,
            &action,
            "only in a session begun with the officer's card",
        )
    });
    Some(refusal(
        ctx,
        RaError::Forbidden(ctx.tr().officers_card_only.to_owned()),
    ))
}

fn officers_page(
    ctx: &Ctx,
    list: Vec<Officer>,
    added: Option<(String, Option<String>)>,
) -> Response {
    page(
        ctx,
        StatusCode::OK,
        OfficersPage {
            f: ctx.frame(ctx.tr().officers),
            officers: list
                .into_iter()
                .map(|o| {
                    let roles: Vec<&str> = o.roles.iter().map(|r| r.as_str()).collect();
                    (o, roles.join(", "))
                })
                .collect(),
            roles: OfficerRole::ALL.iter().map(|r| r.as_str()).collect(),
            added,
        },
    )
}

pub(crate) async fn list(State(portal): St, ctx: Ctx) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    if let Some(r) = administrator(&ctx) {
        return r;
    }
    let (ra, actor) = (Arc::clone(&portal.ra), session.actor.clone());
    match blocking(move || ra.officers(&actor)).await {
        Ok(list) => officers_page(&ctx, list, None),
        Err(e) => refusal(&ctx, e),
    }
}

#[derive(Deserialize)]
pub(crate) struct AddForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    person: String,
    /// `yes`: also an API token for the `tessera` CLI (shown to the administrator once).
    #[serde(default)]
    api_token: String,
}

/// A new officer: the page shows their first token once.
pub(crate) async fn add(State(portal): St, ctx: Ctx, Form(form): Form<AddForm>) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    if let Some(r) = forged(&ctx, &session.csrf, &form.csrf) {
        return r;
    }
    if let Some(r) = card_session(&portal, &ctx, "officer.create") {
        return r;
    }
    let role: OfficerRole = match form.role.parse() {
        Ok(r) => r,
        Err(_) => {
            return refusal(
                &ctx,
                RaError::Invalid(format!("role: {:?} is not one of the roles", form.role)),
            )
        }
    };
    let api_token = form.api_token == "yes";
    let req = NewOfficer {
        id: form.id.trim().to_owned(),
        display_name: form.name.trim().to_owned(),
        roles: vec![role],
        person_id: Some(form.person.trim().to_owned()).filter(|p| !p.is_empty()),
    };
    let (ra, actor) = (Arc::clone(&portal.ra), session.actor.clone());
    let done = blocking(move || {
        let made = ra.create_officer_with(&actor, &req, api_token)?;
        // The first token is shown once: a failed re-read must not lose it.
        Ok((made, ra.officers(&actor).unwrap_or_default()))
    })
    .await;
    match done {
        Ok((made, list)) => {
            let token = made.first_token.map(|t| t.token);
            officers_page(&ctx, list, Some((made.id.clone(), token)))
        }
        Err(e) => refusal(&ctx, e),
    }
}

#[derive(Template)]
#[template(path = "officer.html")]
struct OfficerPage {
    f: Frame,
    o: Officer,
    roles: String,
    tokens: Vec<(TokenInfo, String, String)>,
    passkeys: Vec<(PasskeyInfo, String)>,
    /// The viewer administers officers (else: their own page, tokens only).
    admin: bool,
    /// Shown once, after making a token.
    new_token: Option<String>,
}

fn officer_page(
    ctx: &Ctx,
    (o, tokens, passkeys): (Officer, Vec<TokenInfo>, Vec<PasskeyInfo>),
    new_token: Option<String>,
) -> Response {
    let admin = signed_in(ctx).is_some_and(|(_, s)| s.actor.has(OfficerRole::Administrator));
    let roles: Vec<&str> = o.roles.iter().map(|r| r.as_str()).collect();
    page(
        ctx,
        StatusCode::OK,
        OfficerPage {
            f: ctx.frame(&format!("{} ({})", o.display_name, o.id)),
            roles: roles.join(", "),
            tokens: tokens
                .into_iter()
                .map(|t| {
                    let (made, ends) = (time_of(t.created_at), time_of(t.expires_at));
                    (t, made, ends)
                })
                .collect(),
            passkeys: passkeys
                .into_iter()
                .map(|p| {
                    let made = time_of(p.created_at);
                    (p, made)
                })
                .collect(),
            admin,
            new_token,
            o,
        },
    )
}

/// An officer, their tokens and passkeys (administrators; an officer: their own).
fn officer_view(
    ra: &tessera_issuer_ra::Ra,
    actor: &tessera_issuer_ra::Actor,
    id: &str,
) -> Result<(Officer, Vec<TokenInfo>, Vec<PasskeyInfo>), RaError> {
    let tokens = ra.tokens(actor, id)?;
    let o = ra
        .officers(actor)?
        .into_iter()
        .find(|o| o.id == id)
        .ok_or_else(|| RaError::Missing(format!("no officer {id}")))?;
    let passkeys = ra.passkeys_of(actor, id)?;
    Ok((o, tokens, passkeys))
}

pub(crate) async fn show(State(portal): St, ctx: Ctx, Path(id): Path<String>) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    let (ra, actor) = (Arc::clone(&portal.ra), session.actor.clone());
    match blocking(move || officer_view(&ra, &actor, &id)).await {
        Ok(view) => officer_page(&ctx, view, None),
        Err(e) => refusal(&ctx, e),
    }
}

#[derive(Deserialize)]
pub(crate) struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    days: String,
}

/// A new API token for the officer (administrators): shown once.
pub(crate) async fn new_token(
    State(portal): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<TokenForm>,
) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    if let Some(r) = forged(&ctx, &session.csrf, &form.csrf) {
        return r;
    }
    if let Some(r) = card_session(&portal, &ctx, "officer.token_create") {
        return r;
    }
    let days = match form.days.trim() {
        "" => None,
        d => match d.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                return refusal(
                    &ctx,
                    RaError::Invalid(format!("days: {d:?} is not a number of days")),
                )
            }
        },
    };
    let req = NewToken {
        label: form.label.trim().to_owned(),
        valid_days: days,
    };
    let (ra, actor) = (Arc::clone(&portal.ra), session.actor.clone());
    let done = blocking(move || {
        let made = ra.create_token(&actor, &id, &req)?;
        // Shown once: a failed re-read must not lose it.
        Ok((made.token, officer_view(&ra, &actor, &id).ok()))
    })
    .await;
    match done {
        Ok((token, Some(view))) => officer_page(&ctx, view, Some(token)),
        Ok((token, None)) => shown_once(&ctx, ctx.tr().token_made, token),
        Err(e) => refusal(&ctx, e),
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

pub(crate) async fn revoke_token(
    State(portal): St,
    ctx: Ctx,
    Path((id, token)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let back = officer_url(&id);
    submit(
        &portal,
        &ctx,
        &form.csrf,
        |_| back,
        move |ra, actor| ra.revoke_token(actor, &id, &token),
    )
    .await
}

fn officer_url(id: &str) -> String {
    format!("/admin/officers/{}", crate::pages::urlencode(id))
}

pub(crate) async fn remove_passkey(
    State(portal): St,
    ctx: Ctx,
    Path((id, passkey)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let back = officer_url(&id);
    submit(
        &portal,
        &ctx,
        &form.csrf,
        |_| back,
        move |ra, actor| ra.remove_passkey(actor, &passkey),
    )
    .await
}

/// Disables an officer (administrators; confirmed: their tokens are revoked, their
/// sessions end at their next request).
pub(crate) async fn disable(
    State(portal): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    if let Some(r) = forged(&ctx, &session.csrf, &form.csrf) {
        return r;
    }
    if form.confirm != "yes" {
        return refusal(
            &ctx,
            RaError::Invalid(ctx.tr().disable_confirm_missing.to_owned()),
        );
    }
    if let Some(r) = card_session(&portal, &ctx, "officer.disable") {
        return r;
    }
    let (ra, actor) = (Arc::clone(&portal.ra), session.actor.clone());
    let back = officer_url(&id);
    match blocking(move || ra.disable_officer(&actor, &id)).await {
        Ok(_) => Redirect::to(&back).into_response(),
        Err(e) => refusal(&ctx, e),
    }
}

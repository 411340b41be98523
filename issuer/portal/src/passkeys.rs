//! Passkeys: an officer registers one inside a session begun with their card, and then
//! signs in with it (user verification required) — for as long as the card certificate it
//! is bound to is a good service ID of theirs. The WebAuthn ceremonies are `webauthn-rs`'s
//! attested-passkey API: the authenticator must prove its model with an attestation
//! chained to a CA the deployment trusts for that model's AAGUID
//! (`DIR/passkey-authenticators/AAGUID.pem`), must not be a synced (backup-eligible)
//! credential, and must verify the user. The RA keeps the credentials, binds them to the
//! card, checks the service ID at every sign-in and every request, and audits.
//!
//! A ceremony's state (its challenge) lives in this server's memory for five minutes and is
//! used once; behind a load balancer, the ceremony's two requests must reach the same
//! server. These are the only pages with script (`static/passkey.js`, from this origin:
//! WebAuthn is a browser API); without it, the card sign-in works as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tessera_issuer_ra::portal::{NewPasskey, PasskeyInfo};
use tessera_issuer_ra::RaError;
use webauthn_rs::prelude::{
    AttestationCaList, AttestationCaListBuilder, AttestationMetadata, AttestedPasskey,
    AttestedPasskeyAuthentication, AttestedPasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
};

use crate::pages::{
    blocking, forged, page, refusal, signed_in, time_of, to_sign_in, with_session, Ctx, Frame,
};
use crate::{cookie, Portal, SIGN_IN_COOKIE};

/// How long a ceremony's challenge is good.
const CEREMONY: Duration = Duration::from_secs(300);
/// Ceremonies kept at once (a bound on what strangers can make the server hold).
const MAX_CEREMONIES: usize = 1000;

/// An authenticator model the deployment trusts: its AAGUID and its attestation CA.
#[derive(Debug, Clone)]
pub struct Authenticator {
    pub aaguid: Uuid,
    pub description: String,
    /// The attestation CA certificate, PEM.
    pub ca_pem: String,
}

impl Authenticator {
    /// The models trusted in `dir`: one `AAGUID.pem` each, the attestation CA certificate
    /// that model's attestations chain to. A missing directory trusts none (passkeys then
    /// cannot be registered; the page says so).
    pub fn load_dir(dir: &std::path::Path) -> Result<Vec<Self>, String> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("pem") {
                continue;
            }
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let aaguid = Uuid::parse_str(stem).map_err(|_| {
                format!(
                    "{}: name the file after the authenticator model's AAGUID (AAGUID.pem)",
                    path.display()
                )
            })?;
            let ca_pem =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            out.push(Self {
                aaguid,
                description: stem.to_owned(),
                ca_pem,
            });
        }
        Ok(out)
    }
}

/// The portal's WebAuthn relying party and its ceremonies in flight.
pub(crate) struct Passkeys {
    webauthn: Option<Webauthn>,
    trusted: Vec<Authenticator>,
    registrations: Mutex<HashMap<String, (AttestedPasskeyRegistration, Instant)>>,
    sign_ins: Mutex<HashMap<String, (String, AttestedPasskeyAuthentication, Instant)>>,
}

impl Passkeys {
    /// The relying party for `origin` (the portal's address as browsers see it: its host
    /// is the passkeys' RP ID, so a name, not an IP address).
    pub(crate) fn new(origin: Option<&Url>, trusted: Vec<Authenticator>) -> Self {
        let webauthn = origin.and_then(|o| {
            let rp_id = o.host_str()?.to_owned();
            match WebauthnBuilder::new(&rp_id, o).and_then(|b| b.rp_name("Tessera").build()) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::error!(error = %e, %o, "passkeys are off: the portal's origin");
                    None
                }
            }
        });
        Self {
            webauthn,
            trusted,
            registrations: Mutex::default(),
            sign_ins: Mutex::default(),
        }
    }

    fn ca_list(&self) -> Option<AttestationCaList> {
        let mut builder = AttestationCaListBuilder::new();
        for a in &self.trusted {
            if let Err(e) = builder.insert_device_pem(
                a.ca_pem.as_bytes(),
                a.aaguid,
                a.description.clone(),
                Default::default(),
            ) {
                tracing::error!(error = ?e, aaguid = %a.aaguid, "an authenticator's attestation CA");
            }
        }
        let list = builder.build();
        (!list.is_empty()).then_some(list)
    }
}

/// A random id for a ceremony.
fn ceremony_id() -> String {
    rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Keeps `value` under `key`, dropping expired ceremonies; refuses when full.
fn keep<V>(
    map: &Mutex<HashMap<String, V>>,
    key: String,
    value: V,
    at: impl Fn(&V) -> Instant,
) -> bool {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.retain(|_, v| at(v).elapsed() < CEREMONY);
    if map.len() >= MAX_CEREMONIES {
        return false;
    }
    map.insert(key, value);
    true
}

/// A stable WebAuthn user handle for an officer (their id, hashed: no name in it).
fn user_handle(officer: &str) -> Uuid {
    let digest = Sha256::digest(format!("tessera portal officer\n{officer}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// An RA refusal as JSON for the script.
fn json_refusal(e: RaError) -> Response {
    let status = match &e {
        RaError::SessionEnded(_) | RaError::Unauthorized => StatusCode::UNAUTHORIZED,
        RaError::Forbidden(_) => StatusCode::FORBIDDEN,
        RaError::Exists(_) => StatusCode::CONFLICT,
        RaError::Invalid(_) | RaError::BadRequest(_) | RaError::Missing(_) => {
            StatusCode::BAD_REQUEST
        }
        _ => {
            tracing::error!(error = %e, "a passkey request failed");
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, "the server failed");
        }
    };
    json_error(status, e.to_string())
}

// ---- The officer's passkeys page ----

#[derive(Template)]
#[template(path = "passkeys.html")]
struct PasskeysPage {
    f: Frame,
    passkeys: Vec<(PasskeyInfo, String, String)>,
    /// Registration possible here: a session begun with the card, and trusted models.
    may_register: bool,
    /// Why not, if not.
    why_not: Option<&'static str>,
}

pub(crate) async fn list(State(portal): State<Arc<Portal>>, ctx: Ctx) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    let (ra, actor) = (Arc::clone(&portal.ra), session.actor.clone());
    let tr = ctx.tr();
    let by_card = session.credential.starts_with("certificate:");
    let why_not = if portal.passkeys.webauthn.is_none() || portal.passkeys.trusted.is_empty() {
        Some(tr.passkeys_off)
    } else if !by_card {
        Some(tr.passkeys_card_only)
    } else {
        None
    };
    match blocking(move || ra.passkeys(&actor)).await {
        Ok(list) => page(
            &ctx,
            StatusCode::OK,
            PasskeysPage {
                f: ctx.frame(tr.passkeys),
                passkeys: list
                    .into_iter()
                    .map(|p| {
                        let created = time_of(p.created_at);
                        let used = p.last_used.map(time_of).unwrap_or_else(|| "—".into());
                        (p, created, used)
                    })
                    .collect(),
                may_register: why_not.is_none(),
                why_not,
            },
        ),
        Err(e) => refusal(&ctx, e),
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn remove(
    State(portal): State<Arc<Portal>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    if let Some(r) = forged(&ctx, &session.csrf, &form.csrf) {
        return r;
    }
    let (ra, actor) = (Arc::clone(&portal.ra), session.actor.clone());
    match blocking(move || ra.remove_passkey(&actor, &id)).await {
        Ok(()) => Redirect::to("/admin/passkeys").into_response(),
        Err(e) => refusal(&ctx, e),
    }
}

// ---- Registration (script: the card session's own page) ----

#[derive(Deserialize)]
pub(crate) struct Registering {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    label: String,
    credential: Option<RegisterPublicKeyCredential>,
}

/// `POST /admin/passkeys/options`: the creation options for the browser.
pub(crate) async fn registration_options(
    State(portal): State<Arc<Portal>>,
    ctx: Ctx,
    Json(body): Json<Registering>,
) -> Response {
    let Some((token, session)) = signed_in(&ctx) else {
        return json_error(StatusCode::UNAUTHORIZED, ctx.tr().session_over);
    };
    if forged(&ctx, &session.csrf, &body.csrf).is_some() {
        return json_error(StatusCode::FORBIDDEN, ctx.tr().forbidden_csrf);
    }
    if !session.credential.starts_with("certificate:") {
        return json_error(StatusCode::FORBIDDEN, ctx.tr().passkeys_card_only);
    }
    let (Some(webauthn), Some(cas)) = (&portal.passkeys.webauthn, portal.passkeys.ca_list()) else {
        return json_error(StatusCode::CONFLICT, ctx.tr().passkeys_off);
    };
    let ra = Arc::clone(&portal.ra);
    let actor = session.actor.clone();
    let existing = match blocking(move || ra.passkeys(&actor)).await {
        Ok(list) => list,
        Err(e) => return json_refusal(e),
    };
    let exclude = existing
        .iter()
        .filter_map(|p| {
            use base64ct::Encoding;
            base64ct::Base64UrlUnpadded::decode_vec(&p.id).ok()
        })
        .collect();
    let actor = &session.actor;
    match webauthn.start_attested_passkey_registration(
        user_handle(&actor.name),
        &actor.name,
        &session.display_name,
        Some(exclude),
        cas,
        None,
    ) {
        Ok((options, state)) => {
            let key = hex_sha256(token);
            if !keep(
                &portal.passkeys.registrations,
                key,
                (state, Instant::now()),
                |v| v.1,
            ) {
                return json_error(StatusCode::SERVICE_UNAVAILABLE, ctx.tr().server_failed);
            }
            Json(options).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "starting a passkey registration");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, ctx.tr().server_failed)
        }
    }
}

fn hex_sha256(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `POST /admin/passkeys`: the browser's new credential, verified and kept.
pub(crate) async fn register(
    State(portal): State<Arc<Portal>>,
    ctx: Ctx,
    Json(body): Json<Registering>,
) -> Response {
    let Some((token, session)) = signed_in(&ctx) else {
        return json_error(StatusCode::UNAUTHORIZED, ctx.tr().session_over);
    };
    if forged(&ctx, &session.csrf, &body.csrf).is_some() {
        return json_error(StatusCode::FORBIDDEN, ctx.tr().forbidden_csrf);
    }
    let Some(webauthn) = &portal.passkeys.webauthn else {
        return json_error(StatusCode::CONFLICT, ctx.tr().passkeys_off);
    };
    let Some(credential) = body.credential else {
        return json_error(StatusCode::BAD_REQUEST, "no credential");
    };
    // The ceremony's state, once.
    let state = portal
        .passkeys
        .registrations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&hex_sha256(token))
        .filter(|(_, at)| at.elapsed() < CEREMONY);
    let Some((state, _)) = state else {
        return json_error(StatusCode::BAD_REQUEST, ctx.tr().passkey_ceremony_expired);
    };
    let passkey: AttestedPasskey = match webauthn
        .finish_attested_passkey_registration(&credential, &state)
    {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, officer = %session.actor.name, "a passkey registration refused");
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("{}: {e}", ctx.tr().passkey_refused),
            );
        }
    };
    let aaguid = match &passkey.attestation().metadata {
        AttestationMetadata::Packed { aaguid } | AttestationMetadata::Tpm { aaguid, .. } => {
            aaguid.to_string()
        }
        _ => "unknown".into(),
    };
    let stored = match serde_json::to_string(&passkey) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "serialising a passkey");
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, ctx.tr().server_failed);
        }
    };
    let new = NewPasskey {
        id: {
            use base64ct::Encoding;
            base64ct::Base64UrlUnpadded::encode_string(passkey.cred_id().as_ref())
        },
        label: body.label,
        credential: stored,
        aaguid,
    };
    let ra = Arc::clone(&portal.ra);
    let (token, peer) = (token.to_owned(), ctx.peer.0.clone());
    match blocking(move || ra.register_passkey(&token, peer.as_deref(), &new)).await {
        Ok(_) => Json(serde_json::json!({ "next": "/admin/passkeys" })).into_response(),
        Err(e) => json_refusal(e),
    }
}

// ---- Sign-in (script on the sign-in page) ----

#[derive(Deserialize)]
pub(crate) struct SigningIn {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    officer: String,
    #[serde(default)]
    ceremony: String,
    credential: Option<PublicKeyCredential>,
}

/// `POST /admin/sign-in/passkey/options`: a challenge for the officer's passkeys.
pub(crate) async fn sign_in_options(
    State(portal): State<Arc<Portal>>,
    ctx: Ctx,
    Json(body): Json<SigningIn>,
) -> Response {
    let expected = cookie(&ctx.headers, SIGN_IN_COOKIE)
        .unwrap_or("")
        .to_owned();
    if forged(&ctx, &expected, &body.csrf).is_some() {
        return json_error(StatusCode::FORBIDDEN, ctx.tr().forbidden_csrf);
    }
    let Some(webauthn) = &portal.passkeys.webauthn else {
        return json_error(StatusCode::CONFLICT, ctx.tr().passkeys_off);
    };
    let officer = body.officer.trim().to_owned();
    let ra = Arc::clone(&portal.ra);
    let name = officer.clone();
    let stored = match blocking(move || ra.passkey_credentials(&name)).await {
        Ok(list) => list,
        Err(e) => return json_refusal(e),
    };
    let passkeys: Vec<AttestedPasskey> = stored
        .iter()
        .filter_map(|s| serde_json::from_str(s).ok())
        .collect();
    if passkeys.is_empty() {
        // Said the same way for an unknown officer.
        return json_error(StatusCode::BAD_REQUEST, ctx.tr().passkey_none);
    }
    match webauthn.start_attested_passkey_authentication(&passkeys) {
        Ok((options, state)) => {
            let id = ceremony_id();
            if !keep(
                &portal.passkeys.sign_ins,
                id.clone(),
                (officer, state, Instant::now()),
                |v| v.2,
            ) {
                return json_error(StatusCode::SERVICE_UNAVAILABLE, ctx.tr().server_failed);
            }
            Json(serde_json::json!({ "ceremony": id, "options": options })).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "starting a passkey sign-in");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, ctx.tr().server_failed)
        }
    }
}

/// `POST /admin/sign-in/passkey`: the browser's assertion; a session if it verifies and
/// the passkey's card is still a good service ID.
pub(crate) async fn sign_in(
    State(portal): State<Arc<Portal>>,
    ctx: Ctx,
    Json(body): Json<SigningIn>,
) -> Response {
    let expected = cookie(&ctx.headers, SIGN_IN_COOKIE)
        .unwrap_or("")
        .to_owned();
    if forged(&ctx, &expected, &body.csrf).is_some() {
        return json_error(StatusCode::FORBIDDEN, ctx.tr().forbidden_csrf);
    }
    let Some(webauthn) = &portal.passkeys.webauthn else {
        return json_error(StatusCode::CONFLICT, ctx.tr().passkeys_off);
    };
    let Some(credential) = body.credential else {
        return json_error(StatusCode::BAD_REQUEST, "no credential");
    };
    let state = portal
        .passkeys
        .sign_ins
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&body.ceremony)
        .filter(|(_, _, at)| at.elapsed() < CEREMONY);
    let Some((officer, state, _)) = state else {
        return json_error(StatusCode::BAD_REQUEST, ctx.tr().passkey_ceremony_expired);
    };
    let result = match webauthn.finish_attested_passkey_authentication(&credential, &state) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, %officer, "a passkey sign-in refused");
            return json_error(StatusCode::FORBIDDEN, ctx.tr().passkey_refused);
        }
    };
    // The stored credential, its counter brought up to date.
    let ra = Arc::clone(&portal.ra);
    let name = officer.clone();
    let stored = match blocking(move || ra.passkey_credentials(&name)).await {
        Ok(list) => list,
        Err(e) => return json_refusal(e),
    };
    let Some(mut passkey) = stored
        .iter()
        .filter_map(|s| serde_json::from_str::<AttestedPasskey>(s).ok())
        .find(|p| p.cred_id() == result.cred_id())
    else {
        return json_error(StatusCode::FORBIDDEN, ctx.tr().passkey_refused);
    };
    passkey.update_credential(&result);
    let (id, updated) = match serde_json::to_string(&passkey) {
        Ok(s) => {
            use base64ct::Encoding;
            (
                base64ct::Base64UrlUnpadded::encode_string(passkey.cred_id().as_ref()),
                s,
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "serialising a passkey");
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, ctx.tr().server_failed);
        }
    };
    let ra = Arc::clone(&portal.ra);
    match blocking(move || ra.sign_in_with_passkey(&id, &updated)).await {
        Ok((token, _)) => with_session(
            Json(serde_json::json!({ "next": "/admin/" })).into_response(),
            &token,
        ),
        Err(RaError::Forbidden(why)) => json_error(
            StatusCode::FORBIDDEN,
            format!("{}: {why}", ctx.tr().sign_in_refused),
        ),
        Err(e) => json_refusal(e),
    }
}

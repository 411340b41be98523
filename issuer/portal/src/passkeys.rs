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
use axum::response::{IntoResponse, Response};
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

use crate::pages::submit;
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
            // Refused at start, not at an officer's first registration.
            AttestationCaListBuilder::new()
                .insert_device_pem(
                    ca_pem.as_bytes(),
                    aaguid,
                    stem.to_owned(),
                    Default::default(),
                )
                .map_err(|e| {
                    format!(
                        "{}: not an attestation CA certificate: {e:?}",
                        path.display()
                    )
                })?;
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
    /// Per session (its cookie's hash): the officer, the ceremony, when.
    registrations: Mutex<HashMap<String, (String, AttestedPasskeyRegistration, Instant)>>,
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

/// Ceremonies one officer may have in flight (a new one replaces their oldest).
const PER_OFFICER: usize = 4;

/// Keeps `value` under `key` for its officer, dropping expired ceremonies; when the officer
/// has [`PER_OFFICER`], or all have [`MAX_CEREMONIES`], the oldest goes (never a refusal:
/// a stranger's flood cannot lock officers out, only make one start again).
fn keep<V>(
    map: &Mutex<HashMap<String, V>>,
    key: String,
    value: V,
    owner: impl Fn(&V) -> &str,
    at: impl Fn(&V) -> Instant,
) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.retain(|_, v| at(v).elapsed() < CEREMONY);
    let oldest = |map: &HashMap<String, V>, of: Option<&str>| {
        map.iter()
            .filter(|(_, v)| of.is_none_or(|o| owner(v) == o))
            .min_by_key(|(_, v)| at(v))
            .map(|(k, _)| k.clone())
    };
    let this = owner(&value).to_owned();
    if map.values().filter(|v| owner(v) == this).count() >= PER_OFFICER {
        if let Some(k) = oldest(&map, Some(&this)) {
            map.remove(&k);
        }
    }
    if map.len() >= MAX_CEREMONIES {
        if let Some(k) = oldest(&map, None) {
            map.remove(&k);
        }
    }
    map.insert(key, value);
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
        Ok(list) => crate::with_script(page(
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
        )),
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
    submit(
        &portal,
        &ctx,
        &form.csrf,
        |_| "/admin/passkeys".to_owned(),
        move |ra, actor| ra.remove_passkey(actor, &id),
    )
    .await
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
        let (ra, actor) = (Arc::clone(&portal.ra), session.actor.clone());
        tokio::task::spawn_blocking(move || {
            ra.audit_refusal(
                &actor,
                "portal.passkey_register",
                "a passkey is registered only in a session begun with the officer's card",
            )
        });
        return json_error(StatusCode::FORBIDDEN, ctx.tr().passkeys_card_only);
    }
    // The name first: a bad one refused before the authenticator makes a credential.
    let label = body.label.trim();
    if label.is_empty() || label.chars().count() > 100 || label.chars().any(char::is_control) {
        return json_error(StatusCode::BAD_REQUEST, ctx.tr().passkey_label_bad);
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
            keep(
                &portal.passkeys.registrations,
                hex_sha256(token),
                (actor.name.clone(), state, Instant::now()),
                |v| &v.0,
                |v| v.2,
            );
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
        .filter(|(_, _, at)| at.elapsed() < CEREMONY);
    let Some((_, state, _)) = state else {
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
    // Only passkeys whose model the deployment still trusts: a model withdrawn (its CA
    // file removed) takes its passkeys with it.
    let cas = portal.passkeys.ca_list();
    let passkeys: Vec<AttestedPasskey> = stored
        .iter()
        .filter_map(|s| serde_json::from_str::<AttestedPasskey>(s).ok())
        .filter(|p| {
            cas.as_ref()
                .is_some_and(|c| p.verify_attestation(c).is_ok())
        })
        .collect();
    if passkeys.is_empty() {
        // Said the same way for an unknown officer.
        return json_error(StatusCode::BAD_REQUEST, ctx.tr().passkey_none);
    }
    match webauthn.start_attested_passkey_authentication(&passkeys) {
        Ok((options, state)) => {
            let id = ceremony_id();
            keep(
                &portal.passkeys.sign_ins,
                id.clone(),
                (officer, state, Instant::now()),
                |v| &v.0,
                |v| v.2,
            );
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
    let refuse = |why: String, passkey: Option<String>, compromised: bool| {
        let ra = Arc::clone(&portal.ra);
        let officer = officer.clone();
        // Audited off the async threads; the answer does not wait for it.
        tokio::task::spawn_blocking(move || {
            ra.passkey_refused(&officer, passkey.as_deref(), &why, compromised)
        });
        json_error(StatusCode::FORBIDDEN, ctx.tr().passkey_refused)
    };
    let result = match webauthn.finish_attested_passkey_authentication(&credential, &state) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, %officer, "a passkey sign-in refused");
            return refuse(e.to_string(), None, false);
        }
    };
    let id = {
        use base64ct::Encoding;
        base64ct::Base64UrlUnpadded::encode_string(result.cred_id().as_ref())
    };
    // The stored credential as it is now (not the ceremony's copy): its counter must move
    // on, else a clone of the authenticator is about.
    let ra = Arc::clone(&portal.ra);
    let name = officer.clone();
    let stored = match blocking(move || ra.passkey_credentials(&name)).await {
        Ok(list) => list,
        Err(e) => return json_refusal(e),
    };
    let Some((before, mut passkey)) = stored.into_iter().find_map(|s| {
        let p = serde_json::from_str::<AttestedPasskey>(&s).ok()?;
        (p.cred_id() == result.cred_id()).then_some((s, p))
    }) else {
        return refuse(
            "the passkey is not among the officer's live ones".into(),
            Some(id),
            false,
        );
    };
    let moved = passkey.update_credential(&result);
    if result.counter() > 0 && moved != Some(true) {
        return refuse(
            format!(
                "its signature counter did not move on ({}): a cloned authenticator? the passkey is removed",
                result.counter()
            ),
            Some(id),
            true,
        );
    }
    let updated = match serde_json::to_string(&passkey) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "serialising a passkey");
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, ctx.tr().server_failed);
        }
    };
    let ra = Arc::clone(&portal.ra);
    match blocking(move || ra.sign_in_with_passkey(&id, &before, &updated)).await {
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

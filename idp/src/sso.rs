//! Single sign-on on the SSO host: an AuthnRequest in (HTTP-Redirect or HTTP-POST), read
//! from what its signature covered, held against its relying party (`tessera-saml`'s
//! `accept`), remembered against replay; then either the browser's live session answers,
//! or the browser goes to the login host and comes back with a one-time ticket; the user
//! approves what is released (unless remembered); and the sealed Response goes to the
//! relying party's ACS by HTTP-POST. Every step that changes something is one store
//! transaction with its audit record.
//!
//! Sessions (K8.3, DP 5.4.5): at most `session_minutes` (60) from the login, never reused
//! under ForceAuthn or for another LoA, AuthnInstant always the login's own time; ended by
//! the user, an administrator, or the issuer's status feed (see `serve`).

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{ConnectInfo, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use base64ct::Encoding;
use tessera_idp_store::{Consent, Pending, Session};
use tessera_issuer_types::api::Holder;
use tessera_saml::accept::{accept, Refusal, Rules};
use tessera_saml::metadata::RelyingParty;
use tessera_saml::request::{AuthnRequest, Incoming};
use tessera_saml::response::{
    new_id, seal, Assertion, Attribute, Response as SamlResponse, Seal, Status,
    STATUS_AUTHN_FAILED, STATUS_CANCEL, STATUS_NO_PASSIVE, STATUS_REQUESTER, STATUS_REQUEST_DENIED,
    STATUS_RESPONDER,
};
use tessera_xmlsec::Cipher;

use crate::serve::Idp;
use crate::web::{self, Tr};

/// The cookie that binds waiting requests to the browser that brought them.
pub(crate) const BROWSER_COOKIE: &str = "tessera_idp_browser";
/// The SSO session's cookie.
pub(crate) const SESSION_COOKIE: &str = "tessera_idp_session";
/// How old a request may be, and the clock skew allowed (the draft profile: a minute).
const MAX_AGE: Duration = Duration::from_secs(300);
const SKEW: Duration = Duration::from_secs(60);
/// How long a request waits for the user (login, approval).
const WAIT: i64 = 15 * 60;
/// How long an assertion may be used (K8.2: short).
const ASSERTION_LIFE: Duration = Duration::from_secs(300);

/// The org-person attribute set (ELN-AP-OrgPerson-01): name, friendly name, the labels
/// shown on the release page, and whether the profile requires it.
const ORG_PERSON: [(&str, &str, &str, &str, bool); 7] = [
    (
        "urn:oid:2.16.840.1.113730.3.1.241",
        "displayName",
        "Namn",
        "Name",
        true,
    ),
    (
        "urn:oid:1.2.752.201.3.1",
        "orgAffiliation",
        "Anknytning till organisationen",
        "Affiliation",
        true,
    ),
    (
        "urn:oid:2.5.4.10",
        "o",
        "Organisation",
        "Organisation",
        true,
    ),
    (
        "urn:oid:2.5.4.97",
        "organizationIdentifier",
        "Organisationsnummer",
        "Organisation number",
        false,
    ),
    (
        "urn:oid:2.5.4.42",
        "givenName",
        "Förnamn",
        "Given name",
        false,
    ),
    ("urn:oid:2.5.4.4", "sn", "Efternamn", "Surname", false),
    (
        "urn:oid:0.9.2342.19200300.100.1.3",
        "mail",
        "E-post",
        "E-mail",
        false,
    ),
];

/// What a waiting request needs to be answered (JSON in the store).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Waiting {
    request_id: String,
    acs: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    relay_state: Option<String>,
    /// The release page's form token.
    consent_token: String,
    force_authn: bool,
    /// IsPassive: no page may be shown (the release page neither).
    #[serde(default)]
    is_passive: bool,
    /// PrincipalSelection's MatchValues: the person the relying party expects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    principal: Vec<(String, String)>,
}

/// The browser as a request shows it.
#[derive(Debug, Clone)]
pub(crate) struct Browser {
    pub address: String,
    pub tr: &'static Tr,
    pub binding: Option<String>,
    pub session: Option<String>,
}

impl Browser {
    pub(crate) fn of(headers: &HeaderMap, peer: std::net::SocketAddr, https: bool) -> Self {
        Self {
            address: peer.ip().to_string(),
            tr: web::tr(headers),
            binding: web::cookie(headers, &web::cookie_name(BROWSER_COOKIE, https)),
            session: web::cookie(headers, &web::cookie_name(SESSION_COOKIE, https)),
        }
    }
}

/// Runs `f` off the async threads (the token, libxmlsec1, the database all block).
pub(crate) async fn blocking(
    idp: Arc<Idp>,
    f: impl FnOnce(&Idp) -> Response + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(move || f(&idp)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "an SSO step panicked");
            web::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &web::SV,
                "internal error",
            )
        }
    }
}

pub(crate) async fn sso_redirect(
    State(idp): State<Arc<Idp>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let b = Browser::of(&headers, peer, idp.https());
    blocking(idp, move |idp| {
        let incoming = Incoming::from_redirect(query.as_deref().unwrap_or(""));
        receive(idp, incoming, &b)
    })
    .await
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct PostedRequest {
    #[serde(rename = "SAMLRequest")]
    saml_request: String,
    #[serde(rename = "RelayState")]
    relay_state: Option<String>,
}

pub(crate) async fn sso_post(
    State(idp): State<Arc<Idp>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<PostedRequest>, axum::extract::rejection::FormRejection>,
) -> Response {
    let b = Browser::of(&headers, peer, idp.https());
    let Ok(Form(form)) = form else {
        return web::error(
            StatusCode::BAD_REQUEST,
            b.tr,
            "no SAMLRequest in the form (HTTP-POST binding)",
        );
    };
    blocking(idp, move |idp| {
        let incoming = Incoming::from_post(&form.saml_request, form.relay_state);
        receive(idp, incoming, &b)
    })
    .await
}

pub(crate) fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Audits `action` by `actor` in its own transaction (refusals: nothing else changes).
pub(crate) fn audit_alone(idp: &Idp, actor: &str, action: &str, details: serde_json::Value) {
    let at = secs(idp.clock.now());
    if let Err(e) = idp
        .store
        .write(|tx| tx.audit(actor, action, &details.to_string(), at))
    {
        tracing::error!(error = %e, action, "auditing failed");
    }
}

/// A refused request, shown to the user (nothing goes to the relying party). Audited when
/// it came from a relying party whose request verified (a replay, a wrong ACS); before
/// that (unreadable, unknown sender, bad signature) anyone can send one, so it is logged
/// and counted but kept out of the audit chain, which no flood should fill.
fn refuse(idp: &Idp, b: &Browser, rp: Option<&str>, why: &str) -> Response {
    idp.metrics.requests_refused.inc();
    audit_alone(
        idp,
        &b.address,
        "sso.refused",
        serde_json::json!({ "relying_party": rp, "reason": why }),
    );
    web::error(StatusCode::BAD_REQUEST, b.tr, why)
}

/// A request refused before anything in it could be trusted: logged, counted, shown.
fn refuse_unverified(idp: &Idp, b: &Browser, why: &str, shown: &str) -> Response {
    idp.metrics.requests_refused.inc();
    tracing::info!(address = %b.address, reason = %why, "SSO request refused before verification");
    web::error(StatusCode::BAD_REQUEST, b.tr, shown)
}

fn receive(
    idp: &Idp,
    incoming: Result<Incoming, tessera_saml::request::RequestError>,
    b: &Browser,
) -> Response {
    let now = idp.clock.now();
    let incoming = match incoming {
        Ok(i) => i,
        Err(e) => return refuse_unverified(idp, b, &e.to_string(), &e.to_string()),
    };
    let claimed = match incoming.claimed_issuer() {
        Ok(c) => c,
        Err(e) => return refuse_unverified(idp, b, &e.to_string(), &e.to_string()),
    };
    let Some(rp) = idp.parties.get(&claimed, now) else {
        // Not echoed: an unsigned issuer would put any text on our page.
        return refuse_unverified(
            idp,
            b,
            &format!(
                "unknown relying party {}",
                claimed.chars().take(200).collect::<String>()
            ),
            "the e-service that sent you here is not known to this IdP",
        );
    };
    let verified = match incoming.verify(&rp.signing_certificates, rp.authn_requests_signed) {
        Ok(v) => v,
        Err(e) => return refuse_unverified(idp, b, &e.to_string(), &e.to_string()),
    };
    let request = match AuthnRequest::parse(&verified) {
        Ok(r) => r,
        Err(e) => return refuse(idp, b, Some(&rp.entity_id), &e.to_string()),
    };
    let sso_url = format!("{}/saml/sso", idp.config.base_url);
    let rules = Rules {
        sso_url: &sso_url,
        loa: idp.loa,
        max_age: MAX_AGE,
        skew: SKEW,
    };
    let accepted = match accept(&request, verified.signed, &rp, rules, now) {
        Ok(a) => a,
        Err(Refusal::Page(why)) => return refuse(idp, b, Some(&rp.entity_id), &why),
        Err(Refusal::Status {
            acs,
            code,
            sub,
            message,
        }) => {
            return status(
                idp,
                b,
                &rp,
                &request.id,
                &acs,
                incoming.relay_state.clone(),
                code,
                sub,
                &message,
            )
        }
    };
    // Every assertion is encrypted (DP §6.1): a relying party without a key to encrypt to
    // is told now, before the user logs in for nothing.
    if rp.encryption_certificates.is_empty() {
        return status(
            idp,
            b,
            &rp,
            &request.id,
            &accepted.acs,
            incoming.relay_state.clone(),
            STATUS_REQUESTER,
            STATUS_REQUEST_DENIED,
            "the relying party's metadata has no encryption key, and assertions are always encrypted",
        );
    }
    // A request is answered once: its ID is remembered for as long as it could be
    // accepted at all — in the transaction that stores it as waiting, or alone when it is
    // answered at once (one write, one disk flush, per request).
    let at = secs(now);
    let until = secs(now + MAX_AGE + SKEW + SKEW);
    let replay = || {
        refuse(
            idp,
            b,
            Some(&rp.entity_id),
            &format!("request {} was received before (a replay)", request.id),
        )
    };
    // A session is reused only for the same LoA, without ForceAuthn, and for the person
    // a PrincipalSelection names (another person's session on a shared PC is not it).
    let principal = principal_for(&rp, &request.principal_selection);
    let session = match live_session(idp, b, at) {
        Ok(s) => s.filter(|s| {
            s.loa == idp.loa
                && !request.force_authn
                && serde_json::from_str::<Holder>(&s.holder)
                    .is_ok_and(|h| principal_mismatch(idp, &principal, &h).is_none())
        }),
        Err(e) => return unavailable(b, &e),
    };
    if request.is_passive && session.is_none() {
        match idp
            .store
            .write(|tx| tx.remember_request(&rp.entity_id, &request.id, until, at))
        {
            Ok(true) => {}
            Ok(false) => return replay(),
            Err(e) => return unavailable(b, &e),
        }
        return status(
            idp,
            b,
            &rp,
            &request.id,
            &accepted.acs,
            incoming.relay_state.clone(),
            STATUS_RESPONDER,
            STATUS_NO_PASSIVE,
            "no session, and the request does not let us ask the user",
        );
    }
    let (binding, new_binding) = match &b.binding {
        Some(v) => (v.clone(), None),
        None => {
            let v = web::random_token();
            (v.clone(), Some(v))
        }
    };
    let waiting = Waiting {
        request_id: request.id.clone(),
        acs: accepted.acs.clone(),
        relay_state: incoming.relay_state.clone(),
        consent_token: web::random_token(),
        force_authn: request.force_authn,
        is_passive: request.is_passive,
        principal,
    };
    let pending = Pending {
        id: web::random_token(),
        browser_hash: web::sha256_hex(binding.as_bytes()),
        relying_party: rp.entity_id.clone(),
        request: match serde_json::to_string(&waiting) {
            Ok(j) => j,
            Err(e) => return web::error(StatusCode::INTERNAL_SERVER_ERROR, b.tr, &e.to_string()),
        },
        created_at: at,
        expires_at: at + WAIT,
    };
    let details = serde_json::json!({
        "relying_party": rp.entity_id,
        "request": request.id,
        "force_authn": request.force_authn,
        "is_passive": request.is_passive,
        "signed": verified.signed,
    });
    match idp.store.write(|tx| {
        if !tx.remember_request(&rp.entity_id, &request.id, until, at)? {
            return Ok(false);
        }
        tx.put_pending(&pending, at)?;
        tx.audit(&b.address, "sso.request", &details.to_string(), at)?;
        Ok::<_, tessera_idp_store::StoreError>(true)
    }) {
        Ok(true) => {}
        Ok(false) => return replay(),
        Err(e) => return unavailable(b, &e),
    }
    idp.metrics.requests.inc();
    let cookies: Vec<String> = new_binding
        .iter()
        .map(|v| web::set_cookie(BROWSER_COOKIE, v, idp.https(), None))
        .collect();
    if let Some(session) = session {
        let mut r = answer(idp, b, &pending, &waiting, &rp, &session);
        for c in &cookies {
            if let Ok(v) = axum::http::HeaderValue::from_str(c) {
                r.headers_mut().append(axum::http::header::SET_COOKIE, v);
            }
        }
        return r;
    }
    let Some(login) = &idp.login else {
        return web::error(
            StatusCode::SERVICE_UNAVAILABLE,
            b.tr,
            "this IdP has no card login set up (tessera-idp init --card-ca …)",
        );
    };
    web::redirect(
        &format!("{}/login?p={}", login.base_url, pending.id),
        &cookies,
    )
}

pub(crate) fn unavailable(b: &Browser, e: &tessera_idp_store::StoreError) -> Response {
    tracing::error!(error = %e, "the IdP database failed");
    web::error(
        StatusCode::SERVICE_UNAVAILABLE,
        b.tr,
        "the IdP cannot reach its database just now",
    )
}

/// The browser's session, if its cookie names one that is live now and the status feed
/// is current (else a revocation could be missed: a new login is asked for).
pub(crate) fn live_session(
    idp: &Idp,
    b: &Browser,
    now: i64,
) -> Result<Option<Session>, tessera_idp_store::StoreError> {
    let Some(cookie) = b.session.as_ref() else {
        return Ok(None);
    };
    let hash = web::sha256_hex(cookie.as_bytes());
    let session = idp
        .store
        .read(|tx| tx.session_by_cookie(&hash))?
        .filter(|s| s.live(now));
    if session.is_some() && !idp.feed_is_current() {
        tracing::warn!("the issuer's status feed is not current: a session is not reused");
        return Ok(None);
    }
    Ok(session)
}

#[derive(Template)]
#[template(path = "post.html")]
struct PostPage<'a> {
    tr: &'a Tr,
    title: &'a str,
    acs: &'a str,
    response: String,
    relay_state: Option<String>,
    party: String,
}

/// The Response sealed for `rp`: signed, with its assertion (if any) signed and
/// encrypted to the relying party's key.
fn seal_for(
    idp: &Idp,
    rp: &RelyingParty,
    response: &SamlResponse,
    assertion: Option<&Assertion>,
) -> Result<Vec<u8>, String> {
    let cipher = Cipher::for_methods(&rp.encryption_methods);
    let empty: &[u8] = &[];
    let encrypt_to = rp
        .encryption_certificates
        .first()
        .map_or(empty, Vec::as_slice);
    if assertion.is_some() && encrypt_to.is_empty() {
        return Err(format!(
            "{} publishes no encryption key, and assertions are always encrypted",
            rp.entity_id
        ));
    }
    let sign = |bytes: &[u8]| idp.signer.sign_raw(bytes).map_err(|e| format!("{e:#}"));
    seal(
        response,
        assertion,
        Seal {
            alg: idp.signer.alg(),
            certificate: idp.signer.certificate(),
            encrypt_to: (encrypt_to, cipher),
        },
        &sign,
    )
    .map_err(|e| {
        idp.metrics.signing_failures.inc();
        tracing::error!(error = %e, "sealing a Response failed");
        e.to_string()
    })
}

/// A sealed Response in a form that posts itself to the ACS (the button does it without
/// JavaScript).
fn post_page(
    b: &Browser,
    rp: &RelyingParty,
    acs: &str,
    relay_state: Option<String>,
    sealed: &[u8],
) -> Response {
    web::html(
        StatusCode::OK,
        PostPage {
            tr: b.tr,
            title: b.tr.post_title,
            acs,
            response: base64ct::Base64::encode_string(sealed),
            relay_state,
            party: party_name(rp),
        }
        .render(),
    )
}

fn party_name(rp: &RelyingParty) -> String {
    rp.display_name
        .clone()
        .unwrap_or_else(|| rp.entity_id.clone())
}

/// An error status to the relying party (audited).
#[allow(clippy::too_many_arguments)] // one call site per reason; a struct would only rename them
fn status(
    idp: &Idp,
    b: &Browser,
    rp: &RelyingParty,
    in_response_to: &str,
    acs: &str,
    relay_state: Option<String>,
    code: &'static str,
    sub: &'static str,
    message: &str,
) -> Response {
    let (sealed, details) = match error_status(idp, rp, in_response_to, acs, code, sub, message) {
        Ok(x) => x,
        Err(e) => return web::error(StatusCode::INTERNAL_SERVER_ERROR, b.tr, &e),
    };
    audit_alone(idp, &b.address, "sso.status", details);
    post_page(b, rp, acs, relay_state, &sealed)
}

/// An error Response, sealed, and what its audit record says.
fn error_status(
    idp: &Idp,
    rp: &RelyingParty,
    in_response_to: &str,
    acs: &str,
    code: &'static str,
    sub: &'static str,
    message: &str,
) -> Result<(Vec<u8>, serde_json::Value), String> {
    let response = SamlResponse {
        id: new_id(),
        in_response_to: in_response_to.to_owned(),
        destination: acs.to_owned(),
        issuer: idp.config.entity_id.clone(),
        issue_instant: idp.clock.now(),
        status: Status::Error {
            code,
            sub: Some(sub),
            message: message.to_owned(),
        },
    };
    let sealed = seal_for(idp, rp, &response, None)?;
    let details = serde_json::json!({
        "relying_party": rp.entity_id, "request": in_response_to,
        "status": code, "sub": sub, "message": message,
    });
    Ok((sealed, details))
}

/// Ends a waiting request with Responder and `sub` (the user cancelled, IsPassive could
/// not be kept, the card login failed): sealed first, then the request spent and the
/// status audited in one transaction — answered once, whichever click comes first.
fn end_waiting(
    idp: &Idp,
    b: &Browser,
    pending: &Pending,
    waiting: &Waiting,
    rp: &RelyingParty,
    sub: &'static str,
    message: &str,
) -> Response {
    let (sealed, details) = match error_status(
        idp,
        rp,
        &waiting.request_id,
        &waiting.acs,
        STATUS_RESPONDER,
        sub,
        message,
    ) {
        Ok(x) => x,
        Err(e) => return web::error(StatusCode::INTERNAL_SERVER_ERROR, b.tr, &e),
    };
    let at = secs(idp.clock.now());
    let spent = idp.store.write(|tx| {
        if !tx.take_pending(&pending.id)? {
            return Ok(false);
        }
        tx.audit(&b.address, "sso.status", &details.to_string(), at)?;
        Ok::<_, tessera_idp_store::StoreError>(true)
    });
    match spent {
        Ok(true) => post_page(b, rp, &waiting.acs, waiting.relay_state.clone(), &sealed),
        Ok(false) => answered(b),
        Err(e) => unavailable(b, &e),
    }
}

/// The attributes released to `rp` about `holder`: the attribute set's required three
/// always; the others only when the relying party asks for them in its metadata
/// (PROFILES.md: release only what is requested); `mail` only when the person has one.
fn release(idp: &Idp, rp: &RelyingParty, holder: &Holder, tr: &Tr) -> Vec<(Attribute, String)> {
    let asked = |name: &str| rp.requested_attributes.iter().any(|a| a.name == name);
    let org = &idp.config.organisation;
    let mut out = Vec::new();
    for (name, friendly, sv, en, required) in ORG_PERSON {
        if !required && !asked(name) {
            continue;
        }
        let value = match friendly {
            "displayName" => format!("{} {}", holder.given_name, holder.family_name),
            "orgAffiliation" => format!("{}@{}", holder.employee_number, org.number),
            "o" => org.name.clone(),
            "organizationIdentifier" => org.number.clone(),
            "givenName" => holder.given_name.clone(),
            "sn" => holder.family_name.clone(),
            "mail" => match &holder.email {
                Some(m) => m.clone(),
                None => continue,
            },
            _ => continue,
        };
        let label = if tr.lang == "sv" { sv } else { en };
        out.push((
            Attribute {
                name: name.to_owned(),
                friendly_name: friendly.to_owned(),
                values: vec![value],
            },
            label.to_owned(),
        ));
    }
    out
}

fn names(attributes: &[(Attribute, String)]) -> String {
    let mut n: Vec<&str> = attributes
        .iter()
        .map(|(a, _)| a.friendly_name.as_str())
        .collect();
    n.sort_unstable();
    n.join(",")
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage<'a> {
    tr: &'a Tr,
    title: &'a str,
    party: String,
    entity_id: &'a str,
    attributes: Vec<(String, String)>,
    pending: &'a str,
    token: &'a str,
}

/// Answers a waiting request with a live session: the release page first, unless this
/// person's approval for this relying party and this set is remembered.
fn answer(
    idp: &Idp,
    b: &Browser,
    pending: &Pending,
    waiting: &Waiting,
    rp: &RelyingParty,
    session: &Session,
) -> Response {
    let holder: Holder = match serde_json::from_str(&session.holder) {
        Ok(h) => h,
        Err(e) => return web::error(StatusCode::INTERNAL_SERVER_ERROR, b.tr, &e.to_string()),
    };
    let attributes = release(idp, rp, &holder, b.tr);
    let remembered = idp
        .store
        .read(|tx| tx.consent(&session.person_id, &rp.entity_id));
    match remembered {
        Ok(Some(c)) if c.attributes == names(&attributes) => respond(
            idp,
            b,
            pending,
            waiting,
            rp,
            session,
            attributes,
            Approval::Remembered,
        ),
        // IsPassive: the release page would be a page; the relying party hears so.
        Ok(_) if waiting.is_passive => end_waiting(
            idp,
            b,
            pending,
            waiting,
            rp,
            STATUS_NO_PASSIVE,
            "the release of attributes needs the user's approval, and the request does not let us ask",
        ),
        Ok(_) => web::html(
            StatusCode::OK,
            ConsentPage {
                tr: b.tr,
                title: b.tr.consent_title,
                party: party_name(rp),
                entity_id: &rp.entity_id,
                attributes: attributes
                    .iter()
                    .map(|(a, label)| (label.clone(), a.values.join(", ")))
                    .collect(),
                pending: &pending.id,
                token: &consent_token(waiting, session, &attributes),
            }
            .render(),
        ),
        Err(e) => unavailable(b, &e),
    }
}

/// The release form's token: for this request, this session and this set of attributes,
/// so that the approval cannot answer with another session (a shared PC's next user) or
/// release a set other than the one shown.
fn consent_token(
    waiting: &Waiting,
    session: &Session,
    attributes: &[(Attribute, String)],
) -> String {
    web::sha256_hex(
        format!(
            "tessera-idp-consent\0{}\0{}\0{}",
            waiting.consent_token,
            session.id,
            names(attributes)
        )
        .as_bytes(),
    )
}

fn answered(b: &Browser) -> Response {
    web::error(
        StatusCode::CONFLICT,
        b.tr,
        "this request has been answered already",
    )
}

/// How the release was approved.
enum Approval {
    /// Remembered from an earlier approval.
    Remembered,
    /// On the release page now, perhaps to be remembered.
    Given(Option<Consent>),
}

impl Approval {
    fn name(&self) -> &'static str {
        match self {
            Self::Remembered => "remembered",
            Self::Given(None) => "approved",
            Self::Given(Some(_)) => "approved and remembered",
        }
    }
}

/// The success Response, posted to the ACS; the waiting request is spent, the use of
/// the session recorded, and both audited, in one transaction.
#[allow(clippy::too_many_arguments)]
fn respond(
    idp: &Idp,
    b: &Browser,
    pending: &Pending,
    waiting: &Waiting,
    rp: &RelyingParty,
    session: &Session,
    attributes: Vec<(Attribute, String)>,
    approval: Approval,
) -> Response {
    let now = idp.clock.now();
    let name_id = match idp.signer.name_id(&rp.entity_id, &session.person_id) {
        Ok(n) => n,
        Err(e) => return web::error(StatusCode::INTERNAL_SERVER_ERROR, b.tr, &format!("{e:#}")),
    };
    // One SessionIndex per session and relying party, whatever the number of answers: a
    // LogoutRequest naming it ends everything this session gave that relying party. A
    // hash, so the session's name (which administrators see) is not handed out.
    let session_index = format!(
        "_{}",
        &web::sha256_hex(
            format!(
                "tessera-idp-session-index\0{}\0{}",
                session.id, rp.entity_id
            )
            .as_bytes()
        )[..32]
    );
    let released = names(&attributes);
    let assertion = Assertion {
        id: new_id(),
        issue_instant: now,
        issuer: idp.config.entity_id.clone(),
        name_id,
        audience: rp.entity_id.clone(),
        recipient: waiting.acs.clone(),
        in_response_to: waiting.request_id.clone(),
        not_before: now.saturating_sub(SKEW),
        not_on_or_after: now + ASSERTION_LIFE,
        address: b.address.clone(),
        authn_instant: Duration::from_secs(u64::try_from(session.authn_instant).unwrap_or(0)),
        session_index: session_index.clone(),
        loa: session.loa.clone(),
        attributes: attributes.into_iter().map(|(a, _)| a).collect(),
    };
    let response = SamlResponse {
        id: new_id(),
        in_response_to: waiting.request_id.clone(),
        destination: waiting.acs.clone(),
        issuer: idp.config.entity_id.clone(),
        issue_instant: now,
        status: Status::Success,
    };
    // Sealed first: nothing is recorded as sent that could not be.
    let sealed = match seal_for(idp, rp, &response, Some(&assertion)) {
        Ok(x) => x,
        Err(e) => return web::error(StatusCode::INTERNAL_SERVER_ERROR, b.tr, &e),
    };
    let at = secs(now);
    let details = serde_json::json!({
        "relying_party": rp.entity_id, "request": waiting.request_id, "session": session.id,
        "person": session.person_id, "attributes": released, "approval": approval.name(),
        "loa": session.loa, "response": response.id,
    });
    let spent = idp.store.write(|tx| {
        // Still live: the status feed may have ended it a moment ago.
        if !tx.session(&session.id)?.is_some_and(|s| s.live(at)) {
            return Ok(Some(false));
        }
        if !tx.take_pending(&pending.id)? {
            return Ok(None);
        }
        tx.used(&session.id, &rp.entity_id, &session_index, at)?;
        if let Approval::Given(Some(c)) = &approval {
            tx.give_consent(c)?;
            let remembered =
                serde_json::json!({ "relying_party": c.relying_party, "attributes": c.attributes });
            tx.audit(
                &session.person_id,
                "consent.remembered",
                &remembered.to_string(),
                at,
            )?;
        }
        tx.audit(&session.person_id, "sso.response", &details.to_string(), at)?;
        Ok::<_, tessera_idp_store::StoreError>(Some(true))
    });
    match spent {
        Ok(Some(true)) => {}
        Ok(Some(false)) => {
            return web::error(
                StatusCode::FORBIDDEN,
                b.tr,
                "your login has ended; go back to the e-service and start again",
            )
        }
        Ok(None) => return answered(b),
        Err(e) => return unavailable(b, &e),
    }
    idp.metrics.responses.inc();
    post_page(b, rp, &waiting.acs, waiting.relay_state.clone(), &sealed)
}

/// The waiting request `id`, if this browser brought it.
fn waiting_for(
    idp: &Idp,
    b: &Browser,
    id: &str,
) -> Result<(Pending, Waiting, RelyingParty), Box<Response>> {
    let now = idp.clock.now();
    let gone = || {
        web::error(
            StatusCode::BAD_REQUEST,
            b.tr,
            "this login has expired or was finished; go back to the e-service and start again",
        )
    };
    let pending = match idp.store.read(|tx| tx.pending(id, secs(now))) {
        Ok(Some(p)) => p,
        Ok(None) => return Err(Box::new(gone())),
        Err(e) => return Err(Box::new(unavailable(b, &e))),
    };
    let ours = b
        .binding
        .as_ref()
        .is_some_and(|c| web::same_secret(&web::sha256_hex(c.as_bytes()), &pending.browser_hash));
    if !ours {
        // Logged and counted, not audited: anyone holding a request's name can send this
        // (unauthenticated input must not fill the audit chain or the one write path).
        idp.metrics.requests_refused.inc();
        tracing::warn!(relying_party = %pending.relying_party, address = %b.address, "a waiting request was presented by another browser; refused");
        return Err(Box::new(web::error(
            StatusCode::FORBIDDEN,
            b.tr,
            "this login was started in another browser; start again from the e-service",
        )));
    }
    let waiting: Waiting = serde_json::from_str(&pending.request).map_err(|_| Box::new(gone()))?;
    let Some(rp) = idp.parties.get(&pending.relying_party, now) else {
        return Err(Box::new(web::error(
            StatusCode::BAD_REQUEST,
            b.tr,
            "the e-service is no longer a relying party of this IdP",
        )));
    };
    Ok((pending, waiting, rp))
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct Continue {
    p: String,
    t: String,
}

/// The login host's hand-over: the ticket taken once, the session's cookie set for this
/// host, then the waiting request answered.
pub(crate) async fn continue_(
    State(idp): State<Arc<Idp>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<Continue>,
) -> Response {
    let b = Browser::of(&headers, peer, idp.https());
    blocking(idp, move |idp| {
        let now = secs(idp.clock.now());
        // The ticket is spent whatever happens next, and a session made for a hand-over
        // that is refused here is ended: a ticket that leaks (history, a proxy's log)
        // gives nobody a session. All of it in one write (one disk flush per hand-over;
        // if the database fails, nothing changes and the hand-over is refused); which
        // request this browser waits with is read first.
        let ticket_hash = web::sha256_hex(q.t.as_bytes());
        let waiting = waiting_for(idp, &b, &q.p);
        let cookie = web::random_token();
        // The browser's earlier session, when it is another person's (a shared PC), is
        // ended, not left live without a cookie: its relying parties are told. The same
        // person's (a ForceAuthn login) is left alone — a logout for it would end the
        // session the relying party has just made from the new login (same NameID).
        let earlier = b.session.as_ref().map(|c| web::sha256_hex(c.as_bytes()));
        enum Taken {
            NoTicket,
            Refused,
            Bound(Box<Session>),
            Gone,
        }
        let taken = idp.store.write(|tx| {
            let Some((session_id, pending_id)) = tx.take_ticket(&ticket_hash, now)? else {
                return Ok(Taken::NoTicket);
            };
            let refusal = match &waiting {
                Err(_) => Some("hand-over refused"),
                Ok((pending, _, _)) if pending.id != pending_id => {
                    Some("hand-over for another request")
                }
                Ok(_) => None,
            };
            if let Some(why) = refusal {
                if tx.end_session(&session_id, why, tessera_idp_store::EndedBy::Admin, now)? {
                    let details = serde_json::json!({ "session": session_id, "reason": why });
                    tx.audit(&b.address, "session.ended", &details.to_string(), now)?;
                }
                return Ok(Taken::Refused);
            }
            if !tx.bind_cookie(&session_id, &web::sha256_hex(cookie.as_bytes()))? {
                return Ok(Taken::Gone);
            }
            let Some(new) = tx.session(&session_id)? else {
                return Ok(Taken::Gone);
            };
            if let Some(old) = earlier.as_deref() {
                if let Some(s) = tx
                    .session_by_cookie(old)?
                    .filter(|s| s.id != session_id && s.person_id != new.person_id)
                {
                    let why = "replaced by a new login in the same browser";
                    if tx.end_session(&s.id, why, tessera_idp_store::EndedBy::User, now)? {
                        let details = serde_json::json!({ "session": s.id, "reason": why });
                        tx.audit(&s.person_id, "session.ended", &details.to_string(), now)?;
                    }
                }
            }
            Ok::<_, tessera_idp_store::StoreError>(Taken::Bound(Box::new(new)))
        });
        let not_valid = "the login's hand-over is not valid (used, late, or for another request)";
        let ((pending, waiting, rp), session) = match (taken, waiting) {
            (Err(e), _) => return unavailable(&b, &e),
            (Ok(Taken::NoTicket), _) => {
                return refuse_unverified(
                    idp,
                    &b,
                    "an unknown, used or late login ticket",
                    not_valid,
                )
            }
            (Ok(_), Err(r)) => return *r,
            (Ok(Taken::Bound(s)), Ok(w)) if s.live(now) => (w, *s),
            (Ok(_), Ok((_, _, rp))) => return refuse(idp, &b, Some(&rp.entity_id), not_valid),
        };
        let mut r = answer(idp, &b, &pending, &waiting, &rp, &session);
        if let Ok(v) = axum::http::HeaderValue::from_str(&web::set_cookie(
            SESSION_COOKIE,
            &cookie,
            idp.https(),
            None,
        )) {
            r.headers_mut().append(axum::http::header::SET_COOKIE, v);
        }
        r
    })
    .await
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct Decision {
    p: String,
    token: String,
    choice: String,
    remember: Option<String>,
}

/// The release page's answer: approved (and perhaps remembered), or cancelled (the
/// Swedish cancel status goes to the relying party).
pub(crate) async fn consent(
    State(idp): State<Arc<Idp>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<Decision>, axum::extract::rejection::FormRejection>,
) -> Response {
    let b = Browser::of(&headers, peer, idp.https());
    let Ok(Form(d)) = form else {
        return web::error(StatusCode::BAD_REQUEST, b.tr, "the form is incomplete");
    };
    blocking(idp, move |idp| {
        let (pending, waiting, rp) = match waiting_for(idp, &b, &d.p) {
            Ok(w) => w,
            Err(r) => return *r,
        };
        let now = secs(idp.clock.now());
        let session = match live_session(idp, &b, now) {
            Ok(Some(s)) => s,
            Ok(None) => {
                return web::error(
                    StatusCode::FORBIDDEN,
                    b.tr,
                    "your login has ended; go back to the e-service and start again",
                )
            }
            Err(e) => return unavailable(&b, &e),
        };
        let holder: Holder = match serde_json::from_str(&session.holder) {
            Ok(h) => h,
            Err(e) => return web::error(StatusCode::INTERNAL_SERVER_ERROR, b.tr, &e.to_string()),
        };
        let attributes = release(idp, &rp, &holder, b.tr);
        // The form was made for this request, this session and this set.
        if !web::same_secret(&d.token, &consent_token(&waiting, &session, &attributes)) {
            return refuse(
                idp,
                &b,
                Some(&rp.entity_id),
                "the form does not belong to this login (or what would be released has changed)",
            );
        }
        match d.choice.as_str() {
            "cancel" => end_waiting(
                idp,
                &b,
                &pending,
                &waiting,
                &rp,
                STATUS_CANCEL,
                "the user cancelled",
            ),
            "approve" => {
                let remember = (d.remember.as_deref() == Some("yes")).then(|| Consent {
                    person_id: session.person_id.clone(),
                    relying_party: rp.entity_id.clone(),
                    attributes: names(&attributes),
                    given_at: now,
                });
                respond(
                    idp,
                    &b,
                    &pending,
                    &waiting,
                    &rp,
                    &session,
                    attributes,
                    Approval::Given(remember),
                )
            }
            _ => web::error(StatusCode::BAD_REQUEST, b.tr, "approve or cancel"),
        }
    })
    .await
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct Failed {
    p: String,
}

/// After a refused card login, the user goes back to the e-service, which hears why:
/// Responder/AuthnFailed for the waiting request (spent).
pub(crate) async fn failed(
    State(idp): State<Arc<Idp>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<Failed>,
) -> Response {
    let b = Browser::of(&headers, peer, idp.https());
    blocking(idp, move |idp| {
        let (pending, waiting, rp) = match waiting_for(idp, &b, &q.p) {
            Ok(w) => w,
            Err(r) => return *r,
        };
        end_waiting(
            idp,
            &b,
            &pending,
            &waiting,
            &rp,
            STATUS_AUTHN_FAILED,
            "the service ID could not log in",
        )
    })
    .await
}

/// The waiting request a login host's `?p=` names, for the login host (no browser
/// binding there: the binding is checked when the browser comes back): None if there is
/// none, else its PrincipalSelection.
pub(crate) fn pending_principal(
    idp: &Idp,
    id: &str,
) -> Result<Option<Vec<(String, String)>>, tessera_idp_store::StoreError> {
    let now = secs(idp.clock.now());
    // A waiting request this build cannot read is as good as none (fail closed).
    Ok(idp
        .store
        .read(|tx| tx.pending(id, now))?
        .and_then(|p| serde_json::from_str::<Waiting>(&p.request).ok())
        .map(|w| w.principal))
}

/// The MatchValues we hold against the user: orgAffiliation and employeeNumber (its
/// first part; orgAffiliation is always released), and mail only for a relying party that
/// is released mail — else a silent IsPassive request could test guesses at an address
/// it is never given. Others (personalIdentityNumber, which we never hold) are hints we
/// cannot use.
fn principal_for(rp: &RelyingParty, selection: &[(String, String)]) -> Vec<(String, String)> {
    let asked = |name: &str| rp.requested_attributes.iter().any(|a| a.name == name);
    selection
        .iter()
        .filter(|(name, _)| match name.as_str() {
            ORG_AFFILIATION | EMPLOYEE_NUMBER => true,
            MAIL => asked(MAIL),
            _ => false,
        })
        .cloned()
        .collect()
}

const ORG_AFFILIATION: &str = "urn:oid:1.2.752.201.3.1";
const EMPLOYEE_NUMBER: &str = "urn:oid:2.16.840.1.113730.3.1.3";
const MAIL: &str = "urn:oid:0.9.2342.19200300.100.1.3";

/// Why `holder` is not the person a PrincipalSelection names (as [`principal_for`] kept
/// it), if they are not.
pub(crate) fn principal_mismatch(
    idp: &Idp,
    selection: &[(String, String)],
    holder: &Holder,
) -> Option<String> {
    for (name, wanted) in selection {
        let wanted = wanted.trim();
        let (friendly, held) = match name.as_str() {
            ORG_AFFILIATION => (
                "orgAffiliation",
                Some(format!(
                    "{}@{}",
                    holder.employee_number, idp.config.organisation.number
                )),
            ),
            EMPLOYEE_NUMBER => ("employeeNumber", Some(holder.employee_number.clone())),
            MAIL => ("mail", holder.email.clone()),
            _ => continue,
        };
        let same = held.as_deref().is_some_and(|h| {
            if friendly == "mail" {
                h.eq_ignore_ascii_case(wanted)
            } else {
                h == wanted
            }
        });
        if !same {
            // The value is not shown: an unsigned request would put its text on our page.
            return Some(format!(
                "the e-service asked for another person (by {friendly})"
            ));
        }
    }
    None
}

//! The admin web portal, under `/admin/`, for HR admins, registration officers, auditors
//! and administrators. A client of the registration authority exactly as the API is: every
//! page reads and every form changes through one RA operation, which checks the officer's
//! role, four eyes and the state machines and audits what it does and refuses.
//!
//! - **Sign-in** with the officer's own service ID only: the portal's HTTPS listener asks
//!   for a client certificate chained to the issuing CA, and the RA checks it is a good
//!   authentication certificate of an ACTIVE card of the officer's own person
//!   ([`tessera_issuer_ra::portal`]). No passwords.
//! - **Sessions** in the database (any server on it serves them), a `__Host-` cookie
//!   (Secure, HttpOnly, SameSite=Strict), ended when idle, at a hard limit, or as soon as
//!   the credential is no longer good: checked on every request, so every approval re-checks
//!   the approver's service ID.
//! - **Forms** carry an anti-forgery token (derived from the session's secret, compared in
//!   constant time) and must come from the portal's own origin; a forged one changes
//!   nothing and gets 403.
//! - **Pages** are rendered on the server (askama templates, escaped by default), work
//!   without JavaScript (the passkey ceremonies alone use a script from the portal's own
//!   origin: WebAuthn is a browser API), in Swedish and English, under a strict CSP
//!   (`default-src 'none'`, script only from the portal, no inline script or style,
//!   `frame-ancestors 'none'`), HSTS and no caching.
//! - **Passkeys** ([`passkeys`]): registered inside a card session, bound to that card's
//!   certificate, attested by a trusted authenticator model, user verification required.

#![forbid(unsafe_code)]

mod cards;
mod i18n;
mod import;
mod officers;
mod pages;
mod passkeys;

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue};
use axum::Router;
use tessera_issuer_ra::Ra;
use tower_http::set_header::SetResponseHeaderLayer;

pub use i18n::Lang;
pub use passkeys::Authenticator;
pub use webauthn_rs::prelude::Url;

/// The session cookie (the `__Host-` prefix: Secure, Path=/, no Domain — no other host
/// or path can set or read it).
pub const SESSION_COOKIE: &str = "__Host-tessera-session";
/// The anti-forgery value of the sign-in form (before any session exists).
pub const SIGN_IN_COOKIE: &str = "__Host-tessera-sign-in";
/// The chosen language.
pub const LANG_COOKIE: &str = "__Host-tessera-lang";

/// What the portal's handlers share.
pub(crate) struct Portal {
    pub(crate) ra: Arc<Ra>,
    pub(crate) imports: import::Jobs,
    pub(crate) passkeys: passkeys::Passkeys,
    /// Evidence exports running, per officer (each holds a blocking thread).
    pub(crate) exports: pages::Exports,
}

/// How the portal is reached and what it trusts for passkeys.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The portal's origin as officers' browsers see it (`https://admin.example.org`):
    /// its host name is the passkeys' relying-party id. Without one, passkeys are off.
    pub origin: Option<Url>,
    /// The authenticator models whose attested passkeys officers may register.
    pub authenticators: Vec<Authenticator>,
}

/// The portal's routes, under `/admin/`. Serve them only over HTTPS, on a listener that
/// asks for client certificates chained to the issuing CA
/// ([`tessera_issuer_web::serve::PeerCertificate`] carries the one presented).
pub fn router(ra: Arc<Ra>, config: Config) -> Router {
    let headers: [(header::HeaderName, &'static str); 8] = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ];
    let mut router = pages::routes().with_state(Arc::new(Portal {
        ra,
        imports: import::Jobs::default(),
        passkeys: passkeys::Passkeys::new(config.origin.as_ref(), config.authenticators),
        exports: pages::Exports::default(),
    }));
    for (name, value) in headers {
        // The CSP a page set itself (the passkey pages': script from the portal) stands.
        router = router.layer(if name == header::CONTENT_SECURITY_POLICY {
            SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
        } else {
            SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
        });
    }
    router
}

/// Every page's Content-Security-Policy: nothing but the portal's own style sheet.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The two pages with the passkey ceremonies: [`CSP`] and script from the portal itself,
/// which talks only to the portal.
const CSP_WITH_SCRIPT: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
                               style-src 'self'; img-src 'self'; form-action 'self'; \
                               frame-ancestors 'none'; base-uri 'none'";

/// `r` under [`CSP_WITH_SCRIPT`].
pub(crate) fn with_script(mut r: axum::response::Response) -> axum::response::Response {
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP_WITH_SCRIPT),
    );
    r
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Constant-time equality of two secrets (lengths are not secret).
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

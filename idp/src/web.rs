//! What the IdP's pages share: the two languages (Swedish first, English), the templates
//! (askama, escaped), the security headers every page carries, and the browser's cookies
//! and secrets (random tokens, kept server-side only as SHA-256 hashes).

use askama::Template;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The page texts in one language.
#[derive(Debug)]
pub(crate) struct Tr {
    pub lang: &'static str,
    pub product: &'static str,
    pub error_title: &'static str,
    pub error_next: &'static str,
    pub consent_title: &'static str,
    pub consent_intro: &'static str,
    pub consent_caption: &'static str,
    pub attribute: &'static str,
    pub value: &'static str,
    pub remember: &'static str,
    pub approve: &'static str,
    pub cancel: &'static str,
    pub consent_withdraw: &'static str,
    pub my_page: &'static str,
    pub post_title: &'static str,
    pub post_intro: &'static str,
    pub continue_: &'static str,
    pub my_title: &'static str,
    pub my_session: &'static str,
    pub my_until: &'static str,
    pub my_consents: &'static str,
    pub my_none: &'static str,
    pub withdraw: &'static str,
    pub logout: &'static str,
    pub logged_out: &'static str,
    pub no_session: &'static str,
    pub card_refused: &'static str,
    pub back_to_service: &'static str,
}

pub(crate) const SV: Tr = Tr {
    lang: "sv",
    product: "Tjänste-ID-inloggning",
    error_title: "Det gick inte att logga in",
    error_next:
        "Gå tillbaka till e-tjänsten och försök igen. Kontakta servicedesken om felet kvarstår.",
    consent_title: "Godkänn att uppgifter lämnas ut",
    consent_intro: "Följande uppgifter om dig lämnas till",
    consent_caption: "Uppgifter som lämnas ut",
    attribute: "Uppgift",
    value: "Värde",
    remember: "Kom ihåg mitt godkännande för den här tjänsten",
    approve: "Godkänn och fortsätt",
    cancel: "Avbryt",
    consent_withdraw: "Ett sparat godkännande kan du återkalla på",
    my_page: "din sida",
    post_title: "Skickar dig vidare",
    post_intro: "Du skickas nu tillbaka till",
    continue_: "Fortsätt",
    my_title: "Din inloggning",
    my_session: "Du är inloggad som",
    my_until: "till",
    my_consents: "Sparade godkännanden",
    my_none: "Inga sparade godkännanden.",
    withdraw: "Återkalla",
    logout: "Logga ut",
    logged_out: "Du är utloggad.",
    no_session: "Du är inte inloggad här.",
    card_refused: "Ditt tjänste-id kan inte användas för inloggning",
    back_to_service: "Tillbaka till e-tjänsten",
};

pub(crate) const EN: Tr = Tr {
    lang: "en",
    product: "Service ID login",
    error_title: "The login did not go through",
    error_next:
        "Go back to the e-service and try again. Contact the service desk if it happens again.",
    consent_title: "Approve the release of your details",
    consent_intro: "These details about you will be given to",
    consent_caption: "Details released",
    attribute: "Detail",
    value: "Value",
    remember: "Remember my approval for this service",
    approve: "Approve and continue",
    cancel: "Cancel",
    consent_withdraw: "You can withdraw a remembered approval on",
    my_page: "your page",
    post_title: "Sending you on",
    post_intro: "You are now sent back to",
    continue_: "Continue",
    my_title: "Your login",
    my_session: "You are logged in as",
    my_until: "until",
    my_consents: "Remembered approvals",
    my_none: "No remembered approvals.",
    withdraw: "Withdraw",
    logout: "Log out",
    logged_out: "You are logged out.",
    no_session: "You are not logged in here.",
    card_refused: "Your service ID cannot log in",
    back_to_service: "Back to the e-service",
};

/// The browser's language: English when its first preference is English (or anything but
/// Swedish that it names), Swedish otherwise.
pub(crate) fn tr(headers: &HeaderMap) -> &'static Tr {
    let first = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if first.is_empty() || first.starts_with("sv") {
        &SV
    } else {
        &EN
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    tr: &'a Tr,
    title: &'a str,
    message: &'a str,
    back: Option<&'a str>,
}

/// A page saying what went wrong (the message may quote a sender's input: escaped).
pub(crate) fn error(status: StatusCode, tr: &Tr, message: &str) -> Response {
    error_with_way_back(status, tr, message, None)
}

/// An error page with a link back to the e-service (which then hears why, as a SAML
/// status) instead of the general advice.
pub(crate) fn error_with_way_back(
    status: StatusCode,
    tr: &Tr,
    message: &str,
    back: Option<&str>,
) -> Response {
    html(
        status,
        ErrorPage {
            tr,
            title: tr.error_title,
            message,
            back,
        }
        .render(),
    )
}

/// A rendered page with the headers every page carries: no caching, no framing, scripts
/// and styles only from here, forms only to here or to https relying parties.
pub(crate) fn html(status: StatusCode, rendered: askama::Result<String>) -> Response {
    let body = match rendered {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "rendering a page failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n").into_response();
        }
    };
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(h);
    r
}

/// The security headers of every answer to a browser.
pub(crate) fn secure(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
             form-action 'self' https:; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// A 303 to `to`, with cookies to set.
pub(crate) fn redirect(to: &str, cookies: &[String]) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    match HeaderValue::from_str(to) {
        Ok(v) => {
            h.insert(header::LOCATION, v);
        }
        Err(_) => return (StatusCode::INTERNAL_SERVER_ERROR, "bad redirect\n").into_response(),
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    secure(h);
    r
}

/// A fresh secret for a browser: 32 random bytes, hex.
pub(crate) fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The hex SHA-256 of `bytes`: how browser secrets are stored.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The value of cookie `name`, in the shape our cookies have (64 hex digits). A cookie
/// the browser sends twice (one planted from a related domain or for a narrower path
/// beside ours) counts as absent: which one is ours cannot be told.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == name);
    let (_, value) = found.next()?;
    if found.next().is_some() {
        return None;
    }
    Some(value.to_owned()).filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A cookie's name: on https with the `__Host-` prefix, which browsers accept only from
/// this host, for path /, Secure, without a Domain (no related domain can plant it).
pub(crate) fn cookie_name(name: &str, https: bool) -> String {
    if https {
        format!("__Host-{name}")
    } else {
        name.to_owned()
    }
}

/// A `Set-Cookie` for the SSO host: HttpOnly, path /, and on https `__Host-`, `Secure;
/// SameSite=None` (relying parties POST requests to us from their sites, and the session
/// must be seen then); on plain http (loopback, or behind a proxy) `SameSite=Lax`. With a
/// `Max-Age` only to delete one (0): our cookies end with the browser (a shared PC).
pub(crate) fn set_cookie(name: &str, value: &str, https: bool, max_age: Option<u64>) -> String {
    let name = cookie_name(name, https);
    let age = max_age.map_or(String::new(), |s| format!("; Max-Age={s}"));
    let site = if https {
        "; Secure; SameSite=None"
    } else {
        "; SameSite=Lax"
    };
    format!("{name}={value}; Path=/; HttpOnly{site}{age}")
}

/// The stylesheet and the one script (the SAML POST form's auto-submit).
pub(crate) const CSS: &str = include_str!("../static/idp.css");
pub(crate) const POST_JS: &str = include_str!("../static/post.js");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_follows_the_first_preference() {
        let mut h = HeaderMap::new();
        assert_eq!(tr(&h).lang, "sv");
        h.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("en-US,en;q=0.9"),
        );
        assert_eq!(tr(&h).lang, "en");
        h.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("sv-SE, en"),
        );
        assert_eq!(tr(&h).lang, "sv");
    }

    #[test]
    fn cookies_are_read_only_in_their_own_shape() {
        let good = "ab".repeat(32);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; s={good}; t=zz")).unwrap(),
        );
        assert_eq!(cookie(&h, "s").as_deref(), Some(good.as_str()));
        assert_eq!(cookie(&h, "x"), None, "not a token");
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("s={good}; s={good}")).unwrap(),
        );
        assert_eq!(cookie(&h, "s"), None, "twice: which is ours?");
        assert!(set_cookie("s", "v", true, None).starts_with("__Host-s=v; Path=/;"));
        assert!(same_secret(&good, &good) && !same_secret(&good, "ab"));
        assert!(set_cookie("s", "v", true, None).contains("Secure; SameSite=None"));
        assert!(!set_cookie("s", "v", true, None).contains("Max-Age"));
        assert!(set_cookie("s", "v", false, Some(0)).ends_with("SameSite=Lax; Max-Age=0"));
    }
}

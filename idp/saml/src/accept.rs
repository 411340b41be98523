//! Whether we answer an AuthnRequest, and where: checked against its relying party's
//! metadata (PROFILES.md; SAML bindings §3.4.5.2 and §3.5.5.2; the Swedish deployment
//! profile §5). What cannot be trusted to reach the relying party — an unknown relying
//! party, a wrong Destination, an ACS URL its metadata does not list, an old or future
//! request — is shown to the user as an error page ([`Refusal::Page`]); what the relying
//! party must be told (the LoA it asks for is not ours, a NameID format we do not issue)
//! goes back to its ACS as a SAML error status ([`Refusal::Status`]). Replay is the
//! caller's check (it needs the store).

use std::time::Duration;

use crate::metadata::{Endpoint, RelyingParty};
use crate::request::{AuthnRequest, Comparison};
use crate::response::{STATUS_NO_AUTHN_CONTEXT, STATUS_REQUESTER};

pub const BINDING_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
const NAMEID_UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified";
const STATUS_INVALID_NAMEID_POLICY: &str = "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy";

/// What the checks allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Where the Response goes (HTTP-POST).
    pub acs: String,
}

/// Why a request is not answered with an assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Shown to the user; nothing goes to the relying party (its address is not known to
    /// be its own, or the request is not its own).
    Page(String),
    /// Sent to the relying party's ACS as a SAML error status.
    Status {
        acs: String,
        code: &'static str,
        sub: &'static str,
        message: String,
    },
}

/// The rules' parameters.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// Our SSO endpoint's URL, exactly as in our metadata.
    pub sso_url: &'a str,
    /// The LoA URI we assert.
    pub loa: &'a str,
    /// How old a request may be.
    pub max_age: Duration,
    /// Clock skew allowed either way (the draft profile caps it at a minute).
    pub skew: Duration,
}

/// Checks `request` (read from bytes whose signature, if `signed`, was verified with
/// `rp`'s keys) against `rp` at `now`.
pub fn accept(
    request: &AuthnRequest,
    signed: bool,
    rp: &RelyingParty,
    rules: Rules<'_>,
    now: Duration,
) -> Result<Accepted, Refusal> {
    let page = |why: String| Err(Refusal::Page(why));
    if request.issuer != rp.entity_id {
        return page(format!(
            "the request names {} as its issuer, not {}",
            request.issuer, rp.entity_id
        ));
    }
    if rp.authn_requests_signed && !signed {
        return page(format!(
            "{} signs its requests, and this one is not signed",
            rp.entity_id
        ));
    }
    match &request.destination {
        Some(d) if d != rules.sso_url => {
            return page(format!("the request is addressed to {d}, not to this IdP"));
        }
        // DP §5.4.1: the Destination must be there, signed or not.
        None => {
            return page("the request does not name its Destination".into());
        }
        _ => {}
    }
    if request.issue_instant > now + rules.skew {
        return page("the request was issued in the future (check the clocks)".into());
    }
    if request.issue_instant + rules.max_age + rules.skew < now {
        return page(format!(
            "the request is older than {} seconds; start again from the service",
            rules.max_age.as_secs()
        ));
    }
    if let Some(b) = &request.protocol_binding {
        if b != BINDING_POST {
            return page(format!("responses are sent by HTTP-POST only, not {b}"));
        }
    }
    let posts = rp
        .assertion_consumer_services
        .iter()
        .filter(|e| e.binding == BINDING_POST);
    let acs: Option<&Endpoint> = match (&request.acs_url, request.acs_index) {
        (Some(_), Some(_)) => {
            return page("the request names both an ACS URL and an ACS index".into());
        }
        (Some(url), None) => rp
            .assertion_consumer_services
            .iter()
            .find(|e| e.location == *url && e.binding == BINDING_POST),
        (None, Some(i)) => rp
            .assertion_consumer_services
            .iter()
            .find(|e| e.index == i && e.binding == BINDING_POST),
        (None, None) => {
            let all: Vec<&Endpoint> = posts.collect();
            all.iter()
                .find(|e| e.is_default)
                .or_else(|| all.iter().min_by_key(|e| e.index))
                .copied()
        }
    };
    let Some(acs) = acs else {
        return page(format!(
            "{} has no HTTP-POST assertion consumer service matching the request in its metadata",
            rp.entity_id
        ));
    };
    let acs = acs.location.clone();
    let status = |sub: &'static str, message: String| {
        Err(Refusal::Status {
            acs: acs.clone(),
            code: STATUS_REQUESTER,
            sub,
            message,
        })
    };
    if let Some(format) = &request.name_id_format {
        if format != crate::response::NAMEID_PERSISTENT && format != NAMEID_UNSPECIFIED {
            return status(
                STATUS_INVALID_NAMEID_POLICY,
                format!("only persistent NameIDs are issued, not {format}"),
            );
        }
    }
    if let Some((comparison, refs)) = &request.authn_context {
        // DP §5.3.1: we assert one of the URIs asked for, so ours must be listed (an
        // uncertified LoA3 does not meet a certified LoA2, whatever `minimum` says).
        let ours = refs.iter().any(|r| r == rules.loa);
        let met = match comparison {
            Comparison::Exact | Comparison::Minimum => ours,
            Comparison::Maximum | Comparison::Better => false,
        };
        if !met {
            return status(
                STATUS_NO_AUTHN_CONTEXT,
                format!("this IdP asserts {} only", rules.loa),
            );
        }
    }
    Ok(Accepted { acs })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::from_secs(1_796_205_600);
    const LOA: &str = "http://id.swedenconnect.se/loa/1.0/uncertified-loa3";

    fn rules() -> Rules<'static> {
        Rules {
            sso_url: "https://idp.example.org/saml/sso",
            loa: LOA,
            max_age: Duration::from_secs(300),
            skew: Duration::from_secs(60),
        }
    }

    fn rp() -> RelyingParty {
        let acs = |i: u16, loc: &str, binding: &str, is_default: bool| Endpoint {
            binding: binding.into(),
            location: loc.into(),
            index: i,
            is_default,
        };
        RelyingParty {
            entity_id: "https://sp.example.org".into(),
            authn_requests_signed: true,
            want_assertions_signed: true,
            signing_certificates: Vec::new(),
            encryption_certificates: Vec::new(),
            encryption_methods: Vec::new(),
            soap_logout_services: Vec::new(),
            assertion_consumer_services: vec![
                acs(
                    0,
                    "https://sp.example.org/artifact",
                    "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact",
                    false,
                ),
                acs(1, "https://sp.example.org/acs", BINDING_POST, false),
                acs(2, "https://sp.example.org/acs2", BINDING_POST, true),
            ],
            entity_categories: Vec::new(),
            requested_attributes: Vec::new(),
            display_name: None,
            valid_until: None,
        }
    }

    fn request() -> AuthnRequest {
        AuthnRequest {
            id: "_r".into(),
            issue_instant: NOW,
            destination: Some("https://idp.example.org/saml/sso".into()),
            issuer: "https://sp.example.org".into(),
            acs_url: Some("https://sp.example.org/acs".into()),
            acs_index: None,
            protocol_binding: Some(BINDING_POST.into()),
            force_authn: false,
            is_passive: false,
            name_id_format: None,
            authn_context: Some((Comparison::Exact, vec![LOA.into()])),
            principal_selection: Vec::new(),
        }
    }

    fn page(r: Result<Accepted, Refusal>) -> String {
        match r {
            Err(Refusal::Page(why)) => why,
            other => panic!("not a page: {other:?}"),
        }
    }

    #[test]
    fn a_good_request_goes_back_to_its_listed_acs() {
        let ok = accept(&request(), true, &rp(), rules(), NOW).unwrap();
        assert_eq!(ok.acs, "https://sp.example.org/acs");
        let mut r = request();
        r.acs_url = None;
        r.acs_index = Some(1);
        assert_eq!(
            accept(&r, true, &rp(), rules(), NOW).unwrap().acs,
            "https://sp.example.org/acs"
        );
        r.acs_index = None;
        assert_eq!(
            accept(&r, true, &rp(), rules(), NOW).unwrap().acs,
            "https://sp.example.org/acs2",
            "the default"
        );
        // Within the skew and the age.
        r.issue_instant = NOW + Duration::from_secs(59);
        assert!(accept(&r, true, &rp(), rules(), NOW).is_ok());
        r.issue_instant = NOW - Duration::from_secs(359);
        assert!(accept(&r, true, &rp(), rules(), NOW).is_ok());
    }

    #[test]
    fn what_cannot_reach_the_relying_party_is_a_page() {
        let mut r = request();
        r.acs_url = Some("https://evil.example/acs".into());
        assert!(page(accept(&r, true, &rp(), rules(), NOW)).contains("assertion consumer service"));
        r.acs_url = Some("https://sp.example.org/artifact".into());
        assert!(
            page(accept(&r, true, &rp(), rules(), NOW)).contains("assertion consumer service"),
            "not a POST endpoint"
        );
        let mut r = request();
        r.acs_url = None;
        r.acs_index = Some(9);
        assert!(page(accept(&r, true, &rp(), rules(), NOW)).contains("assertion consumer service"));
        let mut r = request();
        r.destination = Some("https://other-idp.example.org/sso".into());
        assert!(page(accept(&r, true, &rp(), rules(), NOW)).contains("addressed"));
        r.destination = None;
        assert!(page(accept(&r, true, &rp(), rules(), NOW)).contains("Destination"));
        let mut unsigned_rp = rp();
        unsigned_rp.authn_requests_signed = false;
        assert!(page(accept(&r, false, &unsigned_rp, rules(), NOW)).contains("Destination"));
        assert!(page(accept(&request(), false, &rp(), rules(), NOW)).contains("not signed"));
        let mut r = request();
        r.issue_instant = NOW - Duration::from_secs(361);
        assert!(page(accept(&r, true, &rp(), rules(), NOW)).contains("older"));
        r.issue_instant = NOW + Duration::from_secs(61);
        assert!(page(accept(&r, true, &rp(), rules(), NOW)).contains("future"));
        let mut r = request();
        r.issuer = "https://other-sp.example.org".into();
        assert!(page(accept(&r, true, &rp(), rules(), NOW)).contains("issuer"));
        let mut r = request();
        r.protocol_binding = Some("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact".into());
        assert!(page(accept(&r, true, &rp(), rules(), NOW)).contains("HTTP-POST"));
        let mut r = request();
        r.acs_index = Some(1);
        assert!(page(accept(&r, true, &rp(), rules(), NOW)).contains("both"));
    }

    #[test]
    fn what_the_relying_party_must_hear_goes_back_as_a_status() {
        let mut r = request();
        r.authn_context = Some((
            Comparison::Exact,
            vec!["http://id.elegnamnden.se/loa/1.0/loa4".into()],
        ));
        let Err(Refusal::Status { acs, sub, .. }) = accept(&r, true, &rp(), rules(), NOW) else {
            panic!()
        };
        assert_eq!(
            (acs.as_str(), sub),
            ("https://sp.example.org/acs", STATUS_NO_AUTHN_CONTEXT)
        );
        // minimum: only when our URI is listed; maximum is not offered.
        r.authn_context = Some((
            Comparison::Minimum,
            vec!["http://id.elegnamnden.se/loa/1.0/loa2".into()],
        ));
        assert!(matches!(
            accept(&r, true, &rp(), rules(), NOW),
            Err(Refusal::Status { .. })
        ));
        r.authn_context = Some((
            Comparison::Minimum,
            vec!["http://id.elegnamnden.se/loa/1.0/loa2".into(), LOA.into()],
        ));
        assert!(accept(&r, true, &rp(), rules(), NOW).is_ok());
        r.authn_context = Some((Comparison::Maximum, vec![LOA.into()]));
        assert!(matches!(
            accept(&r, true, &rp(), rules(), NOW),
            Err(Refusal::Status { .. })
        ));
        r.authn_context = None;
        r.name_id_format = Some("urn:oasis:names:tc:SAML:2.0:nameid-format:transient".into());
        let Err(Refusal::Status { sub, .. }) = accept(&r, true, &rp(), rules(), NOW) else {
            panic!()
        };
        assert_eq!(sub, STATUS_INVALID_NAMEID_POLICY);
    }
}

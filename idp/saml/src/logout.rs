//! Single Logout started by the IdP (SAML core §3.7, profiles §4.4): when a session ends
//! — the user logs out, an administrator ends it, or the issuer's status feed says the
//! credential was revoked or suspended — each relying party it answered gets a signed
//! `LogoutRequest` over the SOAP binding (bindings §3.2). A back channel, because a
//! revocation has no browser to carry a front-channel message; the relying party's
//! answer comes back on the same authenticated (TLS) connection.

use std::time::Duration;

use tessera_xmlsec::{sign_root, SignatureAlg, XmlError};

use crate::response::{instant, NAMEID_PERSISTENT, NS_SAML, NS_SAMLP, STATUS_SUCCESS};
use crate::xml::Writer;

const NS_SOAP: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// Why a session ended (SAML core §3.7.3): the user asked.
pub const REASON_USER: &str = "urn:oasis:names:tc:SAML:2.0:logout:user";
/// Why a session ended: an administrator (or the credential's revocation) ended it.
pub const REASON_ADMIN: &str = "urn:oasis:names:tc:SAML:2.0:logout:admin";
/// The largest answer read from a relying party.
pub const MAX_ANSWER: usize = 64 * 1024;

/// A LogoutRequest to one relying party about one of its sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    pub id: String,
    pub issue_instant: Duration,
    /// The relying party's SOAP SingleLogoutService.
    pub destination: String,
    /// Our entityID.
    pub issuer: String,
    /// The persistent NameID the relying party was given, as it was given (with our
    /// entityID and its own as qualifiers).
    pub name_id: String,
    pub sp_name_qualifier: String,
    /// The SessionIndex its assertion carried.
    pub session_index: String,
    /// [`REASON_USER`] or [`REASON_ADMIN`].
    pub reason: &'static str,
    /// The request is void after this (a queued retry makes a new one).
    pub not_on_or_after: Duration,
}

/// The request, unsigned (our own deterministic writer).
pub fn logout_request_xml(r: &LogoutRequest) -> String {
    let mut w = Writer::new();
    w.open(
        "samlp:LogoutRequest",
        &[
            ("xmlns:samlp", NS_SAMLP),
            ("xmlns:saml", NS_SAML),
            ("ID", &r.id),
            ("Version", "2.0"),
            ("IssueInstant", &instant(r.issue_instant)),
            ("Destination", &r.destination),
            ("NotOnOrAfter", &instant(r.not_on_or_after)),
            ("Reason", r.reason),
        ],
    );
    w.leaf(
        "saml:Issuer",
        &[("Format", "urn:oasis:names:tc:SAML:2.0:nameid-format:entity")],
        &r.issuer,
    );
    w.leaf(
        "saml:NameID",
        &[
            ("Format", NAMEID_PERSISTENT),
            ("NameQualifier", &r.issuer),
            ("SPNameQualifier", &r.sp_name_qualifier),
        ],
        &r.name_id,
    );
    w.leaf("samlp:SessionIndex", &[], &r.session_index);
    w.finish()
}

/// The request signed with our key (`sign`, as [`sign_root`] asks) inside a SOAP 1.1
/// envelope, ready to be posted.
pub fn seal_logout_request(
    r: &LogoutRequest,
    alg: SignatureAlg,
    certificate: &[u8],
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, XmlError> {
    let signed = sign_root(logout_request_xml(r).as_bytes(), alg, certificate, sign)?;
    let text = std::str::from_utf8(&signed)
        .map_err(|_| XmlError::Internal("a signed request that is not UTF-8".into()))?;
    let element = text
        .strip_prefix("<?xml")
        .and_then(|rest| rest.split_once("?>"))
        .map_or(text, |(_, rest)| rest)
        .trim();
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soap11:Envelope xmlns:soap11=\"{NS_SOAP}\"><soap11:Body>{element}</soap11:Body></soap11:Envelope>"
    )
    .into_bytes())
}

/// What a relying party answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutAnswer {
    /// The top-level status code and the second-level one, if any.
    pub status: String,
    pub sub_status: Option<String>,
    pub message: Option<String>,
}

impl LogoutAnswer {
    pub fn success(&self) -> bool {
        self.status == STATUS_SUCCESS
    }
}

/// Why an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The relying party answered with a SOAP fault (it refused the request).
    #[error("a SOAP fault: {0}")]
    Fault(String),
    #[error("not a LogoutResponse to our request: {0}")]
    Invalid(String),
}

/// Reads the SOAP answer to the request `request_id`: a `samlp:LogoutResponse` in the
/// envelope's body, `InResponseTo` our request, and its status. No DTD, bounded size and
/// node count. Its own signature is not needed: the TLS connection we opened to the
/// relying party's SOAP endpoint authenticates it (bindings §3.2.2.2), and the answer
/// only decides what we record, never who is logged in.
pub fn read_logout_answer(bytes: &[u8], request_id: &str) -> Result<LogoutAnswer, AnswerError> {
    let bad = |why: &str| AnswerError::Invalid(why.to_owned());
    if bytes.len() > MAX_ANSWER {
        return Err(bad("too large"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
    let doc = roxmltree::Document::parse_with_options(
        text,
        roxmltree::ParsingOptions {
            allow_dtd: false,
            nodes_limit: 2_000,
            ..roxmltree::ParsingOptions::default()
        },
    )
    .map_err(|e| bad(&e.to_string()))?;
    let is = |n: &roxmltree::Node, ns: &str, name: &str| {
        n.is_element() && n.tag_name().name() == name && n.tag_name().namespace() == Some(ns)
    };
    let envelope = doc.root_element();
    if !is(&envelope, NS_SOAP, "Envelope") {
        return Err(bad("the root is not a SOAP 1.1 Envelope"));
    }
    let body = envelope
        .children()
        .find(|n| is(n, NS_SOAP, "Body"))
        .ok_or_else(|| bad("no SOAP Body"))?;
    let mut elements = body.children().filter(|n| n.is_element());
    let response = match (elements.next(), elements.next()) {
        (Some(r), None) if is(&r, NS_SAMLP, "LogoutResponse") => r,
        (Some(f), None) if is(&f, NS_SOAP, "Fault") => {
            let reason: String = f
                .descendants()
                .filter(|n| n.is_text())
                .filter_map(|n| n.text())
                .collect::<String>()
                .chars()
                .take(200)
                .collect();
            return Err(AnswerError::Fault(reason.trim().to_owned()));
        }
        _ => return Err(bad("the Body holds not exactly one LogoutResponse")),
    };
    if response.attribute("Version") != Some("2.0") {
        return Err(bad("Version is not 2.0"));
    }
    if response.attribute("InResponseTo") != Some(request_id) {
        return Err(bad("InResponseTo is not our request"));
    }
    let status = response
        .children()
        .find(|n| is(n, NS_SAMLP, "Status"))
        .ok_or_else(|| bad("no Status"))?;
    let code = status
        .children()
        .find(|n| is(n, NS_SAMLP, "StatusCode"))
        .ok_or_else(|| bad("no StatusCode"))?;
    let value = |n: roxmltree::Node| -> Result<String, AnswerError> {
        n.attribute("Value")
            .filter(|v| v.len() <= 1024)
            .map(str::to_owned)
            .ok_or_else(|| bad("a StatusCode without a Value"))
    };
    let sub_status = match code.children().find(|n| is(n, NS_SAMLP, "StatusCode")) {
        Some(sub) => Some(value(sub)?),
        None => None,
    };
    let message = status
        .children()
        .find(|n| is(n, NS_SAMLP, "StatusMessage"))
        .and_then(|n| n.text())
        .map(|t| t.trim().chars().take(200).collect());
    Ok(LogoutAnswer {
        status: value(code)?,
        sub_status,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &str) -> String {
        format!("<s:Envelope xmlns:s=\"{NS_SOAP}\"><s:Body>{body}</s:Body></s:Envelope>")
    }

    #[test]
    fn a_success_to_our_request_is_read() {
        let a = read_logout_answer(
            answer(&format!(
                "<p:LogoutResponse xmlns:p=\"{NS_SAMLP}\" Version=\"2.0\" InResponseTo=\"_r1\" ID=\"_x\"><p:Status><p:StatusCode Value=\"{STATUS_SUCCESS}\"/></p:Status></p:LogoutResponse>"
            ))
            .as_bytes(),
            "_r1",
        )
        .unwrap();
        assert!(a.success());
        assert_eq!(a.sub_status, None);
    }

    #[test]
    fn answers_to_other_requests_faults_and_doctypes_are_refused() {
        let other = answer(&format!(
            "<p:LogoutResponse xmlns:p=\"{NS_SAMLP}\" Version=\"2.0\" InResponseTo=\"_r2\"><p:Status><p:StatusCode Value=\"{STATUS_SUCCESS}\"/></p:Status></p:LogoutResponse>"
        ));
        assert!(read_logout_answer(other.as_bytes(), "_r1")
            .unwrap_err()
            .to_string()
            .contains("InResponseTo"));
        let fault = answer("<s:Fault><faultstring>no such session</faultstring></s:Fault>");
        assert_eq!(
            read_logout_answer(fault.as_bytes(), "_r1").unwrap_err(),
            AnswerError::Fault("no such session".into())
        );
        let good = answer(&format!(
            "<p:LogoutResponse xmlns:p=\"{NS_SAMLP}\" Version=\"2.0\" InResponseTo=\"_r1\"><p:Status><p:StatusCode Value=\"{STATUS_SUCCESS}\"/></p:Status></p:LogoutResponse>"
        ));
        assert!(read_logout_answer(good.as_bytes(), "_r1").is_ok());
        let dtd = format!("<!DOCTYPE x [<!ENTITY e \"e\">]>{good}");
        assert!(read_logout_answer(dtd.as_bytes(), "_r1").is_err());
        let padded = format!("{good}{}", " ".repeat(MAX_ANSWER));
        assert_eq!(
            read_logout_answer(padded.as_bytes(), "_r1"),
            Err(AnswerError::Invalid("too large".into()))
        );
        let two = answer(&format!(
            "<p:LogoutResponse xmlns:p=\"{NS_SAMLP}\" Version=\"2.0\" InResponseTo=\"_r1\"><p:Status><p:StatusCode Value=\"{STATUS_SUCCESS}\"/></p:Status></p:LogoutResponse><x/>"
        ));
        assert!(read_logout_answer(two.as_bytes(), "_r1").is_err());
        assert!(read_logout_answer(b"\xff", "_r1").is_err());
    }

    #[test]
    fn the_request_names_the_session_and_the_pseudonym() {
        let xml = logout_request_xml(&LogoutRequest {
            id: "_l1".into(),
            issue_instant: Duration::from_secs(1_796_205_600),
            destination: "https://sp.example.org/slo".into(),
            issuer: "https://idp.example.org".into(),
            name_id: "abc".into(),
            sp_name_qualifier: "https://sp.example.org".into(),
            session_index: "_s1".into(),
            reason: REASON_ADMIN,
            not_on_or_after: Duration::from_secs(1_796_205_900),
        });
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "LogoutRequest");
        assert_eq!(root.attribute("Reason"), Some(REASON_ADMIN));
        assert_eq!(root.attribute("NotOnOrAfter"), Some("2026-12-02T10:05:00Z"));
        let texts: Vec<&str> = root
            .children()
            .filter_map(|n| n.text().filter(|_| n.is_element()))
            .collect();
        assert_eq!(texts, ["https://idp.example.org", "abc", "_s1"]);
    }
}

//! Our SAML Responses (SAML core §3.2.2, §2.3; the Swedish eID Framework's deployment
//! profile §6): written by our own writer, then sealed — the assertion signed and
//! encrypted for the relying party, always, and the Response signed, always.

use std::time::Duration;

use tessera_xmlsec::{sign_root, Cipher, Document, SignatureAlg, XmlError};

use crate::xml::Writer;

pub const NS_SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub const NS_SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const URI_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri";
pub const NAMEID_PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";

/// Top-level status codes (SAML core §3.2.2.2).
pub const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
pub const STATUS_REQUESTER: &str = "urn:oasis:names:tc:SAML:2.0:status:Requester";
pub const STATUS_RESPONDER: &str = "urn:oasis:names:tc:SAML:2.0:status:Responder";
/// Second-level codes we use.
pub const STATUS_NO_AUTHN_CONTEXT: &str = "urn:oasis:names:tc:SAML:2.0:status:NoAuthnContext";
pub const STATUS_NO_PASSIVE: &str = "urn:oasis:names:tc:SAML:2.0:status:NoPassive";
pub const STATUS_AUTHN_FAILED: &str = "urn:oasis:names:tc:SAML:2.0:status:AuthnFailed";
pub const STATUS_REQUEST_DENIED: &str = "urn:oasis:names:tc:SAML:2.0:status:RequestDenied";
pub const STATUS_UNKNOWN_PRINCIPAL: &str = "urn:oasis:names:tc:SAML:2.0:status:UnknownPrincipal";
/// The Swedish eID Framework's sub-codes (the user cancelled; fraud suspected).
pub const STATUS_CANCEL: &str = "http://id.elegnamnden.se/status/1.0/cancel";
pub const STATUS_FRAUD: &str = "http://id.elegnamnden.se/status/1.0/fraud";
pub const STATUS_POSSIBLE_FRAUD: &str = "http://id.elegnamnden.se/status/1.0/possibleFraud";

/// One attribute released: its `urn:oid:` name, friendly name and values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub friendly_name: String,
    pub values: Vec<String>,
}

/// The assertion about the user for one relying party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    pub id: String,
    pub issue_instant: Duration,
    /// Our entityID.
    pub issuer: String,
    /// The persistent pseudonymous NameID for this relying party.
    pub name_id: String,
    /// The relying party's entityID (SPNameQualifier, Audience).
    pub audience: String,
    /// The ACS URL the response goes to (Recipient).
    pub recipient: String,
    pub in_response_to: String,
    /// Conditions and the bearer confirmation hold from `not_before` until
    /// `not_on_or_after` (short: K8.2).
    pub not_before: Duration,
    pub not_on_or_after: Duration,
    /// The user agent's address (SubjectConfirmationData's Address, required by DP §6.2).
    pub address: String,
    /// When the user really authenticated (DP 5.4.5: never the time of an SSO reuse).
    pub authn_instant: Duration,
    pub session_index: String,
    /// The LoA URI asserted.
    pub loa: String,
    pub attributes: Vec<Attribute>,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Success,
    /// A top-level code ([`STATUS_REQUESTER`] or [`STATUS_RESPONDER`]), an optional
    /// second-level one, and a message for the relying party.
    Error {
        code: &'static str,
        sub: Option<&'static str>,
        message: String,
    },
}

/// A Response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub id: String,
    pub in_response_to: String,
    pub destination: String,
    pub issuer: String,
    pub issue_instant: Duration,
    pub status: Status,
}

/// `2026-12-02T10:00:00Z`.
pub fn instant(t: Duration) -> String {
    let secs = t.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A fresh XML ID: `_` and 32 hex digits from the OS's CSPRNG.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("_{hex}")
}

/// The assertion, unsigned, as its own document (its namespaces declared on it, so that its
/// exclusive canonical form is the same once it is inside the Response).
pub fn assertion_xml(a: &Assertion) -> String {
    let mut w = Writer::new();
    w.open(
        "saml:Assertion",
        &[
            ("xmlns:saml", NS_SAML),
            ("xmlns:xs", "http://www.w3.org/2001/XMLSchema"),
            ("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance"),
            ("ID", &a.id),
            ("IssueInstant", &instant(a.issue_instant)),
            ("Version", "2.0"),
        ],
    );
    w.leaf("saml:Issuer", &[], &a.issuer);
    w.open("saml:Subject", &[]);
    w.leaf(
        "saml:NameID",
        &[
            ("Format", NAMEID_PERSISTENT),
            ("NameQualifier", &a.issuer),
            ("SPNameQualifier", &a.audience),
        ],
        &a.name_id,
    );
    w.open("saml:SubjectConfirmation", &[("Method", BEARER)]);
    let not_on_or_after = instant(a.not_on_or_after);
    w.empty(
        "saml:SubjectConfirmationData",
        &[
            ("InResponseTo", a.in_response_to.as_str()),
            ("NotOnOrAfter", not_on_or_after.as_str()),
            ("Recipient", a.recipient.as_str()),
            ("Address", a.address.as_str()),
        ],
    );
    w.close().close();
    w.open(
        "saml:Conditions",
        &[
            ("NotBefore", &instant(a.not_before)),
            ("NotOnOrAfter", &not_on_or_after),
        ],
    );
    w.open("saml:AudienceRestriction", &[])
        .leaf("saml:Audience", &[], &a.audience)
        .close()
        .close();
    w.open(
        "saml:AuthnStatement",
        &[
            ("AuthnInstant", &instant(a.authn_instant)),
            ("SessionIndex", &a.session_index),
        ],
    );
    w.open("saml:AuthnContext", &[])
        .leaf("saml:AuthnContextClassRef", &[], &a.loa)
        .close()
        .close();
    {
        w.open("saml:AttributeStatement", &[]);
        for attr in &a.attributes {
            w.open(
                "saml:Attribute",
                &[
                    ("Name", &attr.name),
                    ("NameFormat", URI_FORMAT),
                    ("FriendlyName", &attr.friendly_name),
                ],
            );
            for v in &attr.values {
                w.leaf("saml:AttributeValue", &[("xsi:type", "xs:string")], v);
            }
            w.close();
        }
        w.close();
    }
    w.finish()
}

/// The Response around `assertion` (a document's text; its XML declaration is dropped),
/// inside `saml:EncryptedAssertion` when it is to be encrypted.
fn response_xml(r: &Response, assertion: Option<(&str, bool)>) -> String {
    let mut w = Writer::new();
    w.open(
        "samlp:Response",
        &[
            ("xmlns:samlp", NS_SAMLP),
            ("xmlns:saml", NS_SAML),
            ("ID", &r.id),
            ("InResponseTo", &r.in_response_to),
            ("Version", "2.0"),
            ("IssueInstant", &instant(r.issue_instant)),
            ("Destination", &r.destination),
        ],
    );
    w.leaf(
        "saml:Issuer",
        &[("Format", "urn:oasis:names:tc:SAML:2.0:nameid-format:entity")],
        &r.issuer,
    );
    w.open("samlp:Status", &[]);
    match &r.status {
        Status::Success => {
            w.empty("samlp:StatusCode", &[("Value", STATUS_SUCCESS)]);
        }
        Status::Error { code, sub, message } => {
            w.open("samlp:StatusCode", &[("Value", code)]);
            if let Some(sub) = sub {
                w.empty("samlp:StatusCode", &[("Value", sub)]);
            }
            w.close();
            w.leaf("samlp:StatusMessage", &[], message);
        }
    }
    w.close();
    let mut out = w.finish();
    // The assertion goes in as the text it is (already a well-formed element we wrote).
    let closing = "</samlp:Response>";
    out.truncate(out.len() - closing.len());
    if let Some((assertion, encrypted)) = assertion {
        let element = assertion
            .strip_prefix("<?xml")
            .and_then(|rest| rest.split_once("?>"))
            .map_or(assertion, |(_, rest)| rest)
            .trim();
        if encrypted {
            out.push_str("<saml:EncryptedAssertion>");
            out.push_str(element);
            out.push_str("</saml:EncryptedAssertion>");
        } else {
            out.push_str(element);
        }
    }
    out.push_str(closing);
    out
}

/// Signs bytes with our key, as [`sign_root`] asks (the signature value XML-DSig wants),
/// or says why it could not.
pub type SignBytes<'a> = dyn Fn(&[u8]) -> Result<Vec<u8>, String> + 'a;

/// How a Response is sealed for its relying party.
#[derive(Debug, Clone, Copy)]
pub struct Seal<'a> {
    /// The signing key's algorithm and its certificate (DER).
    pub alg: SignatureAlg,
    pub certificate: &'a [u8],
    /// The relying party's encryption certificate (DER, RSA) and the cipher its metadata
    /// allows ([`Cipher::for_methods`]). Every assertion is encrypted (DP §6.1): a relying
    /// party without an encryption key gets an error status, never a readable assertion.
    pub encrypt_to: (&'a [u8], Cipher),
}

/// Why a Response was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error("not a Response the profile allows: {0}")]
    Invalid(&'static str),
}

/// Writes and seals the Response: the assertion signed, then encrypted for the relying
/// party (its integrity must not rest on the outer signature alone), then the Response
/// signed. A success carries exactly one assertion with an AttributeStatement and the
/// user's address (DP §6.2); an error carries none. `sign` signs bytes with our key (see
/// [`sign_root`]).
pub fn seal(
    response: &Response,
    assertion: Option<&Assertion>,
    how: Seal<'_>,
    sign: &SignBytes<'_>,
) -> Result<Vec<u8>, SealError> {
    match (&response.status, assertion) {
        (Status::Success, None) => {
            return Err(SealError::Invalid("a success without an assertion"))
        }
        (Status::Error { .. }, Some(_)) => {
            return Err(SealError::Invalid("an error with an assertion"))
        }
        (Status::Success, Some(a)) if a.attributes.is_empty() => {
            return Err(SealError::Invalid("an assertion without attributes"))
        }
        (Status::Success, Some(a)) if a.address.is_empty() => {
            return Err(SealError::Invalid(
                "an assertion without the user's address",
            ))
        }
        _ => {}
    }
    let assertion =
        match assertion {
            None => None,
            Some(a) => {
                let xml = assertion_xml(a);
                let signed = sign_root(xml.as_bytes(), how.alg, how.certificate, sign)?;
                Some(String::from_utf8(signed).map_err(|_| {
                    XmlError::Internal("a signed assertion that is not UTF-8".into())
                })?)
            }
        };
    let xml = response_xml(response, assertion.as_deref().map(|a| (a, true)));
    let xml = if assertion.is_some() {
        let (cert, cipher) = how.encrypt_to;
        let mut doc = Document::parse(xml.as_bytes(), usize::MAX >> 1)?;
        doc.encrypt_element(NS_SAML, "Assertion", cert, cipher)?;
        doc.to_bytes()?
    } else {
        xml.into_bytes()
    };
    Ok(sign_root(&xml, how.alg, how.certificate, sign)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_utc() {
        assert_eq!(
            instant(Duration::from_secs(1_796_205_600)),
            "2026-12-02T10:00:00Z"
        );
        assert_eq!(instant(Duration::ZERO), "1970-01-01T00:00:00Z");
        assert_eq!(
            instant(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        for t in [0u64, 951_782_400, 1_796_205_600, 4_102_444_799] {
            let d = Duration::from_secs(t);
            assert_eq!(crate::request::parse_instant(&instant(d)), Some(d));
        }
    }
}

//! AuthnRequests as they arrive (SAML bindings §3.4 HTTP-Redirect, §3.5 HTTP-POST) and as
//! we read them (SAML core §3.4.1, the Swedish eID Framework's deployment profile §5).
//!
//! Reading is in two steps, so that nothing is taken from bytes that were not checked:
//! [`Incoming::decode`] undoes the binding (bounded inflate, base64) and parses the XML
//! safely; [`Incoming::verify`] checks the signature with the relying party's keys — over
//! the raw query string for Redirect, the enveloped XML signature for POST — and yields
//! the bytes to read: what the XML signature digested, or the canonical form of an unsigned
//! or Redirect-signed message. [`AuthnRequest::parse`] reads only those bytes.

use std::io::Read;
use std::time::Duration;

use base64ct::Encoding;
use tessera_xmlsec::{Document, XmlError};

/// The largest request we take, encoded or inflated.
pub const MAX_REQUEST: usize = 32 * 1024;

pub const NS_SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub const NS_SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub const NS_DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
pub const NS_PRINCIPAL_SELECTION: &str =
    "http://id.swedenconnect.se/authn/1.0/principal-selection/ns";
pub const SIG_RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
pub const SIG_ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";

/// Why a request was refused: each says what is wrong, for the user's error page and the
/// audit trail (never a panic, never a session).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the request is not encoded as its binding requires: {0}")]
    Encoding(String),
    #[error("the request is larger than {MAX_REQUEST} bytes")]
    TooLarge,
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error("the request is not a SAML 2.0 AuthnRequest: {0}")]
    NotAuthnRequest(String),
    #[error("the relying party signs its requests, and this one is not signed")]
    Unsigned,
    #[error("the request's signature does not verify with the relying party's keys: {0}")]
    BadSignature(String),
    #[error("the signature algorithm {0} is not accepted (RSA-SHA256 or ECDSA-SHA256)")]
    Algorithm(String),
}

/// What the Redirect binding signed: the octets, the algorithm, the signature.
#[derive(Debug, Clone)]
struct RedirectSignature {
    signed: Vec<u8>,
    alg: String,
    value: Vec<u8>,
}

/// A request as it arrived, decoded and parsed, not yet trusted.
#[derive(Debug)]
pub struct Incoming {
    doc: Document,
    redirect_signature: Option<RedirectSignature>,
    /// RelayState, to be returned as it came (at most 80 bytes, SAML bindings §3.4.3).
    pub relay_state: Option<String>,
}

fn standard_base64(s: &str) -> Result<Vec<u8>, RequestError> {
    // Some relying parties wrap their base64 in lines: whitespace is not part of it.
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64ct::Base64::decode_vec(&compact)
        .map_err(|_| RequestError::Encoding("SAMLRequest is not base64".into()))
}

fn relay_state(value: Option<String>) -> Result<Option<String>, RequestError> {
    match value {
        Some(r) if r.len() > 80 => Err(RequestError::Encoding(
            "RelayState is longer than 80 bytes".into(),
        )),
        other => Ok(other),
    }
}

impl Incoming {
    /// HTTP-Redirect: `query` is the raw query string as received (not decoded), whose
    /// `SAMLRequest`, `RelayState` and `SigAlg` octets are what a signature covers.
    pub fn from_redirect(query: &str) -> Result<Self, RequestError> {
        if query.len() > 2 * MAX_REQUEST {
            return Err(RequestError::TooLarge);
        }
        let mut raw: [Option<&str>; 4] = [None; 4];
        const NAMES: [&str; 4] = ["SAMLRequest", "RelayState", "SigAlg", "Signature"];
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if let Some(i) = NAMES.iter().position(|n| *n == name) {
                if raw[i].replace(value).is_some() {
                    return Err(RequestError::Encoding(format!("{name} appears twice")));
                }
            }
        }
        let decode = |v: &str| -> String {
            form_urlencoded::parse(format!("v={v}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let [request, relay, sig_alg, signature] = raw;
        let request =
            request.ok_or_else(|| RequestError::Encoding("no SAMLRequest in the query".into()))?;
        let deflated = standard_base64(&decode(request))?;
        let xml = inflate(&deflated)?;
        let redirect_signature = match (sig_alg, signature) {
            (Some(alg), Some(sig)) => {
                // Bindings §3.4.4.1: the parameters as they were received, in this order.
                let mut signed = format!("SAMLRequest={request}");
                if let Some(r) = relay {
                    signed.push_str(&format!("&RelayState={r}"));
                }
                signed.push_str(&format!("&SigAlg={alg}"));
                Some(RedirectSignature {
                    signed: signed.into_bytes(),
                    alg: decode(alg),
                    value: standard_base64(&decode(sig))?,
                })
            }
            (None, None) => None,
            _ => {
                return Err(RequestError::Encoding(
                    "SigAlg and Signature come together".into(),
                ))
            }
        };
        Ok(Self {
            doc: Document::parse(&xml, MAX_REQUEST)?,
            redirect_signature,
            relay_state: relay_state(relay.map(decode))?,
        })
    }

    /// HTTP-POST: the form's `SAMLRequest` (base64 of the XML) and `RelayState`.
    pub fn from_post(saml_request: &str, relay: Option<String>) -> Result<Self, RequestError> {
        if saml_request.len() > 2 * MAX_REQUEST {
            return Err(RequestError::TooLarge);
        }
        let xml = standard_base64(saml_request)?;
        Ok(Self {
            doc: Document::parse(&xml, MAX_REQUEST)?,
            redirect_signature: None,
            relay_state: relay_state(relay)?,
        })
    }

    /// Whether the message carries a signature (either binding's).
    pub fn is_signed(&self) -> bool {
        self.redirect_signature.is_some() || self.has_xml_signature()
    }

    /// Whether the XML holds any element of the XML-DSig namespace (read from the canonical
    /// form; a message that cannot be read counts as signed, so it goes on to be refused).
    fn has_xml_signature(&self) -> bool {
        let Ok(bytes) = self.doc.canonical() else {
            return true;
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return true;
        };
        roxmltree::Document::parse(text).map_or(true, |d| {
            d.descendants()
                .any(|n| n.tag_name().namespace() == Some(NS_DSIG))
        })
    }

    /// The entityID the request names as its issuer, read without trusting it: to find
    /// the relying party whose keys then verify the request.
    pub fn claimed_issuer(&self) -> Result<String, RequestError> {
        let bytes = self.doc.canonical()?;
        Ok(AuthnRequest::parse_unchecked(&bytes)?.issuer)
    }

    /// Checks the signature with the relying party's signing certificates (DER) and
    /// returns the bytes to read the request from. `must_be_signed`: the relying party's
    /// metadata says `AuthnRequestsSigned="true"`, or the federation requires it.
    pub fn verify(
        &self,
        certs: &[Vec<u8>],
        must_be_signed: bool,
    ) -> Result<Verified, RequestError> {
        if let Some(sig) = &self.redirect_signature {
            verify_redirect(sig, certs)?;
            // The XML is read in canonical form; a signature inside it as well would be a
            // second claim we do not check: refused.
            if self.has_xml_signature() {
                return Err(RequestError::BadSignature(
                    "a Redirect request carries an XML signature too".into(),
                ));
            }
            return Ok(Verified {
                bytes: self.doc.canonical()?,
                signed: true,
            });
        }
        if !self.has_xml_signature() {
            return if must_be_signed {
                Err(RequestError::Unsigned)
            } else {
                Ok(Verified {
                    bytes: self.doc.canonical()?,
                    signed: false,
                })
            };
        }
        self.doc
            .verify_root_any(certs.iter().map(Vec::as_slice), false)
            .map(|bytes| Verified {
                bytes,
                signed: true,
            })
            .map_err(|e| RequestError::BadSignature(e.to_string()))
    }
}

/// The bytes a request is read from, after its signature (if any) was checked.
#[derive(Debug, Clone)]
pub struct Verified {
    pub bytes: Vec<u8>,
    pub signed: bool,
}

/// Raw DEFLATE (RFC 1951), at most [`MAX_REQUEST`] bytes out: a compression bomb stops
/// there.
fn inflate(deflated: &[u8]) -> Result<Vec<u8>, RequestError> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(deflated)
        .take(MAX_REQUEST as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| RequestError::Encoding(format!("SAMLRequest is not DEFLATE data: {e}")))?;
    if out.len() > MAX_REQUEST {
        return Err(RequestError::TooLarge);
    }
    Ok(out)
}

fn verify_redirect(sig: &RedirectSignature, certs: &[Vec<u8>]) -> Result<(), RequestError> {
    use der::Decode;
    if certs.is_empty() {
        return Err(RequestError::BadSignature(
            "the relying party has no signing key in its metadata".into(),
        ));
    }
    for cert in certs {
        let Ok(cert) = x509_cert::Certificate::from_der(cert) else {
            continue;
        };
        let spki = &cert.tbs_certificate.subject_public_key_info;
        let ok = match sig.alg.as_str() {
            SIG_RSA_SHA256 => {
                use rsa::pkcs8::DecodePublicKey;
                use rsa::signature::Verifier;
                let Ok(der) = der::Encode::to_der(spki) else {
                    continue;
                };
                let Ok(key) = rsa::RsaPublicKey::from_public_key_der(&der) else {
                    continue;
                };
                // PROFILES.md: RSA of at least 2048 bits.
                if rsa::traits::PublicKeyParts::size(&key) < 256 {
                    continue;
                }
                let key = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key);
                rsa::pkcs1v15::Signature::try_from(sig.value.as_slice())
                    .is_ok_and(|s| key.verify(&sig.signed, &s).is_ok())
            }
            SIG_ECDSA_SHA256 => {
                use p256::ecdsa::signature::Verifier;
                let Ok(key) =
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
                else {
                    continue;
                };
                // XML-DSig's r || s; some implementations send DER.
                let parsed = if sig.value.len() == 64 {
                    p256::ecdsa::Signature::from_slice(&sig.value)
                } else {
                    p256::ecdsa::Signature::from_der(&sig.value)
                };
                parsed.is_ok_and(|s| key.verify(&sig.signed, &s).is_ok())
            }
            other => return Err(RequestError::Algorithm(other.to_owned())),
        };
        if ok {
            return Ok(());
        }
    }
    Err(RequestError::BadSignature(
        "no signing key of the relying party verifies the query's signature".into(),
    ))
}

/// RequestedAuthnContext's comparison (SAML core §3.3.2.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Exact,
    Minimum,
    Maximum,
    Better,
}

/// An AuthnRequest as we use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthnRequest {
    pub id: String,
    /// IssueInstant, since the epoch.
    pub issue_instant: Duration,
    pub destination: Option<String>,
    pub issuer: String,
    pub acs_url: Option<String>,
    pub acs_index: Option<u16>,
    pub protocol_binding: Option<String>,
    pub force_authn: bool,
    pub is_passive: bool,
    pub name_id_format: Option<String>,
    /// The LoA URIs asked for, and how they compare (none: whatever the IdP offers).
    pub authn_context: Option<(Comparison, Vec<String>)>,
    /// PrincipalSelection's MatchValues (attribute name, value).
    pub principal_selection: Vec<(String, String)>,
}

const MAX_ID: usize = 256;
const MAX_URI: usize = 1024;

impl AuthnRequest {
    /// Reads a request from verified bytes (see [`Incoming::verify`]).
    pub fn parse(verified: &Verified) -> Result<Self, RequestError> {
        Self::parse_unchecked(&verified.bytes)
    }

    /// Reads a request from canonical XML bytes.
    pub fn parse_unchecked(bytes: &[u8]) -> Result<Self, RequestError> {
        let bad = |why: &str| RequestError::NotAuthnRequest(why.to_owned());
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        let doc = roxmltree::Document::parse_with_options(
            text,
            roxmltree::ParsingOptions {
                allow_dtd: false,
                nodes_limit: 10_000,
                ..roxmltree::ParsingOptions::default()
            },
        )
        .map_err(|e| bad(&e.to_string()))?;
        let root = doc.root_element();
        if !is(root, NS_SAMLP, "AuthnRequest") {
            return Err(bad("the root is not samlp:AuthnRequest"));
        }
        if root.attribute("Version") != Some("2.0") {
            return Err(bad("Version is not 2.0"));
        }
        let id = root.attribute("ID").ok_or_else(|| bad("no ID"))?;
        if id.is_empty() || id.len() > MAX_ID {
            return Err(bad("ID is empty or too long"));
        }
        let issue_instant = root
            .attribute("IssueInstant")
            .ok_or_else(|| bad("no IssueInstant"))
            .and_then(|t| parse_instant(t).ok_or_else(|| bad("IssueInstant is not a UTC time")))?;
        let uri = |name: &str| -> Result<Option<String>, RequestError> {
            match root.attribute(name) {
                Some(v) if v.len() > MAX_URI => Err(bad(&format!("{name} is too long"))),
                Some(v) => Ok(Some(v.to_owned())),
                None => Ok(None),
            }
        };
        let boolean = |name: &str| -> Result<bool, RequestError> {
            match root.attribute(name) {
                None | Some("false") | Some("0") => Ok(false),
                Some("true") | Some("1") => Ok(true),
                Some(_) => Err(bad(&format!("{name} is not a boolean"))),
            }
        };
        let acs_index = match root.attribute("AssertionConsumerServiceIndex") {
            Some(i) => Some(
                i.parse::<u16>()
                    .map_err(|_| bad("AssertionConsumerServiceIndex is not a number"))?,
            ),
            None => None,
        };
        let children: Vec<_> = root.children().filter(|n| n.is_element()).collect();
        let issuers: Vec<_> = children
            .iter()
            .filter(|n| is(**n, NS_SAML, "Issuer"))
            .collect();
        let [issuer] = issuers.as_slice() else {
            return Err(bad("not exactly one saml:Issuer"));
        };
        let issuer = text_of(**issuer).ok_or_else(|| bad("an empty saml:Issuer"))?;
        if issuer.len() > MAX_URI {
            return Err(bad("the Issuer is too long"));
        }
        let one = |ns: &str, name: &str| -> Result<Option<roxmltree::Node>, RequestError> {
            let mut found = children.iter().filter(|n| is(**n, ns, name));
            let first = found.next().copied();
            if found.next().is_some() {
                return Err(bad(&format!("more than one {name}")));
            }
            Ok(first)
        };
        let name_id_format = one(NS_SAMLP, "NameIDPolicy")?
            .and_then(|p| p.attribute("Format"))
            .map(str::to_owned);
        let authn_context = match one(NS_SAMLP, "RequestedAuthnContext")? {
            None => None,
            Some(r) => {
                let comparison = match r.attribute("Comparison") {
                    None | Some("exact") => Comparison::Exact,
                    Some("minimum") => Comparison::Minimum,
                    Some("maximum") => Comparison::Maximum,
                    Some("better") => Comparison::Better,
                    Some(_) => return Err(bad("an unknown Comparison")),
                };
                let refs: Vec<String> = r
                    .children()
                    .filter(|n| is(*n, NS_SAML, "AuthnContextClassRef"))
                    .filter_map(text_of)
                    .collect();
                if refs.is_empty() || refs.len() > 16 {
                    return Err(bad(
                        "RequestedAuthnContext needs 1 to 16 AuthnContextClassRefs",
                    ));
                }
                Some((comparison, refs))
            }
        };
        let mut principal_selection = Vec::new();
        if let Some(ext) = one(NS_SAMLP, "Extensions")? {
            for ps in ext
                .children()
                .filter(|n| is(*n, NS_PRINCIPAL_SELECTION, "PrincipalSelection"))
            {
                for m in ps
                    .children()
                    .filter(|n| is(*n, NS_PRINCIPAL_SELECTION, "MatchValue"))
                {
                    let name = m
                        .attribute("Name")
                        .ok_or_else(|| bad("a MatchValue without Name"))?;
                    principal_selection.push((name.to_owned(), text_of(m).unwrap_or_default()));
                    if principal_selection.len() > 16 {
                        return Err(bad("too many PrincipalSelection values"));
                    }
                }
            }
        }
        Ok(Self {
            id: id.to_owned(),
            issue_instant,
            destination: uri("Destination")?,
            issuer,
            acs_url: uri("AssertionConsumerServiceURL")?,
            acs_index,
            protocol_binding: uri("ProtocolBinding")?,
            force_authn: boolean("ForceAuthn")?,
            is_passive: boolean("IsPassive")?,
            name_id_format,
            authn_context,
            principal_selection,
        })
    }
}

fn is(node: roxmltree::Node, ns: &str, name: &str) -> bool {
    node.is_element() && node.tag_name().name() == name && node.tag_name().namespace() == Some(ns)
}

/// An element's text: every text child, joined (the canonical form has no comments), and
/// trimmed; none when empty.
fn text_of(node: roxmltree::Node) -> Option<String> {
    let s: String = node
        .children()
        .filter(|c| c.is_text())
        .filter_map(|c| c.text())
        .collect();
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// `YYYY-MM-DDThh:mm:ss[.fraction]Z` (SAML core §1.3.3: UTC, no offset) to a time since
/// the epoch; anything else is `None`.
pub fn parse_instant(s: &str) -> Option<Duration> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u64> {
        let part = b.get(r)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (h, mi, sec) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let rest = &b[19..];
    let rest = match rest.first() {
        Some(b'.') => {
            let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 || n > 9 {
                return None;
            }
            &rest[1 + n..]
        }
        _ => rest,
    };
    if rest != b"Z" || !(1..=12).contains(&mo) || d == 0 || d > 31 || h > 23 || mi > 59 || sec > 60
    {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, mo) = (y as i64, mo as i64);
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days.checked_mul(86_400)? + (h * 3600 + mi * 60 + sec) as i64;
    u64::try_from(secs).ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_utc_only() {
        assert_eq!(
            parse_instant("2026-12-02T10:00:00Z"),
            Some(Duration::from_secs(1_796_205_600))
        );
        assert_eq!(
            parse_instant("2026-12-02T10:00:00.123Z"),
            Some(Duration::from_secs(1_796_205_600))
        );
        assert_eq!(
            parse_instant("2000-02-29T00:00:00Z"),
            Some(Duration::from_secs(951_782_400))
        );
        for bad in [
            "2026-12-02T10:00:00",
            "2026-12-02T10:00:00+01:00",
            "2026-13-02T10:00:00Z",
            "2026-12-02 10:00:00Z",
            "2026-12-02T10:00:00.Z",
            "1969-12-31T23:59:59Z",
            "",
            "２０２６-12-02T10:00:00Z",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
    }
}

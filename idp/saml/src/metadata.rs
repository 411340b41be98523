//! Relying parties' SAML metadata (SAML metadata 2.0; the Swedish eID Framework's metadata
//! specification): a federation's signed aggregate, checked with the federation's
//! certificate and its `validUntil` before anything in it is used, or one entity's
//! descriptor from the operator's local registry. Read only from the bytes the signature
//! covered (or, for a local file the operator trusts, its canonical form).

use std::time::Duration;

use tessera_xmlsec::{Document, XmlError};

use crate::request::parse_instant;

pub const NS_MD: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
pub const NS_DS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// The SOAP binding (SAML bindings §3.2): the back channel single logout uses.
pub const BINDING_SOAP: &str = "urn:oasis:names:tc:SAML:2.0:bindings:SOAP";
const NS_SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const NS_MDATTR: &str = "urn:oasis:names:tc:SAML:metadata:attribute";
const NS_MDUI: &str = "urn:oasis:names:tc:SAML:metadata:ui";
const PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";

/// The largest aggregate we read (a national federation's is a few MiB).
pub const MAX_AGGREGATE: usize = 64 * 1024 * 1024;

/// Why metadata was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error("the metadata's signature does not verify with the federation's certificate: {0}")]
    Signature(String),
    #[error("the metadata expired at {0} (validUntil)")]
    Expired(String),
    #[error("the metadata has no validUntil; a federation aggregate must say how long it holds")]
    NoValidUntil,
    #[error("not SAML metadata: {0}")]
    NotMetadata(String),
}

/// An assertion consumer service endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub binding: String,
    pub location: String,
    pub index: u16,
    pub is_default: bool,
}

/// An attribute a relying party asks for (its AttributeConsumingService).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedAttribute {
    pub name: String,
    pub required: bool,
}

/// A relying party (an SP), as its metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelyingParty {
    pub entity_id: String,
    pub authn_requests_signed: bool,
    pub want_assertions_signed: bool,
    /// Certificates (DER) for its signatures: KeyDescriptors for signing or without `use`.
    pub signing_certificates: Vec<Vec<u8>>,
    /// Certificates (DER) to encrypt to: KeyDescriptors for encryption or without `use`.
    pub encryption_certificates: Vec<Vec<u8>>,
    /// The EncryptionMethod algorithms its encryption keys list (empty: not said).
    pub encryption_methods: Vec<String>,
    pub assertion_consumer_services: Vec<Endpoint>,
    /// Its SingleLogoutService endpoints over SOAP (https only): where we tell it that a
    /// session ended (the back channel: a revocation has no browser to carry a message).
    pub soap_logout_services: Vec<String>,
    /// Its entity categories (`http://macedir.org/entity-category`).
    pub entity_categories: Vec<String>,
    pub requested_attributes: Vec<RequestedAttribute>,
    /// Its display name (mdui, Swedish first, then English, then any).
    pub display_name: Option<String>,
    /// When its descriptor (or an enclosing one) stops being valid, since the epoch.
    pub valid_until: Option<Duration>,
}

/// What a metadata document holds: its relying parties and its own `validUntil`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    pub valid_until: Option<Duration>,
    pub relying_parties: Vec<RelyingParty>,
}

/// Checks a federation aggregate (or a single signed descriptor): its signature with one
/// of the federation's certificates (DER), then its `validUntil`, which must be there and
/// in the future; returns the relying parties still valid at `now` (an entity past its
/// own `validUntil` is left out).
pub fn verify_aggregate(
    xml: &[u8],
    federation_certificates: &[Vec<u8>],
    now: Duration,
) -> Result<Metadata, MetadataError> {
    let doc = Document::parse(xml, MAX_AGGREGATE)?;
    let signed = doc
        .verify_root_any(federation_certificates.iter().map(Vec::as_slice), true)
        .map_err(|e| MetadataError::Signature(e.to_string()))?;
    let metadata = parse(&signed)?;
    match metadata.valid_until {
        None => Err(MetadataError::NoValidUntil),
        Some(t) if t <= now => Err(MetadataError::Expired(instant(t))),
        Some(_) => Ok(current(metadata, now)),
    }
}

/// Reads a descriptor the operator put in the local registry (trusted as a file of the
/// deployment, so unsigned is allowed), in canonical form; entities past their
/// `validUntil` are left out.
pub fn read_local(xml: &[u8], now: Duration) -> Result<Metadata, MetadataError> {
    let doc = Document::parse(xml, MAX_AGGREGATE)?;
    Ok(current(parse(&doc.canonical()?)?, now))
}

fn current(mut m: Metadata, now: Duration) -> Metadata {
    m.relying_parties
        .retain(|rp| rp.valid_until.is_none_or(|t| t > now));
    m
}

fn instant(t: Duration) -> String {
    format!("{} s after the epoch", t.as_secs())
}

fn is(node: roxmltree::Node, ns: &str, name: &str) -> bool {
    node.is_element() && node.tag_name().name() == name && node.tag_name().namespace() == Some(ns)
}

fn text_of(node: roxmltree::Node) -> String {
    node.children()
        .filter(|c| c.is_text())
        .filter_map(|c| c.text())
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Reads metadata (EntitiesDescriptor, nested, or one EntityDescriptor) from canonical or
/// verified bytes.
pub fn parse(bytes: &[u8]) -> Result<Metadata, MetadataError> {
    let bad = |why: String| MetadataError::NotMetadata(why);
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
    let doc = roxmltree::Document::parse_with_options(
        text,
        roxmltree::ParsingOptions {
            allow_dtd: false,
            nodes_limit: u32::MAX,
            ..roxmltree::ParsingOptions::default()
        },
    )
    .map_err(|e| bad(e.to_string()))?;
    let root = doc.root_element();
    let valid_until = valid_until(root)?;
    let mut out = Metadata {
        valid_until,
        relying_parties: Vec::new(),
    };
    if is(root, NS_MD, "EntitiesDescriptor") {
        entities(root, valid_until, &mut out.relying_parties)?;
    } else if is(root, NS_MD, "EntityDescriptor") {
        if let Some(rp) = entity(root, valid_until)? {
            out.relying_parties.push(rp);
        }
    } else {
        return Err(bad(format!(
            "the root is {}, not md:EntitiesDescriptor or md:EntityDescriptor",
            root.tag_name().name()
        )));
    }
    // One descriptor per entity: with two, which one is trusted would depend on order.
    let mut seen = std::collections::BTreeSet::new();
    for rp in &out.relying_parties {
        if !seen.insert(rp.entity_id.as_str()) {
            return Err(bad(format!("{} is described twice", rp.entity_id)));
        }
    }
    Ok(out)
}

fn valid_until(node: roxmltree::Node) -> Result<Option<Duration>, MetadataError> {
    node.attribute("validUntil")
        .map(|v| {
            parse_instant(v).ok_or_else(|| {
                MetadataError::NotMetadata(format!("validUntil {v:?} is not a UTC time"))
            })
        })
        .transpose()
}

/// The earlier of two optional times.
fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn entities(
    node: roxmltree::Node,
    until: Option<Duration>,
    out: &mut Vec<RelyingParty>,
) -> Result<(), MetadataError> {
    for child in node.children().filter(|n| n.is_element()) {
        let until = earliest(until, valid_until(child)?);
        if is(child, NS_MD, "EntitiesDescriptor") {
            entities(child, until, out)?;
        } else if is(child, NS_MD, "EntityDescriptor") {
            if let Some(rp) = entity(child, until)? {
                out.push(rp);
            }
        }
    }
    Ok(())
}

/// One entity, if it has an SP role for SAML 2.0 (IdPs and others are not relying
/// parties). A malformed entity is an error for the whole document: a federation's
/// aggregate is taken whole or not at all.
fn entity(
    node: roxmltree::Node,
    until: Option<Duration>,
) -> Result<Option<RelyingParty>, MetadataError> {
    let bad = |why: String| MetadataError::NotMetadata(why);
    let entity_id = node
        .attribute("entityID")
        .filter(|e| !e.is_empty() && e.len() <= 1024)
        .ok_or_else(|| bad("an EntityDescriptor without a usable entityID".into()))?
        .to_owned();
    let until = earliest(until, valid_until(node)?);
    let Some(sp) = node.children().find(|n| {
        is(*n, NS_MD, "SPSSODescriptor")
            && n.attribute("protocolSupportEnumeration")
                .is_some_and(|p| p.split_whitespace().any(|p| p == PROTOCOL))
    }) else {
        return Ok(None);
    };
    let until = earliest(until, valid_until(sp)?);
    let flag = |name: &str| matches!(sp.attribute(name), Some("true") | Some("1"));
    let mut rp = RelyingParty {
        entity_id,
        authn_requests_signed: flag("AuthnRequestsSigned"),
        want_assertions_signed: flag("WantAssertionsSigned"),
        signing_certificates: Vec::new(),
        encryption_certificates: Vec::new(),
        encryption_methods: Vec::new(),
        assertion_consumer_services: Vec::new(),
        soap_logout_services: Vec::new(),
        entity_categories: Vec::new(),
        requested_attributes: Vec::new(),
        display_name: None,
        valid_until: until,
    };
    for kd in sp.children().filter(|n| is(*n, NS_MD, "KeyDescriptor")) {
        let usage = kd.attribute("use");
        // The key's own certificate is the first; others in an X509Data are its chain, not
        // keys of the relying party.
        for cert in kd
            .descendants()
            .filter(|n| is(*n, NS_DS, "X509Certificate"))
            .take(1)
        {
            let compact: String = text_of(cert)
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect();
            let der =
                <base64ct::Base64 as base64ct::Encoding>::decode_vec(&compact).map_err(|_| {
                    bad(format!(
                        "{}: a certificate that is not base64",
                        rp.entity_id
                    ))
                })?;
            if usage != Some("encryption") {
                rp.signing_certificates.push(der.clone());
            }
            if usage != Some("signing") {
                rp.encryption_certificates.push(der);
            }
        }
        if usage != Some("signing") {
            rp.encryption_methods.extend(
                kd.children()
                    .filter(|n| is(*n, NS_MD, "EncryptionMethod"))
                    .filter_map(|n| n.attribute("Algorithm"))
                    .map(str::to_owned),
            );
        }
    }
    for acs in sp
        .children()
        .filter(|n| is(*n, NS_MD, "AssertionConsumerService"))
    {
        let (Some(binding), Some(location), Some(index)) = (
            acs.attribute("Binding"),
            acs.attribute("Location"),
            acs.attribute("index").and_then(|i| i.parse::<u16>().ok()),
        ) else {
            return Err(bad(format!(
                "{}: an AssertionConsumerService without Binding, Location or index",
                rp.entity_id
            )));
        };
        // Only https:// endpoints: the response carries the user's attributes, and the
        // page that posts it must not be steered to another scheme (javascript:, http:).
        if !location.starts_with("https://") {
            continue;
        }
        rp.assertion_consumer_services.push(Endpoint {
            binding: binding.to_owned(),
            location: location.to_owned(),
            index,
            is_default: matches!(acs.attribute("isDefault"), Some("true") | Some("1")),
        });
    }
    rp.soap_logout_services = sp
        .children()
        .filter(|n| is(*n, NS_MD, "SingleLogoutService"))
        .filter(|n| n.attribute("Binding") == Some(BINDING_SOAP))
        .filter_map(|n| n.attribute("Location"))
        .filter(|l| l.starts_with("https://") && l.len() <= 1024)
        .map(str::to_owned)
        .collect();
    for acs in sp
        .children()
        .filter(|n| is(*n, NS_MD, "AttributeConsumingService"))
    {
        for ra in acs
            .children()
            .filter(|n| is(*n, NS_MD, "RequestedAttribute"))
        {
            if let Some(name) = ra.attribute("Name") {
                rp.requested_attributes.push(RequestedAttribute {
                    name: name.to_owned(),
                    required: matches!(ra.attribute("isRequired"), Some("true") | Some("1")),
                });
            }
        }
    }
    if let Some(ext) = node.children().find(|n| is(*n, NS_MD, "Extensions")) {
        for attr in ext
            .descendants()
            .filter(|n| is(*n, NS_MDATTR, "EntityAttributes"))
            .flat_map(|ea| ea.children().filter(|n| is(*n, NS_SAML, "Attribute")))
            .filter(|a| a.attribute("Name") == Some("http://macedir.org/entity-category"))
        {
            rp.entity_categories.extend(
                attr.children()
                    .filter(|n| is(*n, NS_SAML, "AttributeValue"))
                    .map(text_of),
            );
        }
    }
    let names: Vec<_> = sp
        .descendants()
        .filter(|n| is(*n, NS_MDUI, "DisplayName"))
        .map(|n| {
            (
                n.attribute(("http://www.w3.org/XML/1998/namespace", "lang")),
                text_of(n),
            )
        })
        .collect();
    rp.display_name = ["sv", "en"]
        .iter()
        .find_map(|l| {
            names
                .iter()
                .find(|(lang, _)| *lang == Some(l))
                .map(|(_, n)| n.clone())
        })
        .or_else(|| names.first().map(|(_, n)| n.clone()));
    Ok(Some(rp))
}

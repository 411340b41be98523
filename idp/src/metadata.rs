//! Our SAML metadata (the Swedish eID Framework's metadata specification, IdP part): an
//! `md:EntityDescriptor` with the entity categories we deliver and our assurance
//! certification, our scope (the organisation number), mdui names, the signing and
//! encryption keys (every configured one: a new key is published before it signs, an old
//! one until relying parties have moved), persistent NameIDs, the SSO endpoints, the
//! organisation and a technical contact; signed with the active signing key, valid for the
//! configured days.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use base64ct::Encoding;

use crate::config::Config;
use crate::keys;
use tessera_saml::xml::Writer;

pub const NS_MD: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
pub const NS_SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub const NS_DS: &str = "http://www.w3.org/2000/09/xmldsig#";
const NS_MDATTR: &str = "urn:oasis:names:tc:SAML:metadata:attribute";
const NS_MDUI: &str = "urn:oasis:names:tc:SAML:metadata:ui";
const NS_SHIBMD: &str = "urn:mace:shibboleth:metadata:1.0";
const URI_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri";

/// LoA URIs (PROFILES.md; Sweden Connect technical framework).
pub const LOA3_CERTIFIED: &str = "http://id.elegnamnden.se/loa/1.0/loa3";
pub const LOA3_UNCERTIFIED: &str = "http://id.swedenconnect.se/loa/1.0/uncertified-loa3";

/// Service entity categories we deliver: the org-person attribute set at LoA3, and the
/// workforce-eID agreement's contract category.
pub const ENTITY_CATEGORIES: [&str; 3] = [
    "http://id.swedenconnect.se/ec/1.0/loa3-orgid",
    "http://id.elegnamnden.se/ec/1.0/loa3-name",
    "http://id.swedenconnect.se/contract/sc/prepaid-auth-2021",
];

pub const BINDING_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
pub const BINDING_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
pub const NAMEID_PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";

/// The LoA URI this deployment asserts (connection rules 1.2.3).
pub fn loa(config: &Config) -> &'static str {
    if config.certified_loa3 {
        LOA3_CERTIFIED
    } else {
        LOA3_UNCERTIFIED
    }
}

pub use tessera_saml::response::{instant, new_id};

/// The unsigned metadata, valid until `now` (since the epoch) + the configured days.
pub fn unsigned(dir: &Path, config: &Config, now: Duration) -> Result<String> {
    let valid_until = now + Duration::from_secs(u64::from(config.metadata_valid_days) * 86_400);
    let id = new_id();
    let mut w = Writer::new();
    w.open(
        "md:EntityDescriptor",
        &[
            ("xmlns:md", NS_MD),
            ("xmlns:ds", NS_DS),
            ("xmlns:saml", NS_SAML),
            ("xmlns:mdattr", NS_MDATTR),
            ("xmlns:mdui", NS_MDUI),
            ("xmlns:shibmd", NS_SHIBMD),
            ("entityID", &config.entity_id),
            ("ID", &id),
            ("validUntil", &instant(valid_until)),
        ],
    );
    w.open("md:Extensions", &[])
        .open("mdattr:EntityAttributes", &[]);
    w.open(
        "saml:Attribute",
        &[
            ("Name", "http://macedir.org/entity-category"),
            ("NameFormat", URI_FORMAT),
        ],
    );
    for category in ENTITY_CATEGORIES {
        w.leaf("saml:AttributeValue", &[], category);
    }
    w.close();
    w.open(
        "saml:Attribute",
        &[
            (
                "Name",
                "urn:oasis:names:tc:SAML:attribute:assurance-certification",
            ),
            ("NameFormat", URI_FORMAT),
        ],
    );
    w.leaf("saml:AttributeValue", &[], loa(config));
    w.close().close().close();

    w.open(
        "md:IDPSSODescriptor",
        &[(
            "protocolSupportEnumeration",
            "urn:oasis:names:tc:SAML:2.0:protocol",
        )],
    );
    w.open("md:Extensions", &[]);
    w.leaf(
        "shibmd:Scope",
        &[("regexp", "false")],
        &config.organisation.number,
    );
    w.open("mdui:UIInfo", &[]);
    for lang in ["sv", "en"] {
        w.leaf(
            "mdui:DisplayName",
            &[("xml:lang", lang)],
            &config.organisation.name,
        );
    }
    w.leaf(
        "mdui:Description",
        &[("xml:lang", "sv")],
        &format!("Tjänste-ID för {}", config.organisation.name),
    );
    w.leaf(
        "mdui:Description",
        &[("xml:lang", "en")],
        &format!("Service ID for {}", config.organisation.name),
    );
    w.close().close();
    for (usage, keys) in [
        ("signing", &config.signing),
        ("encryption", &config.encryption),
    ] {
        for key in keys {
            let der = keys::certificate(dir, key)?;
            w.open("md:KeyDescriptor", &[("use", usage)])
                .open("ds:KeyInfo", &[])
                .leaf("ds:KeyName", &[], &key.label)
                .open("ds:X509Data", &[])
                .leaf(
                    "ds:X509Certificate",
                    &[],
                    &base64ct::Base64::encode_string(&der),
                )
                .close()
                .close();
            if usage == "encryption" {
                // What libxmlsec1 1.2 can decrypt: AES-GCM content, RSA-OAEP key transport.
                for alg in [
                    "http://www.w3.org/2009/xmlenc11#aes256-gcm",
                    "http://www.w3.org/2009/xmlenc11#aes128-gcm",
                    "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
                ] {
                    w.empty("md:EncryptionMethod", &[("Algorithm", alg)]);
                }
            }
            w.close();
        }
    }
    w.leaf("md:NameIDFormat", &[], NAMEID_PERSISTENT);
    let sso = format!("{}/saml/sso", config.base_url);
    for binding in [BINDING_REDIRECT, BINDING_POST] {
        w.empty(
            "md:SingleSignOnService",
            &[("Binding", binding), ("Location", &sso)],
        );
    }
    w.close();

    w.open("md:Organization", &[]);
    for lang in ["sv", "en"] {
        w.leaf(
            "md:OrganizationName",
            &[("xml:lang", lang)],
            &config.organisation.name,
        );
    }
    for lang in ["sv", "en"] {
        w.leaf(
            "md:OrganizationDisplayName",
            &[("xml:lang", lang)],
            &config.organisation.name,
        );
    }
    for lang in ["sv", "en"] {
        w.leaf(
            "md:OrganizationURL",
            &[("xml:lang", lang)],
            &config.organisation.url,
        );
    }
    w.close();
    w.open("md:ContactPerson", &[("contactType", "technical")])
        .leaf(
            "md:EmailAddress",
            &[],
            &format!("mailto:{}", config.contact_email),
        )
        .close();
    Ok(w.finish())
}

/// The signed metadata.
pub fn signed(
    dir: &Path,
    config: &Config,
    signer: &keys::Signer,
    now: Duration,
) -> Result<Vec<u8>> {
    let xml = unsigned(dir, config, now)?;
    signer
        .sign_xml(xml.as_bytes())
        .context("signing the metadata")
}

//! Relying parties from a federation's signed aggregate and from a local file: the
//! signature checked with the federation's certificate before anything is read, a bad
//! signature or a past `validUntil` refused, entities past their own `validUntil` left out,
//! and each relying party's keys, endpoints, categories and requested attributes read.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::time::Duration;

use base64ct::Encoding;
use tessera_saml::metadata::{read_local, verify_aggregate, MetadataError};
use tessera_xmlsec::testing::Key;
use tessera_xmlsec::SignatureAlg;

const NOW: Duration = Duration::from_secs(1_796_205_600); // 2026-12-02T10:00:00Z

fn sp(entity_id: &str, cert: &[u8], valid_until: Option<&str>) -> String {
    let cert = base64ct::Base64::encode_string(cert);
    let until = valid_until
        .map(|v| format!(r#" validUntil="{v}""#))
        .unwrap_or_default();
    format!(
        r#"<md:EntityDescriptor entityID="{entity_id}"{until}><md:Extensions><mdattr:EntityAttributes><saml:Attribute Name="http://macedir.org/entity-category" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:uri"><saml:AttributeValue>http://id.swedenconnect.se/ec/1.0/loa3-orgid</saml:AttributeValue></saml:Attribute></mdattr:EntityAttributes></md:Extensions><md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" AuthnRequestsSigned="true" WantAssertionsSigned="true"><md:Extensions><mdui:UIInfo><mdui:DisplayName xml:lang="en">Example Service</mdui:DisplayName><mdui:DisplayName xml:lang="sv">Exempeltjänst</mdui:DisplayName></mdui:UIInfo></md:Extensions><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:KeyDescriptor><ds:KeyInfo><ds:X509Data><ds:X509Certificate>
{cert}
</ds:X509Certificate></ds:X509Data></ds:KeyInfo><md:EncryptionMethod Algorithm="http://www.w3.org/2009/xmlenc11#aes256-gcm"/></md:KeyDescriptor><md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://sp.example.org/acs" index="0" isDefault="true"/><md:AttributeConsumingService index="0"><md:ServiceName xml:lang="en">x</md:ServiceName><md:RequestedAttribute Name="urn:oid:2.16.840.1.113730.3.1.241" isRequired="true"/><md:RequestedAttribute Name="urn:oid:0.9.2342.19200300.100.1.3"/></md:AttributeConsumingService></md:SPSSODescriptor></md:EntityDescriptor>"#
    )
}

fn aggregate(valid_until: Option<&str>, entities: &[String]) -> String {
    let until = valid_until
        .map(|v| format!(r#" validUntil="{v}""#))
        .unwrap_or_default();
    format!(
        r#"<md:EntitiesDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:mdattr="urn:oasis:names:tc:SAML:metadata:attribute" xmlns:mdui="urn:oasis:names:tc:SAML:metadata:ui" ID="_agg1" Name="urn:example:federation"{until}>{}<md:EntityDescriptor entityID="https://other-idp.example.org"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"/></md:EntityDescriptor></md:EntitiesDescriptor>"#,
        entities.concat()
    )
}

#[test]
fn a_signed_aggregate_yields_its_current_relying_parties() {
    let federation = Key::new(SignatureAlg::RsaSha256);
    let sp_key = Key::new(SignatureAlg::EcdsaP256Sha256);
    let xml = federation.sign_doc(&aggregate(
        Some("2026-12-09T10:00:00Z"),
        &[
            sp("https://sp.example.org", &sp_key.cert, None),
            sp(
                "https://gone.example.org",
                &sp_key.cert,
                Some("2026-12-01T00:00:00Z"),
            ),
        ],
    ));
    let m = verify_aggregate(xml.as_bytes(), std::slice::from_ref(&federation.cert), NOW).unwrap();
    assert_eq!(m.valid_until, Some(NOW + Duration::from_secs(7 * 86_400)));
    // The expired entity and the IdP are not relying parties.
    let [rp] = m.relying_parties.as_slice() else {
        panic!("{:?}", m.relying_parties)
    };
    assert_eq!(rp.entity_id, "https://sp.example.org");
    assert!(rp.authn_requests_signed && rp.want_assertions_signed);
    assert_eq!(
        rp.signing_certificates,
        [sp_key.cert.clone(), sp_key.cert.clone()]
    );
    assert_eq!(
        rp.encryption_certificates,
        std::slice::from_ref(&sp_key.cert)
    );
    assert_eq!(
        rp.encryption_methods,
        ["http://www.w3.org/2009/xmlenc11#aes256-gcm"]
    );
    assert_eq!(rp.assertion_consumer_services.len(), 1);
    assert_eq!(
        rp.assertion_consumer_services[0].location,
        "https://sp.example.org/acs"
    );
    assert!(rp.assertion_consumer_services[0].is_default);
    assert_eq!(
        rp.entity_categories,
        ["http://id.swedenconnect.se/ec/1.0/loa3-orgid"]
    );
    assert_eq!(rp.requested_attributes.len(), 2);
    assert!(rp.requested_attributes[0].required && !rp.requested_attributes[1].required);
    assert_eq!(rp.display_name.as_deref(), Some("Exempeltjänst"));
    assert_eq!(rp.valid_until, Some(NOW + Duration::from_secs(7 * 86_400)));
}

#[test]
fn a_bad_signature_or_a_past_valid_until_is_refused() {
    let federation = Key::new(SignatureAlg::RsaSha256);
    let sp_key = Key::new(SignatureAlg::RsaSha256);
    let good = federation.sign_doc(&aggregate(
        Some("2026-12-09T10:00:00Z"),
        &[sp("https://sp.example.org", &sp_key.cert, None)],
    ));
    let certs = [federation.cert.clone()];
    // A relying party slipped in after signing.
    let changed = good.replace("https://sp.example.org/acs", "https://evil.example/acs");
    assert!(matches!(
        verify_aggregate(changed.as_bytes(), &certs, NOW),
        Err(MetadataError::Signature(_))
    ));
    // Signed by someone else.
    let other = Key::new(SignatureAlg::RsaSha256);
    let forged = other.sign_doc(&aggregate(
        Some("2026-12-09T10:00:00Z"),
        &[sp("https://sp.example.org", &sp_key.cert, None)],
    ));
    assert!(matches!(
        verify_aggregate(forged.as_bytes(), &certs, NOW),
        Err(MetadataError::Signature(_))
    ));
    // Unsigned.
    let unsigned = aggregate(
        Some("2026-12-09T10:00:00Z"),
        &[sp("https://sp.example.org", &sp_key.cert, None)],
    );
    assert!(matches!(
        verify_aggregate(unsigned.as_bytes(), &certs, NOW),
        Err(MetadataError::Signature(_))
    ));
    // Past its validUntil, or without one.
    assert!(matches!(
        verify_aggregate(
            good.as_bytes(),
            &certs,
            NOW + Duration::from_secs(8 * 86_400)
        ),
        Err(MetadataError::Expired(_))
    ));
    let forever = federation.sign_doc(&aggregate(
        None,
        &[sp("https://sp.example.org", &sp_key.cert, None)],
    ));
    assert_eq!(
        verify_aggregate(forever.as_bytes(), &certs, NOW).err(),
        Some(MetadataError::NoValidUntil)
    );
    // A DTD is refused before anything else.
    let dtd = format!("<!DOCTYPE x [<!ENTITY e \"e\">]>{good}");
    assert!(matches!(
        verify_aggregate(dtd.as_bytes(), &certs, NOW),
        Err(MetadataError::Xml(_))
    ));
}

#[test]
fn a_local_descriptor_is_read_unsigned() {
    let sp_key = Key::new(SignatureAlg::RsaSha256);
    let xml = sp("https://local-sp.example.org", &sp_key.cert, None).replacen(
        "<md:EntityDescriptor ",
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:mdattr="urn:oasis:names:tc:SAML:metadata:attribute" xmlns:mdui="urn:oasis:names:tc:SAML:metadata:ui" "#,
        1,
    );
    let m = read_local(xml.as_bytes(), NOW).unwrap();
    assert_eq!(m.relying_parties.len(), 1);
    assert_eq!(
        m.relying_parties[0].entity_id,
        "https://local-sp.example.org"
    );
    assert!(matches!(
        read_local(
            b"<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\"/>",
            NOW
        ),
        Err(MetadataError::NotMetadata(_))
    ));
    assert!(matches!(
        read_local(b"<html/>", NOW),
        Err(MetadataError::NotMetadata(_))
    ));
}

#[test]
fn duplicates_chains_and_non_https_endpoints_are_not_trusted() {
    let federation = Key::new(SignatureAlg::RsaSha256);
    let sp_key = Key::new(SignatureAlg::RsaSha256);
    let certs = [federation.cert.clone()];
    // The same entity twice: the whole aggregate is refused.
    let twice = federation.sign_doc(&aggregate(
        Some("2026-12-09T10:00:00Z"),
        &[
            sp("https://sp.example.org", &sp_key.cert, None),
            sp("https://sp.example.org", &federation.cert, None),
        ],
    ));
    assert!(matches!(
        verify_aggregate(twice.as_bytes(), &certs, NOW),
        Err(MetadataError::NotMetadata(why)) if why.contains("twice")
    ));
    // A chain in one X509Data: only the first (the key's own) certificate counts; an ACS
    // that is not https:// is dropped.
    let ca_der = base64ct::Base64::encode_string(&federation.cert);
    let odd = sp("https://sp.example.org", &sp_key.cert, None)
        .replacen(
            "</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>",
            &format!("</ds:X509Certificate><ds:X509Certificate>{ca_der}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"),
            1,
        )
        .replace(
            r#"<md:AttributeConsumingService"#,
            r#"<md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:SOAP" Location="http://sp.example.org/slo"/><md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://sp.example.org/slo-redirect"/><md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:SOAP" Location="https://sp.example.org/slo"/><md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="javascript:alert(1)" index="1"/><md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="http://sp.example.org/acs" index="2"/><md:AttributeConsumingService"#,
        );
    let xml = federation.sign_doc(&aggregate(Some("2026-12-09T10:00:00Z"), &[odd]));
    let m = verify_aggregate(xml.as_bytes(), &certs, NOW).unwrap();
    let rp = &m.relying_parties[0];
    assert!(
        !rp.signing_certificates.contains(&federation.cert),
        "a chain CA became a key"
    );
    assert_eq!(rp.assertion_consumer_services.len(), 1);
    // Logout goes over SOAP to https only: the http and front-channel ones are left out.
    assert_eq!(rp.soap_logout_services, ["https://sp.example.org/slo"]);
    assert!(rp.assertion_consumer_services[0]
        .location
        .starts_with("https://"));
}

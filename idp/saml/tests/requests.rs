//! AuthnRequests over both bindings, signed and unsigned, and the hostile corpus of issue
//! 11: signature-wrapping variants over HTTP-POST (the signed request hidden in
//! Extensions, the signature moved to another root, duplicated IDs), a comment inside the
//! Issuer, unsigned requests from a relying party that signs, a changed Redirect query, an
//! algorithm we do not accept, DTD and entity payloads, a compression bomb, oversized and
//! deeply nested input, and requests that are not AuthnRequests. Each is refused with a
//! clear error.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::io::Write;
use std::time::Duration;

use base64ct::Encoding;
use tessera_saml::request::{AuthnRequest, Comparison, Incoming, RequestError, MAX_REQUEST};
use tessera_xmlsec::testing::Key;
use tessera_xmlsec::SignatureAlg;

const REQUEST: &str = r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_req1" Version="2.0" IssueInstant="2026-12-02T10:00:00Z" Destination="https://idp.example.org/saml/sso" AssertionConsumerServiceURL="https://sp.example.org/acs" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" ForceAuthn="true"><saml:Issuer>https://sp.example.org</saml:Issuer><samlp:Extensions><psc:PrincipalSelection xmlns:psc="http://id.swedenconnect.se/authn/1.0/principal-selection/ns"><psc:MatchValue Name="urn:oid:1.2.752.201.3.1">anna@5590000001</psc:MatchValue></psc:PrincipalSelection></samlp:Extensions><samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent" AllowCreate="true"/><samlp:RequestedAuthnContext Comparison="exact"><saml:AuthnContextClassRef>http://id.swedenconnect.se/loa/1.0/uncertified-loa3</saml:AuthnContextClassRef></samlp:RequestedAuthnContext></samlp:AuthnRequest>"#;

fn post(xml: &str) -> Result<Incoming, RequestError> {
    Incoming::from_post(&base64ct::Base64::encode_string(xml.as_bytes()), None)
}

fn read(incoming: Incoming, key: &Key, must_be_signed: bool) -> Result<AuthnRequest, RequestError> {
    AuthnRequest::parse(&incoming.verify(std::slice::from_ref(&key.cert), must_be_signed)?)
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An HTTP-Redirect query for `xml`, signed with `key` under `sig_alg` when given.
fn redirect(xml: &[u8], relay: &str, signer: Option<(&Key, &str)>) -> String {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(xml).unwrap();
    let deflated = e.finish().unwrap();
    let mut q = format!(
        "SAMLRequest={}&RelayState={}",
        urlencode(&base64ct::Base64::encode_string(&deflated)),
        urlencode(relay)
    );
    if let Some((key, alg)) = signer {
        q.push_str(&format!("&SigAlg={}", urlencode(alg)));
        let sig = key.sign(q.as_bytes()).unwrap();
        q.push_str(&format!(
            "&Signature={}",
            urlencode(&base64ct::Base64::encode_string(&sig))
        ));
    }
    q
}

const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";

#[test]
fn a_signed_post_request_is_read_from_what_was_signed() {
    let key = Key::new(SignatureAlg::RsaSha256);
    let signed = key.sign_doc(REQUEST);
    let r = read(post(&signed).unwrap(), &key, true).unwrap();
    assert_eq!(r.id, "_req1");
    assert_eq!(r.issuer, "https://sp.example.org");
    assert_eq!(r.issue_instant, Duration::from_secs(1_796_205_600));
    assert_eq!(
        r.destination.as_deref(),
        Some("https://idp.example.org/saml/sso")
    );
    assert_eq!(r.acs_url.as_deref(), Some("https://sp.example.org/acs"));
    assert!(r.force_authn && !r.is_passive);
    assert_eq!(
        r.authn_context,
        Some((
            Comparison::Exact,
            vec!["http://id.swedenconnect.se/loa/1.0/uncertified-loa3".to_owned()]
        ))
    );
    assert_eq!(
        r.principal_selection,
        [(
            "urn:oid:1.2.752.201.3.1".to_owned(),
            "anna@5590000001".to_owned()
        )]
    );
    // Another relying party's key does not verify it.
    let other = Key::new(SignatureAlg::RsaSha256);
    assert!(matches!(
        read(post(&signed).unwrap(), &other, true),
        Err(RequestError::BadSignature(_))
    ));
    // A changed request does not verify.
    let changed = signed.replace("ForceAuthn=\"true\"", "ForceAuthn=\"false\"");
    assert!(matches!(
        read(post(&changed).unwrap(), &key, true),
        Err(RequestError::BadSignature(_))
    ));
}

#[test]
fn unsigned_requests_only_from_relying_parties_that_do_not_sign() {
    let key = Key::new(SignatureAlg::RsaSha256);
    assert_eq!(
        read(post(REQUEST).unwrap(), &key, true).err(),
        Some(RequestError::Unsigned)
    );
    let incoming = post(REQUEST).unwrap();
    let verified = incoming.verify(&[], false).unwrap();
    assert!(!verified.signed);
    assert_eq!(AuthnRequest::parse(&verified).unwrap().id, "_req1");
    let q = redirect(REQUEST.as_bytes(), "r1", None);
    assert_eq!(
        read(Incoming::from_redirect(&q).unwrap(), &key, true).err(),
        Some(RequestError::Unsigned)
    );
}

#[test]
fn redirect_signatures_are_checked_over_the_raw_query() {
    for (alg, uri) in [
        (SignatureAlg::RsaSha256, RSA_SHA256),
        (SignatureAlg::EcdsaP256Sha256, ECDSA_SHA256),
    ] {
        let key = Key::new(alg);
        let q = redirect(REQUEST.as_bytes(), "state/1 2+3", Some((&key, uri)));
        let incoming = Incoming::from_redirect(&q).unwrap();
        assert_eq!(incoming.relay_state.as_deref(), Some("state/1 2+3"));
        assert_eq!(read(incoming, &key, true).unwrap().id, "_req1");
        // The RelayState changed in transit: the signature no longer holds.
        let changed = q.replace("RelayState=state", "RelayState=other");
        assert!(matches!(
            read(Incoming::from_redirect(&changed).unwrap(), &key, true),
            Err(RequestError::BadSignature(_))
        ));
        // Another key does not verify it.
        assert!(matches!(
            read(Incoming::from_redirect(&q).unwrap(), &Key::new(alg), true),
            Err(RequestError::BadSignature(_))
        ));
    }
    // SHA-1 is not accepted, whatever the key.
    let key = Key::new(SignatureAlg::RsaSha256);
    let q = redirect(
        REQUEST.as_bytes(),
        "r",
        Some((&key, "http://www.w3.org/2000/09/xmldsig#rsa-sha1")),
    );
    assert!(matches!(
        read(Incoming::from_redirect(&q).unwrap(), &key, true),
        Err(RequestError::Algorithm(_))
    ));
    // A parameter twice, or a signature without its algorithm.
    let q = redirect(REQUEST.as_bytes(), "r", Some((&key, RSA_SHA256)));
    assert!(matches!(
        Incoming::from_redirect(&format!("{q}&RelayState=x")),
        Err(RequestError::Encoding(_))
    ));
    let no_alg: String = q
        .split('&')
        .filter(|p| !p.starts_with("SigAlg="))
        .collect::<Vec<_>>()
        .join("&");
    assert!(matches!(
        Incoming::from_redirect(&no_alg),
        Err(RequestError::Encoding(_))
    ));
}

#[test]
fn wrapped_signatures_are_refused() {
    let key = Key::new(SignatureAlg::RsaSha256);
    let signed = key.sign_doc(REQUEST);
    let original = &signed[signed.find("<samlp:AuthnRequest").unwrap()..].trim_end();
    let ns = r#"xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion""#;
    let sig_start = original.find("<ds:Signature").unwrap();
    let sig_end = original.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let signature = &original[sig_start..sig_end];
    let unsigned_original = original.replace(signature, "");
    let cases = [
        // The signed request hidden in the Extensions of an evil one.
        format!(
            r#"<samlp:AuthnRequest {ns} ID="_evil" Version="2.0" IssueInstant="2026-12-02T10:00:00Z"><saml:Issuer>https://sp.example.org</saml:Issuer><samlp:Extensions>{original}</samlp:Extensions></samlp:AuthnRequest>"#
        ),
        // The signature moved to the evil root, the original nested below.
        format!(
            r#"<samlp:AuthnRequest {ns} ID="_evil" Version="2.0" IssueInstant="2026-12-02T10:00:00Z" ForceAuthn="false"><saml:Issuer>https://sp.example.org</saml:Issuer>{signature}<samlp:Extensions>{unsigned_original}</samlp:Extensions></samlp:AuthnRequest>"#
        ),
        // The evil root reusing the signed ID, the original beside it.
        format!(
            r#"<samlp:AuthnRequest {ns} ID="_req1" Version="2.0" IssueInstant="2026-12-02T10:00:00Z"><saml:Issuer>https://sp.example.org</saml:Issuer>{signature}<samlp:Extensions>{unsigned_original}</samlp:Extensions></samlp:AuthnRequest>"#
        ),
    ];
    for (i, case) in cases.iter().enumerate() {
        let got = post(case).and_then(|inc| read(inc, &key, true));
        assert!(
            matches!(
                got,
                Err(RequestError::BadSignature(_)) | Err(RequestError::Xml(_))
            ),
            "case {i}: {got:?}"
        );
    }
}

#[test]
fn a_comment_in_the_issuer_cannot_change_who_is_read() {
    let key = Key::new(SignatureAlg::RsaSha256);
    let signed = key.sign_doc(&REQUEST.replace(
        "<saml:Issuer>https://sp.example.org</saml:Issuer>",
        "<saml:Issuer>https://sp.example.org.evil.example</saml:Issuer>",
    ));
    let commented = signed.replace(
        "https://sp.example.org.evil.example",
        "https://sp.example.org<!---->.evil.example",
    );
    let r = read(post(&commented).unwrap(), &key, true).unwrap();
    assert_eq!(r.issuer, "https://sp.example.org.evil.example");
    // The unsigned path reads the canonical form the same way.
    let incoming = post(&REQUEST.replace(
        "https://sp.example.org</saml:Issuer>",
        "https://sp.example.org<!-- -->.evil</saml:Issuer>",
    ))
    .unwrap();
    assert_eq!(
        incoming.claimed_issuer().unwrap(),
        "https://sp.example.org.evil"
    );
}

#[test]
fn hostile_encodings_and_documents_are_refused() {
    // DTDs and entities, by either binding.
    let dtd = format!(
        r#"<!DOCTYPE samlp:AuthnRequest [<!ENTITY x SYSTEM "file:///etc/passwd">]>{}"#,
        REQUEST.replace("_req1\"", "_req1\" Consent=\"&x;\"")
    );
    assert!(matches!(
        post(&dtd),
        Err(RequestError::Xml(tessera_xmlsec::XmlError::Doctype))
    ));
    assert!(matches!(
        Incoming::from_redirect(&redirect(dtd.as_bytes(), "r", None)),
        Err(RequestError::Xml(tessera_xmlsec::XmlError::Doctype))
    ));
    // A compression bomb stops at the cap.
    let bomb = vec![b' '; 50 * MAX_REQUEST];
    assert_eq!(
        Incoming::from_redirect(&redirect(&bomb, "r", None)).err(),
        Some(RequestError::TooLarge)
    );
    // Oversized, deep, not base64, not DEFLATE, a long RelayState.
    let big = "A".repeat(3 * MAX_REQUEST);
    assert_eq!(post(&big).err(), Some(RequestError::TooLarge));
    let deep = format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol">{}{}</samlp:AuthnRequest>"#,
        "<x>".repeat(3000),
        "</x>".repeat(3000)
    );
    assert!(matches!(post(&deep), Err(RequestError::Xml(_))));
    assert!(matches!(
        Incoming::from_post("not base64!", None),
        Err(RequestError::Encoding(_))
    ));
    assert!(matches!(
        Incoming::from_redirect("SAMLRequest=AAAA"),
        Err(RequestError::Encoding(_) | RequestError::Xml(_))
    ));
    assert!(matches!(
        Incoming::from_post(
            &base64ct::Base64::encode_string(REQUEST.as_bytes()),
            Some("r".repeat(81))
        ),
        Err(RequestError::Encoding(_))
    ));
    assert!(matches!(
        Incoming::from_redirect(""),
        Err(RequestError::Encoding(_))
    ));
    // Documents that are not AuthnRequests as we read them.
    for (what, xml) in [
        (
            "another message",
            REQUEST.replace("samlp:AuthnRequest", "samlp:LogoutRequest"),
        ),
        ("SAML 1.1", REQUEST.replace("Version=\"2.0\"", "Version=\"1.1\"")),
        (
            "two issuers",
            REQUEST.replace(
                "<saml:Issuer>https://sp.example.org</saml:Issuer>",
                "<saml:Issuer>https://sp.example.org</saml:Issuer><saml:Issuer>https://evil.example</saml:Issuer>",
            ),
        ),
        (
            "a local time",
            REQUEST.replace("2026-12-02T10:00:00Z", "2026-12-02T10:00:00+01:00"),
        ),
        (
            "a bad boolean",
            REQUEST.replace("ForceAuthn=\"true\"", "ForceAuthn=\"yes\""),
        ),
        (
            "no issuer",
            REQUEST.replace("<saml:Issuer>https://sp.example.org</saml:Issuer>", ""),
        ),
    ] {
        let got = post(&xml).and_then(|inc| inc.verify(&[], false)).and_then(|v| AuthnRequest::parse(&v));
        assert!(
            matches!(got, Err(RequestError::NotAuthnRequest(_))),
            "{what}: {got:?}"
        );
    }
}

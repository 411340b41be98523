//! Signing and verifying through libxmlsec1, checked against `xmlsec1` (the peer's command
//! line tool, which we did not write), and the hostile corpus the IdP issue names:
//! signature-wrapping variants (the signed element moved under another root, a signature
//! over another element, duplicated IDs, an `xml:id` twin, comments inside a NameID), keys
//! carried in the message, DTD and entity payloads, oversized and deeply nested input.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::process::Command;

use tessera_xmlsec::testing::Key;
use tessera_xmlsec::{sign_root, Document, SignatureAlg, XmlError};

const REQUEST: &str = r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_a1b2c3" Version="2.0" IssueInstant="2026-12-02T10:00:00Z" Destination="https://idp.example.org/saml/sso"><saml:Issuer>https://sp.example.org</saml:Issuer><samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"/><saml:Subject><saml:NameID>admin@example.org.evil.example</saml:NameID></saml:Subject></samlp:AuthnRequest>"#;

const MAX: usize = 256 * 1024;

fn verify(key: &Key, xml: &str) -> Result<String, XmlError> {
    let doc = Document::parse(xml.as_bytes(), MAX)?;
    doc.verify_root(&key.cert, false)
        .map(|b| String::from_utf8(b).unwrap())
}

/// `xmlsec1 --verify` with the certificate as the only key (KeyInfo's keys ignored: by
/// default 1.2 also tries a key the message carries).
fn xmlsec1_accepts(key: &Key, xml: &str, root: &str) -> bool {
    let file = key.dir.path().join("doc.xml");
    std::fs::write(&file, xml).unwrap();
    Command::new("xmlsec1")
        .args(["--verify", "--pubkey-cert-pem"])
        .arg(key.cert_pem())
        .args([
            "--enabled-key-data",
            "key-name",
            "--enabled-reference-uris",
            "same-doc",
            "--id-attr:ID",
            root,
            "--node-xpath",
            "/*/*[local-name()='Signature']",
        ])
        .arg(&file)
        .output()
        .unwrap()
        .status
        .success()
}

const REQUEST_ROOT: &str = "urn:oasis:names:tc:SAML:2.0:protocol:AuthnRequest";

#[test]
fn what_we_sign_verifies_here_and_with_xmlsec1_for_both_algorithms() {
    for alg in [SignatureAlg::RsaSha256, SignatureAlg::EcdsaP256Sha256] {
        let key = Key::new(alg);
        let signed = key.sign_doc(REQUEST);
        // After the Issuer, as the SAML schema places it.
        let issuer = signed.find("</saml:Issuer>").unwrap();
        let sig = signed.find("<ds:Signature").unwrap();
        assert!(issuer < sig, "{signed}");
        assert!(
            xmlsec1_accepts(&key, &signed, REQUEST_ROOT),
            "{alg:?}: {signed}"
        );
        let digested = verify(&key, &signed).unwrap();
        assert!(digested.starts_with("<samlp:AuthnRequest"), "{digested}");
        assert!(!digested.contains("Signature"), "enveloped: {digested}");
        // Another key does not verify it, here or in xmlsec1.
        let other = Key::new(alg);
        assert!(matches!(
            verify(&other, &signed),
            Err(XmlError::SignatureInvalid(_))
        ));
        assert!(!xmlsec1_accepts(&other, &signed, REQUEST_ROOT));
    }
}

#[test]
fn a_signer_with_the_wrong_key_yields_no_document() {
    let key = Key::new(SignatureAlg::RsaSha256);
    let other = Key::new(SignatureAlg::RsaSha256);
    let got = sign_root(REQUEST.as_bytes(), key.alg, &key.cert, |b| other.sign(b));
    assert!(matches!(got, Err(XmlError::SignatureInvalid(_))), "{got:?}");
    let got = sign_root(REQUEST.as_bytes(), key.alg, &key.cert, |_| {
        Err("token away".into())
    });
    assert_eq!(got, Err(XmlError::Signer("token away".into())));
}

#[test]
fn a_changed_message_does_not_verify() {
    let key = Key::new(SignatureAlg::EcdsaP256Sha256);
    let signed = key.sign_doc(REQUEST);
    let changed = signed.replace("https://sp.example.org", "https://evil.example");
    assert!(matches!(
        verify(&key, &changed),
        Err(XmlError::SignatureInvalid(_))
    ));
}

/// The signature and its reference, cut out of a signed document.
fn signature_of(signed: &str) -> &str {
    let start = signed.find("<ds:Signature").unwrap();
    let end = signed.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    &signed[start..end]
}

/// The signed root element without the XML declaration.
fn element_of(signed: &str) -> &str {
    signed[signed.find("<samlp:AuthnRequest").unwrap()..].trim_end()
}

#[test]
fn signature_wrapping_is_refused() {
    let key = Key::new(SignatureAlg::RsaSha256);
    let signed = key.sign_doc(REQUEST);
    let original = element_of(&signed);
    let ns = r#"xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion""#;
    let evil_issuer = "<saml:Issuer>https://evil.example</saml:Issuer>";
    let cases = [
        // The signed request hidden in Extensions of an unsigned one.
        format!(
            r#"<samlp:AuthnRequest {ns} ID="_evil" Version="2.0">{evil_issuer}<samlp:Extensions>{original}</samlp:Extensions></samlp:AuthnRequest>"#
        ),
        // The original signature moved up to an evil root, the original nested below.
        format!(
            r#"<samlp:AuthnRequest {ns} ID="_evil" Version="2.0">{evil_issuer}{}<samlp:Extensions>{}</samlp:Extensions></samlp:AuthnRequest>"#,
            signature_of(&signed),
            original.replace(signature_of(&signed), "")
        ),
        // The signed element kept as the root's twin in a wrapper.
        format!(r#"<Wrapper ID="_w">{original}{original}</Wrapper>"#),
    ];
    for (i, case) in cases.iter().enumerate() {
        let got = verify(&key, case);
        assert!(
            matches!(
                got,
                Err(XmlError::SignatureShape(_) | XmlError::NotRoot | XmlError::DuplicateId(_))
            ),
            "case {i}: {got:?}"
        );
    }
    // Without our shape rules, xmlsec itself accepts the moved signature (the hole that
    // makes the rules necessary): proof that case 1 is a real wrapping attack.
    assert!(
        xmlsec1_accepts(&key, &cases[1], REQUEST_ROOT),
        "{}",
        cases[1]
    );
}

#[test]
fn a_signature_over_another_element_is_refused() {
    let key = Key::new(SignatureAlg::RsaSha256);
    // Sign an inner element (its own root in its own document), then put it inside an
    // outer message with the inner's signature: the reference names the inner element.
    let inner = key.sign_doc(
        r#"<saml:Subject xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_inner"><saml:NameID>x</saml:NameID></saml:Subject>"#,
    );
    let inner_el = &inner[inner.find("<saml:Subject").unwrap()..];
    let sig = signature_of(inner_el).to_owned();
    let outer = format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_outer" Version="2.0">{sig}{}</samlp:AuthnRequest>"#,
        inner_el.replace(&sig, "").trim_end()
    );
    assert!(
        matches!(verify(&key, &outer), Err(XmlError::SignatureShape(_))),
        "{outer}"
    );
}

#[test]
fn duplicated_ids_are_refused_at_parse() {
    for xml in [
        r#"<r ID="_a"><x ID="_a"/></r>"#,
        r#"<r ID="_a"><x xml:id="_a"/></r>"#,
        r#"<r xml:id="_a"><x ID="_a"/></r>"#,
    ] {
        let got = Document::parse(xml.as_bytes(), MAX);
        assert!(
            matches!(got, Err(XmlError::DuplicateId(_))),
            "{xml}: {got:?}"
        );
    }
}

#[test]
fn a_comment_inside_the_name_id_cannot_shorten_what_is_read() {
    let key = Key::new(SignatureAlg::RsaSha256);
    let signed = key.sign_doc(REQUEST);
    // The classic: a comment splits the signed text; a reader taking the first text node
    // would see "admin@example.org". The signature still verifies (c14n drops comments)...
    let commented = signed.replace(
        "admin@example.org.evil.example",
        "admin@example.org<!---->.evil.example",
    );
    assert_ne!(commented, signed);
    let digested = verify(&key, &commented).unwrap();
    // ...and what we read from is the digested text, whole and without the comment.
    assert!(
        digested.contains("<saml:NameID>admin@example.org.evil.example</saml:NameID>"),
        "{digested}"
    );
    assert!(!digested.contains("<!--"), "{digested}");
}

#[test]
fn a_key_carried_in_the_message_is_never_used() {
    // Signed by the attacker's key with that key's certificate in KeyInfo: verified with
    // the relying party's certificate only, it fails.
    let ours = Key::new(SignatureAlg::RsaSha256);
    let attacker = Key::new(SignatureAlg::RsaSha256);
    let forged = attacker.sign_doc(REQUEST);
    assert!(forged.contains("<ds:X509Certificate>"), "{forged}");
    assert!(matches!(
        verify(&ours, &forged),
        Err(XmlError::SignatureInvalid(_))
    ));
    assert!(!xmlsec1_accepts(&ours, &forged, REQUEST_ROOT));
}

#[test]
fn dtds_entities_oversized_and_deep_input_are_refused() {
    let doctype = [
        r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x "y">]><r>&x;</r>"#.to_owned(),
        r#"<!DOCTYPE r SYSTEM "http://evil.example/r.dtd"><r/>"#.to_owned(),
        format!(
            r#"<!DOCTYPE r [<!ENTITY a "{}"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><r>&b;</r>"#,
            "A".repeat(1000)
        ),
        r#"<!DOCTYPE r [<!ENTITY f SYSTEM "file:///etc/passwd">]><r>&f;</r>"#.to_owned(),
    ];
    for xml in &doctype {
        assert_eq!(
            Document::parse(xml.as_bytes(), MAX).err(),
            Some(XmlError::Doctype),
            "{xml}"
        );
    }
    // An undeclared entity is not well formed.
    assert!(matches!(
        Document::parse(b"<r>&x;</r>", MAX),
        Err(XmlError::Malformed(_))
    ));
    let big = format!("<r>{}</r>", "a".repeat(MAX));
    assert_eq!(
        Document::parse(big.as_bytes(), MAX).err(),
        Some(XmlError::TooLarge(MAX))
    );
    let deep = format!("{}{}", "<a>".repeat(5000), "</a>".repeat(5000));
    assert!(matches!(
        Document::parse(deep.as_bytes(), MAX),
        Err(XmlError::Malformed(_))
    ));
    for junk in [
        &b""[..],
        b"<",
        b"<r>",
        b"\xff\xfe<r/>",
        b"<r a='1' a='2'/>",
        b"<r/><r/>",
    ] {
        assert!(Document::parse(junk, MAX).is_err(), "{junk:?}");
    }
}

#[test]
fn an_unsigned_message_is_read_in_canonical_form_too() {
    let doc = Document::parse(b"<r a='1'><!-- note --><x>t<!---->u</x></r>", MAX).unwrap();
    assert_eq!(
        String::from_utf8(doc.canonical().unwrap()).unwrap(),
        r#"<r a="1"><x>tu</x></r>"#
    );
}

/// A template signed by `xmlsec1` (the peer signs whatever it is given) with `key_pem`.
fn xmlsec1_signed(dir: &std::path::Path, key_pem: &std::path::Path, template: &str) -> String {
    let file = dir.join("template.xml");
    std::fs::write(&file, template).unwrap();
    let out = Command::new("xmlsec1")
        .args(["--sign", "--privkey-pem"])
        .arg(key_pem)
        .args(["--id-attr:ID", REQUEST_ROOT, "--id-attr:ID", "Other"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A request template whose reference has `transforms`, `reference_attrs`, and the given
/// signature and digest methods.
fn template(
    transforms: &[&str],
    reference_attrs: &str,
    signature_method: &str,
    digest_method: &str,
) -> String {
    let transforms: String = transforms
        .iter()
        .map(|t| format!(r#"<ds:Transform Algorithm="{t}"/>"#))
        .collect();
    format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:unused="urn:unused" ID="_a1" Version="2.0"><saml:Issuer>https://sp.example.org</saml:Issuer><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="{signature_method}"/><ds:Reference {reference_attrs}><ds:Transforms>{transforms}</ds:Transforms><ds:DigestMethod Algorithm="{digest_method}"/><ds:DigestValue/></ds:Reference></ds:SignedInfo><ds:SignatureValue/></ds:Signature><Other ID="_o">evil</Other></samlp:AuthnRequest>"#
    )
}

const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";

#[test]
fn only_the_one_transform_chain_algorithms_and_key_strength_are_accepted() {
    let key = Key::new(SignatureAlg::RsaSha256);
    let key_pem = key.dir.path().join("key.pem");
    let sign = |t: &str| xmlsec1_signed(key.dir.path(), &key_pem, t);
    // The chain we accept, signed by the peer: verifies (the harness works).
    let good = sign(&template(
        &[ENVELOPED, EXC_C14N],
        r##"URI="#_a1""##,
        RSA_SHA256,
        SHA256,
    ));
    assert!(verify(&key, &good).is_ok(), "{good}");
    let refused = [
        // Enveloped alone: xmlsec would add an inclusive c14n by itself.
        (
            "implicit inclusive c14n",
            template(&[ENVELOPED], r##"URI="#_a1""##, RSA_SHA256, SHA256),
        ),
        (
            "enveloped twice",
            template(
                &[ENVELOPED, ENVELOPED, EXC_C14N],
                r##"URI="#_a1""##,
                RSA_SHA256,
                SHA256,
            ),
        ),
        (
            "with comments",
            template(
                &[
                    ENVELOPED,
                    "http://www.w3.org/2001/10/xml-exc-c14n#WithComments",
                ],
                r##"URI="#_a1""##,
                RSA_SHA256,
                SHA256,
            ),
        ),
        (
            "inclusive c14n",
            template(
                &[ENVELOPED, "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"],
                r##"URI="#_a1""##,
                RSA_SHA256,
                SHA256,
            ),
        ),
        (
            "RSA-SHA1",
            template(
                &[ENVELOPED, EXC_C14N],
                r##"URI="#_a1""##,
                "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
                SHA256,
            ),
        ),
        (
            "SHA-1 digest",
            template(
                &[ENVELOPED, EXC_C14N],
                r##"URI="#_a1""##,
                RSA_SHA256,
                "http://www.w3.org/2000/09/xmldsig#sha1",
            ),
        ),
        // xmlsec reads the first URI in any namespace; our shape check the plain one.
        (
            "namespaced URI",
            template(
                &[ENVELOPED, EXC_C14N],
                r##"xmlns:x="urn:x" x:URI="#_o" URI="#_a1""##,
                RSA_SHA256,
                SHA256,
            ),
        ),
    ];
    for (what, t) in refused {
        let signed = sign(&t);
        let got = verify(&key, &signed);
        assert!(got.is_err(), "{what} accepted: {signed}");
    }
    // A 1024-bit RSA key, however well it signs, is too weak.
    let weak = key.dir.path().join("weak");
    std::fs::create_dir_all(&weak).unwrap();
    let p = |n: &str| weak.join(n).to_str().unwrap().to_owned();
    for args in [
        vec![
            "req",
            "-x509",
            "-nodes",
            "-subj",
            "/CN=weak",
            "-days",
            "2",
            "-newkey",
            "rsa:1024",
            "-keyout",
            &p("key.pem"),
            "-out",
            &p("cert.pem"),
        ],
        vec![
            "x509",
            "-in",
            &p("cert.pem"),
            "-outform",
            "DER",
            "-out",
            &p("cert.der"),
        ],
    ] {
        assert!(Command::new("openssl")
            .args(&args)
            .output()
            .unwrap()
            .status
            .success());
    }
    let signed = xmlsec1_signed(
        key.dir.path(),
        &weak.join("key.pem"),
        &template(
            &[ENVELOPED, EXC_C14N],
            r##"URI="#_a1""##,
            RSA_SHA256,
            SHA256,
        ),
    );
    let doc = Document::parse(signed.as_bytes(), MAX).unwrap();
    let weak_cert = std::fs::read(weak.join("cert.der")).unwrap();
    assert!(matches!(
        doc.verify_root(&weak_cert, false),
        Err(XmlError::BadKey(_))
    ));
}

#[test]
fn only_utf8_documents_are_read() {
    let utf7 = br#"<?xml version="1.0" encoding="UTF-7"?>+ADw-r+AD4-hi+ADw-/r+AD4-"#;
    assert!(Document::parse(utf7, MAX).is_err());
    let mut utf16 = vec![0xFF, 0xFE];
    for c in "<r>hi</r>".encode_utf16() {
        utf16.extend(c.to_le_bytes());
    }
    assert!(Document::parse(&utf16, MAX).is_err());
    assert!(Document::parse("<r>hé</r>".as_bytes(), MAX).is_ok());
}

#[test]
fn an_element_with_too_many_attributes_is_refused_before_libxml2() {
    let attrs: String = (0..200).map(|i| format!(" a{i}=\"\"")).collect();
    let xml = format!("<r{attrs}/>");
    assert_eq!(
        Document::parse(xml.as_bytes(), MAX).err(),
        Some(XmlError::TooManyAttributes)
    );
}

/// The shim keeps parsed keys (a table of 64, least recently used evicted): with more
/// keys than it holds, used from several threads at once, every signature still verifies
/// with its own certificate only, and never with another's that a thread just used.
#[test]
fn keys_kept_between_calls_stay_apart_under_threads_and_eviction() {
    let keys: Vec<Key> = (0..80)
        .map(|_| Key::new(SignatureAlg::EcdsaP256Sha256))
        .collect();
    let signed: Vec<String> = keys.iter().map(|k| k.sign_doc(REQUEST)).collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (keys, signed) = (&keys, &signed);
            s.spawn(move || {
                for round in 0..3 {
                    for i in (0..keys.len()).map(|i| (i * 7 + t + round) % keys.len()) {
                        assert!(verify(&keys[i], &signed[i]).is_ok(), "key {i}");
                        let other = (i + 1) % keys.len();
                        assert!(
                            matches!(
                                verify(&keys[other], &signed[i]),
                                Err(XmlError::SignatureInvalid(_))
                            ),
                            "key {other} verified key {i}'s signature"
                        );
                    }
                }
            });
        }
    });
}

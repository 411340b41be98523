//! `tessera-idp init` and `serve` as an operator runs them: keys made in the SoftHSM2 token
//! (non-extractable, as OpenSC's `pkcs11-tool` reads them), the signed metadata served at
//! /saml/metadata and accepted by `xmlsec1 --verify` with our signing certificate only, its
//! Swedish eID Framework contents, health and metrics; bad `init` input refused with
//! nothing left behind.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;

mod common;

use common::{get, serve, IDP};
const SOFTHSM2: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn init(dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(IDP)
        .args(["init", "--data-dir"])
        .arg(dir)
        .args(["--issuer-url", "https://issuer.example.org"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn the_metadata_is_signed_in_the_token_and_verified_by_xmlsec1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idp");
    let out = init(&dir, &["--base-url", "https://idp.example.org"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("entityID: https://idp.example.org/saml/metadata"),
        "{said}"
    );

    // The keys are in the token, sensitive and never extractable (OpenSC reads them).
    let secret = std::fs::read_to_string(dir.join("activation.secret")).unwrap();
    let listed = Command::new("pkcs11-tool")
        .args([
            "--module",
            SOFTHSM2,
            "--login",
            "--pin",
            secret.trim(),
            "--list-objects",
        ])
        .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let secret_key = listed
        .split("Secret Key Object")
        .nth(1)
        .unwrap_or_else(|| panic!("no secret key in {listed}"));
    assert!(secret_key.contains("nameid-1"), "{secret_key}");
    assert!(secret_key.contains("never extractable"), "{secret_key}");
    for label in ["saml-signing-1", "saml-encryption-1"] {
        let private = listed
            .split("Private Key Object")
            .skip(1)
            .find(|o| o.contains(label))
            .unwrap_or_else(|| panic!("no private key {label} in {listed}"));
        assert!(private.contains("never extractable"), "{private}");
        assert!(private.contains("sensitive"), "{private}");
    }

    let server = serve(&dir);
    let (status, xml) = get(&format!("{}/saml/metadata", server.base));
    assert_eq!(status, 200, "{xml}");
    let file = tmp.path().join("metadata.xml");
    std::fs::write(&file, &xml).unwrap();

    // xmlsec1 with our signing certificate as the only key.
    let verified = Command::new("xmlsec1")
        .args(["--verify", "--pubkey-cert-pem"])
        .arg(dir.join("saml-signing-1.pem"))
        .args([
            "--enabled-key-data",
            "key-name",
            "--enabled-reference-uris",
            "same-doc",
            "--id-attr:ID",
            "urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor",
            "--node-xpath",
            "/*/*[local-name()='Signature']",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    // And not with the encryption certificate (a different key).
    let wrong = Command::new("xmlsec1")
        .args(["--verify", "--pubkey-cert-pem"])
        .arg(dir.join("saml-encryption-1.pem"))
        .args([
            "--enabled-key-data",
            "key-name",
            "--id-attr:ID",
            "urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!wrong.status.success());

    // The signature is the descriptor's first child, as the metadata schema puts it.
    let after_root = &xml[xml.find("<md:EntityDescriptor").unwrap()..];
    let first_child = after_root[after_root.find('>').unwrap() + 1..].trim_start();
    assert!(first_child.starts_with("<ds:Signature"), "{xml}");
    for expected in [
        r#"entityID="https://idp.example.org/saml/metadata""#,
        "<saml:AttributeValue>http://id.swedenconnect.se/loa/1.0/uncertified-loa3</saml:AttributeValue>",
        "<saml:AttributeValue>http://id.swedenconnect.se/ec/1.0/loa3-orgid</saml:AttributeValue>",
        r#"<shibmd:Scope regexp="false">5590000001</shibmd:Scope>"#,
        r#"<md:KeyDescriptor use="signing">"#,
        r#"<md:KeyDescriptor use="encryption">"#,
        r#"<md:EncryptionMethod Algorithm="http://www.w3.org/2009/xmlenc11#aes256-gcm"/>"#,
        "<md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</md:NameIDFormat>",
        r#"<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.org/saml/sso"/>"#,
        r#"<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://idp.example.org/saml/sso"/>"#,
        "<md:EmailAddress>mailto:idp-admin@example.org</md:EmailAddress>",
    ] {
        assert!(xml.contains(expected), "{expected} not in {xml}");
    }
    // The certified URI only behind the switch (connection rules 1.2.3).
    assert!(
        !xml.contains("http://id.elegnamnden.se/loa/1.0/loa3<"),
        "{xml}"
    );

    // Our own verifier agrees, with the certificate from the file.
    let pem = std::fs::read_to_string(dir.join("saml-signing-1.pem")).unwrap();
    let cert = der::Document::from_pem(&pem).unwrap().1;
    let doc = tessera_xmlsec::Document::parse(xml.as_bytes(), 1 << 20).unwrap();
    let signed = doc.verify_root(cert.as_bytes(), false).unwrap();
    assert!(String::from_utf8(signed).unwrap().contains("loa3-orgid"));

    assert_eq!(get(&format!("{}/healthz", server.base)).0, 200);
    let (status, body) = get(&format!("{}/readyz", server.base));
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&format!("{}/metrics", server.base));
    assert_eq!(status, 200);
    assert!(
        body.contains("tessera_idp_metadata_served_total 1"),
        "{body}"
    );
    assert!(
        body.contains("tessera_idp_metadata_signed_total 1"),
        "{body}"
    );
}

#[test]
fn init_refuses_bad_input_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    // A curve SAML signing does not use here: refused before anything is made.
    let dir = tmp.path().join("p384");
    let out = init(&dir, &["--signing-alg", "p384"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("RSA or P-256"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.exists(), "a failed init leaves no directory");
    let dir = tmp.path().join("bad-number");
    let out = init(&dir, &["--organisation-number", "12345"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ten digits"));
    assert!(!dir.exists());
    // An existing deployment is never overwritten.
    let dir = tmp.path().join("idp");
    assert!(init(&dir, &[]).status.success());
    let before = std::fs::read(dir.join("idp.json")).unwrap();
    let again = init(&dir, &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    assert_eq!(std::fs::read(dir.join("idp.json")).unwrap(), before);
    // `serve` without a deployment says what to do.
    let out = Command::new(IDP)
        .args(["serve", "--data-dir"])
        .arg(tmp.path().join("nothing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("run `tessera-idp init"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn name_ids_are_pseudonyms_per_relying_party_made_in_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idp");
    assert!(init(&dir, &[]).status.success());
    let config = tessera_idp::config::Config::load(&dir).unwrap();
    let signer = tessera_idp::keys::Signer::open(&dir, &config, &[]).unwrap();
    let a = signer
        .name_id("https://sp1.example.org", "person-1")
        .unwrap();
    assert_eq!(a.len(), 64);
    assert_eq!(
        a,
        signer
            .name_id("https://sp1.example.org", "person-1")
            .unwrap()
    );
    assert_ne!(
        a,
        signer
            .name_id("https://sp2.example.org", "person-1")
            .unwrap()
    );
    assert_ne!(
        a,
        signer
            .name_id("https://sp1.example.org", "person-2")
            .unwrap()
    );
    // The parts cannot be shifted into each other.
    assert_ne!(
        signer.name_id("https://sp1.example.org/x", "y").unwrap(),
        signer.name_id("https://sp1.example.org", "/xy").unwrap()
    );
    // The same deployment opened again gives the same NameID (the key is the token's).
    drop(signer);
    let again = tessera_idp::keys::Signer::open(&dir, &config, &[]).unwrap();
    assert_eq!(
        a,
        again
            .name_id("https://sp1.example.org", "person-1")
            .unwrap()
    );
}

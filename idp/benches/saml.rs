//! The IdP's SAML path, timed in one run (`cargo bench -p tessera-idp`): a Response sealed
//! for a relying party (the assertion signed by the SoftHSM2 token's RSA-2048 key,
//! encrypted for the SP through libxmlsec1, the Response signed again), against the bare
//! token signature it needs twice; and a signed AuthnRequest taken in over HTTP-POST
//! (parse, verify with the SP's certificate, read). One thread, so the figures are per
//! core. The login benchmark of issue 11 (TLS client auth + SAML response) builds on these.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed benchmark

use std::process::Command;
use std::time::{Duration, Instant};

use base64ct::Encoding;
use tessera_idp::config::Config;
use tessera_idp::keys::Signer;
use tessera_saml::request::{AuthnRequest, Incoming};
use tessera_saml::response::{seal, Assertion, Attribute, Response, Seal, Status};
use tessera_xmlsec::testing::Key;
use tessera_xmlsec::{Cipher, SignatureAlg};

const IDP: &str = env!("CARGO_BIN_EXE_tessera-idp");
const ROUNDS: usize = 400;

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    let total: Duration = times.iter().sum();
    let per_second = times.len() as f64 / total.as_secs_f64();
    let pick = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{what:<58} {per_second:>8.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms",
        pick(0.50).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3
    );
}

fn timed(mut f: impl FnMut()) -> Vec<Duration> {
    f(); // warm up (the throwaway template key is made once)
    (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect()
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idp");
    let out = Command::new(IDP)
        .args(["init", "--data-dir"])
        .arg(&dir)
        .args(["--issuer-url", "https://issuer.example.org"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = Config::load(&dir).unwrap();
    let signer = Signer::open(&dir, &config, &[]).unwrap();
    let sp = Key::new(SignatureAlg::RsaSha256);
    let certificate = signer.certificate().to_vec();
    println!("IdP SAML path, one thread, {ROUNDS} rounds each (SoftHSM2 RSA-2048 signing key)");

    let tbs = vec![0x5a_u8; 600];
    report(
        "token signature alone (RSA-2048, SoftHSM2)",
        timed(|| {
            signer.sign_raw(&tbs).unwrap();
        }),
    );
    let now = Duration::from_secs(1_796_205_600);
    let response = Response {
        id: "_resp".into(),
        in_response_to: "_req".into(),
        destination: "https://sp.example.org/acs".into(),
        issuer: config.entity_id.clone(),
        issue_instant: now,
        status: Status::Success,
    };
    let assertion = Assertion {
        id: "_a".into(),
        issue_instant: now,
        issuer: config.entity_id.clone(),
        name_id: signer
            .name_id("https://sp.example.org", "person-1")
            .unwrap(),
        audience: "https://sp.example.org".into(),
        recipient: "https://sp.example.org/acs".into(),
        in_response_to: "_req".into(),
        not_before: now,
        not_on_or_after: now + Duration::from_secs(300),
        address: "127.0.0.1".into(),
        authn_instant: now,
        session_index: "_s".into(),
        loa: "http://id.swedenconnect.se/loa/1.0/uncertified-loa3".into(),
        attributes: vec![Attribute {
            name: "urn:oid:2.16.840.1.113730.3.1.241".into(),
            friendly_name: "displayName".into(),
            values: vec!["Greta Gröndal".into()],
        }],
    };
    let sign = |b: &[u8]| signer.sign_raw(b).map_err(|e| e.to_string());
    report(
        "Response sealed (2 token signatures + AES-GCM/RSA-OAEP)",
        timed(|| {
            seal(
                &response,
                Some(&assertion),
                Seal {
                    alg: SignatureAlg::RsaSha256,
                    certificate: &certificate,
                    encrypt_to: (&sp.cert, Cipher::Aes256Gcm),
                },
                &sign,
            )
            .unwrap();
        }),
    );
    let xml = tessera_saml::response::assertion_xml(&assertion);
    report(
        "assertion signed alone (sign_root with the token)",
        timed(|| {
            tessera_xmlsec::sign_root(xml.as_bytes(), SignatureAlg::RsaSha256, &certificate, sign)
                .unwrap();
        }),
    );
    let wrapped = format!(
        "<r xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\">{}</r>",
        &xml[xml.find("<saml:Assertion").unwrap()..]
    );
    report(
        "assertion encrypted alone (libxmlsec1, AES-GCM + RSA-OAEP)",
        timed(|| {
            let mut doc = tessera_xmlsec::Document::parse(wrapped.as_bytes(), 1 << 20).unwrap();
            doc.encrypt_element(
                "urn:oasis:names:tc:SAML:2.0:assertion",
                "Assertion",
                &sp.cert,
                Cipher::Aes256Gcm,
            )
            .unwrap();
        }),
    );
    report(
        "pseudonymous NameID (HMAC-SHA256 in the token)",
        timed(|| {
            signer
                .name_id("https://sp.example.org", "person-1")
                .unwrap();
        }),
    );
    let request = sp.sign_doc(r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_req1" Version="2.0" IssueInstant="2026-12-02T10:00:00Z" Destination="https://idp.example.org/saml/sso" AssertionConsumerServiceURL="https://sp.example.org/acs"><saml:Issuer>https://sp.example.org</saml:Issuer></samlp:AuthnRequest>"#);
    let form = base64ct::Base64::encode_string(request.as_bytes());
    let certs = [sp.cert.clone()];
    report(
        "signed AuthnRequest in (POST: parse, verify, read)",
        timed(|| {
            let incoming = Incoming::from_post(&form, None).unwrap();
            let verified = incoming.verify(&certs, true).unwrap();
            AuthnRequest::parse(&verified).unwrap();
        }),
    );
}

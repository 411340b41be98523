//! Proof of possession by PIV attestation (finding 5): keys generated on the reference card
//! (in memory), attested in Yubico's format (the attestation certificate the card's `F9`
//! key made, and the card's attestation certificate `5FFF01` from its manufacturer CA),
//! issued through the API only when the chain reaches a manufacturer CA the issuer trusts
//! (`DIR/attestation-roots/`), the attested slot is the profile's, and the key needs its
//! PIN.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::process::Command;

use common::curl;

use common::card::{attest, card};
use tessera_piv::piv::{KeyRef, PinPolicy};

const ISSUER: &str = env!("CARGO_BIN_EXE_tessera-issuer");

#[test]
fn attested_keys_are_issued_only_from_a_trusted_card_for_the_right_slot_with_a_pin() {
    if !common::require(&["curl", "openssl"], &["/usr/lib/softhsm/libsofthsm2.so"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = Command::new(ISSUER)
        .args(["init", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut trusted, manufacturer) = card();
    std::fs::create_dir(data.join("attestation-roots")).unwrap();
    std::fs::write(
        data.join("attestation-roots/manufacturer.pem"),
        &manufacturer,
    )
    .unwrap();
    let (_server, base) = common::serve(&data, &[]);
    let token = std::fs::read_to_string(data.join("bootstrap-admin.token")).unwrap();
    let auth = format!("Authorization: Bearer {token}");
    let issue = |profile: &str, attestation: &(String, String)| {
        let body = serde_json::json!({
            "profile": profile,
            "subject": { "common_name": "Attested Person" },
            "attestation": { "certificate": attestation.0, "intermediate": attestation.1 },
        })
        .to_string();
        curl(&[
            "-H",
            &auth,
            "--data-binary",
            &body,
            &format!("{base}/api/v1/certificates"),
        ])
    };

    // 9A with PIN once, for the authentication profile (9A): issued, for the card's key.
    let a = attest(&mut trusted, KeyRef::AUTHENTICATION, PinPolicy::Once);
    let (status, answer) = issue("authentication", &a);
    assert_eq!(status, 201, "{answer}");
    let issued: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let leaf = issued["certificate"].as_str().unwrap();
    let key_of = |pem_text: &str| {
        let (_, der) = der::pem::decode_vec(pem_text.as_bytes()).unwrap();
        let cert = <x509_cert::Certificate as der::Decode>::from_der(&der).unwrap();
        der::Encode::to_der(&cert.tbs_certificate.subject_public_key_info).unwrap()
    };
    assert_eq!(
        key_of(leaf),
        key_of(&a.0),
        "the certificate is not for the attested key"
    );

    // The same attestation for another profile's slot (9C): refused.
    let (status, answer) = issue("signature", &a);
    assert_eq!(
        (status, answer.contains("\"bad_proof\"")),
        (400, true),
        "{answer}"
    );
    // A key the card uses without its PIN: refused.
    let never = attest(&mut trusted, KeyRef::KEY_MANAGEMENT, PinPolicy::Never);
    let (status, answer) = issue("encryption", &never);
    assert!(
        status == 400 && answer.contains("\"bad_proof\"") && answer.contains("PIN"),
        "{answer}"
    );
    // A card from a manufacturer the issuer does not trust: refused.
    let (mut stranger, _) = card();
    let s = attest(&mut stranger, KeyRef::AUTHENTICATION, PinPolicy::Once);
    let (status, answer) = issue("authentication", &s);
    assert_eq!(
        (status, answer.contains("\"bad_proof\"")),
        (400, true),
        "{answer}"
    );
    // The trusted card's chain with another card's attestation: refused.
    let (status, answer) = issue("authentication", &(s.0.clone(), a.1.clone()));
    assert_eq!(
        (status, answer.contains("\"bad_proof\"")),
        (400, true),
        "{answer}"
    );
}

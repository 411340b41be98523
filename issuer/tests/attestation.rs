//! Proof of possession by PIV attestation (finding 5): keys generated on the reference card
//! (in memory), attested in Yubico's format (the attestation certificate the card's `F9`
//! key made, and the card's attestation certificate `5FFF01` from its manufacturer CA),
//! issued through the API only when the chain reaches a manufacturer CA the issuer trusts
//! (`DIR/attestation-roots/`), the attested slot is the profile's, and the key needs its
//! PIN.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use tessera_piv::card::{Applet, Interface, SoftKeyStore, DEFAULT_MANAGEMENT_KEY};
use tessera_piv::host::PivClient;
use tessera_piv::piv::{object, Algorithm, KeyRef, PinPolicy};

const ISSUER: &str = env!("CARGO_BIN_EXE_tessera-issuer");

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pem(der: &[u8]) -> String {
    der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der).unwrap()
}

/// A blank reference card in memory and its manufacturer CA (PEM).
fn card() -> (PivClient<Applet<SoftKeyStore>>, String) {
    // The time through the injected clock, as the issuer reads it.
    let now = tessera_issuer_types::Clock::now(&tessera_issuer_types::SystemClock);
    let new =
        tessera_firmware_tests::manufacture::blank_card(SystemTime::UNIX_EPOCH + now).unwrap();
    let mut c = PivClient::new(Applet::new(new.card, new.keys, Interface::Contact));
    c.authenticate_management(Algorithm::Tdes, &DEFAULT_MANAGEMENT_KEY)
        .unwrap();
    (c, new.manufacturer_ca_pem)
}

/// Generates a P-256 key in `slot` with `policy` and returns its attestation and the card's
/// attestation certificate, PEM.
fn attest(
    c: &mut PivClient<Applet<SoftKeyStore>>,
    slot: KeyRef,
    policy: PinPolicy,
) -> (String, String) {
    c.generate(slot, Algorithm::EccP256, Some(policy)).unwrap();
    let attestation = c.attest(slot).unwrap();
    let f9 = c.get_data(object::YK_ATTESTATION_CERT).unwrap();
    let f9 = tessera_piv::tlv::find(&f9, 0x70)
        .ok()
        .flatten()
        .unwrap_or(&f9)
        .to_vec();
    (pem(&attestation), pem(&f9))
}

fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = Kill(
        Command::new(ISSUER)
            .args(["serve", "--data-dir", data.to_str().unwrap()])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--public-url",
                &base,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(&[&format!("{base}/readyz")]).0 != 200 {
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
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

//! The conformance catalogue against the reference card: in memory (every check, both
//! interfaces) and through a real pcscd + vpcd with the `tessera-piv-conformance` binary.
#![allow(clippy::disallowed_methods)] // tests manufacture cards at the real time

mod support;

use std::time::SystemTime;

use support::{require, CardOptions, Lab, VPCD_DRIVER};
use tessera_firmware_tests::conformance::{self, Config, Verdict};
use tessera_firmware_tests::manufacture;
use tessera_piv::card::{Applet, Interface, KeyStore};
use tessera_piv::piv::{Algorithm, KeyRef, PinPolicy};

fn report_has_no_failure(outcomes: &[conformance::Outcome]) {
    let report = conformance::report(outcomes);
    println!("{report}");
    assert!(conformance::all_passed(outcomes), "{report}");
}

#[test]
fn every_contact_check_passes_in_memory() {
    let card = manufacture::blank_card(SystemTime::now()).unwrap();
    let mut applet = Applet::new(card.card, card.keys, Interface::Contact);
    let config = Config {
        destructive: true,
        ..Config::default()
    };
    let outcomes = conformance::run(&mut applet, &config);
    report_has_no_failure(&outcomes);
    // Every not-applicable entry is one of the justified kinds: other interface only, or a
    // factory secret reported on a blank card.
    let unjustified = conformance::unjustified_not_applicable(&outcomes);
    assert!(unjustified.is_empty(), "{unjustified:?}");
}

#[test]
fn an_issued_card_must_have_none_of_the_factory_secrets() {
    use tessera_piv::host::PivClient;
    let card = manufacture::blank_card(SystemTime::now()).unwrap();
    let mut applet = Applet::new(card.card, card.keys, Interface::Contact);
    let issued = |pin: &[u8], puk: &[u8], key: &[u8]| Config {
        issued: true,
        pin: pin.to_vec(),
        puk: puk.to_vec(),
        management_key: key.to_vec(),
        management_alg: Algorithm::Aes256,
        ..Config::default()
    };
    let failed = |outcomes: &[conformance::Outcome]| -> Vec<&str> {
        outcomes
            .iter()
            .filter(|o| matches!(o.verdict, Verdict::Fail(_)))
            .map(|o| o.check.id)
            .collect()
    };
    // As shipped: all three are failures for an issued card.
    let outcomes = conformance::run(
        &mut applet,
        &Config {
            issued: true,
            ..Config::default()
        },
    );
    assert_eq!(
        failed(&outcomes),
        ["issued.management-key", "issued.pin", "issued.puk"],
        "{}",
        conformance::report(&outcomes)
    );
    // Personalised as the issuer does: a new AES-256 management key, PIN and PUK.
    let key = [0x5Au8; 32];
    let mut c = PivClient::new(&mut applet);
    c.authenticate_management(Algorithm::Tdes, &tessera_piv::card::DEFAULT_MANAGEMENT_KEY)
        .unwrap();
    c.set_management_key(Algorithm::Aes256, &key).unwrap();
    c.change_reference(KeyRef::PIN, b"123456", b"246810")
        .unwrap();
    c.change_reference(KeyRef::PUK, b"12345678", b"97531086")
        .unwrap();
    let outcomes = conformance::run(&mut applet, &issued(b"246810", b"97531086", &key));
    report_has_no_failure(&outcomes);
    // Back to one factory secret, the PIN: only that fails.
    let mut c = PivClient::new(&mut applet);
    c.change_reference(KeyRef::PIN, b"246810", b"123456")
        .unwrap();
    let outcomes = conformance::run(&mut applet, &issued(b"123456", b"97531086", &key));
    assert_eq!(failed(&outcomes), ["issued.pin"]);
}

#[test]
fn contactless_checks_pass_in_memory() {
    let mut card = manufacture::blank_card(SystemTime::now()).unwrap();
    card.keys
        .generate(
            KeyRef::CARD_AUTHENTICATION,
            Algorithm::EccP256,
            PinPolicy::Never,
            1,
        )
        .unwrap();
    let mut applet = Applet::new(card.card, card.keys, Interface::Contactless);
    let config = Config {
        destructive: true,
        contactless: true,
        ..Config::default()
    };
    let outcomes = conformance::run(&mut applet, &config);
    report_has_no_failure(&outcomes);
    let passed = outcomes
        .iter()
        .filter(|o| o.verdict == Verdict::Pass)
        .count();
    assert!(passed >= 15, "only {passed} contactless checks ran");
}

#[test]
fn non_destructive_run_leaves_the_card_as_it_was() {
    let card = manufacture::blank_card(SystemTime::now()).unwrap();
    let before = serde_json::to_string(&card.card).unwrap();
    let mut applet = Applet::new(card.card, card.keys, Interface::Contact);
    let outcomes = conformance::run(&mut applet, &Config::default());
    report_has_no_failure(&outcomes);
    assert_eq!(serde_json::to_string(applet.state()).unwrap(), before);
}

#[test]
fn a_non_conforming_card_fails_the_suite() {
    // A card whose PIN is not the configured one fails the PIN checks: the suite can fail.
    let card = manufacture::blank_card(SystemTime::now()).unwrap();
    let mut applet = Applet::new(card.card, card.keys, Interface::Contact);
    let config = Config {
        pin: b"999999".to_vec(),
        ..Config::default()
    };
    let outcomes = conformance::run(&mut applet, &config);
    assert!(!conformance::all_passed(&outcomes));
}

#[test]
fn conformance_binary_passes_through_pcscd() {
    if !require(
        &["unshare", "nsenter", "pcscd", "opensc-tool", "ip"],
        &[VPCD_DRIVER],
    ) {
        return;
    }
    let lab = Lab::start(CardOptions::default());
    let report = lab.run_ok(
        env!("CARGO_BIN_EXE_tessera-piv-conformance"),
        &["--reader", "Tessera vpcd 00 00", "--destructive"],
    );
    println!("{report}");
    assert!(report.contains("PASS  select.apt"), "{report}");
    assert!(report.contains(" 0 fail,"), "{report}");
    assert!(!report.contains("the reader refused"), "{report}");
}

#[test]
fn conformance_binary_passes_contactless_through_pcscd() {
    if !require(
        &[
            "unshare",
            "nsenter",
            "pcscd",
            "opensc-tool",
            "ip",
            "yubico-piv-tool",
        ],
        &[VPCD_DRIVER],
    ) {
        return;
    }
    let mut lab = Lab::start(CardOptions::default());
    lab.run_ok(
        "yubico-piv-tool",
        &[
            "-r", "Tessera", "-a", "generate", "-s", "9e", "-A", "ECCP256",
        ],
    );
    lab.start_card(&CardOptions {
        contactless: true,
        ..CardOptions::default()
    });
    let report = lab.run_ok(
        env!("CARGO_BIN_EXE_tessera-piv-conformance"),
        &["--reader", "Tessera vpcd 00 00", "--contactless"],
    );
    println!("{report}");
    assert!(report.contains("PASS  cl.uid"), "{report}");
    assert!(report.contains("PASS  cl.card-auth"), "{report}");
    assert!(report.contains(" 0 fail,"), "{report}");
}

#[test]
fn the_attestation_claims_no_form_factor_and_no_fips() {
    use der::Decode;
    use tessera_piv::host::PivClient;
    let card = manufacture::blank_card(SystemTime::now()).unwrap();
    let mut c = PivClient::new(Applet::new(card.card, card.keys, Interface::Contact));
    c.authenticate_management(Algorithm::Tdes, &tessera_piv::card::DEFAULT_MANAGEMENT_KEY)
        .unwrap();
    c.generate(KeyRef::AUTHENTICATION, Algorithm::EccP256, None)
        .unwrap();
    let der = c.attest(KeyRef::AUTHENTICATION).unwrap();
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    let form_factor = cert
        .tbs_certificate
        .extensions
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.extn_id.to_string() == "1.3.6.1.4.1.41482.3.9")
        .expect("form-factor extension");
    // Yubico: low bits the shape (0: unspecified), 0x80 FIPS, 0x40 CSPN.
    assert_eq!(form_factor.extn_value.as_bytes(), [0x00]);
}

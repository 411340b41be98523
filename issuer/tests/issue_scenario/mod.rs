//! The issuance scenario, shared by the SQLite and PostgreSQL test binaries, run on the
//! issuer's layers as `serve` wires them (store, token signer, issuing CA, RA, status): a
//! fresh certificate verifies against our CRL with openssl, a revoked one does not, a
//! released hold verifies again, bad requests write nothing, and a certificate whose final
//! store failed is still revocable and appears on the CRL.
//!
//! One deployment per process: SoftHSM2 is initialised once per process.

#![allow(unreachable_pub)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use diesel::prelude::*;

use super::common::openssl;
use tessera_issuer_ca::{IssuingCa, TokenSigner, Urls};
use tessera_issuer_ra::{Actor, PopPolicy, Ra};
use tessera_issuer_status::{Settings, Status};
use tessera_issuer_store::schema::{audit_log, certificates};
use tessera_issuer_store::{AuthorityRole, Store};
use tessera_issuer_types::api::IssueRequest;
use tessera_issuer_types::config::Config;
use tessera_issuer_types::{ProfileName, RevocationReason, Serial, Subject, SystemClock};

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

pub fn peers() -> bool {
    super::common::require(&["openssl"], &[SOFTHSM])
}

fn pem(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).unwrap()
}

/// A key pair made by openssl (as a card would), returned as SPKI DER.
fn spki(dir: &Path, name: &str, algorithm: &[&str]) -> Vec<u8> {
    let key = format!("{name}.key");
    let mut args = vec!["genpkey", "-out", &key];
    args.extend_from_slice(algorithm);
    assert!(openssl(dir, &args).0);
    let der = format!("{name}.spki");
    assert!(
        openssl(
            dir,
            &["pkey", "-in", &key, "-pubout", "-outform", "DER", "-out", &der]
        )
        .0
    );
    std::fs::read(dir.join(der)).unwrap()
}

fn verify(dir: &Path, status: &Status, cert: &[u8]) -> (bool, String) {
    status.publish_crl().unwrap();
    let crl = status.crl().unwrap();
    std::fs::write(dir.join("crl.pem"), pem("X509 CRL", &crl)).unwrap();
    std::fs::write(dir.join("leaf.pem"), pem("CERTIFICATE", cert)).unwrap();
    openssl(
        dir,
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "data/root-ca.pem",
            "-untrusted",
            "data/issuing-ca.pem",
            "-CRLfile",
            "crl.pem",
            "leaf.pem",
        ],
    )
}

/// An issuance request with a bare key (the scenario's RA allows it for every profile;
/// proof of possession is tested through the API).
fn request(profile: ProfileName, subject: &Subject, key: &[u8], days: Option<u32>) -> IssueRequest {
    IssueRequest {
        profile,
        subject: subject.clone(),
        csr: None,
        attestation: None,
        public_key: Some(pem("PUBLIC KEY", key)),
        validity_days: days,
    }
}

/// Runs the scenario; `database` is a PostgreSQL URL (None: SQLite) and `fail_store` the
/// SQL that makes the final store of a certificate fail on that backend.
pub fn run(database: Option<&str>, fail_store: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_tessera-issuer"))
        .args([
            "init",
            "--data-dir",
            data.to_str().unwrap(),
            "--organization",
            "Example Kommun",
            "--upn-domain",
            "example.org",
        ])
        .args(
            database
                .map(|url| ["--database-url", url])
                .into_iter()
                .flatten(),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = Config::load(&data).unwrap();
    let store = Store::open_configured(&config.database, &data).unwrap();
    let secret = tessera_hsm::custody::activation_secret(&data, config.custody, &[]).unwrap();
    let token = tessera_hsm::open_configured(&config.token, &secret).unwrap();
    let signer = Arc::new(TokenSigner::new(token, config.key_alg));
    let cert = |role| {
        store
            .read(|tx| tx.authority(role))
            .unwrap()
            .unwrap()
            .certificate
    };
    let urls = Urls {
        crl: "http://127.0.0.1:8080/crl/issuing-ca-1.crl".into(),
        ocsp: "http://127.0.0.1:8080/ocsp".into(),
        ca_issuers: "http://127.0.0.1:8080/ca/issuing-ca-1.crt".into(),
        policy: const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.64000.1.3"),
    };
    let ca = Arc::new(
        IssuingCa::new(
            signer,
            &cert(AuthorityRole::Issuing),
            &cert(AuthorityRole::Ocsp),
            urls,
            config.upn_domains.clone(),
        )
        .unwrap(),
    );
    let clock = Arc::new(SystemClock);
    let status = Status::new(
        Arc::clone(&ca),
        store.clone(),
        clock.clone(),
        Settings::default(),
    );
    let ra = Ra::new(
        Arc::clone(&ca),
        store.clone(),
        clock,
        PopPolicy {
            attestation_roots: Vec::new(),
            bare_key_profiles: ProfileName::ALL.to_vec(),
            tpm_roots: Vec::new(),
        },
        Arc::new(|_| {}),
    );
    // Direct issuance (no carrier) is the bootstrap token's, while setting up.
    let officer = Actor {
        name: "bootstrap-admin".into(),
        roles: Vec::new(),
        person_id: None,
        bootstrap: true,
    };
    let subject = Subject {
        common_name: "Alice Andersson".into(),
        upn: Some("alice@example.org".into()),
        email: Some("alice@example.org".into()),
        card_uuid: None,
        sid: Some("S-1-5-21-3623811015-3361044348-30300820-1013".into()),
    };

    // A fresh certificate verifies with our CRL.
    let key = spki(
        dir,
        "alice",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let issued = ra
        .issue(
            &officer,
            &request(ProfileName::Authentication, &subject, &key, None),
        )
        .unwrap();
    let (ok, text) = verify(dir, &status, &issued.der);
    assert!(ok && text.contains("leaf.pem: OK"), "{text}");
    let (_, shown) = openssl(dir, &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    for expected in [
        "CN = Alice Andersson",
        "TLS Web Client Authentication",
        "Microsoft Smartcard Login",
        "UPN::alice@example.org",
        "email:alice@example.org",
        "OCSP - URI:http://127.0.0.1:8080/ocsp",
        "1.3.6.1.4.1.64000.1.3",
        "Digital Signature",
        // The SID extension (openssl names it by OID), with the SID inside.
        "1.3.6.1.4.1.311.25.2:",
    ] {
        assert!(shown.contains(expected), "{expected} missing in\n{shown}");
    }
    let (_, parsed) = openssl(
        dir,
        &[
            "asn1parse",
            "-in",
            "leaf.pem",
            "-i",
            "-strparse",
            &sid_offset(dir),
        ],
    );
    assert!(
        parsed.contains("1.3.6.1.4.1.311.25.2.1")
            && parsed.contains("S-1-5-21-3623811015-3361044348-30300820-1013"),
        "the SID extension's content:\n{parsed}"
    );

    // Revoked: openssl refuses it.
    ra.revoke(&officer, &issued.serial, RevocationReason::KeyCompromise)
        .unwrap();
    let (ok, text) = verify(dir, &status, &issued.der);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    assert_eq!(
        ra.revoke(&officer, &issued.serial, RevocationReason::Superseded)
            .unwrap_err()
            .code()
            .as_str(),
        "already_revoked"
    );

    // Hold and release (RSA key this time).
    let key = spki(
        dir,
        "bob",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let bob = Subject {
        common_name: "Bob Berg".into(),
        email: Some("bob@example.org".into()),
        ..Subject::default()
    };
    let held = ra
        .issue(
            &officer,
            &request(ProfileName::Signature, &bob, &key, Some(365)),
        )
        .unwrap();
    ra.revoke(&officer, &held.serial, RevocationReason::CertificateHold)
        .unwrap();
    let (ok, text) = verify(dir, &status, &held.der);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    ra.release_hold(&officer, &held.serial).unwrap();
    let (ok, text) = verify(dir, &status, &held.der);
    assert!(ok, "released hold: {text}");

    // Bad input gets its error code and writes nothing.
    let count = || -> (i64, i64) {
        let mut c = store.raw().unwrap();
        (
            certificates::table.count().get_result(&mut *c).unwrap(),
            audit_log::table.count().get_result(&mut *c).unwrap(),
        )
    };
    let before = count();
    let weak = spki(
        dir,
        "weak",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
    );
    let p521 = spki(
        dir,
        "p521",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
    );
    /// Profile, public key, subject, validity, the expected error code.
    type Case<'a> = (ProfileName, &'a [u8], &'a Subject, Option<u32>, &'a str);
    let cases: [Case<'_>; 5] = [
        (
            ProfileName::Authentication,
            &weak,
            &subject,
            None,
            "bad_public_key",
        ),
        (
            ProfileName::Authentication,
            &p521,
            &subject,
            None,
            "bad_public_key",
        ),
        (
            ProfileName::Authentication,
            b"not DER at all",
            &subject,
            None,
            "bad_public_key",
        ),
        (
            ProfileName::Authentication,
            &key,
            &subject,
            Some(4000),
            "validity_too_long",
        ),
        (
            ProfileName::CardAuthentication,
            &key,
            &subject,
            None,
            "bad_subject",
        ),
    ];
    for (profile, spki, subj, days, code) in cases {
        let err = ra
            .issue(&officer, &request(profile, subj, spki, days))
            .unwrap_err();
        assert_eq!(err.code().as_str(), code, "{profile}: {err}");
    }
    assert_eq!(count(), before, "a refused request wrote something");

    // The final store fails: the intent survives, is revocable and reaches the CRL.
    {
        let mut c = store.raw().unwrap();
        for sql in fail_store {
            diesel::sql_query(*sql).execute(&mut *c).unwrap();
        }
    }
    let key = spki(
        dir,
        "carol",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let carol = Subject {
        common_name: "Carol Carlsson".into(),
        ..Subject::default()
    };
    let err = ra
        .issue(
            &officer,
            &request(ProfileName::Authentication, &carol, &key, None),
        )
        .unwrap_err();
    assert!(format!("{err:#}").contains("injected failure"), "{err:#}");
    let serial: String = certificates::table
        .filter(certificates::status.eq("intent"))
        .select(certificates::serial)
        .first(&mut *store.raw().unwrap())
        .unwrap();
    let serial = Serial::parse(&serial).unwrap();
    ra.revoke(&officer, &serial, RevocationReason::CessationOfOperation)
        .unwrap();
    status.publish_crl().unwrap();
    let crl = status.crl().unwrap();
    std::fs::write(dir.join("crl.pem"), pem("X509 CRL", &crl)).unwrap();
    let (ok, text) = openssl(dir, &["crl", "-in", "crl.pem", "-noout", "-text"]);
    assert!(
        ok && text
            .to_ascii_lowercase()
            .contains(&format!("serial number: {serial}")),
        "{serial} not on\n{text}"
    );
    assert!(text.contains("Cessation Of Operation"), "{text}");

    // Every step is in the audit chain, which verifies.
    let verified = store.read(|tx| tx.verify_audit()).unwrap().unwrap();
    assert!(verified.records >= 10, "{verified:?}");
}

/// The offset (for `openssl asn1parse -strparse`) of the SID extension's OCTET STRING in
/// leaf.pem: the value right after the extension's OID.
fn sid_offset(dir: &std::path::Path) -> String {
    let (_, parsed) = openssl(dir, &["asn1parse", "-in", "leaf.pem"]);
    let lines: Vec<&str> = parsed.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(":1.3.6.1.4.1.311.25.2"))
        .expect("the SID extension");
    lines[at + 1..]
        .iter()
        .find(|l| l.contains("OCTET STRING"))
        .and_then(|l| l.split(':').next())
        .map(|o| o.trim().to_owned())
        .expect("its value")
}

//! The issuance scenario, shared by the SQLite and PostgreSQL test binaries: a fresh
//! certificate verifies against our CRL with openssl, a revoked one does not, a released
//! hold verifies again, bad requests write nothing, and a certificate whose final store
//! failed is still revocable and appears on the CRL.
//!
//! One deployment per process: SoftHSM2 is initialised once per process.

#![allow(unreachable_pub)]

use std::path::Path;
use std::process::Command;

use diesel::prelude::*;

use super::common::openssl;
use tessera_issuer::ca::{IssueRequest, IssuingCa, Subject, Urls};
use tessera_issuer::clock::SystemClock;
use tessera_issuer::db::{
    self,
    schema::{audit_log, certificates},
};

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

fn verify(
    dir: &Path,
    ca: &IssuingCa,
    conn: &mut tessera_issuer::db::Conn,
    cert: &[u8],
) -> (bool, String) {
    let crl = ca.generate_crl(conn, &SystemClock).unwrap();
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
    let mut conn = db::open(&data.join("tessera.db"), database).unwrap();
    let urls = Urls {
        crl: "http://127.0.0.1:8080/crl/issuing-ca-1.crl".into(),
        ocsp: "http://127.0.0.1:8080/ocsp".into(),
        ca_issuers: "http://127.0.0.1:8080/ca/issuing-ca-1.crt".into(),
        policy: const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.64000.1.3"),
    };
    let ca = IssuingCa::open(&data, &mut conn, urls, &[]).unwrap();
    let subject = Subject {
        common_name: "Alice Andersson".into(),
        upn: Some("alice@example.org".into()),
        email: Some("alice@example.org".into()),
        card_uuid: None,
    };

    // A fresh certificate verifies with our CRL.
    let key = spki(
        dir,
        "alice",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let issued = ca
        .issue(
            &mut conn,
            &SystemClock,
            "officer-1",
            &IssueRequest {
                profile: "authentication",
                subject: &subject,
                public_key: &key,
                validity_days: None,
            },
        )
        .unwrap();
    let (ok, text) = verify(dir, &ca, &mut conn, &issued.der);
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
    ] {
        assert!(shown.contains(expected), "{expected} missing in\n{shown}");
    }

    // Revoked: openssl refuses it.
    ca.revoke(
        &mut conn,
        &SystemClock,
        "officer-1",
        &issued.serial,
        "keyCompromise",
    )
    .unwrap();
    let (ok, text) = verify(dir, &ca, &mut conn, &issued.der);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    assert_eq!(
        ca.revoke(
            &mut conn,
            &SystemClock,
            "officer-1",
            &issued.serial,
            "superseded"
        )
        .unwrap_err()
        .code(),
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
    let held = ca
        .issue(
            &mut conn,
            &SystemClock,
            "officer-1",
            &IssueRequest {
                profile: "signature",
                subject: &bob,
                public_key: &key,
                validity_days: Some(365),
            },
        )
        .unwrap();
    ca.revoke(
        &mut conn,
        &SystemClock,
        "officer-1",
        &held.serial,
        "certificateHold",
    )
    .unwrap();
    let (ok, text) = verify(dir, &ca, &mut conn, &held.der);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    ca.release_hold(&mut conn, &SystemClock, "officer-1", &held.serial)
        .unwrap();
    let (ok, text) = verify(dir, &ca, &mut conn, &held.der);
    assert!(ok, "released hold: {text}");

    // Bad input gets its error code and writes nothing.
    let count = |c: &mut tessera_issuer::db::Conn| -> (i64, i64) {
        (
            certificates::table.count().get_result(c).unwrap(),
            audit_log::table.count().get_result(c).unwrap(),
        )
    };
    let before = count(&mut conn);
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
    type Case<'a> = (&'a str, &'a [u8], &'a Subject, Option<u32>, &'a str);
    let cases: [Case<'_>; 6] = [
        ("no-such-profile", &key, &subject, None, "unknown_profile"),
        ("authentication", &weak, &subject, None, "bad_public_key"),
        ("authentication", &p521, &subject, None, "bad_public_key"),
        (
            "authentication",
            b"not DER at all",
            &subject,
            None,
            "bad_public_key",
        ),
        (
            "authentication",
            &key,
            &subject,
            Some(4000),
            "validity_too_long",
        ),
        ("card-authentication", &key, &subject, None, "bad_subject"),
    ];
    for (profile, spki, subj, days, code) in cases {
        let err = ca
            .issue(
                &mut conn,
                &SystemClock,
                "officer-1",
                &IssueRequest {
                    profile,
                    subject: subj,
                    public_key: spki,
                    validity_days: days,
                },
            )
            .unwrap_err();
        assert_eq!(err.code(), code, "{profile}: {err}");
    }
    assert_eq!(
        count(&mut conn),
        before,
        "a refused request wrote something"
    );

    // The final store fails: the intent survives, is revocable and reaches the CRL.
    for sql in fail_store {
        diesel::sql_query(*sql).execute(&mut conn).unwrap();
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
    let err = ca
        .issue(
            &mut conn,
            &SystemClock,
            "officer-1",
            &IssueRequest {
                profile: "authentication",
                subject: &carol,
                public_key: &key,
                validity_days: None,
            },
        )
        .unwrap_err();
    assert!(format!("{err:#}").contains("injected failure"), "{err:#}");
    let (serial, status): (String, String) = certificates::table
        .filter(certificates::status.eq("intent"))
        .select((certificates::serial, certificates::status))
        .first(&mut conn)
        .unwrap();
    assert_eq!(status, "intent");
    ca.revoke(
        &mut conn,
        &SystemClock,
        "officer-1",
        &serial,
        "cessationOfOperation",
    )
    .unwrap();
    let crl = ca.generate_crl(&mut conn, &SystemClock).unwrap();
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
    let verified = tessera_issuer::audit::verify(&mut conn).unwrap().unwrap();
    assert!(verified.records >= 10, "{verified:?}");
}

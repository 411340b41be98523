//! The registration authority through the `tessera` CLI against a running issuer, on
//! SQLite and on a PostgreSQL the test starts: officers from the bootstrap token, a person
//! imported by HR, proofed, issuance requested by one officer and approved by another,
//! keys registered with a PIV attestation from the reference card, activation; a
//! temporary card during which OCSP and the CRL say certificateHold for the original, its
//! return (original good again, the temporary card's certificate revoked as superseded);
//! a suspension whose deadline passes (the server's clock moved by the test); a leaver from
//! the SCIM feed; scim2-tester's SCIM 2.0 compliance checks.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;
mod pg;

use std::path::Path;
use std::process::Command;

use common::card::{attest, card};
use common::cli::Cli;
use tessera_piv::piv::{KeyRef, PinPolicy};

const ISSUER: &str = env!("CARGO_BIN_EXE_tessera-issuer");

/// The `tessera` binary (another package of the workspace): beside `tessera-issuer`, built
/// here if a narrower `cargo test` did not build it.
/// The CRL's entry for `serial`: its reason, or None if not listed.
fn crl_entry(dir: &Path, base: &str, serial: &str) -> Option<String> {
    let (status, _) = common::curl(&[
        "-o",
        dir.join("ca.crl").to_str().unwrap(),
        &format!("{base}/crl/issuing-ca-1.crl"),
    ]);
    assert_eq!(status, 200);
    let (ok, text) = common::openssl(
        dir,
        &["crl", "-inform", "DER", "-in", "ca.crl", "-noout", "-text"],
    );
    assert!(ok, "{text}");
    let upper = serial.to_uppercase();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.trim() == format!("Serial Number: {upper}") {
            // The entry's reason comes a few lines further down.
            for l in lines.by_ref().take(4) {
                let t = l.trim();
                if !t.is_empty()
                    && !t.starts_with("Revocation Date")
                    && !t.starts_with("CRL entry")
                    && !t.starts_with("X509v3 CRL Reason")
                {
                    return Some(t.to_owned());
                }
            }
            return Some(String::new());
        }
    }
    None
}

/// Runs scim2-tester (python-scim, from PyPI; `deploy/dev/test.sh` installs it and names
/// its interpreter in `TESSERA_SCIM_PYTHON`) against `url` with an HR officer's token.
fn scim_compliance(url: &str, token: &str) {
    let Ok(python) = std::env::var("TESSERA_SCIM_PYTHON") else {
        let msg = "TESSERA_SCIM_PYTHON is not set (deploy/dev/test.sh installs scim2-tester)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scim/check.py");
    let out = Command::new(python)
        .args([script, url, token])
        .output()
        .expect("scim2-tester");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "scim2-tester failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn scenario(database: Option<&str>) {
    if !common::require(&["curl", "openssl"], &["/usr/lib/softhsm/libsofthsm2.so"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut init = vec!["init", "--data-dir", data.to_str().unwrap()];
    if let Some(url) = database {
        init.extend(["--database-url", url]);
    }
    let out = Command::new(ISSUER).args(&init).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut card, manufacturer) = card();
    std::fs::create_dir(data.join("attestation-roots")).unwrap();
    std::fs::write(
        data.join("attestation-roots/manufacturer.pem"),
        &manufacturer,
    )
    .unwrap();
    // The UPN domain the people's logon names are in.
    common::allow_upn_domain(&data, "example.org");
    let offset = tmp.path().join("clock-offset");
    let (_server, base) = common::serve(&data, &["--clock-offset-file", offset.to_str().unwrap()]);
    common::fetch_issuing_pem(tmp.path(), &base);

    let t = Cli {
        base: base.clone(),
        dir: tmp.path().to_owned(),
    };
    let bootstrap = std::fs::read_to_string(data.join("bootstrap-admin.token")).unwrap();
    // The bootstrap token creates the first administrator (and gets their first token),
    // and is spent.
    let first = t.ok(
        &bootstrap,
        &[
            "officer",
            "add",
            "admin",
            "--name",
            "Ada Admin",
            "--role",
            "administrator",
        ],
    );
    let admin = first["first_token"]["token"].as_str().unwrap().to_owned();
    let (code, _, err) = t.run(&bootstrap, &["officer", "list"]);
    assert_eq!(code, 4, "the spent bootstrap token: {err}");
    assert!(err.contains("spent"), "{err}");
    let officer = |id: &str, role: &str| t.officer(&admin, id, role);
    let anna = officer("anna", "registration_officer");
    let bo = officer("bo", "registration_officer");
    let hr = officer("hr", "hr_admin");
    let auditor = officer("audit", "auditor");

    // HR registers a person; a bad personnummer is refused with exit code 3 and the field.
    // Each person's own logon name (a UPN names one person).
    let person_args = |n: &str, pnr: &str| -> Vec<String> {
        let upn = format!("{}@example.org", n.to_lowercase());
        [
            "person",
            "add",
            "--employee-number",
            n,
            "--given-name",
            "Eva",
            "--family-name",
            "Ek",
            "--email",
            &upn,
            "--upn",
            &upn,
            "--identity-number",
            pnr,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let args = person_args("E1", "19811218-9875");
    let (code, _, err) = t.run(&hr, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("identity_number"), "{err}");
    let args = person_args("E1", "19811218-9876");
    let p = t.ok(&hr, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let person = p["id"].as_str().unwrap().to_owned();
    // An auditor changes nothing (exit 4).
    let (code, _, _) = t.run(&auditor, &["person", "end", &person]);
    assert_eq!(code, 4);

    t.proof(&anna, &person, "passport", "Service desk", "198112189876");
    let c = t.ok(&anna, &["carrier", "add", "SC-0001"]);
    let carrier = c["id"].as_str().unwrap().to_owned();
    let a = t.ok(
        &anna,
        &[
            "carrier", "assign", &carrier, "--person", &person, "--terms", "2026-1",
        ],
    );
    let approval = a[0]["id"].as_str().unwrap().to_owned();
    // The requester cannot approve (exit 4, four_eyes_required).
    let (code, _, err) = t.run(&anna, &["approve", "yes", &approval]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("four_eyes_required"), "{err}");
    t.ok(&bo, &["approve", "yes", &approval]);

    // Keys generated on the reference card, attested, registered.
    let (att, intermediate) = attest(&mut card, KeyRef::AUTHENTICATION, PinPolicy::Once);
    std::fs::write(tmp.path().join("att.pem"), att).unwrap();
    std::fs::write(tmp.path().join("f9.pem"), intermediate).unwrap();
    let spec = format!(
        "authentication={},{}",
        tmp.path().join("att.pem").display(),
        tmp.path().join("f9.pem").display()
    );
    // The card-authentication key (9E, no PIN: physical access, and the card's proof in
    // a PIN unblock), and the PUK the personalisation sets, escrowed.
    let (att9e, f9e) = attest(&mut card, KeyRef::CARD_AUTHENTICATION, PinPolicy::Never);
    std::fs::write(tmp.path().join("att9e.pem"), att9e).unwrap();
    std::fs::write(tmp.path().join("f99e.pem"), f9e).unwrap();
    let spec9e = format!(
        "card-authentication={},{}",
        tmp.path().join("att9e.pem").display(),
        tmp.path().join("f99e.pem").display()
    );
    // A PUK of the test's own (random, as a personalisation station makes one).
    let puk = {
        use sha2::Digest;
        let seed = sha2::Sha256::digest(
            format!("{}{:?}", common::cli::rand_name(), tmp.path()).as_bytes(),
        );
        format!(
            "{:08}",
            u32::from_be_bytes([seed[0], seed[1], seed[2], seed[3]]) % 100_000_000
        )
    };
    card.change_reference(KeyRef::PUK, b"12345678", puk.as_bytes())
        .unwrap();
    std::fs::write(tmp.path().join("puk"), &puk).unwrap();
    let puk_file = tmp.path().join("puk");
    let c = t.ok(
        &anna,
        &[
            "carrier",
            "keys",
            &carrier,
            "--attestation",
            &spec,
            "--attestation",
            &spec9e,
            "--puk-file",
            puk_file.to_str().unwrap(),
        ],
    );
    assert_eq!(c["state"], "personalised");
    assert!(!c.to_string().contains(&puk), "the PUK is never shown: {c}");
    let serial = c["certificates"][0].as_str().unwrap().to_owned();
    let card_auth_serial = c["certificates"][1].as_str().unwrap().to_owned();
    assert_eq!(
        common::ocsp(tmp.path(), &base, &serial),
        "revoked certificateHold"
    );
    t.ok(
        &anna,
        &["carrier", "activate", &carrier, "--receipt", "R-0001"],
    );
    assert_eq!(common::ocsp(tmp.path(), &base, &serial), "good");
    assert_eq!(common::ocsp(tmp.path(), &base, &card_auth_serial), "good");

    // The identity provider's service account reads who holds a certificate and the
    // status feed, and nothing else; officers do not read holders.
    let idp = officer("idp", "identity_provider");
    // A service account is never a person (it would sign in to the portal as one).
    let (code, _, err) = t.run(
        &admin,
        &[
            "officer",
            "add",
            "idp2",
            "--name",
            "idp2",
            "--role",
            "identity_provider",
            "--person",
            &person,
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("person_id"), "{err}");
    let api = |token: &str, path: &str| {
        let (status, body) = common::curl(&[
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("{base}/api/v1/{path}"),
        ]);
        (
            status,
            serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default(),
        )
    };
    let (status, holder) = api(&idp, &format!("certificates/{serial}/holder"));
    assert_eq!(status, 200, "{holder}");
    assert_eq!(holder["person_id"], person.as_str());
    assert_eq!(holder["employee_number"], "E1");
    assert_eq!(holder["given_name"], "Eva");
    assert_eq!(holder["family_name"], "Ek");
    assert_eq!(holder["email"], "e1@example.org");
    assert_eq!(holder["person_state"], "proofed");
    assert_eq!(holder["carrier_id"], carrier.as_str());
    assert_eq!(holder["carrier_state"], "active");
    assert_eq!(holder["certificate_good"], true);
    assert!(holder["feed_head"].as_i64().unwrap() > 0);
    assert!(holder.get("identity_number").is_none(), "{holder}");
    assert_eq!(api(&anna, &format!("certificates/{serial}/holder")).0, 403);
    assert_eq!(api(&idp, "people").0, 403);
    assert_eq!(api(&idp, &format!("carriers/{carrier}")).0, 403);
    assert_eq!(api(&idp, "officers").0, 403);
    assert_eq!(api(&idp, "certificates/00ff/holder").0, 404);
    assert_eq!(api(&idp, "certificates/not-hex/holder").0, 400);
    let (status, feed) = api(&idp, "status-feed");
    assert_eq!(status, 200, "{feed}");
    let events = feed["events"].as_array().unwrap();
    let of = |serial: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["serial"] == serial)
            .map(|e| e["change"].as_str().unwrap().to_owned())
            .collect()
    };
    // On hold from its signing until the hand-over, then released.
    assert_eq!(of(&serial), ["held", "issued", "released"], "{feed}");
    let head = feed["head"].as_i64().unwrap();
    assert_eq!(events.last().unwrap()["seq"].as_i64(), Some(head));
    let (_, later) = api(&idp, &format!("status-feed?after={head}"));
    assert_eq!(
        later["events"],
        serde_json::json!([]),
        "nothing after the head"
    );
    let (_, one) = api(&idp, "status-feed?after=0&limit=1");
    assert_eq!(one["events"].as_array().unwrap().len(), 1);
    assert_eq!(api(&hr, "status-feed").0, 403);

    // The holder blocks the PIN; the service desk asks for the unblock, a second officer
    // approves, and the card's channel (here the test, as the agent will) proves the card
    // with its 9E key and the release code, takes the PUK and resets the PIN on the card.
    for _ in 0..3 {
        assert!(card.verify_pin(b"999999").is_err());
    }
    assert!(card.verify_pin(b"123456").is_err(), "blocked");
    let u = t.ok(&anna, &["unblock", &carrier, "--verification", "in_person"]);
    let unblock = u["approval"]["id"].as_str().unwrap().to_owned();
    let release_code = u["release_code"].as_str().unwrap().to_owned();
    let (code, _, err) = t.run(&anna, &["approve", "yes", &unblock]);
    assert_eq!(code, 4, "the requester does not approve: {err}");
    let approved = t.ok(&bo, &["approve", "yes", &unblock]);
    let approval_code = approved[0]["release_code"].as_str().unwrap().to_owned();
    let message = tessera_issuer_types::api::puk_release_message(&unblock, &carrier);
    let digest = {
        use sha2::Digest;
        sha2::Sha256::digest(&message)
    };
    let signature = card
        .sign(
            KeyRef::CARD_AUTHENTICATION,
            tessera_piv::piv::Algorithm::EccP256,
            &digest,
        )
        .unwrap();
    let post = |path: &str, body: serde_json::Value| {
        common::curl(&[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body.to_string(),
            &format!("{base}/api/v1/carriers/{carrier}/{path}"),
        ])
    };
    let release = |code: &str| {
        use base64ct::Encoding;
        post(
            "puk-release",
            serde_json::json!({
                "approval_id": unblock,
                "release_code": code,
                "approval_code": approval_code,
                "algorithm": "ecdsa-with-SHA256",
                "signature": base64ct::Base64::encode_string(&signature),
            }),
        )
    };
    let (status, _) = release("0000-0000-0000-0000-0000-0000");
    assert_eq!(status, 403, "a wrong release code");
    let (status, answer) = release(&release_code);
    assert_eq!(status, 200, "{answer}");
    let released: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let released = released["puk"].as_str().unwrap().to_owned();
    assert_eq!(released, puk);
    card.unblock_pin(released.as_bytes(), b"246810").unwrap();
    card.verify_pin(b"246810").unwrap();
    assert_eq!(release(&release_code).0, 403, "taken once");
    // The channel sets a new PUK on the card and escrows it: the released one is spent.
    let new_puk = format!("{:08}", (puk.parse::<u32>().unwrap() + 1) % 100_000_000);
    card.change_reference(KeyRef::PUK, released.as_bytes(), new_puk.as_bytes())
        .unwrap();
    let rotation = tessera_issuer_types::api::puk_rotation_message(&unblock, &carrier, &new_puk);
    let digest = {
        use sha2::Digest;
        sha2::Sha256::digest(&rotation)
    };
    let signature = card
        .sign(
            KeyRef::CARD_AUTHENTICATION,
            tessera_piv::piv::Algorithm::EccP256,
            &digest,
        )
        .unwrap();
    let (status, answer) = {
        use base64ct::Encoding;
        post(
            "puk-rotation",
            serde_json::json!({
                "approval_id": unblock,
                "release_code": release_code,
                "approval_code": approval_code,
                "new_puk": new_puk,
                "algorithm": "ecdsa-with-SHA256",
                "signature": base64ct::Base64::encode_string(&signature),
            }),
        )
    };
    assert_eq!(status, 204, "{answer}");

    // A temporary card: the original on hold (OCSP and CRL) while it is out.
    let tc = t.ok(&anna, &["carrier", "add", "--kind", "temporary", "T-01"]);
    let temp = tc["id"].as_str().unwrap().to_owned();
    let ta = t.ok(
        &anna,
        &["temporary", "request", &person, "--carrier", &temp],
    );
    t.ok(&bo, &["approve", "yes", ta[0]["id"].as_str().unwrap()]);
    assert_eq!(
        common::ocsp(tmp.path(), &base, &serial),
        "revoked certificateHold"
    );
    common::wait_for("the CRL listing the hold", || {
        crl_entry(tmp.path(), &base, &serial).is_some_and(|r| r.contains("Certificate Hold"))
    });
    // The temporary card's key comes with a CSR (a card without attestation).
    let dir = tmp.path().join("tcsr");
    std::fs::create_dir(&dir).unwrap();
    let csr = common::card_csr(&dir, "temp.key");
    std::fs::write(dir.join("temp.csr.pem"), csr).unwrap();
    let spec = format!("authentication={}", dir.join("temp.csr.pem").display());
    let tc = t.ok(&anna, &["carrier", "keys", &temp, "--csr", &spec]);
    let temp_serial = tc["certificates"][0].as_str().unwrap().to_owned();
    t.ok(&anna, &["carrier", "activate", &temp, "--receipt", "R-T01"]);
    assert_eq!(common::ocsp(tmp.path(), &base, &temp_serial), "good");
    t.ok(
        &anna,
        &[
            "temporary",
            "return",
            &temp,
            "--outcome",
            "no_longer_needed",
        ],
    );
    assert_eq!(common::ocsp(tmp.path(), &base, &serial), "good");
    assert_eq!(
        common::ocsp(tmp.path(), &base, &temp_serial),
        "revoked superseded"
    );
    let c = t.ok(&anna, &["carrier", "show", &carrier]);
    assert_eq!(c["state"], "active");
    common::wait_for("the CRL without the hold", || {
        crl_entry(tmp.path(), &base, &serial).is_none()
    });

    // Two officers suspend at once: one wins, the other is told the state (exit 6). On
    // PostgreSQL each talks to a server of its own on the one database.
    let second =
        database.map(|_| common::serve(&data, &["--clock-offset-file", offset.to_str().unwrap()]));
    let other_base = second.as_ref().map_or(base.clone(), |(_, b)| b.clone());
    let both: Vec<_> = [(anna.clone(), base.clone()), (bo.clone(), other_base)]
        .into_iter()
        .map(|(tok, base)| {
            let (carrier, dir) = (carrier.clone(), tmp.path().to_owned());
            std::thread::spawn(move || {
                Cli { base, dir }.run(
                    &tok,
                    &[
                        "carrier",
                        "suspend",
                        &carrier,
                        "--reason",
                        "temporarily_lost",
                        "--days",
                        "1",
                    ],
                )
            })
        })
        .map(|h| h.join().unwrap())
        .collect();
    let codes: Vec<i32> = both.iter().map(|r| r.0).collect();
    assert!(codes.contains(&0) && codes.contains(&6), "{both:?}");
    let loser = both.iter().find(|r| r.0 == 6).unwrap();
    assert!(
        loser.2.contains("suspended (temporarily_lost)"),
        "{}",
        loser.2
    );
    // Applied once: one such suspension in the audit trail, whichever server took it.
    drop(second);
    let config = tessera_issuer_types::config::Config::load(&data).unwrap();
    let store = tessera_issuer_store::Store::open_configured(&config.database, &data).unwrap();
    let records = store.read(|tx| tx.audit_records()).unwrap();
    let suspensions = records
        .iter()
        .filter(|r| {
            r.action == "carrier.changed"
                && r.details.contains(&carrier)
                && r.details.contains("temporarily_lost")
        })
        .count();
    assert_eq!(suspensions, 1);

    // The deadline passes (the server's clock moved two days): revoked.
    std::fs::write(&offset, (2 * 86_400).to_string()).unwrap();
    common::wait_for("the deadline sweep", || {
        t.ok(&anna, &["carrier", "show", &carrier])["state"] == "revoked"
    });
    assert_eq!(
        common::ocsp(tmp.path(), &base, &serial),
        "revoked keyCompromise"
    );
    std::fs::write(&offset, "0").unwrap();
    // The feed says so after the head read before, in order.
    let (_, feed) = api(&idp, &format!("status-feed?after={head}"));
    let changes: Vec<&str> = feed["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["serial"] == serial.as_str())
        .map(|e| e["change"].as_str().unwrap())
        .collect();
    assert_eq!(changes.last(), Some(&"revoked"), "{feed}");
    let (_, holder) = api(&idp, &format!("certificates/{serial}/holder"));
    assert_eq!(holder["carrier_state"], "revoked");
    assert_eq!(holder["certificate_good"], false);

    // A leaver: every carrier revoked, affiliationChanged.
    let args = person_args("E2", "19640823-3234");
    let p2 = t.ok(&hr, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let p2 = p2["id"].as_str().unwrap().to_owned();
    t.proof(&bo, &p2, "national_id_card", "HQ", "196408233234");
    let c2 = t.ok(&bo, &["carrier", "add", "SC-0002"]);
    let c2 = c2["id"].as_str().unwrap().to_owned();
    let a2 = t.ok(
        &bo,
        &[
            "carrier", "assign", &c2, "--person", &p2, "--terms", "2026-1",
        ],
    );
    t.ok(&anna, &["approve", "yes", a2[0]["id"].as_str().unwrap()]);
    let (att, f9) = attest(&mut card, KeyRef::SIGNATURE, PinPolicy::Always);
    std::fs::write(tmp.path().join("att2.pem"), att).unwrap();
    std::fs::write(tmp.path().join("f92.pem"), f9).unwrap();
    let spec = format!(
        "signature={},{}",
        tmp.path().join("att2.pem").display(),
        tmp.path().join("f92.pem").display()
    );
    let k = t.ok(&bo, &["carrier", "keys", &c2, "--attestation", &spec]);
    let s2 = k["certificates"][0].as_str().unwrap().to_owned();
    let activated = t.ok(&bo, &["carrier", "activate", &c2, "--receipt", "R-2"]);
    // The holder reports the card lost at night with the code from the receipt: no
    // officer, no token; OCSP says certificateHold at once.
    let code = activated["loss_report_code"].as_str().unwrap().to_owned();
    let (status, answer) = common::curl(&[
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &serde_json::json!({ "code": code }).to_string(),
        &format!("{base}/api/v1/loss-report"),
    ]);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        common::ocsp(tmp.path(), &base, &s2),
        "revoked certificateHold"
    );
    // The leaver comes from HR's SCIM feed, as Microsoft Entra sends it (no path, a
    // capitalised op, the boolean as a string): every carrier revoked, affiliationChanged.
    let scim = |method: &str, path: &str, body: Option<serde_json::Value>| {
        let url = format!("{base}/scim/v2{path}");
        let auth = format!("Authorization: Bearer {hr}");
        let mut args = vec![
            "-X",
            method,
            "-H",
            &auth,
            "-H",
            "Content-Type: application/scim+json",
        ];
        let body = body.map(|b| b.to_string());
        if let Some(b) = &body {
            args.extend(["--data-binary", b.as_str()]);
        }
        args.push(&url);
        let (status, text) = common::curl(&args);
        (
            status,
            serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default(),
        )
    };
    // The scheme is case-insensitive (RFC 9110): clients that send "bearer" get in.
    let (status, _) = common::curl(&[
        "-H",
        &format!("authorization: bearer {hr}"),
        &format!("{base}/scim/v2/ServiceProviderConfig"),
    ]);
    assert_eq!(status, 200);
    let (status, _) = common::curl(&[&format!("{base}/scim/v2/Users?count=x")]);
    assert_eq!(status, 401);
    // A 401 names the scheme (RFC 6750); no API answer is kept by a cache on the way.
    let (_, head) = common::curl(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("{base}/api/v1/people"),
    ]);
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    let (_, head) = common::curl(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        &format!("Authorization: Bearer {hr}"),
        &format!("{base}/api/v1/people"),
    ]);
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-control: no-store"),
        "{head}"
    );
    let (status, found) = scim("GET", "/Users?filter=userName%20eq%20%22E2%22", None);
    assert_eq!(
        (status, &found["totalResults"]),
        (200, &serde_json::json!(1)),
        "{found}"
    );
    assert_eq!(found["Resources"][0]["id"], serde_json::json!(p2));
    let (status, user) = scim(
        "PATCH",
        &format!("/Users/{p2}"),
        Some(serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{ "op": "Replace", "value": { "active": "False" } }],
        })),
    );
    assert_eq!(
        (status, &user["active"]),
        (200, &serde_json::json!(false)),
        "{user}"
    );
    assert_eq!(
        common::ocsp(tmp.path(), &base, &s2),
        "revoked affiliationChanged"
    );
    let shown = t.ok(&hr, &["person", "show", &p2]);
    assert_eq!(shown["person"]["state"], "ended", "{shown}");
    assert_eq!(shown["carriers"][0]["state"], "revoked", "{shown}");
    // A hostile PATCH changes nothing and says why in SCIM's words (RFC 7644 §3.12).
    let (status, error) = scim(
        "PATCH",
        &format!("/Users/{p2}"),
        Some(serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{ "op": "replace", "path": "userName", "value": "E1" }],
        })),
    );
    assert_eq!(
        (status, &error["scimType"]),
        (400, &serde_json::json!("mutability")),
        "{error}"
    );
    assert_eq!(error["status"], "400");

    // An auditor reads and exports the audit trail, its chain checked record by record;
    // HR reads none of it.
    let (code, _, _) = t.run(&hr, &["audit", "list"]);
    assert_eq!(code, 4);
    let page = t.ok(&auditor, &["audit", "list", "--limit", "5"]);
    assert_eq!(page.as_array().unwrap().len(), 5, "{page}");
    assert_eq!(page[0]["seq"], 1);
    let export = tmp.path().join("audit.jsonl");
    let e = t.ok(&auditor, &["audit", "export", export.to_str().unwrap()]);
    let lines = std::fs::read_to_string(&export).unwrap();
    assert_eq!(lines.lines().count() as u64, e["records"].as_u64().unwrap());
    assert!(e["records"].as_u64().unwrap() > 50, "{e}");
    assert!(
        lines.contains("carrier.puk_released"),
        "the unblock is in the trail"
    );
    assert!(!lines.contains(&puk), "no PUK in the audit trail");

    // A SCIM 2.0 client we did not write: scim2-tester's compliance checks.
    scim_compliance(&format!("{base}/scim/v2"), &hr);

    // HR imports a file: malformed rows are each named by line and nothing is imported;
    // fixed, it is imported; imported again, nothing changes.
    let csv = tmp.path().join("hr.csv");
    std::fs::write(
        &csv,
        b"employee_number,given_name,family_name,email,identity_number,birth_date,nationality\n\
          H1,Anna,Ahl,anna@example.org,197505051230,,\n\
          H2,Bo,Berg,,19811218-9875,,\n\
          H3,Cai,Chen,,,1990-02-30,CN\n\
          H1,Anna,Again,,201701102384,,\n\
          H4,D\xe5vid,Dahl,,,1985-05-05,NO\n",
    )
    .unwrap();
    let (code, report, err) = t.run(&hr, &["import", csv.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    let lines: Vec<u64> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![3, 4, 5, 6], "{report}");
    assert!(report["errors"][3]["message"]
        .as_str()
        .unwrap()
        .contains("UTF-8"));
    assert_eq!(report["applied"], false);
    let listed = t.ok(&hr, &["person", "list", "--after", "H", "--limit", "10"]);
    assert!(
        !listed
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["employee_number"] == "H1"),
        "a bad file imported something: {listed}"
    );
    let (code, _, err) = t.run(
        &hr,
        &["import", tmp.path().join("missing.csv").to_str().unwrap()],
    );
    assert_eq!(code, 2, "{err}");
    std::fs::write(
        &csv,
        "employee_number,given_name,family_name,shoe_size\nH9,A,B,42\n",
    )
    .unwrap();
    let (code, _, err) = t.run(&hr, &["import", csv.to_str().unwrap()]);
    assert!(code == 3 && err.contains("shoe_size"), "{err}");
    // One identity number in two spellings, far apart (different batches): refused.
    std::fs::write(
        &csv,
        "employee_number,given_name,family_name,identity_number\nH7,A,B,198812123340\nH8,C,D,19881212-3340\n",
    )
    .unwrap();
    let (code, report, err) = t.run(&hr, &["import", "--batch", "1", csv.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(report["errors"][0]["line"], 3, "{report}");
    assert!(
        report["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("line 2"),
        "{report}"
    );
    std::fs::write(
        &csv,
        "employee_number,given_name,family_name,identity_number,birth_date,nationality\n\
         H1,Anna,Ahl,197010632391,,\n\
         H3,Cai,Chen,,1990-02-28,CN\n",
    )
    .unwrap();
    let done = t.ok(&hr, &["import", csv.to_str().unwrap()]);
    assert_eq!(
        (done["created"].as_u64(), done["applied"].as_bool()),
        (Some(2), Some(true)),
        "{done}"
    );
    let again = t.ok(&hr, &["import", csv.to_str().unwrap()]);
    assert_eq!(
        (again["created"].as_u64(), again["unchanged"].as_u64()),
        (Some(0), Some(2)),
        "{again}"
    );

    // Everything agrees, and the auditor may look.
    let d = t.ok(&auditor, &["reconcile"]);
    assert_eq!(d, serde_json::json!([]));
}

#[test]
fn the_life_cycle_through_the_cli_on_sqlite() {
    scenario(None);
}

#[test]
fn the_life_cycle_through_the_cli_on_postgresql() {
    let Some(pg) = pg::Postgres::start() else {
        return;
    };
    scenario(Some(&pg.url));
}

//! Interop of the reference card with peers we did not write, through a real pcscd + vpcd:
//! OpenSC (`opensc-tool`, `pkcs11-tool` with `opensc-pkcs11.so`), `yubico-piv-tool` and
//! `openssl`.

mod support;

use support::{certify, require, yk, CardOptions, Lab, OPENSC_PKCS11, VPCD_DRIVER};

const YK: &str = "yubico-piv-tool";

fn lab_ready(extra: &[&str]) -> Option<Lab> {
    let mut programs = vec!["unshare", "nsenter", "pcscd", "opensc-tool", "ip"];
    programs.extend_from_slice(extra);
    require(&programs, &[VPCD_DRIVER]).then(|| Lab::start(CardOptions::default()))
}

fn p11(lab: &Lab, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--module", OPENSC_PKCS11];
    all.extend_from_slice(args);
    lab.run("pkcs11-tool", &all)
}

fn p11_ok(lab: &Lab, args: &[&str]) -> String {
    let mut all = vec!["--module", OPENSC_PKCS11];
    all.extend_from_slice(args);
    lab.run_ok("pkcs11-tool", &all)
}

#[test]
fn opensc_recognises_a_piv_card() {
    let Some(lab) = lab_ready(&[]) else { return };
    let name = lab.run_ok("opensc-tool", &["-n"]);
    assert!(
        name.contains("Personal Identity Verification Card"),
        "{name}"
    );
    let atr = lab.run_ok("opensc-tool", &["-a"]);
    assert!(atr.contains("3b:8a:01"), "contact ATR expected: {atr}");
    // Two blank cards differ in their CHUID (Windows and macOS key cards by it).
    let first = lab.run_ok("opensc-tool", &["-s", "00 CB 3F FF 05 5C 03 5F C1 02 00"]);
    let other = Lab::start(CardOptions::default());
    let second = other.run_ok("opensc-tool", &["-s", "00 CB 3F FF 05 5C 03 5F C1 02 00"]);
    assert!(first.contains("SW1=0x90"), "{first}");
    assert_ne!(first, second);
}

#[test]
fn yubico_piv_tool_status_generate_verify_attest() {
    let Some(lab) = lab_ready(&[YK, "openssl"]) else {
        return;
    };
    let status = yk(&lab, &["-a", "status"]);
    assert!(status.contains("Version:\t5.4.3"), "{status}");
    assert!(status.contains("CHUID:\t3019"), "{status}");
    assert!(status.contains("PIN tries left:\t3"), "{status}");

    yk(
        &lab,
        &[
            "-a", "generate", "-s", "9a", "-A", "ECCP256", "-o", "9a.pub",
        ],
    );
    yk(
        &lab,
        &[
            "-a", "generate", "-s", "9c", "-A", "RSA2048", "-o", "9c.pub",
        ],
    );
    yk(&lab, &["-a", "verify-pin", "-P", "123456"]);
    // A wrong PIN is refused and counted.
    let out = lab.run(YK, &["-r", "Tessera", "-a", "verify-pin", "-P", "654321"]);
    assert!(!out.status.success());
    let status = yk(&lab, &["-a", "status"]);
    assert!(status.contains("PIN tries left:\t2"), "{status}");
    yk(&lab, &["-a", "verify-pin", "-P", "123456"]);

    for slot in ["9a", "9c"] {
        yk(
            &lab,
            &["-a", "attest", "-s", slot, "-o", &format!("{slot}.att")],
        );
    }
    yk(
        &lab,
        &["-a", "read-certificate", "-s", "f9", "-o", "f9.crt"],
    );
    let ca = lab.state.with_file_name("card.manufacturer-ca.pem");
    let ca = ca.to_string_lossy();
    for slot in ["9a", "9c"] {
        let verified = lab.run_ok(
            "openssl",
            &[
                "verify",
                "-CAfile",
                &ca,
                "-untrusted",
                "f9.crt",
                &format!("{slot}.att"),
            ],
        );
        assert!(verified.contains(": OK"), "{verified}");
        // The attestation certifies the very key generate returned.
        let att_key = lab.run_ok(
            "openssl",
            &["x509", "-in", &format!("{slot}.att"), "-pubkey", "-noout"],
        );
        let gen_key = std::fs::read_to_string(lab.path(&format!("{slot}.pub"))).unwrap();
        assert_eq!(att_key.trim(), gen_key.trim());
    }
    // The attestation of a slot without a key fails.
    assert!(!lab
        .run(YK, &["-r", "Tessera", "-a", "attest", "-s", "9d"])
        .status
        .success());
}

#[test]
fn opensc_pkcs11_lists_logs_in_and_signs() {
    let Some(lab) = lab_ready(&[YK, "openssl", "pkcs11-tool"]) else {
        return;
    };
    if !require(&[], &[OPENSC_PKCS11]) {
        return;
    }
    yk(
        &lab,
        &[
            "-a", "generate", "-s", "9a", "-A", "ECCP256", "-o", "9a.pub",
        ],
    );
    yk(
        &lab,
        &[
            "-a", "generate", "-s", "9c", "-A", "RSA2048", "-o", "9c.pub",
        ],
    );
    certify(&lab, "9a.pub", "9a.crt", "Alice Auth");
    certify(&lab, "9c.pub", "9c.crt", "Alice Sign");
    yk(
        &lab,
        &["-a", "import-certificate", "-s", "9a", "-i", "9a.crt"],
    );
    yk(
        &lab,
        &["-a", "import-certificate", "-s", "9c", "-i", "9c.crt"],
    );

    let objects = p11_ok(&lab, &["--list-objects"]);
    assert!(
        objects.contains("Certificate for PIV Authentication"),
        "{objects}"
    );
    assert!(
        objects.contains("Certificate for Digital Signature"),
        "{objects}"
    );
    assert!(objects.contains("EC_POINT 256 bits"), "{objects}");
    assert!(objects.contains("RSA 2048 bits"), "{objects}");
    let private = p11_ok(
        &lab,
        &[
            "--login",
            "--pin",
            "123456",
            "--list-objects",
            "--type",
            "privkey",
        ],
    );
    assert!(private.contains("Private Key Object; EC"), "{private}");
    assert!(private.contains("Private Key Object; RSA"), "{private}");

    std::fs::write(lab.path("msg"), b"Tessera signs this").unwrap();
    // Certificates read back from the card, not the files we wrote.
    for (id, name) in [("01", "auth"), ("02", "sign")] {
        p11_ok(
            &lab,
            &[
                "--read-object",
                "--type",
                "cert",
                "--id",
                id,
                "-o",
                &format!("{name}.der"),
            ],
        );
        let pem = lab.run_ok(
            "openssl",
            &[
                "x509",
                "-inform",
                "DER",
                "-in",
                &format!("{name}.der"),
                "-pubkey",
                "-noout",
            ],
        );
        std::fs::write(lab.path(&format!("{name}.pub")), pem).unwrap();
    }
    let cases: [(&str, &str, &[&str]); 4] = [
        ("01", "ECDSA-SHA256", &["--signature-format", "openssl"]),
        ("02", "SHA256-RSA-PKCS", &[]),
        ("02", "SHA256-RSA-PKCS-PSS", &[]),
        ("02", "SHA384-RSA-PKCS", &[]),
    ];
    for (i, (id, mech, extra)) in cases.iter().enumerate() {
        let sig = format!("sig{i}");
        let mut args = vec![
            "--login", "--pin", "123456", "--sign", "--id", id, "-m", mech, "-i", "msg", "-o", &sig,
        ];
        args.extend_from_slice(extra);
        p11_ok(&lab, &args);
        let key = if *id == "01" { "auth.pub" } else { "sign.pub" };
        let digest = if mech.starts_with("SHA384") {
            "-sha384"
        } else {
            "-sha256"
        };
        let mut verify = vec!["dgst", digest, "-verify", key, "-signature", &sig];
        if mech.ends_with("PSS") {
            verify.extend_from_slice(&[
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:-1",
            ]);
        }
        verify.push("msg");
        let out = lab.run_ok("openssl", &verify);
        assert!(out.contains("Verified OK"), "{mech}: {out}");
    }
}

#[test]
fn three_wrong_pins_block_and_the_puk_unblocks() {
    let Some(lab) = lab_ready(&[YK, "pkcs11-tool"]) else {
        return;
    };
    if !require(&[], &[OPENSC_PKCS11]) {
        return;
    }
    for expected in [
        "CKR_PIN_INCORRECT",
        "CKR_PIN_INCORRECT",
        "CKR_PIN_INCORRECT",
    ] {
        let out = p11(&lab, &["--login", "--pin", "000000", "--list-objects"]);
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && text.contains(expected), "{text}");
    }
    let out = p11(&lab, &["--login", "--pin", "123456", "--list-objects"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("CKR_PIN_LOCKED"),
        "{text}"
    );
    let status = yk(&lab, &["-a", "status"]);
    assert!(status.contains("PIN tries left:\t0"), "{status}");

    // OpenSC refuses PIN unblock through PKCS#11 unless configured to allow it; this is
    // its documented style where the PUK is the old PIN of C_SetPIN in an unlogged session.
    let conf = lab.path("opensc.conf");
    std::fs::write(
        &conf,
        "app default {\n pkcs11 {\n  user_pin_unblock_style = set_pin_in_unlogged_session;\n }\n}\n",
    )
    .unwrap();
    let out = lab
        .command("pkcs11-tool")
        .env("OPENSC_CONF", &conf)
        .args([
            "--module",
            OPENSC_PKCS11,
            "--unlock-pin",
            "--puk",
            "12345678",
            "--new-pin",
            "24681357",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p11_ok(&lab, &["--login", "--pin", "24681357", "--list-objects"]);
    // The login outlives pkcs11-tool (pcscd leaves the card powered); log out the PIV way
    // (VERIFY P1=FF, SP 800-73-4 Part 2 §3.2.1) so that the counter can be read.
    lab.run_ok("opensc-tool", &["-s", "00 20 FF 80"]);
    let status = yk(&lab, &["-a", "status"]);
    assert!(status.contains("PIN tries left:\t3"), "{status}");
}

#[test]
fn state_survives_a_restart_of_the_card() {
    let Some(mut lab) = lab_ready(&[YK]) else {
        return;
    };
    yk(
        &lab,
        &[
            "-a", "generate", "-s", "9e", "-A", "ECCP256", "-o", "9e.pub",
        ],
    );
    let _ = lab.run(YK, &["-r", "Tessera", "-a", "verify-pin", "-P", "111111"]);
    let before = yk(&lab, &["-a", "status"]);
    lab.start_card(&CardOptions::default());
    let after = yk(&lab, &["-a", "status"]);
    assert!(after.contains("PIN tries left:\t2"), "{after}");
    assert_eq!(before, after);
    // The key generated before the restart is still there.
    let meta = lab.run_ok("opensc-tool", &["-s", "00 F7 00 9E 00"]);
    assert!(meta.contains("SW1=0x90"), "{meta}");
}

/// The state-file writes each APDU caused, from the card's trace: for every APDU line, the
/// sizes of the writes noted before it.
fn writes_per_apdu(trace: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut writes = Vec::new();
    for line in trace.lines() {
        match line.strip_prefix("state saved ") {
            Some(size) => writes.push(size.to_owned()),
            None => out.push((line.to_owned(), std::mem::take(&mut writes))),
        }
    }
    out
}

#[test]
fn a_pin_try_is_on_disk_before_the_comparison_and_right_and_wrong_write_alike() {
    let Some(mut lab) = lab_ready(&[]) else {
        return;
    };
    const RIGHT: &str = "00 20 00 80 08 31 32 33 34 35 36 FF FF";
    const WRONG: &str = "00 20 00 80 08 39 39 39 39 39 39 FF FF";
    // The write pattern: a right and a wrong PIN each write the state twice, the same size.
    lab.start_card(&CardOptions {
        trace: true,
        ..CardOptions::default()
    });
    lab.run_ok("opensc-tool", &["-s", RIGHT]);
    lab.run_ok("opensc-tool", &["-s", WRONG]);
    let trace = lab.read_log("apdu.trace");
    let verifies: Vec<_> = writes_per_apdu(&trace)
        .into_iter()
        .filter(|(apdu, _)| apdu.starts_with("00 20 00 80 len=13"))
        .collect();
    assert_eq!(verifies.len(), 2, "{trace}");
    assert!(verifies[0].0.ends_with("-> 9000 (0 bytes)"), "{trace}");
    assert!(verifies[1].0.contains("-> 63C2"), "{trace}");
    assert_eq!(verifies[0].1.len(), 2, "{trace}");
    assert_eq!(
        verifies[0].1, verifies[1].1,
        "right and wrong PINs wrote differently"
    );

    // Tearing: the power goes right after the try is written, before the comparison. The
    // right PIN was given, yet the try stays counted (two left after the wrong one, one now).
    lab.start_card(&CardOptions {
        extra: vec!["--fault".into(), "after-pin-try".into()],
        ..CardOptions::default()
    });
    let torn = lab.run("opensc-tool", &["-s", RIGHT]);
    assert!(
        !String::from_utf8_lossy(&torn.stdout).contains("SW1=0x90"),
        "the card answered instead of losing power: {torn:?}"
    );
    lab.start_card(&CardOptions::default());
    let status = lab.run_ok("opensc-tool", &["-s", "00 20 00 80"]);
    assert!(status.contains("SW1=0x63, SW2=0xC1"), "{status}");
    // And the right PIN, without a power cut, restores the counter.
    lab.run_ok("opensc-tool", &["-s", RIGHT]);
    let status = lab.run_ok("opensc-tool", &["-s", "00 20 00 80"]);
    assert!(status.contains("SW1=0x90"), "{status}");
}

#[test]
fn a_one_byte_apdu_gets_an_answer_and_the_reader_keeps_working() {
    let Some(lab) = lab_ready(&["scriptor"]) else {
        return;
    };
    // scriptor (pcsc-tools) sends whatever bytes it is given; vpcd frames a 1-byte APDU like
    // its control codes. The card must answer it (6700), or pcscd waits forever: 01 and 02
    // look like vpcd's power-on and reset, and are told apart by the GET ATR that never
    // follows them (00, a power-off, cannot be: carrier docs).
    let out = lab
        .command("sh")
        .args([
            "-c",
            "printf '03\\n05\\n01\\n02\\n00 A4 04 00 05 A0 00 00 03 08\\n' | timeout 60 scriptor -r 'Tessera vpcd 00 00'",
        ])
        .output()
        .expect("scriptor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("67 00").count(), 4, "{text}");
    assert!(text.contains("90 00"), "SELECT after them: {text}");
}

#[test]
fn contactless_card_answers_reader_pseudo_apdus_and_only_card_auth() {
    let Some(mut lab) = lab_ready(&[YK]) else {
        return;
    };
    yk(
        &lab,
        &[
            "-a", "generate", "-s", "9e", "-A", "ECCP256", "-o", "9e.pub",
        ],
    );
    yk(
        &lab,
        &[
            "-a", "generate", "-s", "9a", "-A", "ECCP256", "-o", "9a.pub",
        ],
    );
    lab.start_card(&CardOptions {
        contactless: true,
        ..CardOptions::default()
    });
    let atr = lab.run_ok("opensc-tool", &["-a"]);
    assert!(
        atr.contains("3b:8a:80:01"),
        "contactless ATR expected: {atr}"
    );
    let uid = lab.run_ok("opensc-tool", &["-s", "FF CA 00 00 00"]);
    assert!(uid.contains("SW1=0x90"), "{uid}");
    let digest = "7C 24 82 00 81 20 00 01 02 03 04 05 06 07 08 09 0A 0B 0C 0D 0E 0F 10 11 12 13 14 15 16 17 18 19 1A 1B 1C 1D 1E 1F";
    let select = "00 A4 04 00 05 A0 00 00 03 08";
    let card_auth = lab.run_ok(
        "opensc-tool",
        &["-s", select, "-s", &format!("00 87 11 9E 26 {digest} 00")],
    );
    assert!(
        card_auth.ends_with("SW1=0x90, SW2=0x00\n") || card_auth.contains("Received (SW1=0x90"),
        "{card_auth}"
    );
    let auth = lab.run_ok(
        "opensc-tool",
        &["-s", select, "-s", &format!("00 87 11 9A 26 {digest} 00")],
    );
    assert!(
        auth.contains("SW1=0x69, SW2=0x82"),
        "9A must be refused over contactless: {auth}"
    );
    let chuid = lab.run_ok(
        "opensc-tool",
        &["-s", select, "-s", "00 CB 3F FF 05 5C 03 5F C1 02 00"],
    );
    assert!(chuid.contains("SW1=0x90"), "{chuid}");
    let ccc = lab.run_ok(
        "opensc-tool",
        &["-s", select, "-s", "00 CB 3F FF 05 5C 03 5F C1 07 00"],
    );
    assert!(
        ccc.contains("SW1=0x69, SW2=0x82"),
        "CCC is not contactless-readable: {ccc}"
    );
}

#[test]
fn cards_that_listen_serve_both_vpcd_readers() {
    if !require(
        &["unshare", "nsenter", "pcscd", "opensc-tool", "ip"],
        &[VPCD_DRIVER],
    ) {
        return;
    }
    let lab = Lab::start(CardOptions {
        listen: true,
        ..CardOptions::default()
    });
    let readers = lab.run_ok("opensc-tool", &["-l"]);
    let with_card = readers
        .lines()
        .filter(|l| l.contains("Tessera vpcd") && l.split_whitespace().nth(1) == Some("Yes"))
        .count();
    assert_eq!(with_card, 2, "{readers}");
    for reader in ["0", "1"] {
        let name = lab.run_ok("opensc-tool", &["-r", reader, "-n"]);
        assert!(
            name.contains("Personal Identity Verification Card"),
            "{name}"
        );
    }
    let first = lab.run_ok("opensc-tool", &["-r", "0", "-s", "00 F8 00 00 00"]);
    let second = lab.run_ok("opensc-tool", &["-r", "1", "-s", "00 F8 00 00 00"]);
    assert_ne!(first, second, "two cards, two serials");
}

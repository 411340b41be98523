//! The Tessera PKCS#11 module on the reference card through pcscd + vpcd: the same
//! cryptoki-based suite against ours and OpenSC's module, and peers that load modules
//! (pkcs11-tool, p11tool, ssh-keygen).

mod support;

use support::{require, tessera_module, CardOptions, Lab, OPENSC_PKCS11};

fn lab(extra: &[&str]) -> Option<Lab> {
    support::personalised_lab(extra)
}

/// Runs the suite; asserts it passes (exit 0) and returns its report.
fn suite(lab: &Lab, module: &str) -> String {
    let out = lab.run(
        env!("CARGO_BIN_EXE_tessera-pkcs11-suite"),
        &["--module", module],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("pkcs11 suite on"),
        "suite failed on {module}:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn the_same_suite_passes_on_ours_and_on_opensc() {
    let Some(lab) = lab(&[]) else { return };
    let ours = suite(&lab, &tessera_module());
    println!("{ours}");
    assert!(!ours.contains("FAIL") && !ours.contains("N/A"), "{ours}");
    assert!(ours.contains("optional features offered: 2 of 2"), "{ours}");
    // Log out between modules: pcscd leaves the card (and its PIN status) as it was.
    lab.run_ok("opensc-tool", &["-s", "00 20 FF 80"]);
    let theirs = suite(&lab, OPENSC_PKCS11);
    println!("{theirs}");
    assert!(!theirs.contains("FAIL"), "{theirs}");
    // What OpenSC 0.23 lacks on this card, so that a change in it is noticed: no PIN counter
    // in the token flags after a wrong PIN, and no security officer for PIV.
    assert!(theirs.contains("N/A   wrong-pin-counts"), "{theirs}");
    assert!(theirs.contains("N/A   so-init-pin"), "{theirs}");
    assert_eq!(ours.lines().count(), theirs.lines().count());
}

#[test]
fn pkcs11_tool_lists_logs_in_and_signs_with_ours() {
    let Some(lab) = lab(&["pkcs11-tool"]) else {
        return;
    };
    let module = tessera_module();
    let p11 = |args: &[&str]| {
        let mut all = vec!["--module", module.as_str()];
        all.extend_from_slice(args);
        lab.run_ok("pkcs11-tool", &all)
    };
    let slots = p11(&["--list-slots"]);
    assert!(slots.contains("Tessera vpcd 00 00"), "{slots}");
    let objects = p11(&["--login", "--pin", "123456", "--list-objects"]);
    assert!(objects.contains("Private Key Object; EC"), "{objects}");
    assert!(objects.contains("Private Key Object; RSA"), "{objects}");
    std::fs::write(lab.path("msg"), b"signed through libtessera_pkcs11.so").unwrap();
    p11(&[
        "--read-object",
        "--type",
        "cert",
        "--id",
        "02",
        "-o",
        "sign.der",
    ]);
    let key = lab.run_ok(
        "openssl",
        &[
            "x509", "-inform", "DER", "-in", "sign.der", "-pubkey", "-noout",
        ],
    );
    std::fs::write(lab.path("sign.pub"), key).unwrap();
    p11(&[
        "--login",
        "--pin",
        "123456",
        "--sign",
        "--id",
        "02",
        "-m",
        "SHA256-RSA-PKCS-PSS",
        "-i",
        "msg",
        "-o",
        "sig",
    ]);
    let verified = lab.run_ok(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-verify",
            "sign.pub",
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:-1",
            "-signature",
            "sig",
            "msg",
        ],
    );
    assert!(verified.contains("Verified OK"), "{verified}");
}

#[test]
fn ssh_keygen_prints_the_authentication_key() {
    let Some(lab) = lab(&["ssh-keygen"]) else {
        return;
    };
    let keys = lab.run_ok("ssh-keygen", &["-D", &tessera_module()]);
    assert!(keys.contains("ecdsa-sha2-nistp256 "), "{keys}");
    assert!(keys.contains("ssh-rsa "), "{keys}");
    // The same key OpenSC's module shows.
    let opensc = lab.run_ok("ssh-keygen", &["-D", OPENSC_PKCS11]);
    let first = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("ecdsa-sha2-nistp256"))
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
    };
    assert_eq!(first(&keys), first(&opensc));
}

#[test]
fn p11tool_lists_and_test_signs() {
    let Some(lab) = lab(&["p11tool"]) else { return };
    let module = tessera_module();
    let list = lab.run_ok("p11tool", &["--provider", &module, "--list-all", "pkcs11:"]);
    assert!(
        list.contains("Certificate for PIV Authentication"),
        "{list}"
    );
    let tokens = lab.run_ok("p11tool", &["--provider", &module, "--list-tokens"]);
    let url = tokens
        .lines()
        .find_map(|l| l.trim().strip_prefix("URL: "))
        .filter(|u| u.contains("Tessera"))
        .unwrap_or_else(|| panic!("no Tessera token URL in {tokens}"))
        .to_owned();
    let out = lab.run_ok(
        "p11tool",
        &[
            "--provider",
            &module,
            "--login",
            "--set-pin",
            "123456",
            "--test-sign",
            &format!("{url};id=%01;type=private"),
        ],
    );
    assert!(
        out.contains("Verifying against public key in the token... ok"),
        "{out}"
    );
}

/// Lines of `pkcs11-tool --test` on our module that are not failures but limits, and why.
const PKCS11_TOOL_EXPECTED: &[(&str, &str)] = &[
    (
        "Digests: not implemented",
        "the module offers no digest mechanisms: a PIV card does not hash, and applications \
         hash in software",
    ),
    (
        "Verify: not implemented",
        "verification needs no card: applications verify with the certificate's public key",
    ),
    (
        "can't be used to decrypt, skipping",
        "the test certificates carry no key usage, so keys keep their PIV slot's purpose: \
         9A and 9C sign, only 9D decrypts (OpenSC lets every RSA key decrypt)",
    ),
];

#[test]
fn pkcs11_tool_test_finds_no_failure_in_ours() {
    let Some(lab) = lab(&["pkcs11-tool"]) else {
        return;
    };
    let out = lab.run(
        "pkcs11-tool",
        &[
            "--module",
            &tessera_module(),
            "--test",
            "--login",
            "--pin",
            "123456",
        ],
    );
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(out.status.success(), "{report}");
    assert!(report.contains("No errors"), "{report}");
    for line in report.lines() {
        let suspicious = ["not implemented", "warning", "failed", "ERR", "skipping"]
            .iter()
            .any(|w| line.contains(w));
        let explained = PKCS11_TOOL_EXPECTED.iter().any(|(l, _)| line.contains(l))
            || line.contains("non-RSA, skipping");
        assert!(
            !suspicious || explained,
            "unexpected line in the report: {line}"
        );
    }
}

#[test]
fn tls13_client_auth_with_gnutls_ecdsa_and_rsa_pss() {
    let Some(lab) = lab(&["gnutls-cli", "p11tool"]) else {
        return;
    };
    // The RSA key in 9D does the RSA-PSS handshake (9C would need a PIN per signature).
    let ecdsa = support::tls_client_auth(&lab, "manufacturer=Tessera;id=%01", 4433);
    assert!(ecdsa.contains("Client certificate"), "{ecdsa}");
    assert!(
        ecdsa.contains("CN=Alice Auth") || ecdsa.contains("CN = Alice Auth"),
        "{ecdsa}"
    );
    assert!(ecdsa.contains("ECDSA"), "{ecdsa}");

    println!("{ecdsa}");
    let pss = support::tls_client_auth(&lab, "manufacturer=Tessera;id=%03", 4434);
    assert!(pss.contains("Subject: CN=Alice TLS RSA"), "{pss}");
    assert!(pss.contains("Peer signature type: RSA-PSS"), "{pss}");
}

#[test]
fn removing_the_card_gives_device_removed_and_reinserting_works() {
    let Some(mut lab) = lab(&[]) else { return };
    use std::io::{BufRead, BufReader, Write};
    let mut child = lab
        .command(env!("CARGO_BIN_EXE_tessera-pkcs11-suite"))
        .args(["--module", &tessera_module(), "--removal"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("suite");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = || lines.next().expect("a line").expect("utf-8");
    assert_eq!(next(), "READY");
    lab.stop_card();
    writeln!(stdin).unwrap();
    let removed = next();
    assert!(
        removed == "REMOVED-SIGN: DeviceRemoved" || removed == "REMOVED-SIGN: TokenNotPresent",
        "{removed}"
    );
    assert_eq!(next(), "REMOVED-SLOTS-WITH-TOKEN: 0");
    assert_eq!(next(), "WAITING");
    lab.start_card(&CardOptions::default());
    writeln!(stdin).unwrap();
    assert_eq!(next(), "REINSERTED-SIGN: CKR_OK");
    assert!(child.wait().unwrap().success());
}

#[test]
fn nss_loads_the_module_and_lists_the_certificates() {
    let Some(lab) = lab(&["certutil", "modutil"]) else {
        return;
    };
    let db = format!("sql:{}", lab.path("nssdb"));
    std::fs::create_dir(lab.path("nssdb")).unwrap();
    lab.run_ok("certutil", &["-N", "-d", &db, "--empty-password"]);
    lab.run_ok(
        "modutil",
        &[
            "-dbdir",
            &db,
            "-add",
            "tessera",
            "-libfile",
            &tessera_module(),
            "-force",
        ],
    );
    let modules = lab.run_ok("modutil", &["-dbdir", &db, "-list"]);
    assert!(modules.contains("tessera"), "{modules}");
    let certs = lab.run_ok("certutil", &["-L", "-h", "all", "-d", &db]);
    assert!(
        certs.contains("Alice Auth:Certificate for PIV Authentication"),
        "{certs}"
    );
    assert!(
        certs.contains("Alice Auth:Certificate for Digital Signature"),
        "{certs}"
    );
}

#[test]
fn pam_p11_logs_in_with_the_right_pin_and_counts_a_wrong_one() {
    let Some(lab) = lab(&["pamtester", "mount"]) else {
        return;
    };
    if !require(&[], &["/usr/lib/x86_64-linux-gnu/security/pam_p11.so"]) {
        return;
    }
    support::pam_p11_user(&lab, &lab.path("9a.crt"));
    let pam = |pin: &str| support::pam_login(&lab, pin);
    let (ok, text) = pam("123456");
    assert!(ok, "right PIN refused: {text}");
    lab.run_ok("opensc-tool", &["-s", "00 20 FF 80"]);
    let (ok, text) = pam("654321");
    assert!(!ok, "wrong PIN accepted: {text}");
    // The card counted the wrong PIN: two tries left (VERIFY status query, SW 63C2).
    let status = lab.run_ok("opensc-tool", &["-s", "00 20 00 80"]);
    assert!(status.contains("SW1=0x63, SW2=0xC2"), "{status}");
}

#[test]
fn a_forked_child_initializes_again() {
    let Some(lab) = lab(&["python3"]) else { return };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fork_check.py");
    let out = lab.run_ok("python3", &[script, &tessera_module()]);
    assert!(out.contains("fork: parent keeps working"), "{out}");
}

#[test]
fn ecdh_on_9d_agrees_with_openssl() {
    let Some(lab) = lab(&["pkcs11-tool"]) else {
        return;
    };
    // A P-256 key-management key in 9D, replacing the RSA one personalise put there.
    support::yk(
        &lab,
        &[
            "-a",
            "generate",
            "-s",
            "9d",
            "-A",
            "ECCP256",
            "-o",
            "9d-ec.pub",
        ],
    );
    support::certify(&lab, "9d-ec.pub", "9d-ec.crt", "Alice Key Agreement");
    support::yk(
        &lab,
        &["-a", "import-certificate", "-s", "9d", "-i", "9d-ec.crt"],
    );
    lab.run_ok(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "peer.key",
        ],
    );
    lab.run_ok(
        "openssl",
        &[
            "pkey", "-in", "peer.key", "-pubout", "-outform", "DER", "-out", "peer.der",
        ],
    );
    lab.run_ok(
        "pkcs11-tool",
        &[
            "--module",
            &tessera_module(),
            "--login",
            "--pin",
            "123456",
            "--derive",
            "-m",
            "ECDH1-DERIVE",
            "--id",
            "03",
            "--input-file",
            "peer.der",
            "--output-file",
            "card.bin",
        ],
    );
    lab.run_ok(
        "openssl",
        &[
            "pkeyutl",
            "-derive",
            "-inkey",
            "peer.key",
            "-peerkey",
            "9d-ec.pub",
            "-out",
            "openssl.bin",
        ],
    );
    let card = std::fs::read(lab.path("card.bin")).unwrap();
    let expected = std::fs::read(lab.path("openssl.bin")).unwrap();
    assert_eq!(card.len(), 32);
    assert_eq!(
        card, expected,
        "the card's ECDH secret differs from openssl's"
    );
}

//! The Tessera PKCS#11 module on the reference card through pcscd + vpcd: the same
//! cryptoki-based suite against ours and OpenSC's module, and peers that load modules
//! (pkcs11-tool, p11tool, ssh-keygen).

mod support;

use support::{personalise, require, tessera_module, CardOptions, Lab, OPENSC_PKCS11, VPCD_DRIVER};

fn lab(extra: &[&str]) -> Option<Lab> {
    let mut programs = vec![
        "unshare",
        "nsenter",
        "pcscd",
        "opensc-tool",
        "ip",
        "yubico-piv-tool",
        "openssl",
    ];
    programs.extend_from_slice(extra);
    if !require(&programs, &[VPCD_DRIVER, OPENSC_PKCS11]) {
        return None;
    }
    let lab = Lab::start(CardOptions::default());
    personalise(&lab);
    Some(lab)
}

/// Checks of the suite that OpenSC's module fails on this card, and why. Ours must pass all.
const OPENSC_KNOWN_FAILURES: &[(&str, &str)] = &[(
    "wrong-pin-counts",
    "OpenSC 0.23's PIV emulation does not reflect the card's retry counter in \
     CKF_USER_PIN_COUNT_LOW after a wrong PIN",
)];

/// Runs the suite; returns its report and the names of the failed checks.
fn suite(lab: &Lab, module: &str) -> (String, Vec<String>) {
    let out = lab.run(env!("CARGO_BIN_EXE_tessera-pkcs11-suite"), &["--module", module]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("pkcs11 suite on"),
        "suite did not run on {module}:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failed = text
        .lines()
        .filter_map(|l| l.strip_prefix("FAIL  "))
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
        .collect();
    (text, failed)
}

#[test]
fn the_same_suite_passes_on_ours_and_on_opensc() {
    let Some(lab) = lab(&[]) else { return };
    let (ours, ours_failed) = suite(&lab, &tessera_module());
    println!("{ours}");
    assert!(ours_failed.is_empty(), "{ours}");
    // Log out between modules: pcscd leaves the card (and its PIN status) as it was.
    lab.run_ok("opensc-tool", &["-s", "00 20 FF 80"]);
    let (theirs, theirs_failed) = suite(&lab, OPENSC_PKCS11);
    println!("{theirs}");
    let known: Vec<&str> = OPENSC_KNOWN_FAILURES.iter().map(|(n, _)| *n).collect();
    assert_eq!(theirs_failed, known, "OpenSC's failures changed:\n{theirs}");
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

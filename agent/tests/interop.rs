//! The TPM virtual cards as programs we did not write see them: swtpm, pcscd with vpcd and
//! the agent in private namespaces (the firmware tests' lab), three cards on one TPM (two
//! slots of one reader entry and one beside an empty slot), driven by OpenSC, yubico-piv-tool,
//! pkcs11-tool through OpenSC's module and ours (signatures checked by openssl), ssh-keygen,
//! gnutls-cli (TLS 1.3 client authentication) and pam_p11 with pamtester.

#[path = "../../firmware-tests/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{
    certify, pam_login, pam_p11_user, require, tessera_module, tls_client_auth, Lab, OPENSC_PKCS11,
    VPCD_DRIVER,
};

const AGENT: &str = env!("CARGO_BIN_EXE_tessera-agent");
const PAM_P11: &str = "/usr/lib/x86_64-linux-gnu/security/pam_p11.so";
const TCTI: &str = "swtpm:host=127.0.0.1,port=2321";

/// The reader slot of each card: the first entry (921) holds alice and bob, the second
/// (923) carol and an empty slot.
const ALICE: &str = "Tessera VSC 921 00 00";
const BOB: &str = "Tessera VSC 921 00 01";
const CAROL: &str = "Tessera VSC 923 00 00";

fn agent(lab: &Lab, args: &[&str]) -> String {
    let mut all = vec!["--data-dir", "agent", "--tcti", TCTI];
    all.extend_from_slice(args);
    lab.run_ok(AGENT, &all)
}

fn start_agent(lab: &mut Lab) -> usize {
    let i = lab.spawn(
        AGENT,
        &["--data-dir", "agent", "--tcti", TCTI, "serve"],
        "agent.log",
    );
    for port in [921, 922, 923, 924] {
        lab.wait_for_log("agent.log", &format!("127.0.0.1:{port}"));
    }
    i
}

fn yk(lab: &Lab, reader: &str, args: &[&str]) -> String {
    let mut all = vec!["-r", reader];
    all.extend_from_slice(args);
    lab.run_ok("yubico-piv-tool", &all)
}

/// Signs `data` with the 9A key of the card in `slot` through a PKCS#11 module and checks
/// the signature with openssl against the certificate read from the card.
fn sign_and_verify(lab: &Lab, module: &str, slot: &str, pin: &str, tag: &str) {
    let sig = format!("sig-{tag}");
    lab.run_ok(
        "pkcs11-tool",
        &[
            "--module",
            module,
            "--slot-index",
            slot,
            "--login",
            "--pin",
            pin,
            "--sign",
            "--mechanism",
            "ECDSA-SHA256",
            "--id",
            "01",
            "--signature-format",
            "openssl",
            "-i",
            "data",
            "-o",
            &sig,
        ],
    );
    let cert = format!("cert-{tag}.der");
    lab.run_ok(
        "pkcs11-tool",
        &[
            "--module",
            module,
            "--slot-index",
            slot,
            "--read-object",
            "--type",
            "cert",
            "--id",
            "01",
            "-o",
            &cert,
        ],
    );
    let pubkey = format!("pub-{tag}.pem");
    let out = lab.run_ok(
        "openssl",
        &["x509", "-inform", "DER", "-in", &cert, "-pubkey", "-noout"],
    );
    std::fs::write(lab.path(&pubkey), out).expect("public key file");
    let verified = lab.run_ok(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-verify",
            &pubkey,
            "-signature",
            &sig,
            "data",
        ],
    );
    assert!(verified.contains("Verified OK"), "{verified}");
}

/// `tessera-piv-conformance`, the firmware tests' binary, beside ours (built if it is not:
/// cargo builds a package's own binaries for its tests, not other packages').
fn conformance_binary() -> String {
    let path = std::path::Path::new(AGENT).with_file_name("tessera-piv-conformance");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = std::process::Command::new(cargo)
            .args([
                "build",
                "-p",
                "tessera-firmware-tests",
                "--bin",
                "tessera-piv-conformance",
            ])
            .status()
            .expect("cargo");
        assert!(built.success(), "building tessera-piv-conformance");
    }
    path.to_string_lossy().into_owned()
}

/// The serial number of the token in `reader` as a PKCS#11 module lists it.
fn token_serial(lab: &Lab, module: &str, reader: &str) -> String {
    let list = lab.run_ok("pkcs11-tool", &["--module", module, "-L"]);
    let mut in_slot = false;
    for line in list.lines() {
        if line.starts_with("Slot ") {
            in_slot = line.ends_with(reader);
        } else if in_slot {
            if let Some(serial) = line.trim().strip_prefix("serial num") {
                return serial.trim_start_matches([' ', ':']).trim().to_owned();
            }
        }
    }
    panic!("no token serial for {reader} in {list}");
}

#[test]
fn programs_we_did_not_write_use_the_tpm_cards() {
    if !require(
        &[
            "unshare",
            "nsenter",
            "pcscd",
            "opensc-tool",
            "ip",
            "swtpm",
            "yubico-piv-tool",
            "pkcs11-tool",
            "openssl",
            "ssh-keygen",
            "gnutls-cli",
            "pamtester",
            "mount",
        ],
        &[VPCD_DRIVER, OPENSC_PKCS11, PAM_P11],
    ) {
        return;
    }
    let mut lab = Lab::empty(None);
    lab.spawn_swtpm(2321);
    // swtpm is up once the agent reaches it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = lab.run(
            AGENT,
            &[
                "--data-dir",
                "agent",
                "--tcti",
                TCTI,
                "vsc",
                "create",
                "alice",
            ],
        );
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never reached swtpm: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    agent(&lab, &["vsc", "create", "bob"]);
    agent(&lab, &["vsc", "create", "carol"]);
    let drivers = lab.path("drivers");
    let conf = agent(&lab, &["reader-conf", "--driver-dir", &drivers]);
    assert!(
        conf.contains("DEVICENAME 127.0.0.1:921") && conf.contains("slot 1: no card"),
        "{conf}"
    );
    lab.write_reader_conf(&conf);
    let serving = start_agent(&mut lab);
    lab.start_pcscd();
    for reader in [ALICE, BOB, CAROL] {
        lab.wait_for_card_in(reader, true);
    }

    // Readers in configuration order: alice, bob, carol, then the slot without a card.
    let readers = lab.run_ok("opensc-tool", &["-l"]);
    for (index, reader) in [ALICE, BOB, CAROL].iter().enumerate() {
        assert!(
            readers.contains(&format!("{index}    Yes             {reader}")),
            "{readers}"
        );
    }
    // OpenSC recognises a PIV card in every slot with a virtual card, and none in the other.
    for index in ["0", "1", "2"] {
        let name = lab.run_ok("opensc-tool", &["-r", index, "-n"]);
        assert!(
            name.contains("Personal Identity Verification Card"),
            "reader {index}: {name}"
        );
    }
    let filler = lab.run("opensc-tool", &["-r", "3", "-n"]);
    assert!(
        !String::from_utf8_lossy(&filler.stdout).contains("Personal Identity"),
        "{filler:?}"
    );
    // The whole conformance catalogue, destructive checks included, on carol's card through
    // pcscd and vpcd: the same suite the reference card passes.
    let report = lab.run(&conformance_binary(), &["--reader", CAROL, "--destructive"]);
    let text = String::from_utf8_lossy(&report.stdout);
    println!("{text}");
    assert!(
        report.status.success() && text.contains("PASS  sign.p256") && !text.contains("FAIL "),
        "conformance through PC/SC:\n{text}{}",
        String::from_utf8_lossy(&report.stderr)
    );
    // yubico-piv-tool: status, and a P-256 key generated in the TPM behind alice's 9A, with
    // a certificate from a test CA written back.
    let status = yk(&lab, ALICE, &["-a", "status"]);
    assert!(status.contains("PIN tries left:\t3"), "{status}");
    for (reader, tag) in [(ALICE, "alice"), (BOB, "bob")] {
        let public = format!("9a-{tag}.pub");
        let cert = format!("9a-{tag}.crt");
        yk(
            &lab,
            reader,
            &["-a", "generate", "-s", "9a", "-A", "ECCP256", "-o", &public],
        );
        certify(&lab, &public, &cert, &format!("{tag} auth"));
        yk(
            &lab,
            reader,
            &["-a", "import-certificate", "-s", "9a", "-i", &cert],
        );
    }
    std::fs::write(lab.path("data"), b"signed through PC/SC by a TPM key").unwrap();
    let ours = tessera_module();
    for module in [OPENSC_PKCS11, ours.as_str()] {
        sign_and_verify(&lab, module, "0", "123456", "alice");
        sign_and_verify(&lab, module, "1", "123456", "bob");
    }

    // ssh-keygen lists both cards' keys through our module, as through OpenSC's.
    let ours_ssh = lab.run_ok("ssh-keygen", &["-D", &ours]);
    let opensc_ssh = lab.run_ok("ssh-keygen", &["-D", OPENSC_PKCS11]);
    for tag in ["alice", "bob"] {
        let pem = format!("pub-{tag}.pem");
        let key = lab.run_ok("ssh-keygen", &["-i", "-m", "PKCS8", "-f", &pem]);
        let key: Vec<&str> = key.split_whitespace().take(2).collect();
        let key = key.join(" ");
        assert!(key.starts_with("ecdsa-sha2-nistp256 "), "{key}");
        assert!(ours_ssh.contains(&key), "{tag}: {key} not in {ours_ssh}");
        assert!(
            opensc_ssh.contains(&key),
            "{tag}: {key} not in {opensc_ssh}"
        );
    }
    // TLS 1.3 client authentication with alice's TPM key: gnutls-cli through our module.
    let serial = token_serial(&lab, &ours, ALICE);
    let tls = tls_client_auth(&lab, &format!("serial={serial};id=%01"), 4433);
    assert!(
        tls.contains("CN=alice auth") || tls.contains("CN = alice auth"),
        "{tls}"
    );
    assert!(tls.contains("ECDSA"), "{tls}");
    // pam_p11 logs alice in with the right PIN, refuses a wrong one, and the TPM counted it.
    pam_p11_user(&lab, &lab.path("9a-alice.crt"));
    let (ok, text) = pam_login(&lab, "123456");
    assert!(ok, "right PIN refused: {text}");
    let (ok, text) = pam_login(&lab, "654321");
    assert!(!ok, "wrong PIN accepted: {text}");
    let status = yk(&lab, ALICE, &["-a", "status"]);
    assert!(status.contains("PIN tries left:\t2"), "{status}");

    // Three wrong PINs block alice's card, and only hers.
    for _ in 0..3 {
        let out = lab.run(
            "yubico-piv-tool",
            &["-r", ALICE, "-a", "verify-pin", "-P", "999999"],
        );
        assert!(!out.status.success());
    }
    let status = yk(&lab, ALICE, &["-a", "status"]);
    assert!(status.contains("PIN tries left:\t0"), "{status}");
    sign_and_verify(&lab, OPENSC_PKCS11, "1", "123456", "bob-after");
    // The agent restarts: alice's card is still blocked. (vpcd does not reconnect to a
    // card it lost in reversed mode: pcscd restarts after the agent, as the systemd unit
    // arranges.)
    lab.stop(serving);
    lab.wait_for_card_in(ALICE, false);
    start_agent(&mut lab);
    lab.stop_pcscd();
    lab.start_pcscd();
    lab.wait_for_card_in(ALICE, true);
    let status = yk(&lab, ALICE, &["-a", "status"]);
    assert!(status.contains("PIN tries left:\t0"), "{status}");
    sign_and_verify(&lab, ours.as_str(), "1", "123456", "bob-restarted");
}

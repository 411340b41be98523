//! "Any PKCS#11 HSM" (finding 9), proven with a second real token: tpm2-pkcs11 over swtpm
//! (a software TPM 2.0) behind tpm2-abrmd on a private D-Bus, all started by the test on
//! loopback and stopped after it. `init` takes the token over (its handed-over PIN stops
//! working), the configuration keeps the module and its environment, and `serve` signs
//! with it: issuance, revocation, OCSP and the CRL, checked with openssl.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{card_csr, curl, free_port, openssl, wait_for, Kill};

const ISSUER: &str = env!("CARGO_BIN_EXE_tessera-issuer");
const TPM2_PKCS11: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so";
const LABEL: &str = "tessera-tpm";
const HANDED_OVER_PIN: &str = "handed-over-1234";
const HANDED_OVER_SO_PIN: &str = "so-pin-5678";

/// swtpm, a private D-Bus and tpm2-abrmd, with a tpm2-pkcs11 store holding one token.
/// Fields drop in order: the resource manager before the bus and the TPM.
struct Tpm {
    _abrmd: Kill,
    _bus: Kill,
    _swtpm: Kill,
    /// What tpm2-pkcs11 needs in its environment.
    env: Vec<(String, String)>,
}

impl Tpm {
    fn start(dir: &Path) -> Self {
        // The swtpm TCTI finds the control channel on the next port up.
        let (port, ctrl) = loop {
            let p = free_port();
            if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
                break (p, p + 1);
            }
        };
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let swtpm = Kill(
            Command::new("swtpm")
                .args(["socket", "--tpm2", "--tpmstate"])
                .arg(format!("dir={}", dir.join("state").display()))
                .args([
                    "--server",
                    &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
                ])
                .args([
                    "--ctrl",
                    &format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"),
                ])
                .args(["--flags", "not-need-init,startup-clear"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for("swtpm", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let bus_path = dir.join("bus");
        let bus = Kill(
            Command::new("dbus-daemon")
                .args(["--session", "--nofork"])
                .arg(format!("--address=unix:path={}", bus_path.display()))
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for("dbus-daemon", || bus_path.exists());
        let bus_address = format!("unix:path={}", bus_path.display());
        let abrmd = Kill(
            Command::new("tpm2-abrmd")
                .env("DBUS_SESSION_BUS_ADDRESS", &bus_address)
                .arg(format!("--tcti=swtpm:host=127.0.0.1,port={port}"))
                .args(["--session", "--allow-root", "--flush-all"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("abrmd.log")).unwrap())
                .spawn()
                .unwrap(),
        );
        let store = dir.join("store");
        std::fs::create_dir_all(&store).unwrap();
        let env = vec![
            ("DBUS_SESSION_BUS_ADDRESS".to_owned(), bus_address),
            (
                "TPM2_PKCS11_TCTI".to_owned(),
                "tabrmd:bus_type=session".to_owned(),
            ),
            (
                "TPM2TOOLS_TCTI".to_owned(),
                "tabrmd:bus_type=session".to_owned(),
            ),
            ("TPM2_PKCS11_STORE".to_owned(), store.display().to_string()),
        ];
        let ptool = |args: &[&str]| {
            Command::new("tpm2_ptool")
                .envs(env.iter().map(|(k, v)| (k, v)))
                .args(args)
                .output()
                .unwrap()
        };
        let store_arg = format!("--path={}", store.display());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = ptool(&["init", &store_arg]);
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "tpm2-abrmd did not come up: {}; tpm2-abrmd said: {}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(dir.join("abrmd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = ptool(&[
            "addtoken",
            "--pid=1",
            &format!("--label={LABEL}"),
            &format!("--sopin={HANDED_OVER_SO_PIN}"),
            &format!("--userpin={HANDED_OVER_PIN}"),
            &store_arg,
        ]);
        assert!(
            out.status.success(),
            "tpm2_ptool addtoken: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            _abrmd: abrmd,
            _bus: bus,
            _swtpm: swtpm,
            env,
        }
    }

    /// Whether `so_pin` lets the security officer set a new user PIN (the attack by
    /// whoever set the token up).
    fn so_pin_works(&self, so_pin: &str) -> bool {
        Command::new("pkcs11-tool")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args([
                "--module",
                TPM2_PKCS11,
                "--token-label",
                LABEL,
                "--login",
                "--login-type",
                "so",
            ])
            .args([
                "--so-pin",
                so_pin,
                "--init-pin",
                "--new-pin",
                "attacker-0000",
            ])
            .output()
            .unwrap()
            .status
            .success()
    }

    /// Whether `pin` opens the token (pkcs11-tool, OpenSC's tool).
    fn pin_works(&self, pin: &str) -> bool {
        Command::new("pkcs11-tool")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args([
                "--module",
                TPM2_PKCS11,
                "--token-label",
                LABEL,
                "--login",
                "--pin",
                pin,
            ])
            .args(["--list-objects", "--type", "privkey"])
            .output()
            .unwrap()
            .status
            .success()
    }
}

#[test]
fn a_tpm_backed_token_runs_the_ca() {
    if !common::require(
        &[
            "swtpm",
            "dbus-daemon",
            "tpm2-abrmd",
            "tpm2_ptool",
            "pkcs11-tool",
            "openssl",
            "curl",
        ],
        &[TPM2_PKCS11],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let tpm = Tpm::start(&dir.join("tpm"));
    assert!(tpm.pin_works(HANDED_OVER_PIN));
    let pin_file = dir.join("handed-over.pin");
    std::fs::write(&pin_file, HANDED_OVER_PIN).unwrap();
    let so_pin_file = dir.join("handed-over-so.pin");
    std::fs::write(&so_pin_file, HANDED_OVER_SO_PIN).unwrap();
    // The check below can see an SO PIN work: before init, it does (and the user PIN it
    // sets is the one handed over from now on).
    assert!(tpm.so_pin_works(HANDED_OVER_SO_PIN));
    assert!(tpm.pin_works("attacker-0000"));
    std::fs::write(&pin_file, "attacker-0000").unwrap();

    let data: PathBuf = dir.join("data");
    let mut init = Command::new(ISSUER);
    init.args(["init", "--data-dir", data.to_str().unwrap()])
        .args(["--token-module", TPM2_PKCS11, "--token-label", LABEL])
        .arg("--token-pin-file")
        .arg(&pin_file)
        .arg("--token-so-pin-file")
        .arg(&so_pin_file);
    for (k, v) in &tpm.env {
        init.args(["--token-env", &format!("{k}={v}")]);
    }
    let out = init.output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Neither PIN handed over opens the token any more; the activation secret does.
    assert!(
        !tpm.pin_works("attacker-0000"),
        "the handed-over PIN still works"
    );
    assert!(
        !tpm.so_pin_works(HANDED_OVER_SO_PIN),
        "the handed-over SO PIN can still reset the user PIN"
    );
    let secret = std::fs::read_to_string(data.join("ca-activation.secret")).unwrap();
    assert!(tpm.pin_works(secret.trim()));
    let config = std::fs::read_to_string(data.join("issuer.json")).unwrap();
    assert!(
        config.contains("libtpm2_pkcs11.so") && config.contains("TPM2_PKCS11_STORE"),
        "{config}"
    );

    // serve signs with the TPM: issuance, OCSP, revocation, CRL.
    let (_server, base) = common::serve(&data, &["--crl-delay", "0.2"]);
    let csr = card_csr(dir, "card.key");
    let token = std::fs::read_to_string(data.join("bootstrap-admin.token")).unwrap();
    let auth = format!("Authorization: Bearer {token}");
    let body = serde_json::json!({
        "profile": "authentication", "subject": { "common_name": "Tpm Person" }, "csr": csr,
    })
    .to_string();
    let (status, answer) = curl(&[
        "-H",
        &auth,
        "--data-binary",
        &body,
        &format!("{base}/api/v1/certificates"),
    ]);
    assert_eq!(status, 201, "{answer}");
    let issued: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let serial = issued["serial"].as_str().unwrap().to_owned();
    std::fs::write(
        dir.join("leaf.pem"),
        issued["certificate"].as_str().unwrap(),
    )
    .unwrap();
    let (ok, text) = openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            "data/root-ca.pem",
            "-untrusted",
            "data/issuing-ca.pem",
            "leaf.pem",
        ],
    );
    assert!(ok && text.contains("leaf.pem: OK"), "{text}");
    let ocsp = || {
        openssl(
            dir,
            &[
                "ocsp",
                "-issuer",
                "data/issuing-ca.pem",
                "-cert",
                "leaf.pem",
                "-CAfile",
                "data/root-ca.pem",
                "-url",
                &format!("{base}/ocsp"),
            ],
        )
        .1
    };
    let text = ocsp();
    assert!(
        text.contains("leaf.pem: good") && text.contains("Response verify OK"),
        "{text}"
    );
    let (status, answer) = curl(&[
        "-H",
        &auth,
        "--data-binary",
        "{\"reason\": \"keyCompromise\"}",
        &format!("{base}/api/v1/certificates/{serial}/revocation"),
    ]);
    assert_eq!(status, 200, "{answer}");
    let text = ocsp();
    assert!(text.contains("leaf.pem: revoked"), "{text}");
    wait_for("a CRL listing the revocation", || {
        let _ = Command::new("curl")
            .args(["-s", "-o"])
            .arg(dir.join("crl.der"))
            .arg(format!("{base}/crl/issuing-ca-1.crl"))
            .status();
        let _ = openssl(
            dir,
            &["crl", "-inform", "DER", "-in", "crl.der", "-out", "crl.pem"],
        );
        let (_, text) = openssl(
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
        );
        text.contains("certificate revoked")
    });
    let (ok, text) = Command::new(ISSUER)
        .args(["audit", "verify", "--data-dir", data.to_str().unwrap()])
        .output()
        .map(|o| {
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
            )
        })
        .unwrap();
    assert!(ok, "{text}");
}

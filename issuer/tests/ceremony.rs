//! The offline-root ceremonies, with an offline SoftHSM2 token of their own: the root is
//! created and self-signed in the token, an issuing CA's request (made by openssl here) is
//! verified and signed, and openssl verifies the chain. A forged request is refused and
//! leaves no certificate behind.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;

const ISSUER: &str = env!("CARGO_BIN_EXE_tessera-issuer");
const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn root_and_intermediate_ceremonies() {
    let have = Path::new(SOFTHSM).exists()
        && ["softhsm2-util", "openssl"].iter().all(|p| {
            Command::new("sh")
                .args(["-c", &format!("command -v {p}")])
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if !have {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "SoftHSM2 or openssl missing"
        );
        eprintln!("SKIPPED: SoftHSM2 or openssl missing");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The offline HSM, initialised by its operators.
    let tokens = dir.join("offline-tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.join("offline-softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            tokens.display()
        ),
    )
    .unwrap();
    let (ok, text) = run(Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            "offline-root",
            "--so-pin",
            "11112222",
            "--pin",
            "33334444",
        ]));
    assert!(ok, "{text}");
    std::fs::write(dir.join("pin"), "33334444\n").unwrap();
    let token = serde_json::json!({
        "module": SOFTHSM, "softhsm_conf": conf, "label": "offline-root", "pin_file": dir.join("pin"),
    });

    let root_cfg = dir.join("root.json");
    let raw = serde_json::json!({
        "type": "root", "token": token, "key_label": "root-2026", "key_alg": "p384",
        "organization": "Example Kommun", "common_name": "Example Kommun Root CA 2026",
        "validity_days": 7300, "certificate_out": dir.join("root.pem"),
    })
    .to_string();
    std::fs::write(&root_cfg, &raw).unwrap();
    let (ok, text) =
        run(Command::new(ISSUER).args(["ceremony", "--config", root_cfg.to_str().unwrap()]));
    assert!(ok, "{text}");
    let digest = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(
        raw.as_bytes(),
    ));
    assert!(
        text.contains(&hex::encode(digest)),
        "the transcript names the reviewed file: {text}"
    );
    // The same ceremony again refuses: the key exists and the output is not overwritten.
    let (ok, text) =
        run(Command::new(ISSUER).args(["ceremony", "--config", root_cfg.to_str().unwrap()]));
    assert!(!ok && text.contains("already holds a key"), "{text}");

    // The online side's request (openssl stands in for the issuer's own token here).
    let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(dir));
    assert!(
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "issuing.key"
        ])
        .0
    );
    assert!(
        openssl(&[
            "req",
            "-new",
            "-key",
            "issuing.key",
            "-subj",
            "/O=Example Kommun/CN=Example Kommun Issuing CA 2",
            "-out",
            "issuing.csr"
        ])
        .0
    );
    let intermediate = |csr: &str, out: &str| {
        let cfg = dir.join(format!("{out}.json"));
        std::fs::write(
            &cfg,
            serde_json::json!({
                "type": "intermediate", "token": token, "key_label": "root-2026", "key_alg": "p384",
                "root_certificate": dir.join("root.pem"), "csr": dir.join(csr), "validity_days": 3650,
                "certificate_out": dir.join(out),
            })
            .to_string(),
        )
        .unwrap();
        run(Command::new(ISSUER).args(["ceremony", "--config", cfg.to_str().unwrap()]))
    };
    let (ok, text) = intermediate("issuing.csr", "issuing.pem");
    assert!(ok, "{text}");
    let (ok, text) = openssl(&["verify", "-CAfile", "root.pem", "issuing.pem"]);
    assert!(ok && text.contains("issuing.pem: OK"), "{text}");
    let (_, shown) = openssl(&["x509", "-in", "issuing.pem", "-noout", "-text"]);
    assert!(
        shown.contains("CA:TRUE, pathlen:0") && shown.contains("ecdsa-with-SHA384"),
        "{shown}"
    );

    // A request whose signature does not match its content is refused; nothing is written.
    let (_, der) = der::pem::decode_vec(&std::fs::read(dir.join("issuing.csr")).unwrap()).unwrap();
    let mut forged = der.clone();
    let at = forged.len() - 5;
    forged[at] ^= 0x01;
    std::fs::write(dir.join("forged.csr"), forged).unwrap();
    let (ok, text) = intermediate("forged.csr", "forged.pem");
    assert!(!ok && text.contains("does not verify"), "{text}");
    assert!(!dir.join("forged.pem").exists());
}

//! The production path, with an offline SoftHSM2 token of its own: the root ceremony
//! creates and self-signs the root; an issuing CA's request (made by openssl) is verified
//! and signed, and openssl verifies the chain; a forged request is refused and leaves no
//! certificate behind. Then the online half: `init --external-root` makes the issuing-CA
//! key in the deployment's token and its request, the ceremony signs it, wrong
//! certificates are refused, `install-ca-cert` completes the deployment, and a certificate
//! it issues verifies (openssl) up to the offline root, with OCSP.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

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
fn offline_root_ceremonies_and_the_online_issuing_ca() {
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
    // The SHA-256 of a request file's DER, as `init --external-root` prints it.
    let csr_sha256 = |csr: &str| {
        let raw = std::fs::read(dir.join(csr)).unwrap();
        let der = match der::pem::decode_vec(&raw) {
            Ok((_, d)) => d,
            Err(_) => raw,
        };
        hex::encode(sha2::Digest::finalize(
            <sha2::Sha256 as sha2::Digest>::new_with_prefix(&der),
        ))
    };
    // The reviewed file names the request by hash and the subject it must carry.
    let reviewed = |csr: &str, sha256: &str, subject: &str, out: &str| {
        let cfg = dir.join(format!("{out}.json"));
        std::fs::write(
            &cfg,
            serde_json::json!({
                "type": "intermediate", "token": token, "key_label": "root-2026", "key_alg": "p384",
                "root_certificate": dir.join("root.pem"), "csr": dir.join(csr),
                "csr_sha256": sha256, "expected_subject": subject,
                "policy_oid": "1.2.752.999.1.3", "root_crl_url": "http://pki.example/root.crl",
                "validity_days": 3650, "certificate_out": dir.join(out),
            })
            .to_string(),
        )
        .unwrap();
        run(Command::new(ISSUER).args(["ceremony", "--config", cfg.to_str().unwrap()]))
    };
    let intermediate =
        |csr: &str, subject: &str, out: &str| reviewed(csr, &csr_sha256(csr), subject, out);
    const SUBJECT_2: &str = "CN=Example Kommun Issuing CA 2,O=Example Kommun";
    // Another request than the one reviewed (same subject, another key): refused, nothing
    // written, and the transcript shows the hash that was found.
    assert!(
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "other.key"
        ])
        .0
    );
    assert!(
        openssl(&[
            "req",
            "-new",
            "-key",
            "other.key",
            "-subj",
            "/O=Example Kommun/CN=Example Kommun Issuing CA 2",
            "-out",
            "other.csr"
        ])
        .0
    );
    let (ok, text) = reviewed(
        "other.csr",
        &csr_sha256("issuing.csr"),
        SUBJECT_2,
        "other.pem",
    );
    assert!(
        !ok && text.contains("refusing to sign") && text.contains(&csr_sha256("other.csr")),
        "{text}"
    );
    assert!(!dir.join("other.pem").exists());
    // The reviewed request, but not for the subject the file expects.
    let (ok, text) = intermediate(
        "issuing.csr",
        "CN=Example Kommun Issuing CA 9,O=Example Kommun",
        "wrong-subject.pem",
    );
    assert!(!ok && text.contains("not the expected"), "{text}");
    // A key below the floor (RSA 1024).
    assert!(
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
            "weak.key"
        ])
        .0
    );
    assert!(
        openssl(&[
            "req",
            "-new",
            "-key",
            "weak.key",
            "-subj",
            "/O=Example Kommun/CN=Example Kommun Issuing CA 2",
            "-out",
            "weak.csr"
        ])
        .0
    );
    let (ok, text) = intermediate("weak.csr", SUBJECT_2, "weak.pem");
    assert!(!ok && text.contains("key is refused"), "{text}");
    assert!(!dir.join("weak.pem").exists());

    let (ok, text) = intermediate("issuing.csr", SUBJECT_2, "issuing.pem");
    assert!(ok && text.contains(&csr_sha256("issuing.csr")), "{text}");
    let (ok, text) = openssl(&["verify", "-CAfile", "root.pem", "issuing.pem"]);
    assert!(ok && text.contains("issuing.pem: OK"), "{text}");
    let (_, shown) = openssl(&["x509", "-in", "issuing.pem", "-noout", "-text"]);
    assert!(
        shown.contains("CA:TRUE, pathlen:0") && shown.contains("ecdsa-with-SHA384"),
        "{shown}"
    );
    // The issuing CA carries the certificate policy and where the root's CRL is.
    assert!(
        shown.contains("Policy: 1.2.752.999.1.3")
            && shown.contains("URI:http://pki.example/root.crl"),
        "{shown}"
    );

    // A request whose signature does not match its content is refused; nothing is written.
    let (_, der) = der::pem::decode_vec(&std::fs::read(dir.join("issuing.csr")).unwrap()).unwrap();
    let mut forged = der.clone();
    let at = forged.len() - 5;
    forged[at] ^= 0x01;
    std::fs::write(dir.join("forged.csr"), forged).unwrap();
    let (ok, text) = intermediate("forged.csr", SUBJECT_2, "forged.pem");
    assert!(!ok && text.contains("does not verify"), "{text}");
    assert!(!dir.join("forged.pem").exists());

    // The online half. init keeps the root offline and writes the issuing CA's request.
    let data = dir.join("data");
    let (ok, text) = run(Command::new(ISSUER)
        .args([
            "init",
            "--organization",
            "Example Kommun",
            "--external-root",
            "root.pem",
        ])
        .arg("--data-dir")
        .arg(&data)
        .current_dir(dir));
    assert!(ok && text.contains("install-ca-cert"), "{text}");
    let csr = data.join("issuing-ca.csr");
    assert!(csr.exists() && !data.join("bootstrap-admin.token").exists());
    // Not ready to serve yet, and says why.
    let (ok, text) = run(Command::new(ISSUER)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data));
    assert!(
        !ok && text.contains("awaits its issuing-CA certificate"),
        "{text}"
    );

    // Wrong certificates change nothing: the root itself (another key) ...
    let install = |cert: &str| {
        run(Command::new(ISSUER)
            .args(["install-ca-cert", "--certificate", cert, "--data-dir"])
            .arg(&data)
            .current_dir(dir))
    };
    let (ok, text) = install("root.pem");
    assert!(
        !ok && text.contains("not for this deployment's issuing-CA key"),
        "{text}"
    );
    // ... and our request signed by an impostor root with the same name.
    assert!(
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-nodes",
            "-keyout",
            "impostor.key",
            "-out",
            "impostor.pem",
            "-days",
            "30",
            "-subj",
            "/O=Example Kommun/CN=Example Kommun Root CA 2026",
        ])
        .0
    );
    std::fs::write(
        dir.join("ca.ext"),
        "basicConstraints = critical, CA:TRUE, pathlen:0\nkeyUsage = critical, keyCertSign, cRLSign\n",
    )
    .unwrap();
    let (ok, text) = openssl(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        "impostor.pem",
        "-CAkey",
        "impostor.key",
        "-days",
        "30",
        "-extfile",
        "ca.ext",
        "-out",
        "impostor-issuing.pem",
    ]);
    assert!(ok, "{text}");
    let (ok, text) = install("impostor-issuing.pem");
    assert!(!ok && text.contains("the root's signature"), "{text}");
    assert!(data.join("pending-ca.json").exists() && !data.join("issuing-ca.pem").exists());

    // The root ceremony signs the real request; install-ca-cert completes the deployment.
    let (ok, text) = intermediate(
        csr.to_str().unwrap(),
        "CN=Example Kommun Issuing CA 1,O=Example Kommun",
        "online-issuing.pem",
    );
    assert!(ok, "{text}");
    let (ok, text) = install("online-issuing.pem");
    assert!(ok && text.contains("issuing CA"), "{text}");
    assert_eq!(
        std::fs::read(data.join("root-ca.pem")).unwrap(),
        std::fs::read(dir.join("root.pem")).unwrap(),
        "the deployment names the offline root"
    );
    assert!(!data.join("pending-ca.json").exists());
    let (ok, text) = run(Command::new(ISSUER)
        .args(["audit", "verify", "--data-dir"])
        .arg(&data));
    assert!(ok, "{text}");

    // Serve, issue, and verify up to the offline root with openssl, certificate and OCSP.
    let (_server, base) = common::serve(&data, &[]);
    let issued = {
        assert!(
            openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "card.key"
            ])
            .0
        );
        assert!(
            openssl(&[
                "req",
                "-new",
                "-key",
                "card.key",
                "-subj",
                "/CN=Offline Root Person",
                "-out",
                "card.csr"
            ])
            .0
        );
        let body = serde_json::json!({
            "profile": "authentication",
            "subject": { "common_name": "Offline Root Person" },
            "csr": std::fs::read_to_string(dir.join("card.csr")).unwrap(),
        });
        let token = std::fs::read_to_string(data.join("bootstrap-admin.token")).unwrap();
        let out = Command::new("curl")
            .args([
                "-s",
                "-H",
                &format!("Authorization: Bearer {token}"),
                "--data-binary",
            ])
            .arg(body.to_string())
            .arg(format!("{base}/api/v1/certificates"))
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    std::fs::write(
        dir.join("leaf.pem"),
        issued["certificate"].as_str().unwrap(),
    )
    .unwrap();
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        "root.pem",
        "-untrusted",
        "data/issuing-ca.pem",
        "leaf.pem",
    ]);
    assert!(ok && text.contains("leaf.pem: OK"), "{text}");
    let (ok, text) = openssl(&[
        "ocsp",
        "-issuer",
        "data/issuing-ca.pem",
        "-cert",
        "leaf.pem",
        "-CAfile",
        "root.pem",
        "-url",
        &format!("{base}/ocsp"),
    ]);
    assert!(
        ok && text.contains("leaf.pem: good") && text.contains("Response verify OK"),
        "{text}"
    );
}

//! The HTTP API of `tessera-issuer serve`, driven with curl; the certificate it issues, the
//! CRL it serves and its OCSP answers are checked with openssl. Each scenario runs on SQLite
//! and on a real PostgreSQL the test starts itself.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
mod pg;

use common::{card_csr, card_public_key, curl, free_port, openssl, Kill};

const ISSUER: &str = env!("CARGO_BIN_EXE_tessera-issuer");

fn peers() -> bool {
    common::require(&["openssl", "curl"], &["/usr/lib/softhsm/libsofthsm2.so"])
}

/// A deployment made by `init` and its server, stopped (before the directory goes) on drop.
struct Running {
    _server: Kill,
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    data: std::path::PathBuf,
    base: String,
    auth: String,
}

impl Running {
    /// `init` (on PostgreSQL when `database` is given), `serve` on a free loopback port, and
    /// a wait until it answers.
    fn start(database: Option<&str>) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let data = dir.join("data");
        let out = Command::new(ISSUER)
            .args(["init", "--data-dir", data.to_str().unwrap()])
            .args(["--upn-domain", "example.org"])
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
        let (server, base) = common::serve(&data, &[]);
        let token = std::fs::read_to_string(data.join("bootstrap-admin.token")).unwrap();
        Self {
            _server: server,
            _tmp: tmp,
            dir,
            data,
            base,
            auth: format!("Authorization: Bearer {token}"),
        }
    }
}

fn issue_revoke_and_crl_over_http(database: Option<&str>) {
    let run = Running::start(database);
    let dir = run.dir.as_path();
    let (base, auth) = (run.base.clone(), run.auth.clone());
    let data = run.data.clone();
    let url = format!("{base}/api/v1/certificates");

    // A card's key (made by openssl here) and its proof of possession, a PKCS#10 request.
    let csr = card_csr(dir, "card.key");
    let request = serde_json::json!({
        "profile": "authentication",
        "subject": { "common_name": "Alice Andersson", "upn": "alice@example.org" },
        "csr": csr,
    })
    .to_string();

    // Refusals: each with its status and stable code, none writing anything.
    let post = |extra: &[&str], body: &str| {
        let mut args = vec![
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    };
    let (status, body) = post(&[], &request);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"unauthorized\""), "{body}");
    let (status, body) = post(&["-H", &auth], "{\"profile\": ");
    assert_eq!(
        (status, body.contains("\"malformed_json\"")),
        (400, true),
        "{body}"
    );
    let (status, body) = post(
        &["-H", &auth],
        &request.replace("authentication", "nonsense"),
    );
    assert_eq!(
        (status, body.contains("\"unknown_profile\"")),
        (400, true),
        "{body}"
    );
    // Proof of possession (finding 5): a bare key is refused where the profile does not
    // allow it, and so is a request whose signature is not its key's.
    let bare = serde_json::json!({
        "profile": "authentication",
        "subject": { "common_name": "Alice Andersson" },
        "public_key": card_public_key(dir, "bare.key"),
    })
    .to_string();
    let (status, body) = post(&["-H", &auth], &bare);
    assert_eq!(
        (status, body.contains("\"bad_proof\"")),
        (400, true),
        "{body}"
    );
    let (_, mut der) = der::pem::decode_vec(csr.as_bytes()).unwrap();
    let at = der.len() - 3;
    der[at] ^= 0x01;
    let forged =
        der::pem::encode_string("CERTIFICATE REQUEST", der::pem::LineEnding::LF, &der).unwrap();
    let (status, body) = post(
        &["-H", &auth],
        &request.replace(&csr.replace('\n', "\\n"), &forged.replace('\n', "\\n")),
    );
    assert_eq!(
        (status, body.contains("\"bad_proof\"")),
        (400, true),
        "{body}"
    );
    // A well-signed request for a key below the floor: refused as a bad key.
    assert!(
        openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:1024",
                "-out",
                "weak.key"
            ]
        )
        .0
    );
    assert!(
        openssl(
            dir,
            &["req", "-new", "-key", "weak.key", "-subj", "/CN=weak", "-out", "weak.csr"]
        )
        .0
    );
    let weak = serde_json::json!({
        "profile": "authentication",
        "subject": { "common_name": "Alice Andersson" },
        "csr": std::fs::read_to_string(dir.join("weak.csr")).unwrap(),
    })
    .to_string();
    let (status, body) = post(&["-H", &auth], &weak);
    assert_eq!(
        (status, body.contains("\"bad_public_key\"")),
        (400, true),
        "{body}"
    );
    let big = format!("{{\"profile\": \"{}\"}}", "x".repeat(70 * 1024));
    let (status, _) = post(&["-H", &auth], &big);
    assert_eq!(status, 413);

    // Issued: 201 with serial and PEM.
    let (status, body) = post(&["-H", &auth], &request);
    assert_eq!(status, 201, "{body}");
    let issued: serde_json::Value = serde_json::from_str(&body).unwrap();
    let serial = issued["serial"].as_str().unwrap().to_owned();
    std::fs::write(
        dir.join("leaf.pem"),
        issued["certificate"].as_str().unwrap(),
    )
    .unwrap();

    // The CA certificate and the CRL at the URLs the certificate names.
    let (_, text) = openssl(
        dir,
        &[
            "x509",
            "-in",
            "leaf.pem",
            "-noout",
            "-ext",
            "crlDistributionPoints,authorityInfoAccess",
        ],
    );
    assert!(
        text.contains(&format!("{base}/crl/issuing-ca-1.crl"))
            && text.contains(&format!("{base}/ca/issuing-ca-1.crt")),
        "{text}"
    );
    let fetch_crl = || {
        assert_eq!(
            curl(&[
                "-o",
                dir.join("crl.der").to_str().unwrap(),
                &format!("{base}/crl/issuing-ca-1.crl")
            ])
            .0,
            200
        );
        assert!(
            openssl(
                dir,
                &["crl", "-inform", "DER", "-in", "crl.der", "-out", "crl.pem"]
            )
            .0
        );
    };
    assert_eq!(
        curl(&[
            "-o",
            dir.join("ca.der").to_str().unwrap(),
            &format!("{base}/ca/issuing-ca-1.crt")
        ])
        .0,
        200
    );
    assert!(
        openssl(
            dir,
            &["x509", "-inform", "DER", "-in", "ca.der", "-out", "ca.pem"]
        )
        .0
    );
    let verify = || {
        openssl(
            dir,
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                "data/root-ca.pem",
                "-untrusted",
                "ca.pem",
                "-CRLfile",
                "crl.pem",
                "leaf.pem",
            ],
        )
    };
    fetch_crl();
    let (ok, text) = verify();
    assert!(ok, "fresh certificate: {text}");

    // Revoked through the API: the served CRL says so.
    let revocation = format!("{url}/{serial}/revocation");
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &auth,
        "--data-binary",
        "{\"reason\": \"keyCompromise\"}",
        &revocation,
    ]);
    assert_eq!(status, 200, "{body}");
    // The revocation answered at once; a CRL that lists it follows within the publication
    // delay (2 s by default), not under the revocation's lock.
    let revoked_at = Instant::now();
    let text = loop {
        fetch_crl();
        let (ok, text) = verify();
        if !ok && text.contains("certificate revoked") {
            break text;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(10),
            "no CRL lists the revocation after 10 s: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "revoked certificate on the CRL after {:?}: {text}",
        revoked_at.elapsed()
    );
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &auth,
        "--data-binary",
        "{\"reason\": \"keyCompromise\"}",
        &revocation,
    ]);
    assert_eq!(
        (status, body.contains("\"already_revoked\"")),
        (409, true),
        "{body}"
    );
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &auth,
        "--data-binary",
        "{\"reason\": \"whatever\"}",
        &format!("{url}/00ff/revocation"),
    ]);
    assert_eq!(
        (status, body.contains("\"bad_reason\"")),
        (400, true),
        "{body}"
    );

    let out = Command::new(ISSUER)
        .args(["audit", "verify", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl_ocsp_reports_good_then_revoked_with_and_without_nonce(database: Option<&str>) {
    let run = Running::start(database);
    let dir = run.dir.as_path();
    let (base, auth) = (run.base.clone(), run.auth.clone());
    let csr = card_csr(dir, "card.key");
    let request = serde_json::json!({
        "profile": "authentication",
        "subject": { "common_name": "Olle Ocsp" },
        "csr": csr,
    })
    .to_string();
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &auth,
        "--data-binary",
        &request,
        &format!("{base}/api/v1/certificates"),
    ]);
    assert_eq!(status, 201, "{body}");
    let issued: serde_json::Value = serde_json::from_str(&body).unwrap();
    std::fs::write(
        dir.join("leaf.pem"),
        issued["certificate"].as_str().unwrap(),
    )
    .unwrap();
    let serial = issued["serial"].as_str().unwrap().to_owned();

    let ask = |extra: &[&str]| {
        let mut args = vec![
            "ocsp",
            "-issuer",
            "data/issuing-ca.pem",
            "-cert",
            "leaf.pem",
            "-CAfile",
            "data/root-ca.pem",
            "-url",
        ];
        let url = format!("{base}/ocsp");
        args.push(&url);
        args.extend_from_slice(extra);
        openssl(dir, &args)
    };
    for nonce in [&[][..], &["-no_nonce"][..]] {
        let (ok, text) = ask(nonce);
        assert!(ok && text.contains("leaf.pem: good"), "{nonce:?}: {text}");
        assert!(text.contains("Response verify OK"), "{text}");
    }
    // The nonce comes back (openssl checks it; with -resp_text it shows it).
    let (_, text) = ask(&["-resp_text"]);
    assert!(text.contains("OCSP Nonce"), "{text}");
    // GET (RFC 6960 Appendix A.1): the base64 of the request, URL-encoded, in the path.
    assert!(
        openssl(
            dir,
            &[
                "ocsp",
                "-issuer",
                "data/issuing-ca.pem",
                "-cert",
                "leaf.pem",
                "-no_nonce",
                "-reqout",
                "req.der"
            ]
        )
        .0
    );
    let b64 = <base64ct::Base64 as base64ct::Encoding>::encode_string(
        &std::fs::read(dir.join("req.der")).unwrap(),
    );
    let encoded = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let (status, _) = curl(&[
        "-o",
        dir.join("resp.der").to_str().unwrap(),
        &format!("{base}/ocsp/{encoded}"),
    ]);
    assert_eq!(status, 200);
    let (ok, text) = openssl(
        dir,
        &[
            "ocsp",
            "-respin",
            "resp.der",
            "-issuer",
            "data/issuing-ca.pem",
            "-cert",
            "leaf.pem",
            "-CAfile",
            "data/root-ca.pem",
        ],
    );
    assert!(
        ok && text.contains("leaf.pem: good") && text.contains("Response verify OK"),
        "GET: {text}"
    );

    // Pre-signed responses: the same RFC 5019 request (one certificate, no nonce) asked
    // again a second later gets the very same bytes; a request with a nonce never does.
    let post = |request: &str, out: &str| {
        let (status, _) = curl(&[
            "-o",
            dir.join(out).to_str().unwrap(),
            "-H",
            "Content-Type: application/ocsp-request",
            "--data-binary",
            &format!("@{}", dir.join(request).display()),
            &format!("{base}/ocsp"),
        ]);
        assert_eq!(status, 200);
        std::fs::read(dir.join(out)).unwrap()
    };
    let first = post("req.der", "first.der");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(first, post("req.der", "again.der"), "not served pre-signed");
    assert!(
        openssl(
            dir,
            &[
                "ocsp",
                "-issuer",
                "data/issuing-ca.pem",
                "-cert",
                "leaf.pem",
                "-reqout",
                "nonce-req.der"
            ]
        )
        .0
    );
    let with_nonce = post("nonce-req.der", "nonce1.der");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_ne!(with_nonce, post("nonce-req.der", "nonce2.der"));

    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &auth,
        "--data-binary",
        "{\"reason\": \"keyCompromise\"}",
        &format!("{base}/api/v1/certificates/{serial}/revocation"),
    ]);
    assert_eq!(status, 200, "{body}");
    for nonce in [&[][..], &["-no_nonce"][..]] {
        let (ok, text) = ask(nonce);
        assert!(
            ok && text.contains("leaf.pem: revoked"),
            "{nonce:?}: {text}"
        );
        assert!(text.contains("Reason: keyCompromise"), "{text}");
    }
    // The pre-signed "good" went with the revocation: the cached request now says revoked.
    let after = post("req.der", "after.der");
    assert_ne!(first, after);
    let (ok, text) = openssl(
        dir,
        &[
            "ocsp",
            "-respin",
            "after.der",
            "-issuer",
            "data/issuing-ca.pem",
            "-cert",
            "leaf.pem",
            "-CAfile",
            "data/root-ca.pem",
        ],
    );
    assert!(ok && text.contains("leaf.pem: revoked"), "{text}");

    // Garbage gets the malformedRequest status, not an HTTP error or a crash.
    let out = Command::new("curl")
        .args([
            "-s",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/ocsp-request",
            "--data-binary",
            "not DER",
            &format!("{base}/ocsp"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.stdout,
        [0x30, 0x03, 0x0A, 0x01, 0x01],
        "malformedRequest"
    );
}

#[test]
fn api_crl_on_sqlite() {
    if peers() {
        issue_revoke_and_crl_over_http(None);
    }
}

#[test]
fn api_crl_on_postgresql() {
    if !peers() {
        return;
    }
    if let Some(pg) = pg::Postgres::start() {
        issue_revoke_and_crl_over_http(Some(&pg.url));
    }
}

#[test]
fn ocsp_on_sqlite() {
    if peers() {
        openssl_ocsp_reports_good_then_revoked_with_and_without_nonce(None);
    }
}

#[test]
fn ocsp_on_postgresql() {
    if !peers() {
        return;
    }
    if let Some(pg) = pg::Postgres::start() {
        openssl_ocsp_reports_good_then_revoked_with_and_without_nonce(Some(&pg.url));
    }
}

/// pkilint's command line, from the virtual environment test.sh makes (TESSERA_PKILINT_BIN)
/// or PATH.
fn pkilint(tool: &str) -> Option<std::path::PathBuf> {
    let from_env = std::env::var_os("TESSERA_PKILINT_BIN").map(|d| Path::new(&d).join(tool));
    let found = from_env.filter(|p| p.exists()).or_else(|| {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(tool))
                .find(|p| p.exists())
        })
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "pkilint ({tool}) is not installed"
        );
        eprintln!("SKIPPED: pkilint is not installed (deploy/dev/test.sh installs it)");
    }
    found
}

/// pkilint findings at ERROR or above that are pkilint's limits, not defects, and why.
const PKILINT_EXPECTED: &[(&str, &str)] = &[(
    "Invalid URI syntax: \"urn:uuid:",
    "FIPS 201-3 puts the card UUID in the card-authentication certificate as a urn:uuid: URI \
     (RFC 4122, a valid RFC 3986 URI); pkilint 0.13 checks URIs with validators.url, which \
     accepts only URLs with a host",
)];

fn lint(tool: &Path, args: &[&str], file: &Path) -> Vec<String> {
    let out = Command::new(tool)
        .arg("lint")
        .args(args)
        .args(["-s", "ERROR"])
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter(|l| l.contains("(ERROR)") || l.contains("(FATAL)"))
        .filter(|l| !PKILINT_EXPECTED.iter().any(|(e, _)| l.contains(e)))
        .map(str::to_owned)
        .collect()
}

#[test]
fn pkilint_finds_no_error_in_certificates_crl_and_ocsp_response() {
    if !peers() {
        return;
    }
    let (Some(cert_lint), Some(crl_lint), Some(ocsp_lint)) = (
        pkilint("lint_pkix_cert"),
        pkilint("lint_crl"),
        pkilint("lint_ocsp_response"),
    ) else {
        return;
    };
    let run = Running::start(None);
    let dir = run.dir.as_path();
    let data = run.data.clone();
    let (base, auth) = (run.base.clone(), run.auth.clone());
    for ca in ["root-ca.pem", "issuing-ca.pem", "ocsp-responder.pem"] {
        let findings = lint(&cert_lint, &[], &data.join(ca));
        assert!(findings.is_empty(), "{ca}: {findings:#?}");
    }
    assert!(
        openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "ec.key"
            ]
        )
        .0
    );
    assert!(
        openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "rsa.key"
            ]
        )
        .0
    );
    let mut last_serial = String::new();
    for (profile, subject) in [
        (
            "authentication",
            serde_json::json!({"common_name": "Alice A", "upn": "alice@example.org", "email": "alice@example.org"}),
        ),
        (
            "signature",
            serde_json::json!({"common_name": "Alice A", "email": "alice@example.org"}),
        ),
        (
            "encryption",
            serde_json::json!({"common_name": "Alice A", "email": "alice@example.org"}),
        ),
        (
            "card-authentication",
            serde_json::json!({"common_name": "Card 1", "card_uuid": "8f5c1f3a-1b2c-4d5e-8f90-1234567890ab"}),
        ),
    ] {
        for key in ["ec.key", "rsa.key"] {
            let csr_file = format!("{key}.csr");
            let (ok, text) = openssl(
                dir,
                &[
                    "req", "-new", "-key", key, "-subj", "/CN=card", "-out", &csr_file,
                ],
            );
            assert!(ok, "{text}");
            let csr = std::fs::read_to_string(dir.join(&csr_file)).unwrap();
            let body = serde_json::json!({ "profile": profile, "subject": subject, "csr": csr })
                .to_string();
            let (status, answer) = curl(&[
                "-X",
                "POST",
                "-H",
                &auth,
                "--data-binary",
                &body,
                &format!("{base}/api/v1/certificates"),
            ]);
            assert_eq!(status, 201, "{profile}: {answer}");
            let issued: serde_json::Value = serde_json::from_str(&answer).unwrap();
            last_serial = issued["serial"].as_str().unwrap().to_owned();
            let file = dir.join(format!("{profile}-{key}.pem"));
            std::fs::write(&file, issued["certificate"].as_str().unwrap()).unwrap();
            let findings = lint(&cert_lint, &[], &file);
            assert!(findings.is_empty(), "{profile} with {key}: {findings:#?}");
        }
    }
    // A CRL with an entry, and an OCSP response with a revoked status.
    let (status, _) = curl(&[
        "-X",
        "POST",
        "-H",
        &auth,
        "--data-binary",
        "{\"reason\": \"keyCompromise\"}",
        &format!("{base}/api/v1/certificates/{last_serial}/revocation"),
    ]);
    assert_eq!(status, 200);
    assert_eq!(
        curl(&[
            "-o",
            dir.join("crl.der").to_str().unwrap(),
            &format!("{base}/crl/issuing-ca-1.crl")
        ])
        .0,
        200
    );
    let findings = lint(
        &crl_lint,
        &["-t", "CRL", "-p", "PKIX"],
        &dir.join("crl.der"),
    );
    assert!(findings.is_empty(), "CRL: {findings:#?}");
    let (ok, text) = openssl(
        dir,
        &[
            "ocsp",
            "-issuer",
            "data/issuing-ca.pem",
            "-cert",
            "card-authentication-rsa.key.pem",
            "-url",
            &format!("{base}/ocsp"),
            "-respout",
            "ocsp.der",
            "-noverify",
        ],
    );
    assert!(ok, "{text}");
    let findings = lint(&ocsp_lint, &[], &dir.join("ocsp.der"));
    assert!(findings.is_empty(), "OCSP response: {findings:#?}");
}

#[test]
fn the_api_over_https_and_crl_and_ocsp_over_http() {
    if !peers() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    assert!(Command::new(ISSUER)
        .args(["init", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap()
        .status
        .success());
    let (http, https) = (free_port(), free_port());
    let _server = Kill(
        Command::new(ISSUER)
            .args([
                "serve",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{http}"),
                "--tls-listen",
                &format!("127.0.0.1:{https}"),
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The issuer's HTTPS is under its own TLS CA, apart from the workforce PKI.
    let root = data.join("tls-ca.pem");
    let api = format!("https://127.0.0.1:{https}/api/v1");
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(&[
        "--cacert",
        root.to_str().unwrap(),
        &format!("{api}/openapi.json"),
    ])
    .0 != 200
    {
        assert!(Instant::now() < deadline, "HTTPS server did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The certificate chains to our root for the name and the address init was given.
    for (name, check) in [
        ("localhost", "-verify_hostname"),
        ("127.0.0.1", "-verify_ip"),
    ] {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{https}"),
                "-servername",
                name,
            ])
            .args([
                check,
                name,
                "-CAfile",
                root.to_str().unwrap(),
                "-verify_return_error",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Verify return code: 0 (ok)"),
            "{name}: {text}"
        );
    }
    // ... and not to the workforce root: a card certificate's CA cannot vouch for it.
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{https}")])
        .args([
            "-CAfile",
            data.join("root-ca.pem").to_str().unwrap(),
            "-verify_return_error",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("Verify return code: 0 (ok)"),
        "the HTTPS certificate chains to the workforce root"
    );
    // Issuance over HTTPS.
    let csr = card_csr(dir, "k.pem");
    let body = serde_json::json!({ "profile": "authentication", "subject": { "common_name": "Tls T" }, "csr": csr }).to_string();
    let auth = format!(
        "Authorization: Bearer {}",
        std::fs::read_to_string(data.join("bootstrap-admin.token")).unwrap()
    );
    let (status, answer) = curl(&[
        "--cacert",
        root.to_str().unwrap(),
        "-H",
        &auth,
        "--data-binary",
        &body,
        &format!("{api}/certificates"),
    ]);
    assert_eq!(status, 201, "{answer}");
    // Plain HTTP serves relying parties only: the CRL yes, the API no.
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{http}/crl/issuing-ca-1.crl")]).0,
        200
    );
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{http}/api/v1/openapi.json")]).0,
        404
    );
}

#[test]
fn two_of_three_custodians_activate_the_ca_keys() {
    if !peers() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let out = Command::new(ISSUER)
        .args([
            "init",
            "--data-dir",
            data.to_str().unwrap(),
            "--custodians",
            "2-of-3",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !data.join("ca-activation.secret").exists(),
        "the whole secret was left in the directory"
    );
    // The custodians take their shares away.
    let mut shares = Vec::new();
    for i in 1..=3 {
        let share = dir.join(format!("custodian-{i}.share"));
        std::fs::rename(data.join(format!("custodian-{i}.share")), &share).unwrap();
        shares.push(share.to_str().unwrap().to_owned());
    }
    let port = free_port();
    let serve = |share_args: &[&str]| {
        let mut args = vec!["serve", "--data-dir", data.to_str().unwrap(), "--listen"];
        let listen = format!("127.0.0.1:{port}");
        args.push(&listen);
        for s in share_args {
            args.extend_from_slice(&["--share", s]);
        }
        Command::new(ISSUER)
            .args(&args)
            .env_remove("RUST_BACKTRACE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // One share is not enough, and says so.
    let out = serve(&[&shares[0]]).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("needs 2 custodian shares (2-of-3); 1 given"),
        "{err}"
    );
    // A damaged share does not unlock the token.
    let damaged = dir.join("damaged.share");
    let mut text = std::fs::read_to_string(&shares[1]).unwrap();
    let last = text.pop().unwrap();
    text.push(if last == '0' { '1' } else { '0' });
    std::fs::write(&damaged, text).unwrap();
    let out = serve(&[&shares[0], damaged.to_str().unwrap()])
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success(), "a damaged share activated the keys");
    // Any two of the three do.
    let _server = Kill(serve(&[&shares[2], &shares[0]]));
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(&[&format!("{base}/api/v1/openapi.json")]).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "server did not come up with two shares"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        curl(&[&format!("{base}/crl/issuing-ca-1.crl")]).0,
        200,
        "the CA key signed a CRL"
    );
}

/// The public listener runs one worker per core on SO_REUSEPORT sockets; a second issuer
/// started on the same port must still be refused, not silently share the connections.
#[test]
fn a_second_server_on_the_same_port_is_refused() {
    if !peers() {
        return;
    }
    let run = Running::start(None);
    let listen = run.base.trim_start_matches("http://").to_owned();
    let mut second = Kill(
        Command::new(ISSUER)
            .args([
                "serve",
                "--data-dir",
                run.data.to_str().unwrap(),
                "--listen",
                &listen,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "a second server runs on the same port"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut second.0.stderr.take().unwrap(), &mut text).unwrap();
    assert!(!status.success() && text.contains("listening on"), "{text}");
    // The first one still answers.
    assert_eq!(
        curl(&[
            &format!("{}/ca/issuing-ca-1.crt", run.base),
            "-o",
            "/dev/null"
        ])
        .0,
        200
    );
}

//! Helpers the issuer's test binaries share: running openssl and curl, requiring test
//! peers, and `serve` on a free loopback port.

#![allow(dead_code, unreachable_pub)]

pub mod card;
pub mod cli;

use std::path::Path;
use std::process::Command;

/// Runs openssl in `dir`; returns success and stdout+stderr.
pub fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Whether the programs and files a test needs exist; with `CI=true` a missing one fails.
pub fn require(programs: &[&str], files: &[&str]) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {p}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .chain(files.iter().copied().filter(|f| !Path::new(f).exists()))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("missing test peers: {missing:?} (deploy/dev/test.sh installs them)");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    false
}

/// A card's P-256 key made by openssl (as a card would) in `dir/<file>`; returns the PEM
/// SubjectPublicKeyInfo.
pub fn card_public_key(dir: &Path, file: &str) -> String {
    let (ok, text) = openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            file,
        ],
    );
    assert!(ok, "{text}");
    let (ok, pubkey) = openssl(dir, &["pkey", "-in", file, "-pubout"]);
    assert!(ok, "{pubkey}");
    pubkey
}

/// A card's P-256 key made by openssl in `dir/<file>`, and a PKCS#10 request signed by it
/// (the proof of possession the issuer asks for); returns the request, PEM.
pub fn card_csr(dir: &Path, file: &str) -> String {
    card_public_key(dir, file);
    let csr = format!("{file}.csr");
    let (ok, text) = openssl(
        dir,
        &[
            "req", "-new", "-key", file, "-subj", "/CN=card", "-out", &csr,
        ],
    );
    assert!(ok, "{text}");
    std::fs::read_to_string(dir.join(csr)).expect("request")
}

/// A child process killed (and reaped) when dropped: a server, before the directory it
/// works in goes.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// curl with `args`: the HTTP status (0 if none) and the body.
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until `ready`, for at most 30 s.
pub fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not come up"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `tessera-issuer serve` for the deployment in `data`, on a free loopback port named as
/// its public URL, with `extra` arguments, once `/readyz` answers; returns it and its base
/// URL.
pub fn serve(data: &Path, extra: &[&str]) -> (Kill, String) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = Kill(
        Command::new(env!("CARGO_BIN_EXE_tessera-issuer"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--public-url",
                &base,
            ])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tessera-issuer serve"),
    );
    wait_for("tessera-issuer serve", || {
        curl(&[&format!("{base}/readyz")]).0 == 200
    });
    (server, base)
}

/// The OCSP status of `serial` as `openssl ocsp` reports it: `good`, or `revoked` with the
/// reason.
pub fn ocsp(dir: &Path, base: &str, serial: &str) -> String {
    let (ok, text) = openssl(
        dir,
        &[
            "ocsp",
            "-issuer",
            "issuing.pem",
            "-serial",
            &format!("0x{serial}"),
            "-url",
            &format!("{base}/ocsp"),
            "-noverify",
            "-no_nonce",
            // The deadline test moves the server's clock by two days.
            "-validity_period",
            "259200",
        ],
    );
    assert!(ok, "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("0x"))
        .unwrap_or_default()
        .to_owned();
    let reason = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Reason: "))
        .map(|r| format!(" {r}"))
        .unwrap_or_default();
    format!("{}{reason}", line.rsplit(": ").next().unwrap_or_default())
}

/// Lets the deployment in `data` issue logon names (UPNs) in `domain`.
pub fn allow_upn_domain(data: &Path, domain: &str) {
    let config_path = data.join("issuer.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).expect("issuer.json"))
            .expect("issuer.json is JSON");
    config["upn_domains"] = serde_json::json!([domain]);
    std::fs::write(&config_path, config.to_string()).expect("writing issuer.json");
}

/// The issuing CA's certificate from the server at `base`, as `dir/issuing.pem` (what
/// `openssl ocsp` and `openssl verify` are given).
pub fn fetch_issuing_pem(dir: &Path, base: &str) {
    let (status, _) = curl(&[
        "-o",
        dir.join("issuing.der").to_str().expect("UTF-8 path"),
        &format!("{base}/ca/issuing-ca-1.crt"),
    ]);
    assert_eq!(status, 200);
    let (ok, text) = openssl(
        dir,
        &[
            "x509",
            "-inform",
            "DER",
            "-in",
            "issuing.der",
            "-out",
            "issuing.pem",
        ],
    );
    assert!(ok, "{text}");
}

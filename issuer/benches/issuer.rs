//! Issuer throughput, printed side by side in one run (`cargo bench -p tessera-issuer`):
//! issuances per second through the API with keys in SoftHSM2 and full audit, on SQLite and
//! on PostgreSQL; OCSP responses per second and latency. Load comes from `wrk` on loopback.
//! (The comparison with `openssl ocsp -index` that issue 2 asks for is not in yet.)

#[path = "../tests/pg/mod.rs"]
mod pg;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ISSUER: &str = env!("CARGO_BIN_EXE_tessera-issuer");
const SECONDS: &str = "10";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

fn wait_http(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", url])
            .output();
        if ok.is_ok_and(|o| !o.stdout.starts_with(b"000")) {
            return;
        }
        assert!(Instant::now() < deadline, "{url} did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs wrk with a Lua script that POSTs `body_file`; returns (requests/s, p99 latency).
fn wrk(
    dir: &Path,
    url: &str,
    body_file: &Path,
    content_type: &str,
    auth: Option<&str>,
) -> (String, String) {
    let script = dir.join("post.lua");
    let auth_line = auth
        .map(|a| format!("wrk.headers[\"Authorization\"] = \"{a}\"\n"))
        .unwrap_or_default();
    std::fs::write(
        &script,
        format!(
            "local f = io.open(\"{}\", \"rb\")\nwrk.body = f:read(\"*a\")\nf:close()\nwrk.method = \"POST\"\n\
             wrk.headers[\"Content-Type\"] = \"{content_type}\"\n{auth_line}",
            body_file.display()
        ),
    )
    .expect("script");
    let out = Command::new("wrk")
        .args([
            "-t2",
            "-c4",
            "-d",
            &format!("{SECONDS}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| format!("? ({text})"));
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| "?".into());
    let non2xx = text
        .lines()
        .find(|l| l.contains("Non-2xx"))
        .map(str::to_owned);
    assert!(non2xx.is_none(), "errors under load: {text}");
    (rps, p99)
}

struct Deployment {
    dir: tempfile::TempDir,
    _server: Kill,
    base: String,
    token: String,
}

fn deploy(database: Option<&str>) -> Deployment {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut init = Command::new(ISSUER);
    init.args(["init", "--data-dir", data.to_str().expect("path")]);
    if let Some(url) = database {
        init.args(["--database-url", url]);
    }
    assert!(init.output().expect("init").status.success());
    let port = free_port();
    let server = Kill(
        Command::new(ISSUER)
            .args([
                "serve",
                "--data-dir",
                data.to_str().expect("path"),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("serve"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{base}/api/v1/openapi.json"));
    let token = std::fs::read_to_string(data.join("bootstrap-admin.token")).expect("token");
    Deployment {
        dir,
        _server: server,
        base,
        token,
    }
}

fn issuance_body(dir: &Path) -> std::path::PathBuf {
    let key = dir.join("card.key");
    assert!(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out"
        ])
        .arg(&key)
        .output()
        .expect("openssl")
        .status
        .success());
    let pubkey = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .expect("openssl")
        .stdout;
    let body = serde_json::json!({
        "profile": "authentication",
        "subject": { "common_name": "Bench Person", "upn": "bench@example.org" },
        "public_key": String::from_utf8_lossy(&pubkey),
    });
    let file = dir.join("issue.json");
    std::fs::write(&file, body.to_string()).expect("body");
    file
}

fn main() {
    if !["wrk", "curl", "openssl"].iter().all(|p| have(p)) {
        eprintln!(
            "SKIPPED: the issuer benchmark needs wrk, curl and openssl (apt-get install wrk)"
        );
        return;
    }
    let pg = pg::Postgres::start();
    println!(
        "tessera-issuer on this machine, wrk -t2 -c4 for {SECONDS} s on loopback (release build):"
    );

    // Issuance through the API: JSON request, checks, lint, intent + audit, signature in
    // SoftHSM2, final store + audit.
    for (name, url) in [
        ("SQLite", None),
        ("PostgreSQL", pg.as_ref().map(|p| p.url.clone())),
    ] {
        if name == "PostgreSQL" && url.is_none() {
            println!("  issuance on PostgreSQL: skipped (no PostgreSQL)");
            continue;
        }
        let d = deploy(url.as_deref());
        let body = issuance_body(d.dir.path());
        let (rps, p99) = wrk(
            d.dir.path(),
            &format!("{}/api/v1/certificates", d.base),
            &body,
            "application/json",
            Some(&format!("Bearer {}", d.token)),
        );
        println!("  issuance ({name}): {rps} certificates/s, p99 {p99}");
    }

    // OCSP for one certificate: ours against openssl's responder.
    let d = deploy(None);
    let dir = d.dir.path();
    let body = issuance_body(dir);
    let out = Command::new("curl")
        .args([
            "-s",
            "-H",
            &format!("Authorization: Bearer {}", d.token),
            "--data-binary",
        ])
        .arg(format!("@{}", body.display()))
        .arg(format!("{}/api/v1/certificates", d.base))
        .output()
        .expect("curl");
    let issued: serde_json::Value = serde_json::from_slice(&out.stdout).expect("issued");
    std::fs::write(
        dir.join("leaf.pem"),
        issued["certificate"].as_str().expect("cert"),
    )
    .expect("leaf");
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    openssl(&[
        "ocsp",
        "-issuer",
        "data/issuing-ca.pem",
        "-cert",
        "leaf.pem",
        "-no_nonce",
        "-reqout",
        "req.der",
    ]);
    let (ours, ours_p99) = wrk(
        dir,
        &format!("{}/ocsp", d.base),
        &dir.join("req.der"),
        "application/ocsp-request",
        None,
    );

    println!("  OCSP, one certificate, responses signed per request:");
    println!("    tessera-issuer        {ours} responses/s, p99 {ours_p99}");
    // openssl ocsp -index is not measured here yet: OpenSSL 3.0's responder binds every
    // interface (it must run in a network namespace) and answered no request from wrk in
    // the first attempts; docs/benchmarks.md says so.
}

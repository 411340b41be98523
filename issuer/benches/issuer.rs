//! Issuer throughput, printed side by side in one run (`cargo bench -p tessera-issuer`):
//! issuances per second through the API with keys in SoftHSM2 and full audit, on SQLite and
//! on PostgreSQL; OCSP responses per second and latency, ours against `openssl ocsp -index`
//! answering for the same certificate. Load comes from `wrk` on loopback, and for the OCSP
//! comparison from one closed-loop generator (this binary) used against both responders.

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

/// A deployment and its server. Fields drop in order: the server stops before its
/// directory is removed (the other way round, a request still in flight finds the token
/// files gone).
struct Deployment {
    _server: Kill,
    dir: tempfile::TempDir,
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
        _server: server,
        dir,
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

/// A closed-loop load generator for the OCSP comparison: `conns` threads each POST the body
/// over a fresh connection (`Connection: close`, as OpenSSL's responder serves one request
/// per connection) for `seconds`; returns (responses/s, p99 latency). Used for both
/// responders, so they are measured alike.
fn load(addr: &str, path: &str, body: &[u8], seconds: u64, conns: usize) -> (f64, Duration) {
    use std::io::{Read, Write};
    let stop = Instant::now() + Duration::from_secs(seconds);
    let request = {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/ocsp-request\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let started = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let (addr, request) = (addr.to_owned(), request.clone());
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                while Instant::now() < stop {
                    let t = Instant::now();
                    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
                    s.write_all(&request).expect("send");
                    let mut answer = Vec::new();
                    s.read_to_end(&mut answer).expect("receive");
                    assert!(
                        answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200"),
                        "bad answer"
                    );
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("load thread"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let p99 = all.get(all.len() * 99 / 100).copied().unwrap_or_default();
    (all.len() as f64 / elapsed, p99)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Inner mode, run inside the network namespace of OpenSSL's responder.
    if args.get(1).map(String::as_str) == Some("--load") {
        let body = std::fs::read(&args[3]).expect("body");
        let (rps, p99) = load(&args[2], "/", &body, SECONDS.parse().expect("seconds"), 4);
        println!("{rps:.0} {:.2}", p99.as_secs_f64() * 1000.0);
        return;
    }
    if !["wrk", "curl", "openssl", "unshare"]
        .iter()
        .all(|p| have(p))
    {
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
    let req = std::fs::read(dir.join("req.der")).expect("request");
    let ours_addr = d.base.trim_start_matches("http://").to_owned();
    let (ours_close, ours_close_p99) = load(
        &ours_addr,
        "/ocsp",
        &req,
        SECONDS.parse().expect("seconds"),
        4,
    );

    // openssl ocsp -index answering for the same certificate with a software responder key.
    // It binds every interface, so it runs in a network namespace of its own (loopback only)
    // together with the same load generator (this binary, --load).
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "rsp.key",
        "-out",
        "rsp.pem",
        "-subj",
        "/CN=openssl responder",
        "-days",
        "1",
    ]);
    let serial = openssl(&["x509", "-in", "leaf.pem", "-noout", "-serial"]);
    let serial = serial.trim().trim_start_matches("serial=").to_owned();
    std::fs::write(
        dir.join("index.txt"),
        format!("V\t491231235959Z\t\t{serial}\tunknown\t/CN=Bench Person\n"),
    )
    .expect("index");
    let me = std::env::current_exe().expect("own path");
    let script = format!(
        "ip link set lo up && (openssl ocsp -index index.txt -port 18999 -rsigner rsp.pem -rkey rsp.key \
         -CA data/issuing-ca.pem >/dev/null 2>&1 &) && sleep 0.5 && exec '{}' --load 127.0.0.1:18999 req.der",
        me.display()
    );
    let out = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--net",
            "--pid",
            "--fork",
            "--kill-child",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .current_dir(dir)
        .output()
        .expect("unshare");
    let theirs = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts = theirs.split_whitespace();
    let (theirs_rps, theirs_p99) = (
        parts.next().unwrap_or("?").to_owned(),
        parts.next().unwrap_or("?").to_owned(),
    );

    println!("  OCSP, one certificate, responses signed per request:");
    println!("    tessera-issuer, wrk keep-alive        {ours} responses/s, p99 {ours_p99}");
    println!(
        "    tessera-issuer, new connection each   {ours_close:.0} responses/s, p99 {:.2}ms",
        ours_close_p99.as_secs_f64() * 1000.0
    );
    println!(
        "    openssl ocsp -index, new connection   {theirs_rps} responses/s, p99 {theirs_p99}ms"
    );
}

//! Issuer throughput, printed side by side in one run (`cargo bench -p tessera-issuer`):
//! issuances per second through the API with keys in SoftHSM2 and full audit, on SQLite and
//! on PostgreSQL; OCSP responses per second and latency, ours against `openssl ocsp -index`
//! answering for the same certificate; OCSP over 100 000 distinct certificates (misses and
//! hits); CRL generation against `openssl ca -gencrl`; revocation latency with a million
//! revoked certificates (to OCSP "revoked" and to a CRL that lists it); the registration
//! authority on PostgreSQL: 100 000 people imported from CSV by the `tessera` CLI, and
//! carrier transitions (suspend, resume) per second through the API. Load comes from
//! `wrk` on loopback, and for OCSP from one closed-loop generator (this binary) used
//! against both responders.

#[path = "../tests/pg/mod.rs"]
mod pg;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ISSUER: &str = env!("CARGO_BIN_EXE_tessera-issuer");
const SECONDS: &str = "10";
/// Concurrent OCSP clients.
const CLIENTS: usize = 16;

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
    deploy_with(database, |_| {})
}

/// [`deploy`], with `prepare` run on the data directory between `init` and `serve`.
fn deploy_with(database: Option<&str>, prepare: impl FnOnce(&Path)) -> Deployment {
    deploy_serving(database, prepare, &[])
}

/// [`deploy_with`], `serve` given `extra` arguments.
fn deploy_serving(
    database: Option<&str>,
    prepare: impl FnOnce(&Path),
    extra: &[&str],
) -> Deployment {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut init = Command::new(ISSUER);
    init.args(["init", "--data-dir", data.to_str().expect("path")]);
    init.args(["--upn-domain", "example.org"]);
    if let Some(url) = database {
        init.args(["--database-url", url]);
    }
    assert!(init.output().expect("init").status.success());
    prepare(&data);
    let port = free_port();
    let server = Kill(
        Command::new(ISSUER)
            .args([
                "serve",
                "--data-dir",
                data.to_str().expect("path"),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--public-url",
                &format!("http://127.0.0.1:{port}"),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
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
    // The proof of possession every issuance carries: a PKCS#10 request signed by the key.
    let csr = Command::new("openssl")
        .args(["req", "-new", "-subj", "/CN=card", "-key"])
        .arg(&key)
        .output()
        .expect("openssl")
        .stdout;
    let body = serde_json::json!({
        "profile": "authentication",
        "subject": { "common_name": "Bench Person", "upn": "bench@example.org" },
        "csr": String::from_utf8_lossy(&csr),
    });
    let file = dir.join("issue.json");
    std::fs::write(&file, body.to_string()).expect("body");
    file
}

/// A closed-loop load generator for the OCSP comparison, built like `wrk -t1`: one thread
/// drives `conns` connections, each POSTing the body and waiting for the answer, for
/// `seconds`; returns (responses/s, p99 latency). With `keep_alive` a connection is reused
/// while the server keeps it open (HTTP/1.1 without `Connection: close`); OpenSSL's
/// responder answers in HTTP/1.0 and closes, so against it every request pays a new
/// connection either way. (`wrk` itself cannot read OpenSSL's answers.) Used for both
/// responders, so they are measured alike.
fn load(
    addr: &str,
    path: &str,
    body: &[u8],
    seconds: u64,
    conns: usize,
    keep_alive: bool,
) -> (f64, Duration) {
    load_many(addr, path, &[body.to_vec()], seconds, conns, keep_alive)
}

/// [`load`] over several bodies, sent in turn (each client takes the next one): distinct
/// requests, for the cache's misses.
fn load_many(
    addr: &str,
    path: &str,
    bodies: &[Vec<u8>],
    seconds: u64,
    conns: usize,
    keep_alive: bool,
) -> (f64, Duration) {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let requests: Vec<Vec<u8>> = bodies
        .iter()
        .map(|body| {
            let mut request = format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/ocsp-request\r\n\
                 Content-Length: {}\r\nConnection: {connection}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            request.extend_from_slice(body);
            request
        })
        .collect();
    let requests = std::sync::Arc::new(requests);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let stop = started + Duration::from_secs(seconds);
    let mut all: Vec<Duration> = runtime.block_on(async {
        let clients: Vec<_> = (0..conns)
            .map(|_| {
                let (addr, requests, next) = (
                    addr.to_owned(),
                    std::sync::Arc::clone(&requests),
                    std::sync::Arc::clone(&next),
                );
                tokio::spawn(client(addr, requests, next, stop, keep_alive))
            })
            .collect();
        let mut all = Vec::new();
        for c in clients {
            all.extend(c.await.expect("load client"));
        }
        all
    });
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let p99 = all.get(all.len() * 99 / 100).copied().unwrap_or_default();
    (all.len() as f64 / elapsed, p99)
}

/// The header block's length (with its blank line), the body's Content-Length and whether
/// the connection may be reused. Parsed without allocating: the generator's own cost is
/// part of every figure it prints.
fn head(block: &[u8]) -> (usize, usize, bool) {
    let mut lines = block
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status = lines.next().unwrap_or_default();
    assert!(
        status.windows(5).any(|w| w == b" 200 "),
        "bad answer: {}",
        String::from_utf8_lossy(status)
    );
    let (mut length, mut reuse) = (None, status.starts_with(b"HTTP/1.1"));
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        } else if name.eq_ignore_ascii_case(b"connection") && value.eq_ignore_ascii_case(b"close") {
            reuse = false;
        }
    }
    (block.len() + 4, length.expect("a Content-Length"), reuse)
}

/// One connection's closed loop: send, read the whole answer, record the latency.
async fn client(
    addr: String,
    requests: std::sync::Arc<Vec<Vec<u8>>>,
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: Instant,
    keep_alive: bool,
) -> Vec<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut latencies = Vec::new();
    let mut conn: Option<tokio::net::TcpStream> = None;
    let mut buf = Vec::with_capacity(8192);
    while Instant::now() < stop {
        let t = Instant::now();
        let stream = match &mut conn {
            Some(s) => s,
            None => {
                let s = tokio::net::TcpStream::connect(&addr)
                    .await
                    .expect("connect");
                s.set_nodelay(true).expect("nodelay");
                conn.insert(s)
            }
        };
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % requests.len();
        stream.write_all(&requests[i]).await.expect("send");
        buf.clear();
        let (head_len, length, reuse) = loop {
            assert!(
                stream.read_buf(&mut buf).await.expect("receive") > 0,
                "closed early"
            );
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break head(&buf[..end]);
            }
        };
        while buf.len() < head_len + length {
            assert!(
                stream.read_buf(&mut buf).await.expect("receive") > 0,
                "closed early"
            );
        }
        assert_eq!(buf.get(head_len), Some(&0x30), "not an OCSP response");
        latencies.push(t.elapsed());
        if !(keep_alive && reuse) {
            conn = None;
        }
    }
    latencies
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Inner mode, run inside the network namespace of OpenSSL's responder.
    if args.get(1).map(String::as_str) == Some("--load") {
        let body = std::fs::read(&args[3]).expect("body");
        let (rps, p99) = load(
            &args[2],
            "/",
            &body,
            SECONDS.parse().expect("seconds"),
            CLIENTS,
            true,
        );
        println!("{rps:.0} {:.2}", p99.as_secs_f64() * 1000.0);
        return;
    }
    if !["wrk", "curl", "openssl", "unshare"]
        .iter()
        .all(|p| have(p))
        || !Path::new("/usr/bin/time").exists()
    {
        eprintln!(
            "SKIPPED: the issuer benchmark needs wrk, curl, openssl and GNU time \
             (apt-get install wrk time)"
        );
        return;
    }
    // `cargo bench -p tessera-issuer -- ocsp` runs only the sections naming "ocsp".
    let only = args.iter().skip(1).find(|a| !a.starts_with('-'));
    println!("tessera-issuer on this machine (release build, load on loopback):");
    let sections: [(&str, fn()); 7] = [
        ("issuance", issuance),
        ("ocsp", ocsp),
        ("ocsp-many", ocsp_many),
        ("crl", crl),
        ("revocation", revocation),
        ("ra", ra),
        ("portal", portal),
    ];
    for (name, section) in sections {
        if only.is_none_or(|o| name.contains(o.as_str())) {
            section();
        }
    }
}

/// Issuance through the API: JSON request, checks, lint, intent + audit, signature in
/// SoftHSM2, final store + audit; `wrk -t2 -c4`.
fn issuance() {
    let pg = pg::Postgres::start();
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
        println!("  issuance ({name}, wrk -t2 -c4, {SECONDS} s): {rps} certificates/s, p99 {p99}");
    }
}

/// OCSP for one certificate: ours (pre-signed and signed per request) against
/// `openssl ocsp -index`, with the same load generator.
fn ocsp() {
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
    openssl(&[
        "ocsp",
        "-issuer",
        "data/issuing-ca.pem",
        "-cert",
        "leaf.pem",
        "-reqout",
        "nonce-req.der",
    ]);
    let seconds: u64 = SECONDS.parse().expect("seconds");
    let ours_addr = d.base.trim_start_matches("http://").to_owned();
    let req = std::fs::read(dir.join("req.der")).expect("request");
    let nonce_req = std::fs::read(dir.join("nonce-req.der")).expect("request");
    // Pre-signed (RFC 5019 request: one certificate, no nonce), then signed per request (a
    // nonce must be echoed, so every answer is signed in SoftHSM2).
    let ours_kept = load(&ours_addr, "/ocsp", &req, seconds, CLIENTS, true);
    let ours_new = load(&ours_addr, "/ocsp", &req, seconds, CLIENTS, false);
    let ours_signed = load(&ours_addr, "/ocsp", &nonce_req, seconds, CLIENTS, true);

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

    let theirs_rps: f64 = theirs_rps.parse().unwrap_or(0.0);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("  OCSP, one certificate, {CLIENTS} closed-loop clients for {SECONDS} s:");
    for (what, (rps, p99)) in [
        ("tessera, pre-signed, keep-alive     ", ours_kept),
        ("tessera, pre-signed, new connection ", ours_new),
        ("tessera, signed each (nonce)        ", ours_signed),
    ] {
        println!(
            "    {what} {rps:>7.0} responses/s, p99 {:.2} ms, {:.1}x openssl",
            ms(p99),
            rps / theirs_rps
        );
    }
    println!(
        "    openssl ocsp -index (new connection) {theirs_rps:>7.0} responses/s, p99 {theirs_p99} ms"
    );
}

/// The revoked certificate `i` of the CRL benchmark: a 16-byte positive serial (hex), and
/// a reason (none for a third, keyCompromise, superseded).
fn revoked(i: usize) -> (String, Option<&'static str>) {
    use sha2::Digest;
    let mut serial = sha2::Sha256::digest(i.to_be_bytes())[..16].to_vec();
    serial[0] = (serial[0] & 0x3f) | 0x40;
    let reason = [None, Some("keyCompromise"), Some("superseded")][i % 3];
    (hex::encode(serial), reason)
}

/// When every benchmark certificate was revoked: 2026-11-01T00:00:00Z.
const REVOKED_AT: i64 = 1_793_491_200;

/// Runs `command` under GNU time; returns (seconds, peak resident KiB) and its stdout.
fn timed(command: &mut Command, dir: &Path) -> (f64, u64, String) {
    let report = dir.join("time.txt");
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
    let out = Command::new("/usr/bin/time")
        .arg("-o")
        .arg(&report)
        .args(["-f", "%e %M"])
        .arg(program)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("/usr/bin/time");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&report).expect("time report");
    let mut parts = text.split_whitespace();
    (
        parts.next().and_then(|v| v.parse().ok()).expect("seconds"),
        parts.next().and_then(|v| v.parse().ok()).expect("KiB"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// CRL generation of 100 k and 1 M entries: `tessera-issuer crl` (database read in pages,
/// streaming encoder, signature in SoftHSM2) against `openssl ca -gencrl` over an index of
/// the same serials, reasons and times, each timed by GNU time as its own process.
fn crl() {
    println!("  CRL generation (time and peak memory of the whole process):");
    for n in [100_000usize, 1_000_000] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let data = dir.join("data");
        assert!(Command::new(ISSUER)
            .args(["init", "--data-dir"])
            .arg(&data)
            .output()
            .expect("init")
            .status
            .success());

        // n revoked certificates, written straight into the deployment's database.
        let inserted = insert_certificates(&data, n, true);

        let (ours_s, ours_kib, said) = timed(
            Command::new(ISSUER).args(["crl", "--data-dir", "data", "--out", "ours.crl"]),
            dir,
        );
        let ours = std::fs::read(dir.join("ours.crl")).expect("our CRL");
        let parsed = <x509_cert::crl::CertificateList as der::Decode>::from_der(&ours)
            .expect("our CRL parses");
        let entries = parsed
            .tbs_cert_list
            .revoked_certificates
            .as_ref()
            .map_or(0, Vec::len);
        assert_eq!(entries, n, "{said}");
        drop(parsed);
        let verify = Command::new("openssl")
            .args([
                "crl", "-inform", "DER", "-in", "ours.crl", "-noout", "-CAfile",
            ])
            .arg(data.join("issuing-ca.pem"))
            .current_dir(dir)
            .output()
            .expect("openssl crl");
        assert!(
            String::from_utf8_lossy(&verify.stderr).contains("verify OK"),
            "openssl does not verify our CRL: {}",
            String::from_utf8_lossy(&verify.stderr)
        );

        // openssl ca -gencrl over the same entries, with a software P-256 key.
        let mut index = String::with_capacity(n * 90);
        for i in 0..n {
            let (serial, reason) = revoked(i);
            let reason = reason.map(|r| format!(",{r}")).unwrap_or_default();
            index.push_str(&format!(
                "R\t271231000000Z\t261101000000Z{reason}\t{}\tunknown\t/CN=Bench {i}\n",
                serial.to_ascii_uppercase()
            ));
        }
        std::fs::write(dir.join("index.txt"), index).expect("index");
        std::fs::write(dir.join("index.txt.attr"), "unique_subject = no\n").expect("attr");
        std::fs::write(dir.join("crlnumber"), "01\n").expect("crlnumber");
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\ndefault_ca = bench\n[bench]\ndatabase = index.txt\ncrlnumber = crlnumber\n\
             certificate = ca.pem\nprivate_key = ca.key\ndefault_md = sha256\ndefault_crl_days = 1\n",
        )
        .expect("config");
        assert!(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=openssl bench CA",
                "-days",
                "1",
            ])
            .current_dir(dir)
            .output()
            .expect("openssl req")
            .status
            .success());
        let (theirs_s, theirs_kib, _) = timed(
            Command::new("openssl").args([
                "ca",
                "-gencrl",
                "-batch",
                "-config",
                "ca.cnf",
                "-out",
                "theirs.pem",
            ]),
            dir,
        );
        // openssl ca writes PEM only; its DER size, for comparison.
        let der = Command::new("openssl")
            .args(["crl", "-in", "theirs.pem", "-outform", "DER"])
            .current_dir(dir)
            .output()
            .expect("openssl crl");
        assert!(der.status.success(), "openssl's own CRL does not parse");
        let theirs = der.stdout.len();
        println!(
            "    {n:>9} entries: tessera-issuer crl {ours_s:>5.2} s, {:>4} MB peak, {:.1} MB CRL; \
             openssl ca -gencrl {theirs_s:>5.2} s, {:>4} MB peak, {:.1} MB CRL \
             (rows inserted in {:.1} s)",
            ours_kib / 1024,
            ours.len() as f64 / 1e6,
            theirs_kib / 1024,
            theirs as f64 / 1e6,
            inserted.as_secs_f64(),
        );
    }
}

/// Writes `n` rows straight into a deployment's certificates table (SQLite): issued and
/// valid (`revoked` false) or revoked on [`REVOKED_AT`] with [`revoked`]'s reasons. Their TBS
/// is a placeholder; the status, CRL and OCSP paths read only these columns.
fn insert_certificates(data: &Path, n: usize, revoked_rows: bool) -> Duration {
    use diesel::RunQueryDsl;
    let config = tessera_issuer_types::config::Config::load(data).expect("config");
    let store =
        tessera_issuer_store::Store::open_configured(&config.database, data).expect("database");
    let mut conn = store.raw().expect("database");
    let not_after = REVOKED_AT + 400 * 86_400;
    let started = Instant::now();
    diesel::sql_query("BEGIN")
        .execute(&mut *conn)
        .expect("begin");
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|&i| {
                let (serial, reason) = revoked(i);
                if revoked_rows {
                    format!(
                        "('{serial}', 'issuing', 'authentication', 'issued', X'00', NULL, \
                         {not_after}, {REVOKED_AT}, '{}', {REVOKED_AT})",
                        reason.unwrap_or("unspecified")
                    )
                } else {
                    format!(
                        "('{serial}', 'issuing', 'authentication', 'issued', X'00', NULL, \
                         {not_after}, NULL, NULL, {REVOKED_AT})"
                    )
                }
            })
            .collect();
        diesel::sql_query(format!(
            "INSERT INTO certificates (serial, authority, profile, status, tbs, certificate, \
             not_after, revoked_at, revocation_reason, created_at) VALUES {}",
            values.join(",")
        ))
        .execute(&mut *conn)
        .expect("insert");
    }
    diesel::sql_query("COMMIT")
        .execute(&mut *conn)
        .expect("commit");
    started.elapsed()
}

/// An RFC 5019 OCSP request (SHA-1 CertID, no nonce) for `serial` under the issuing CA.
fn ocsp_request(issuing: &x509_cert::Certificate, serial: &str) -> Vec<u8> {
    use der::Encode;
    use sha1::Digest;
    let name = issuing.tbs_certificate.subject.to_der().expect("name");
    let key = issuing
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let id = x509_ocsp::CertId {
        hash_algorithm: spki::AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::ID_SHA_1,
            parameters: Some(der::asn1::Null.into()),
        },
        issuer_name_hash: der::asn1::OctetString::new(sha1::Sha1::digest(&name).to_vec())
            .expect("hash"),
        issuer_key_hash: der::asn1::OctetString::new(sha1::Sha1::digest(key).to_vec())
            .expect("hash"),
        serial_number: x509_cert::serial_number::SerialNumber::new(
            &hex::decode(serial).expect("serial"),
        )
        .expect("serial"),
    };
    x509_ocsp::OcspRequest {
        tbs_request: x509_ocsp::TbsRequest {
            version: x509_ocsp::Version::V1,
            requestor_name: None,
            request_list: vec![x509_ocsp::Request {
                req_cert: id,
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    }
    .to_der()
    .expect("request")
}

fn issuing_certificate(data: &Path) -> x509_cert::Certificate {
    let pem = std::fs::read(data.join("issuing-ca.pem")).expect("issuing CA");
    let (_, der) = der::pem::decode_vec(&pem).expect("PEM");
    <x509_cert::Certificate as der::Decode>::from_der(&der).expect("certificate")
}

/// OCSP over 100 000 distinct certificates: the first pass through them misses the cache
/// (each answer is signed in SoftHSM2), later passes hit it.
fn ocsp_many() {
    const N: usize = 100_000;
    let d = deploy_with(None, |data| {
        insert_certificates(data, N, false);
    });
    let issuing = issuing_certificate(&d.dir.path().join("data"));
    let bodies: Vec<Vec<u8>> = (0..N)
        .map(|i| ocsp_request(&issuing, &revoked(i).0))
        .collect();
    let addr = d.base.trim_start_matches("http://").to_owned();
    let seconds: u64 = SECONDS.parse().expect("seconds");
    // Misses: a fresh server, every request a certificate not yet answered (10 s covers far
    // fewer than 100 000 of them).
    let misses = load_many(&addr, "/ocsp", &bodies, seconds, CLIENTS, true);
    // Hits: the certificates the first pass answered, again.
    let answered = ((misses.0 * seconds as f64) as usize).clamp(1, N);
    let hits = load_many(&addr, "/ocsp", &bodies[..answered], seconds, CLIENTS, true);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("  OCSP over {N} distinct certificates, {CLIENTS} clients, keep-alive:");
    println!(
        "    cache misses (signed in SoftHSM2) {:>7.0} responses/s, p99 {:.2} ms",
        misses.0,
        ms(misses.1)
    );
    println!(
        "    cache hits ({answered} answered)   {:>7.0} responses/s, p99 {:.2} ms",
        hits.0,
        ms(hits.1)
    );
}

/// Revocation latency with 1 000 000 revoked certificates on the CRL: the revocation call,
/// then until OCSP (cached "good" before) answers "revoked", then until a CRL that lists it
/// is published (default 2 s delay, then the whole CRL re-signed).
fn revocation() {
    use diesel::RunQueryDsl;
    const N: usize = 1_000_000;
    let d = deploy_with(None, |data| {
        insert_certificates(data, N, true);
    });
    let data = d.dir.path().join("data");
    let body = issuance_body(d.dir.path());
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
    let serial = issued["serial"].as_str().expect("serial").to_owned();
    let issuing = issuing_certificate(&data);
    let request = ocsp_request(&issuing, &serial);
    let addr = d.base.trim_start_matches("http://").to_owned();
    let ocsp_status = |conn: &mut std::net::TcpStream| -> u8 {
        use std::io::{Read, Write};
        let mut req = format!(
            "POST /ocsp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/ocsp-request\r\n\
             Content-Length: {}\r\n\r\n",
            request.len()
        )
        .into_bytes();
        req.extend_from_slice(&request);
        conn.write_all(&req).expect("send");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = conn.read(&mut chunk).expect("receive");
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let (head_len, length, _) = head(&buf[..end]);
                if buf.len() >= head_len + length {
                    let der = &buf[head_len..head_len + length];
                    let resp =
                        <x509_ocsp::OcspResponse as der::Decode>::from_der(der).expect("response");
                    let basic = <x509_ocsp::BasicOcspResponse as der::Decode>::from_der(
                        resp.response_bytes.expect("bytes").response.as_bytes(),
                    )
                    .expect("basic");
                    return match basic.tbs_response_data.responses[0].cert_status {
                        x509_ocsp::CertStatus::Good(_) => 0,
                        x509_ocsp::CertStatus::Revoked(_) => 1,
                        x509_ocsp::CertStatus::Unknown(_) => 2,
                    };
                }
            }
        }
    };
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    conn.set_nodelay(true).expect("nodelay");
    assert_eq!(ocsp_status(&mut conn), 0, "good before");
    let config = tessera_issuer_types::config::Config::load(&data).expect("config");
    let store =
        tessera_issuer_store::Store::open_configured(&config.database, &data).expect("database");
    #[derive(diesel::QueryableByName)]
    struct Newest {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let newest = || -> i64 {
        diesel::sql_query("SELECT COALESCE(MAX(number), 0) AS n FROM crls")
            .get_result::<Newest>(&mut *store.raw().expect("database"))
            .expect("crls")
            .n
    };
    // The CRL published at start-up (all N entries) first.
    let deadline = Instant::now() + Duration::from_secs(120);
    while newest() == 0 {
        assert!(Instant::now() < deadline, "no CRL at start-up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = newest();
    let started = Instant::now();
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Authorization: Bearer {}", d.token),
        ])
        .args(["--data-binary", "{\"reason\": \"keyCompromise\"}"])
        .arg(format!(
            "{}/api/v1/certificates/{serial}/revocation",
            d.base
        ))
        .output()
        .expect("curl");
    let call = started.elapsed();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    while ocsp_status(&mut conn) != 1 {
        std::thread::sleep(Duration::from_millis(2));
    }
    let ocsp = started.elapsed();
    while newest() == before {
        std::thread::sleep(Duration::from_millis(20));
    }
    let crl = started.elapsed();
    let served = Command::new("curl")
        .args(["-s", &format!("{}/crl/issuing-ca-1.crl", d.base)])
        .output()
        .expect("curl")
        .stdout;
    let parsed = <x509_cert::crl::CertificateList as der::Decode>::from_der(&served).expect("CRL");
    let listed = parsed
        .tbs_cert_list
        .revoked_certificates
        .unwrap_or_default()
        .iter()
        .any(|r| hex::encode(r.serial_number.as_bytes()) == serial);
    assert!(listed, "the new CRL does not list the revocation");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("  Revocation with {N} revoked certificates on the CRL (curl, SQLite):");
    println!(
        "    revocation call answered            {:>8.1} ms",
        ms(call)
    );
    println!(
        "    OCSP answers \"revoked\"              {:>8.1} ms",
        ms(ocsp)
    );
    println!(
        "    a CRL listing it published          {:>8.1} ms ({} bytes; 2 s publication delay included)",
        ms(crl),
        served.len()
    );
}

/// The `tessera` CLI (another package), built like this binary if `cargo bench` did not.
fn cli() -> std::path::PathBuf {
    let path = Path::new(ISSUER).with_file_name("tessera");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "tessera-cli", "--bin", "tessera"]);
        if ISSUER.contains("/release/") {
            build.arg("--release");
        }
        assert!(build.status().expect("cargo").success(), "building tessera");
    }
    path
}

/// One HTTP/1.1 request on a kept-alive connection (setting up thousands of records
/// without a process per call): (status, body).
fn http(
    conn: &mut std::io::BufReader<std::net::TcpStream>,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, String) {
    use std::io::{BufRead, Read, Write};
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.get_mut()
        .write_all(request.as_bytes())
        .expect("request");
    let mut status = String::new();
    conn.read_line(&mut status).expect("status");
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut length = 0;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).expect("header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut answer = vec![0; length];
    conn.read_exact(&mut answer).expect("body");
    (code, String::from_utf8_lossy(&answer).into_owned())
}

fn ok_json(answer: (u16, String), what: &str) -> serde_json::Value {
    assert!(
        (200..300).contains(&answer.0),
        "{what}: {} {}",
        answer.0,
        answer.1
    );
    serde_json::from_str(&answer.1).expect("json")
}

/// A valid personnummer (twelve digits) for person `i`: a date from 1950 on, a serial, and
/// the Luhn digit.
fn personnummer(i: usize) -> String {
    let day = i % 28 + 1;
    let month = (i / 28) % 12 + 1;
    let year = 1950 + (i / 336) % 50;
    let serial = (i / 16_800) % 1000;
    let nine = format!("{:02}{month:02}{day:02}{serial:03}", year % 100);
    let check = tessera_issuer_types::identity::check_digit(nine.as_bytes()) as char;
    format!("{}{nine}{check}", year / 100)
}

/// Peak resident memory of a running process (VmHWM), MiB.
fn peak_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The issuing desk of a fresh deployment: the first administrator (from the bootstrap
/// token), HR and two registration officers, by their tokens.
struct Desk {
    admin: String,
    hr: String,
    anna: String,
    bo: String,
}

impl Desk {
    fn new(addr: &str, bootstrap: &str) -> Self {
        let mut conn =
            std::io::BufReader::new(std::net::TcpStream::connect(addr).expect("connect"));
        let first = ok_json(
            http(
                &mut conn,
                "POST",
                "/api/v1/officers",
                bootstrap,
                r#"{"id":"admin","display_name":"Admin","roles":["administrator"]}"#,
            ),
            "first administrator",
        );
        let admin = first["first_token"]["token"]
            .as_str()
            .expect("token")
            .to_owned();
        let mut officer = |id: &str, role: &str| officer(&mut conn, &admin, id, role, None);
        let (hr, anna, bo) = (
            officer("hr", "hr_admin"),
            officer("anna", "registration_officer"),
            officer("bo", "registration_officer"),
        );
        Self {
            admin,
            hr,
            anna,
            bo,
        }
    }
}

/// A new officer's token (with `person`: the officer's own person record).
fn officer(
    conn: &mut std::io::BufReader<std::net::TcpStream>,
    admin: &str,
    id: &str,
    role: &str,
    person: Option<&str>,
) -> String {
    let person = person.map_or_else(String::new, |p| format!(r#","person_id":"{p}""#));
    ok_json(
        http(
            conn,
            "POST",
            "/api/v1/officers",
            admin,
            &format!(r#"{{"id":"{id}","display_name":"{id}","roles":["{role}"]{person}}}"#),
        ),
        "officer",
    )["first_token"]["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

/// `n` people imported from a CSV file by the `tessera` CLI (dry-run check included):
/// (seconds, the CLI's peak memory in KiB).
fn import_people(d: &Deployment, hr: &str, n: usize) -> (f64, u64) {
    let csv = d.dir.path().join("hr.csv");
    let mut text =
        String::from("employee_number,given_name,family_name,email,upn,identity_number\n");
    for i in 0..n {
        text.push_str(&format!(
            "P{i:06},Given{i},Family{i},p{i}@example.org,p{i}@example.org,{}\n",
            personnummer(i)
        ));
    }
    std::fs::write(&csv, text).expect("csv");
    let token_file = d.dir.path().join("hr.token");
    std::fs::write(&token_file, hr).expect("token file");
    let (secs, cli_kib, out) = timed(
        Command::new(cli()).args([
            "--url",
            &d.base,
            "--token-file",
            token_file.to_str().expect("path"),
            "import",
            csv.to_str().expect("path"),
        ]),
        d.dir.path(),
    );
    assert!(out.contains(&format!("imported {n} new")), "{out}");
    (secs, cli_kib)
}

/// An active smart card for `person` (as the API lists people): proofed, registered,
/// assigned, approved by the second officer, keys from `keys`, handed over. Its id.
fn active_card(
    conn: &mut std::io::BufReader<std::net::TcpStream>,
    desk: &Desk,
    p: &serde_json::Value,
    serial: &str,
    keys: &str,
) -> String {
    let (anna, bo) = (desk.anna.as_str(), desk.bo.as_str());
    let person = p["id"].as_str().expect("id");
    // The document shows the registered identity data.
    let mut proofing = serde_json::json!({
        "document_type": "passport",
        "document_number": "X1",
        "issuing_country": "SE",
        "document_expiry": "2099-01-01",
        "place": "bench",
    });
    for k in ["identity_number", "non_resident"] {
        if !p[k].is_null() {
            proofing[k] = p[k].clone();
        }
    }
    ok_json(
        http(
            conn,
            "POST",
            &format!("/api/v1/people/{person}/proofing"),
            anna,
            &proofing.to_string(),
        ),
        "proof",
    );
    let c = ok_json(
        http(
            conn,
            "POST",
            "/api/v1/carriers",
            anna,
            &format!(r#"{{"kind":"smart_card","serial_number":"{serial}"}}"#),
        ),
        "carrier",
    );
    let id = c["id"].as_str().expect("id").to_owned();
    let a = ok_json(
        http(
            conn,
            "POST",
            &format!("/api/v1/carriers/{id}/assignment"),
            anna,
            &format!(r#"{{"person_id":"{person}","terms_version":"1"}}"#),
        ),
        "assign",
    );
    let approval = a["id"].as_str().expect("id").to_owned();
    ok_json(
        http(
            conn,
            "POST",
            &format!("/api/v1/approvals/{approval}/approval"),
            bo,
            "",
        ),
        "approve",
    );
    ok_json(
        http(
            conn,
            "POST",
            &format!("/api/v1/carriers/{id}/keys"),
            anna,
            keys,
        ),
        "keys",
    );
    ok_json(
        http(
            conn,
            "POST",
            &format!("/api/v1/carriers/{id}/activation"),
            anna,
            r#"{"receipt":"bench"}"#,
        ),
        "activate",
    );
    id
}

/// The registration authority on PostgreSQL: 100 000 people from a CSV file through the
/// `tessera` CLI (checked in dry runs, then imported in batches of 1 000), timed with GNU
/// time; then 1 000 active carriers suspended and resumed under `wrk -t1 -c4` (each
/// transition: the carrier, its certificate's hold or release, the outbox, three audit
/// records, in one transaction).
fn ra() {
    let Some(pg) = pg::Postgres::start() else {
        println!("ra: SKIPPED (no PostgreSQL server binaries)");
        return;
    };
    let d = deploy(Some(&pg.url));
    let server_pid = d._server.0.id();
    let addr = d.base.trim_start_matches("http://").to_owned();
    let desk = Desk::new(&addr, d.token.trim());

    // 100 000 people from CSV.
    const PEOPLE: usize = 100_000;
    let (secs, cli_kib) = import_people(&d, &desk.hr, PEOPLE);
    println!(
        "ra: import of {PEOPLE} people from CSV on PostgreSQL: {secs:.1} s ({:.0} people/s, \
         dry-run check included); peak memory: CLI {:.0} MiB, server {:.0} MiB",
        PEOPLE as f64 / secs,
        cli_kib as f64 / 1024.0,
        peak_mib(server_pid)
    );
    let anna = desk.anna.clone();

    // 1 000 active carriers (one authentication certificate each; one CSR for all: the
    // benchmark measures transitions, not key generation).
    const CARRIERS: usize = 1_000;
    // A fresh connection: the server closed the idle one during the import (its header
    // timeout covers idle keep-alive connections too).
    let mut conn = std::io::BufReader::new(std::net::TcpStream::connect(&addr).expect("connect"));
    let csr_file = issuance_body(d.dir.path());
    let body: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&csr_file).expect("body")).expect("json");
    let csr = body["csr"].as_str().expect("csr").to_owned();
    let keys = serde_json::json!({"keys": [{"profile": "authentication", "csr": csr}]}).to_string();
    let people = ok_json(
        http(&mut conn, "GET", "/api/v1/people?limit=1000", &anna, ""),
        "people",
    );
    let mut ids = Vec::new();
    let setup = Instant::now();
    for (n, p) in people
        .as_array()
        .expect("list")
        .iter()
        .take(CARRIERS)
        .enumerate()
    {
        ids.push(active_card(&mut conn, &desk, p, &format!("B{n}"), &keys));
    }
    let setup = setup.elapsed();

    // Suspend all, resume all, …: with 4 requests in flight over 1 000 carriers, a
    // carrier's next step comes long after its last one finished (no conflicts).
    let list: Vec<String> = ids.iter().map(|i| format!("\"{i}\"")).collect();
    let script = d.dir.path().join("transitions.lua");
    std::fs::write(
        &script,
        format!(
            "local ids = {{{}}}\nlocal n = #ids\nlocal k = 0\n\
             local headers = {{[\"Authorization\"] = \"Bearer {anna}\", [\"Content-Type\"] = \"application/json\"}}\n\
             request = function()\n  local i = k % n\n  local round = math.floor(k / n)\n  k = k + 1\n\
               local path = \"/api/v1/carriers/\" .. ids[i + 1] .. \"/suspension\"\n\
               if round % 2 == 0 then\n    return wrk.format(\"POST\", path, headers, '{{\"reason\":\"admin_hold\",\"days\":5}}')\n\
               else\n    return wrk.format(\"DELETE\", path, headers, '{{\"verification\":\"in_person\"}}')\n  end\nend\n",
            list.join(",")
        ),
    )
    .expect("script");
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c4",
            "-d",
            &format!("{SECONDS}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(&d.base)
        .output()
        .expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // At most one refusal: in our runs one step per run met its carrier in the other state
    // (409): the script's sequence assumes every request it generates is sent, and wrk
    // generated one it did not send. More than one would be real errors.
    let refused: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(refused <= 1, "conflicts or errors under load: {text}");
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .map_or_else(|| format!("? ({text})"), |v| v.trim().to_owned());
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map_or_else(|| "?".into(), |v| v.trim().to_owned());
    println!(
        "ra: carrier transitions (suspend/resume, one certificate each) on PostgreSQL: \
         {rps} /s, p99 {p99} (wrk -t1 -c4 over {CARRIERS} carriers, {refused} refused; \
         setting them up took {:.1} s, 7 API calls each)",
        setup.as_secs_f64()
    );
}

/// Requests timed per portal page.
const PAGE_ROUNDS: usize = 200;

/// The admin portal on PostgreSQL with 100 000 people (imported by the CLI) and 1 000 000
/// audit records: how long the server takes to answer the people search and the audit
/// trail, p50 and p99 over [`PAGE_ROUNDS`] requests each. An auditor signs in with the
/// certificate of her own active card (key by openssl, issued through the API); each page
/// is fetched by `curl`, and the time is curl's from the request sent to the answer's first
/// byte (`time_starttransfer - time_pretransfer`: the TLS handshake is before it, the page
/// is rendered whole before its first byte goes).
fn portal() {
    let Some(pg) = pg::Postgres::start() else {
        println!("portal: SKIPPED (no PostgreSQL server binaries)");
        return;
    };
    let portal_addr = format!("127.0.0.1:{}", free_port());
    let d = deploy_serving(Some(&pg.url), |_| {}, &["--portal-listen", &portal_addr]);
    let addr = d.base.trim_start_matches("http://").to_owned();
    let desk = Desk::new(&addr, d.token.trim());
    const PEOPLE: usize = 100_000;
    import_people(&d, &desk.hr, PEOPLE);

    // The auditor: the first person, with an active card of her own.
    let mut conn = std::io::BufReader::new(std::net::TcpStream::connect(&addr).expect("connect"));
    let dir = d.dir.path();
    let csr_file = issuance_body(dir);
    let body: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&csr_file).expect("body")).expect("json");
    let keys = serde_json::json!({"keys": [{"profile": "authentication", "csr": body["csr"]}]})
        .to_string();
    let people = ok_json(
        http(&mut conn, "GET", "/api/v1/people?limit=1", &desk.anna, ""),
        "people",
    );
    let person = &people[0];
    let card = active_card(&mut conn, &desk, person, "AUDITOR-1", &keys);
    let carrier = ok_json(
        http(
            &mut conn,
            "GET",
            &format!("/api/v1/carriers/{card}"),
            &desk.anna,
            "",
        ),
        "carrier",
    );
    let serial = carrier["certificates"][0].as_str().expect("serial");
    let pem = ok_json(
        http(
            &mut conn,
            "GET",
            &format!("/api/v1/certificates/{serial}"),
            &desk.anna,
            "",
        ),
        "certificate",
    )["pem"]
        .as_str()
        .expect("pem")
        .to_owned();
    std::fs::write(dir.join("auditor.pem"), pem).expect("certificate");
    officer(
        &mut conn,
        &desk.admin,
        "auditor",
        "auditor",
        person["id"].as_str(),
    );

    // The audit trail up to 1 000 000 records (what the import and the card wrote, then
    // person updates appended in batches, each chained to the one before).
    const RECORDS: i64 = 1_000_000;
    let data = dir.join("data");
    let config = tessera_issuer_types::config::Config::load(&data).expect("config");
    let store =
        tessera_issuer_store::Store::open_configured(&config.database, &data).expect("database");
    let appended = Instant::now();
    loop {
        let head = store
            .read(|tx| tx.audit_recent(None, 1, None, None))
            .expect("head")
            .first()
            .map_or(0, |r| r.seq);
        if head >= RECORDS {
            break;
        }
        let n = (RECORDS - head).min(10_000);
        let events: Vec<_> = (0..n)
            .map(|i| tessera_issuer_store::audit::AuditEvent::PersonUpdated {
                person: format!("bench-{}", head + i),
                fields: "email: \"a@example.org\" → \"b@example.org\"".into(),
            })
            .collect();
        store
            .write(|tx| tx.audit_many("hr", &events, REVOKED_AT))
            .expect("append");
    }
    let appended = appended.elapsed();
    // The statistics a running database's autovacuum would have gathered by now (the bulk
    // load came faster than its first round): planned for 100 000 people and a million
    // records, not for the empty tables of `init`.
    {
        use diesel::RunQueryDsl;
        let mut conn = store.raw().expect("database");
        diesel::sql_query("ANALYZE")
            .execute(&mut *conn)
            .expect("analyze");
    }

    // Signed in: a session cookie in curl's jar.
    let base = format!("https://{portal_addr}");
    let curl = |extra: &[&str], path: &str| -> Vec<u8> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "60", "--cacert"])
            .arg(data.join("tls-ca.pem"))
            .arg("--cert")
            .arg(dir.join("auditor.pem"))
            .arg("--key")
            .arg(dir.join("card.key"))
            .arg("-b")
            .arg(dir.join("jar"))
            .arg("-c")
            .arg(dir.join("jar"))
            .args(extra)
            .arg(format!("{base}{path}"))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let sign_in = String::from_utf8(curl(&[], "/admin/sign-in")).expect("page");
    let csrf = sign_in
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .expect("csrf");
    curl(&["-d", &format!("csrf={csrf}")], "/admin/sign-in");
    // The first audit view verifies the whole chain (later ones only what was appended).
    let first = Instant::now();
    let page = String::from_utf8(curl(&[], "/admin/audit")).expect("page");
    assert!(page.contains("Chain verified"), "{page}");
    let first = first.elapsed();

    let timed_page = |paths: &[String]| -> (f64, f64) {
        let mut ms: Vec<f64> = (0..PAGE_ROUNDS)
            .map(|i| {
                let path = &paths[i % paths.len()];
                let out = curl(
                    &[
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code} %{time_pretransfer} %{time_starttransfer}",
                    ],
                    path,
                );
                let text = String::from_utf8_lossy(&out).into_owned();
                let v: Vec<&str> = text.split_whitespace().collect();
                assert_eq!(v.first(), Some(&"200"), "{path}: {text}");
                let at = |k: usize| v[k].parse::<f64>().expect("time");
                (at(2) - at(1)) * 1000.0
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        (ms[ms.len() / 2], ms[ms.len() * 99 / 100])
    };
    let searches: Vec<String> = [
        "Family4",
        "Given12345",
        "P0999",
        "p5000",
        "Family99999",
        "Famil",
    ]
    .iter()
    .map(|q| format!("/admin/people?q={q}"))
    .collect();
    let (search_p50, search_p99) = timed_page(&searches);
    let audits: Vec<String> = [
        "/admin/audit",
        "/admin/audit?before=500000",
        "/admin/audit?action=person.registered",
        "/admin/audit?actor=anna",
        "/admin/audit?before=2000",
    ]
    .iter()
    .map(|p| (*p).to_owned())
    .collect();
    let (audit_p50, audit_p99) = timed_page(&audits);
    // The same path without the application: the style sheet (no session, no database).
    let (css_p50, css_p99) = timed_page(&["/admin/static/portal.css".to_owned()]);
    // A page with the session's check and no query of its own beyond it.
    let (session_p50, session_p99) = timed_page(&["/admin/passkeys".to_owned()]);
    println!(
        "portal: baseline, the style sheet: p50 {css_p50:.1} ms, p99 {css_p99:.1} ms; \
         a page with only the session's check: p50 {session_p50:.1} ms, p99 {session_p99:.1} ms"
    );
    println!(
        "portal: people search over {PEOPLE} people on PostgreSQL: p50 {search_p50:.1} ms, \
         p99 {search_p99:.1} ms; audit trail over {RECORDS} records (newest, a page deep in \
         the trail, filtered by action and by actor; chain check of what was appended): \
         p50 {audit_p50:.1} ms, p99 {audit_p99:.1} ms ({PAGE_ROUNDS} requests each, server \
         time from request to first byte; first audit view, verifying all {RECORDS} \
         records: {:.1} s; appending the records took {:.0} s)",
        first.as_secs_f64(),
        appended.as_secs_f64()
    );
}

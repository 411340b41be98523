//! The issuer as the IdP's end-to-end tests and the login benchmark run it: a real
//! `tessera-issuer` deployment on loopback, its officers through the `tessera` CLI, and Eva
//! with an active smart card whose key (made by openssl, as a card would) and certificate
//! are in the test's directory.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)] // test helpers: a failed unwrap is a failed test; shared by a test and a bench

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A binary of another workspace package beside ours, built if missing.
pub fn sibling(package: &str, bin: &str) -> PathBuf {
    let ours = Path::new(env!("CARGO_BIN_EXE_tessera-idp"));
    let path = ours.with_file_name(bin);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // A benchmark's binaries are release builds: the sibling must be one too.
        let release = ours.parent().is_some_and(|d| d.ends_with("release"));
        assert!(Command::new(cargo)
            .args(["build", "-p", package, "--bin", bin])
            .args(release.then_some("--release"))
            .status()
            .unwrap()
            .success());
    }
    path
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn run(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// curl: the status and the body.
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

pub fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The admin CLI as one officer.
pub struct Tessera {
    pub cli: PathBuf,
    pub base: String,
    pub dir: PathBuf,
}

impl Tessera {
    pub fn ok(&self, token: &str, args: &[&str]) -> serde_json::Value {
        let file = self.dir.join("token");
        std::fs::write(&file, token).unwrap();
        let mut all = vec!["--url", &self.base, "--json", "--token-file"];
        let f = file.to_str().unwrap().to_owned();
        all.push(&f);
        all.extend_from_slice(args);
        let out = run(&self.cli, &all);
        serde_json::from_str(&out).unwrap_or(serde_json::Value::Null)
    }

    pub fn officer(&self, admin: &str, id: &str, role: &str) -> String {
        self.ok(admin, &["officer", "add", id, "--name", id, "--role", role]);
        self.ok(admin, &["officer", "token", id])["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// The issuer with Eva's active smart card; her key and certificate in `dir`.
pub struct Issuer {
    _server: Kill,
    pub base: String,
    pub t: Tessera,
    pub anna: String,
    pub idp_token: PathBuf,
    pub carrier: String,
    pub serial: String,
    pub policy: String,
}

impl Issuer {
    /// The issuer server's process id (for its CPU time).
    pub fn server_pid(&self) -> u32 {
        self._server.0.id()
    }
}

pub fn issuer(dir: &Path) -> Issuer {
    let binary = sibling("tessera-issuer", "tessera-issuer");
    let data = dir.join("issuer");
    run(&binary, &["init", "--data-dir", data.to_str().unwrap()]);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = Kill(
        Command::new(&binary)
            .args(["serve", "--data-dir", data.to_str().unwrap()])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--public-url",
                &base,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the issuer", || curl(&[&format!("{base}/readyz")]).0 == 200);
    let t = Tessera {
        cli: sibling("tessera-cli", "tessera"),
        base: base.clone(),
        dir: dir.to_owned(),
    };
    let bootstrap = std::fs::read_to_string(data.join("bootstrap-admin.token")).unwrap();
    let admin = t.ok(
        &bootstrap,
        &[
            "officer",
            "add",
            "admin",
            "--name",
            "Ada",
            "--role",
            "administrator",
        ],
    )["first_token"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let anna = t.officer(&admin, "anna", "registration_officer");
    let bo = t.officer(&admin, "bo", "registration_officer");
    let hr = t.officer(&admin, "hr", "hr_admin");
    let idp = t.officer(&admin, "idp", "identity_provider");
    let idp_token = dir.join("idp.token");
    std::fs::write(&idp_token, idp).unwrap();

    let person = t.ok(
        &hr,
        &[
            "person",
            "add",
            "--employee-number",
            "E1",
            "--given-name",
            "Eva",
            "--family-name",
            "Ek",
            "--email",
            "e1@example.org",
            "--identity-number",
            "19811218-9876",
        ],
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    t.ok(
        &anna,
        &[
            "proof",
            &person,
            "--document-type",
            "passport",
            "--document-number",
            "AA123",
            "--issuing-country",
            "SE",
            "--document-expiry",
            "2099-01-01",
            "--place",
            "Service desk",
            "--identity-number",
            "198112189876",
        ],
    );
    let carrier = t.ok(&anna, &["carrier", "add", "--kind", "smart_card", "SC-1"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let approval = t.ok(
        &anna,
        &[
            "carrier", "assign", &carrier, "--person", &person, "--terms", "2026-1",
        ],
    )[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    t.ok(&bo, &["approve", "yes", &approval]);
    // The card's key (made by openssl, as a card makes one) and its request.
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "card.key",
        ],
    );
    openssl(
        dir,
        &[
            "req", "-new", "-key", "card.key", "-subj", "/CN=card", "-out", "card.csr",
        ],
    );
    let keys = t.ok(
        &anna,
        &[
            "carrier",
            "keys",
            &carrier,
            "--csr",
            &format!("authentication={}", dir.join("card.csr").display()),
            "--certificates-out",
            dir.to_str().unwrap(),
        ],
    );
    let serial = keys["certificates"][0].as_str().unwrap().to_owned();
    t.ok(
        &anna,
        &["carrier", "activate", &carrier, "--receipt", "R-1"],
    );
    // The issuing CA, as the IdP is given it.
    let (status, _) = curl(&[
        "-o",
        dir.join("issuing.der").to_str().unwrap(),
        &format!("{base}/ca/issuing-ca-1.crt"),
    ]);
    assert_eq!(status, 200);
    openssl(
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
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("issuer.json")).unwrap()).unwrap();
    Issuer {
        _server: server,
        base,
        t,
        anna,
        idp_token,
        carrier,
        serial,
        policy: config["policy_oid"].as_str().unwrap().to_owned(),
    }
}

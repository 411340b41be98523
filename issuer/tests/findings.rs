//! The security review's findings (issue 8), each shown fixed the way an attacker or an
//! operator would meet it: two `serve` processes on one PostgreSQL, CRL publishers racing,
//! a flood of distinct OCSP requests, an audit chain cut or extended behind the issuer's
//! back, the issuer's own certificates revoked and renewed, the API off loopback, clients
//! that never finish their headers.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;
mod pg;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{card_csr, curl, free_port, openssl, Kill};
use diesel::prelude::*;

const ISSUER: &str = env!("CARGO_BIN_EXE_tessera-issuer");
const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn peers() -> bool {
    common::require(&["openssl", "curl"], &[SOFTHSM])
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(ISSUER)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A deployment made by `init` in a temporary directory.
struct Deployment {
    tmp: tempfile::TempDir,
    data: PathBuf,
    auth: String,
}

impl Deployment {
    fn init(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let mut args = vec!["init", "--data-dir", data.to_str().unwrap()];
        args.extend_from_slice(extra);
        let (ok, text) = run(&args);
        assert!(ok, "{text}");
        let token = std::fs::read_to_string(data.join("bootstrap-admin.token")).unwrap();
        Self {
            tmp,
            data,
            auth: format!("Authorization: Bearer {token}"),
        }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn data(&self) -> &str {
        self.data.to_str().unwrap()
    }

    /// `serve` on a free loopback port, once it is ready; returns it and its base URL.
    fn serve(&self, extra: &[&str]) -> (Kill, String) {
        common::serve(&self.data, extra)
    }

    /// Issues an authentication certificate through the API; returns its serial and writes
    /// it to `<name>.pem`.
    fn issue(&self, base: &str, name: &str) -> String {
        let csr = card_csr(self.dir(), &format!("{name}.key"));
        let body = serde_json::json!({
            "profile": "authentication",
            "subject": { "common_name": name },
            "csr": csr,
        })
        .to_string();
        let (status, answer) = curl(&[
            "-H",
            &self.auth,
            "--data-binary",
            &body,
            &format!("{base}/api/v1/certificates"),
        ]);
        assert_eq!(status, 201, "{answer}");
        let issued: serde_json::Value = serde_json::from_str(&answer).unwrap();
        std::fs::write(
            self.dir().join(format!("{name}.pem")),
            issued["certificate"].as_str().unwrap(),
        )
        .unwrap();
        issued["serial"].as_str().unwrap().to_owned()
    }

    fn revoke(&self, base: &str, serial: &str) {
        let (status, answer) = curl(&[
            "-H",
            &self.auth,
            "--data-binary",
            "{\"reason\": \"keyCompromise\"}",
            &format!("{base}/api/v1/certificates/{serial}/revocation"),
        ]);
        assert_eq!(status, 200, "{answer}");
    }

    /// What `openssl ocsp` says of `<name>.pem` at `base` (no nonce: the pre-signed path).
    fn ocsp(&self, base: &str, name: &str) -> String {
        let (_, text) = openssl(
            self.dir(),
            &[
                "ocsp",
                "-issuer",
                "data/issuing-ca.pem",
                "-cert",
                &format!("{name}.pem"),
                "-CAfile",
                "data/root-ca.pem",
                "-no_nonce",
                "-url",
                &format!("{base}/ocsp"),
            ],
        );
        text
    }

    fn store(&self) -> tessera_issuer_store::Store {
        let config = tessera_issuer_types::config::Config::load(&self.data).unwrap();
        tessera_issuer_store::Store::open_configured(&config.database, &self.data).unwrap()
    }

    /// The serials on the CRL served at `base`.
    fn crl_serials(&self, base: &str) -> Vec<String> {
        let out = Command::new("curl")
            .args(["-s", &format!("{base}/crl/issuing-ca-1.crl")])
            .output()
            .unwrap();
        serials_on(&out.stdout)
    }

    /// Waits (at most `within`) for the CRL served at `base` to list `serial`; returns the
    /// serials it then lists.
    fn await_on_crl(&self, base: &str, serial: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let listed = self.crl_serials(base);
            if listed.iter().any(|s| s == serial) {
                return listed;
            }
            assert!(
                Instant::now() < deadline,
                "no CRL listed {serial} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The serials (lower-case hex) a DER CRL lists.
fn serials_on(der: &[u8]) -> Vec<String> {
    let crl = <x509_cert::crl::CertificateList as der::Decode>::from_der(der).unwrap();
    crl.tbs_cert_list
        .revoked_certificates
        .unwrap_or_default()
        .iter()
        .map(|r| hex::encode(r.serial_number.as_bytes()))
        .collect()
}

/// Finding 4 and the issue's acceptance: two `serve` processes on one PostgreSQL; a
/// revocation made through one is "revoked" in the other's OCSP answers within a second,
/// even though the other had the "good" answer cached.
#[test]
fn two_servers_on_one_postgresql_learn_each_others_revocations_within_a_second() {
    if !peers() {
        return;
    }
    let Some(pg) = pg::Postgres::start() else {
        return;
    };
    let d = Deployment::init(&["--database-url", &pg.url]);
    let (_a, a) = d.serve(&[]);
    let (_b, b) = d.serve(&[]);
    let serial = d.issue(&a, "shared");
    // B answers "good" and caches it (pre-signed for 60 s by default).
    let first = d.ocsp(&b, "shared");
    assert!(first.contains("shared.pem: good"), "{first}");
    d.revoke(&a, &serial);
    let revoked = Instant::now();
    loop {
        let text = d.ocsp(&b, "shared");
        if text.contains("shared.pem: revoked") {
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "B still answers after {:?}: {text}",
            revoked.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "B's OCSP said revoked {:?} after A revoked",
        revoked.elapsed()
    );
    // And B publishes a CRL that lists it (within the publication delay).
    d.await_on_crl(&b, &serial, Duration::from_secs(10));
}

/// Finding 3 (second half) and 4: a revocation is answered without waiting for a CRL; when
/// publishing the CRL fails, the revocation still stands, and the CRL is retried until it
/// lists it.
#[test]
fn a_revocation_stands_when_its_crl_fails_and_the_crl_is_retried() {
    if !peers() {
        return;
    }
    let d = Deployment::init(&[]);
    let (_server, base) = d.serve(&["--crl-delay", "0.2"]);
    let serial = d.issue(&base, "retried");
    let store = d.store();
    diesel::sql_query(
        "CREATE TRIGGER fail_crl BEFORE INSERT ON crls \
         BEGIN SELECT RAISE(ABORT, 'injected failure of CRL publication'); END",
    )
    .execute(&mut *store.raw().unwrap())
    .unwrap();
    let started = Instant::now();
    d.revoke(&base, &serial);
    println!("revocation answered in {:?}", started.elapsed());
    // OCSP knows at once; no CRL can list it while publication fails.
    assert!(d.ocsp(&base, "retried").contains("retried.pem: revoked"));
    std::thread::sleep(Duration::from_secs(2));
    assert!(!d.crl_serials(&base).contains(&serial));
    diesel::sql_query("DROP TRIGGER fail_crl")
        .execute(&mut *store.raw().unwrap())
        .unwrap();
    // Retried with back-off (1, 2, 4 … s).
    d.await_on_crl(&base, &serial, Duration::from_secs(90));
}

/// Finding 3: CRL publishers racing on one PostgreSQL (`crl` processes beside `serve`,
/// while certificates are revoked) never use a number twice, and a higher number never
/// describes an older state.
#[test]
fn racing_crl_publishers_never_reuse_a_number_nor_go_back() {
    if !peers() {
        return;
    }
    let Some(pg) = pg::Postgres::start() else {
        return;
    };
    let d = Deployment::init(&["--database-url", &pg.url]);
    let (_server, base) = d.serve(&["--crl-delay", "0"]);
    let serials: Vec<String> = (0..6).map(|i| d.issue(&base, &format!("r{i}"))).collect();
    let publishers: Vec<std::thread::JoinHandle<Vec<(bool, String)>>> = (0..3)
        .map(|i| {
            let data = d.data().to_owned();
            let out = d.dir().join(format!("crl-{i}.der"));
            std::thread::spawn(move || {
                (0..4)
                    .map(|_| run(&["crl", "--data-dir", &data, "--out", out.to_str().unwrap()]))
                    .collect()
            })
        })
        .collect();
    for s in &serials {
        d.revoke(&base, s);
    }
    for p in publishers {
        for (ok, text) in p.join().unwrap() {
            assert!(ok, "a CRL publisher failed: {text}");
        }
    }
    // Every CRL stored, by number: each lists at least what every lower number listed.
    let rows: Vec<(i64, Vec<u8>)> = {
        use tessera_issuer_store::schema::crls;
        crls::table
            .select((crls::number, crls::crl))
            .order(crls::number.asc())
            .load(&mut *d.store().raw().unwrap())
            .unwrap()
    };
    assert!(rows.len() >= 2, "{} CRLs", rows.len());
    let mut seen: Vec<String> = Vec::new();
    let mut last = 0;
    for (number, der) in rows {
        assert!(number > last, "CRL number {number} after {last}");
        last = number;
        let listed = serials_on(&der);
        for s in &seen {
            assert!(
                listed.contains(s),
                "CRL {number} dropped {s}, listed before"
            );
        }
        seen = listed;
    }
}

/// The size of a process's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// POSTs `body` to /ocsp on a kept-alive connection; returns the response body.
fn post_ocsp(conn: &mut TcpStream, host: &str, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "POST /ocsp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/ocsp-request\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    // One write: a header and a body sent apart would wait on Nagle and delayed ACK.
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    conn.write_all(&request).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = conn.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let headers = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = headers
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap();
            if buf.len() >= end + 4 + len {
                return buf[end + 4..end + 4 + len].to_vec();
            }
        }
    }
}

/// Finding 2: 100,000 distinct requests for one certificate (each with its own
/// requestorName, as an attacker would vary them) leave the server's memory bounded: such
/// requests are answered but never cached, and the cache is keyed on the CertID. An
/// oversized request is `malformedRequest`.
#[test]
fn distinct_ocsp_requests_for_one_certificate_leave_memory_bounded() {
    if !peers() {
        return;
    }
    let d = Deployment::init(&[]);
    let (server, base) = d.serve(&[]);
    d.issue(&base, "flood");
    let (ok, text) = openssl(
        d.dir(),
        &[
            "ocsp",
            "-issuer",
            "data/issuing-ca.pem",
            "-cert",
            "flood.pem",
            "-no_nonce",
            "-reqout",
            "req.der",
        ],
    );
    assert!(ok, "{text}");
    let plain = std::fs::read(d.dir().join("req.der")).unwrap();
    let request = <x509_ocsp::OcspRequest as der::Decode>::from_der(&plain).unwrap();
    let host = base.trim_start_matches("http://").to_owned();
    let mut conn = TcpStream::connect(&host).unwrap();
    conn.set_nodelay(true).unwrap();
    let named = |i: usize| {
        let mut r = request.clone();
        let name = format!("CN=requestor {i:06} {}", "x".repeat(400));
        r.tbs_request.requestor_name = Some(
            x509_cert::ext::pkix::name::GeneralName::DirectoryName(name.parse().unwrap()),
        );
        der::Encode::to_der(&r).unwrap()
    };
    // Warm up (allocator, connection, the one cacheable answer), then measure.
    for i in 0..2_000 {
        let answer = post_ocsp(&mut conn, &host, &named(i));
        assert_eq!(answer[..5], [0x30, 0x82, answer[2], answer[3], 0x0A], "{i}");
    }
    let before = rss_kib(server.0.id());
    let started = Instant::now();
    for i in 2_000..102_000 {
        post_ocsp(&mut conn, &host, &named(i));
    }
    let after = rss_kib(server.0.id());
    println!(
        "100,000 distinct requests in {:?}: resident {before} KiB -> {after} KiB",
        started.elapsed()
    );
    assert!(
        after < before + 20 * 1024,
        "memory grew from {before} KiB to {after} KiB"
    );
    let (_, metrics) = curl(&[&format!("{base}/metrics")]);
    let cached = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tessera_issuer_ocsp_cache_bytes "))
        .map(|v| v.trim().parse::<f64>().unwrap())
        .unwrap();
    assert!(
        cached < 16_384.0,
        "the cache holds {cached} bytes: {metrics}"
    );
    // Oversized: malformedRequest (OCSPResponseStatus 1), nothing more.
    let mut big = request.clone();
    big.tbs_request.requestor_name = Some(x509_cert::ext::pkix::name::GeneralName::DirectoryName(
        format!("CN={}", "y".repeat(9000)).parse().unwrap(),
    ));
    let answer = post_ocsp(&mut conn, &host, &der::Encode::to_der(&big).unwrap());
    assert_eq!(answer, [0x30, 0x03, 0x0A, 0x01, 0x01]);
    // A CertID whose hash algorithm carries parameters (endless cache keys for one
    // certificate): malformedRequest. Another issuer's CertID: unauthorized (6), unsigned.
    let mut odd = request.clone();
    odd.tbs_request.request_list[0]
        .req_cert
        .hash_algorithm
        .parameters = Some(
        der::asn1::Any::encode_from(&der::asn1::OctetString::new(vec![1u8; 8]).unwrap()).unwrap(),
    );
    let answer = post_ocsp(&mut conn, &host, &der::Encode::to_der(&odd).unwrap());
    assert_eq!(answer, [0x30, 0x03, 0x0A, 0x01, 0x01]);
    let mut foreign = request.clone();
    foreign.tbs_request.request_list[0].req_cert.issuer_key_hash =
        der::asn1::OctetString::new(vec![0u8; 20]).unwrap();
    let answer = post_ocsp(&mut conn, &host, &der::Encode::to_der(&foreign).unwrap());
    assert_eq!(answer, [0x30, 0x03, 0x0A, 0x01, 0x06]);
}

/// Finding 1 (custody): share files left in the data directory would let it (or a backup
/// of it) activate the keys alone; the deployment refuses to run until they are taken
/// away, and `--share-dir` writes them elsewhere to begin with.
#[test]
fn shares_left_in_the_data_directory_stop_the_deployment() {
    if !peers() {
        return;
    }
    let d = Deployment::init(&["--custodians", "2-of-3"]);
    let (ok, text) = run(&[
        "renew",
        "--data-dir",
        d.data(),
        "--share",
        "x",
        "--share",
        "y",
    ]);
    assert!(
        !ok && text.contains("still holds custodian shares"),
        "{text}"
    );
    let away = d.dir().join("away");
    std::fs::create_dir(&away).unwrap();
    let data = d.dir().join("elsewhere");
    let (ok, text) = run(&[
        "init",
        "--data-dir",
        data.to_str().unwrap(),
        "--custodians",
        "2-of-3",
        "--share-dir",
        away.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let shares: Vec<String> = (1..=2)
        .map(|i| {
            away.join(format!("custodian-{i}.share"))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let (ok, text) = run(&[
        "renew",
        "--data-dir",
        data.to_str().unwrap(),
        "--share",
        &shares[0],
        "--share",
        &shares[1],
    ]);
    assert!(ok, "{text}");
}

/// Finding 6: the audit chain is anchored by checkpoints the token signs. Records appended
/// by someone with write access to the database show against an expected head; records cut
/// from the end show against a checkpoint (kept outside, or stored); a forged stored
/// checkpoint shows. Issuance records carry the subject and the TBS certificate's SHA-256.
#[test]
fn audit_checkpoints_reveal_cut_appended_and_forged_records() {
    use tessera_issuer_store::audit::AuditEvent;
    use tessera_issuer_store::schema::{audit_checkpoints, audit_log};
    if !peers() {
        return;
    }
    let d = Deployment::init(&[]);
    let (server, base) = d.serve(&[]);
    let serial = d.issue(&base, "audited");
    drop(server);
    // The issuance record names the subject and the TBS certificate's hash.
    let (_, shown) = openssl(
        d.dir(),
        &[
            "x509",
            "-in",
            "audited.pem",
            "-outform",
            "DER",
            "-out",
            "audited.der",
        ],
    );
    let der = std::fs::read(d.dir().join("audited.der")).unwrap_or_else(|_| panic!("{shown}"));
    let cert = <x509_cert::Certificate as der::Decode>::from_der(&der).unwrap();
    let tbs = der::Encode::to_der(&cert.tbs_certificate).unwrap();
    let tbs_sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&tbs));
    let store = d.store();
    let details: Vec<String> = audit_log::table
        .filter(audit_log::action.eq("certificate.issued"))
        .select(audit_log::details)
        .load(&mut *store.raw().unwrap())
        .unwrap();
    assert!(
        details.iter().any(|x| x.contains(&serial)
            && x.contains("\"subject\":\"audited\"")
            && x.contains(&tbs_sha256)),
        "{details:?}"
    );

    let cp = d.dir().join("cp.json");
    let (ok, text) = run(&[
        "audit",
        "checkpoint",
        "--data-dir",
        d.data(),
        "--out",
        cp.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let checkpoint: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cp).unwrap()).unwrap();
    let head = checkpoint["head"].as_str().unwrap().to_owned();
    let records = checkpoint["records"].as_u64().unwrap();
    let verify = |extra: &[&str]| {
        let mut args = vec!["audit", "verify", "--data-dir", d.data()];
        args.extend_from_slice(extra);
        run(&args)
    };
    let (ok, text) = verify(&["--checkpoint", cp.to_str().unwrap(), "--expect-head", &head]);
    // The checkpoint's own audit record follows the head it signed.
    assert!(!ok && text.contains("1 records were appended"), "{text}");
    let (ok, text) = verify(&["--checkpoint", cp.to_str().unwrap()]);
    assert!(ok, "{text}");

    // Someone with the database appends records that chain correctly.
    for i in 0..3 {
        store
            .write(|tx| {
                tx.audit(
                    "intruder",
                    &AuditEvent::ApiTokenCreated {
                        name: format!("backdoor-{i}"),
                        role: "admin".into(),
                    },
                    2_000_000_000,
                )
                .map(drop)
            })
            .unwrap();
    }
    let (ok, text) = verify(&["--expect-head", &head]);
    assert!(!ok && text.contains("4 records were appended"), "{text}");

    // ... and cuts the tail, below the checkpoint.
    diesel::sql_query(format!(
        "DELETE FROM audit_log WHERE seq >= {}",
        records - 1
    ))
    .execute(&mut *store.raw().unwrap())
    .unwrap();
    let (ok, text) = verify(&["--checkpoint", cp.to_str().unwrap()]);
    assert!(!ok && text.contains("cut from the end"), "{text}");
    // The stored checkpoint says so too, without the file.
    let (ok, text) = verify(&[]);
    assert!(!ok && text.contains("cut from the end"), "{text}");
    // A stored checkpoint rewritten to match the cut chain does not verify.
    let signed: String = audit_checkpoints::table
        .select(audit_checkpoints::signed)
        .first(&mut *store.raw().unwrap())
        .unwrap();
    let forged = signed.replace(
        &format!("\"records\":{records}"),
        &format!("\"records\":{}", records - 2),
    );
    diesel::update(audit_checkpoints::table)
        .set((
            audit_checkpoints::signed.eq(&forged),
            audit_checkpoints::records.eq(i64::try_from(records).unwrap() - 2),
        ))
        .execute(&mut *store.raw().unwrap())
        .unwrap();
    let (ok, text) = verify(&[]);
    assert!(!ok && text.contains("forged"), "{text}");
}

/// Finding 8: the OCSP responder's, the audit signer's and the HTTPS certificates are in
/// the certificates table; `renew` makes new ones, puts them in service and records them;
/// the old responder certificate can be revoked and reaches the CRL; the HTTPS certificate
/// (from the TLS CA) never appears on the workforce CA's CRL.
#[test]
fn the_issuers_own_certificates_are_recorded_revocable_and_renewed() {
    use tessera_issuer_store::schema::certificates;
    if !peers() {
        return;
    }
    let d = Deployment::init(&[]);
    let store = d.store();
    let own = |store: &tessera_issuer_store::Store| -> Vec<(String, String, String)> {
        certificates::table
            .filter(certificates::profile.eq_any(["ocsp-responder", "audit-signer", "tls-server"]))
            .select((
                certificates::serial,
                certificates::profile,
                certificates::authority,
            ))
            .load(&mut *store.raw().unwrap())
            .unwrap()
    };
    let before = own(&store);
    assert_eq!(before.len(), 3, "{before:?}");
    let old_ocsp = std::fs::read(d.data.join("ocsp-responder.pem")).unwrap();
    let (ok, text) = run(&["renew", "--data-dir", d.data(), "--force"]);
    assert!(
        ok && text.contains("renewed ocsp-responder") && text.contains("renewed tls-server"),
        "{text}"
    );
    let after = own(&store);
    assert_eq!(after.len(), 6, "{after:?}");
    let new_ocsp = std::fs::read(d.data.join("ocsp-responder.pem")).unwrap();
    assert_ne!(old_ocsp, new_ocsp);
    // Nothing due right after: a second run renews nothing.
    let (ok, text) = run(&["renew", "--data-dir", d.data()]);
    assert!(ok && text.contains("nothing due"), "{text}");

    let (_server, base) = d.serve(&["--crl-delay", "0.2"]);
    // OCSP answers are signed with the renewed responder certificate, which chains.
    d.issue(&base, "after-renewal");
    let text = d.ocsp(&base, "after-renewal");
    assert!(
        text.contains("Response verify OK") && text.contains(": good"),
        "{text}"
    );
    // The old responder certificate is revoked like any other and reaches the CRL.
    let old_serial = before
        .iter()
        .find(|(_, p, _)| p == "ocsp-responder")
        .map(|(s, _, _)| s.clone())
        .unwrap();
    // Only an admin token revokes them: an officer's is refused.
    let officer = "tsr_officer_token_for_the_test";
    d.store()
        .write(|tx| {
            tx.insert_api_token(
                &<sha2::Sha256 as sha2::Digest>::digest(officer.as_bytes()),
                "officer-1",
                "officer",
                2_000_000_000,
            )
        })
        .unwrap();
    let (status, answer) = curl(&[
        "-H",
        &format!("Authorization: Bearer {officer}"),
        "--data-binary",
        "{\"reason\": \"keyCompromise\"}",
        &format!("{base}/api/v1/certificates/{old_serial}/revocation"),
    ]);
    assert_eq!(
        (status, answer.contains("\"forbidden\"")),
        (403, true),
        "{answer}"
    );
    d.revoke(&base, &old_serial);
    let tls_serial = before
        .iter()
        .find(|(_, p, _)| p == "tls-server")
        .map(|(s, _, a)| {
            assert_eq!(a, "tls-ca");
            s.clone()
        })
        .unwrap();
    d.revoke(&base, &tls_serial);
    let listed = d.await_on_crl(&base, &old_serial, Duration::from_secs(10));
    assert!(
        !listed.contains(&tls_serial),
        "a TLS CA certificate on the workforce CRL"
    );
}

/// Finding 10: the issuing CA certificate carries the certificate policy and the root
/// CRL's location; the root CRL is served and verifies under the root; end-entity AKIs are
/// the issuing CA's SKI; notAfter never passes the issuing CA's.
#[test]
fn the_issuing_ca_names_its_policy_and_root_crl_and_leaves_match_its_key_identifier() {
    if !peers() {
        return;
    }
    let d = Deployment::init(&["--policy-oid", "1.2.752.999.1.3"]);
    let (_server, base) = d.serve(&[]);
    let (_, issuing) = openssl(
        d.dir(),
        &["x509", "-in", "data/issuing-ca.pem", "-noout", "-text"],
    );
    assert!(
        issuing.contains("Policy: 1.2.752.999.1.3")
            // The public URL init was given (its default), not serve's.
            && issuing.contains("URI:http://127.0.0.1:8080/crl/root-ca.crl"),
        "{issuing}"
    );
    let out = Command::new("curl")
        .args(["-s", "-o"])
        .arg(d.dir().join("root.crl"))
        .arg(format!("{base}/crl/root-ca.crl"))
        .status()
        .unwrap();
    assert!(out.success());
    let (ok, text) = openssl(
        d.dir(),
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "root.crl",
            "-CAfile",
            "data/root-ca.pem",
            "-noout",
        ],
    );
    assert!(ok && text.contains("verify OK"), "{text}");
    d.issue(&base, "leaf");
    let ski = |file: &str| {
        let (_, t) = openssl(
            d.dir(),
            &[
                "x509",
                "-in",
                file,
                "-noout",
                "-ext",
                "subjectKeyIdentifier,authorityKeyIdentifier",
            ],
        );
        t
    };
    let issuing_ski = ski("data/issuing-ca.pem")
        .lines()
        .skip_while(|l| !l.contains("Subject Key Identifier"))
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    let leaf = ski("leaf.pem");
    assert!(
        leaf.contains(&issuing_ski),
        "AKI is not the issuing CA's SKI {issuing_ski}: {leaf}"
    );
    // A validity past the issuing CA's end is cut to it (the profile allows long ones).
    let csr = card_csr(d.dir(), "long.key");
    let body = serde_json::json!({
        "profile": "authentication", "subject": { "common_name": "Long" }, "csr": csr,
        "validity_days": 3650,
    })
    .to_string();
    let (status, answer) = curl(&[
        "-H",
        &d.auth,
        "--data-binary",
        &body,
        &format!("{base}/api/v1/certificates"),
    ]);
    if status == 201 {
        let issued: serde_json::Value = serde_json::from_str(&answer).unwrap();
        std::fs::write(
            d.dir().join("long.pem"),
            issued["certificate"].as_str().unwrap(),
        )
        .unwrap();
        let end = |f: &str| openssl(d.dir(), &["x509", "-in", f, "-noout", "-enddate"]).1;
        let (leaf_end, ca_end) = (end("long.pem"), end("data/issuing-ca.pem"));
        let parse = |t: &str| {
            let v = t.trim().trim_start_matches("notAfter=");
            Command::new("date")
                .args(["-d", v, "+%s"])
                .output()
                .unwrap()
                .stdout
        };
        let (l, c): (u64, u64) = (
            String::from_utf8_lossy(&parse(&leaf_end))
                .trim()
                .parse()
                .unwrap(),
            String::from_utf8_lossy(&parse(&ca_end))
                .trim()
                .parse()
                .unwrap(),
        );
        assert!(l <= c, "leaf {leaf_end} outlives the CA {ca_end}");
    } else {
        assert!(answer.contains("validity_too_long"), "{answer}");
    }
}

/// Finding 10: on an address other than loopback, `serve` needs --public-url, and its plain
/// HTTP serves relying parties only (never the API in the clear). Run in a network
/// namespace of its own (a non-loopback address on its `lo`), so nothing listens outside
/// the test.
#[test]
fn off_loopback_the_api_is_never_served_in_the_clear() {
    if !peers() || !common::require(&["unshare", "ip"], &[]) {
        return;
    }
    let d = Deployment::init(&[]);
    let (ok, text) = run(&[
        "serve",
        "--data-dir",
        d.data(),
        "--listen",
        "10.99.0.1:8080",
    ]);
    assert!(!ok && text.contains("--public-url"), "{text}");
    let script = format!(
        "set -e
         ip link set lo up
         ip addr add 10.99.0.1/32 dev lo
         {ISSUER} serve --data-dir {data} --listen 10.99.0.1:8080 --public-url http://10.99.0.1:8080 >/dev/null 2>&1 &
         pid=$!
         for i in $(seq 100); do
           curl -s -o /dev/null http://10.99.0.1:8080/readyz && break
           sleep 0.1
         done
         echo api=$(curl -s -o /dev/null -w '%{{http_code}}' http://10.99.0.1:8080/api/v1/openapi.json)
         echo issue=$(curl -s -o /dev/null -w '%{{http_code}}' -d '{{}}' http://10.99.0.1:8080/api/v1/certificates)
         echo crl=$(curl -s -o /dev/null -w '%{{http_code}}' http://10.99.0.1:8080/crl/issuing-ca-1.crl)
         kill $pid; wait $pid || true",
        data = d.data()
    );
    let out = Command::new("unshare")
        .args(["-rn", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("api=404") && text.contains("issue=404") && text.contains("crl=200"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Finding 10: a client that never finishes its request headers or its body (plain HTTP),
/// or never finishes its TLS handshake, is cut off after 10 s instead of holding a
/// connection for ever.
#[test]
fn clients_that_stall_are_cut_off() {
    if !peers() {
        return;
    }
    let d = Deployment::init(&[]);
    let tls = free_port();
    let (_server, base) = d.serve(&["--tls-listen", &format!("127.0.0.1:{tls}")]);
    let plain = base.trim_start_matches("http://").to_owned();
    let stall = |addr: String, first: &'static [u8]| {
        std::thread::spawn(move || {
            let mut conn = TcpStream::connect(&addr).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            conn.write_all(first).unwrap();
            let started = Instant::now();
            let mut buf = [0u8; 1024];
            // Whatever the server answers (a 408, an alert), it then closes.
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            started.elapsed()
        })
    };
    let http = stall(plain.clone(), b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
    let body = stall(
        plain,
        b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123",
    );
    let https = stall(format!("127.0.0.1:{tls}"), b"\x16\x03\x01");
    for (what, t) in [
        ("HTTP headers", http),
        ("HTTP body", body),
        ("TLS handshake", https),
    ] {
        let took = t.join().unwrap();
        println!("{what}: cut off after {took:?}");
        assert!(
            took >= Duration::from_secs(5) && took < Duration::from_secs(25),
            "{what}: {took:?}"
        );
    }
}

/// Finding 6, by someone who can write to the database and get a certificate from the
/// issuing CA for a key of their own (an API token row is enough): they put that
/// certificate in place of the audit signer's, cut the chain, and sign a checkpoint for
/// the cut chain with their key. The audit key pinned at `init` (in `issuer.json`, or given
/// with `--audit-key`) makes it fail.
#[test]
fn a_replaced_audit_certificate_does_not_make_forged_checkpoints_pass() {
    use base64ct::Encoding;
    use tessera_issuer_ca::checkpoint::{key_id, Checkpoint, SignedCheckpoint};
    use tessera_issuer_store::audit::StoredCheckpoint;
    use tessera_issuer_store::schema::{audit_log, authorities};
    if !peers() {
        return;
    }
    let d = Deployment::init(&[]);
    let (server, base) = d.serve(&[]);
    d.issue(&base, "attacker");
    drop(server);
    let pem = |file: &str| {
        let raw = std::fs::read(d.dir().join(file)).unwrap();
        der::pem::decode_vec(&raw).unwrap().1
    };
    let cert = pem("attacker.pem");
    let store = d.store();
    diesel::update(authorities::table.filter(authorities::role.eq("audit")))
        .set(authorities::certificate.eq(&cert))
        .execute(&mut *store.raw().unwrap())
        .unwrap();
    // Cut the last two records, then sign a checkpoint of what is left with their key.
    let records: Vec<(i64, Vec<u8>)> = audit_log::table
        .select((audit_log::seq, audit_log::hash))
        .order(audit_log::seq.asc())
        .load(&mut *store.raw().unwrap())
        .unwrap();
    let keep = records.len() - 2;
    diesel::sql_query(format!("DELETE FROM audit_log WHERE seq > {keep}"))
        .execute(&mut *store.raw().unwrap())
        .unwrap();
    let parsed = <x509_cert::Certificate as der::Decode>::from_der(&cert).unwrap();
    let spki = der::Encode::to_der(&parsed.tbs_certificate.subject_public_key_info).unwrap();
    let checkpoint = Checkpoint {
        records: keep as u64,
        head: hex::encode(&records[keep - 1].1),
        at: 2_000_000_000,
        key: key_id(&spki),
    };
    std::fs::write(d.dir().join("forged.tbs"), checkpoint.to_be_signed()).unwrap();
    let (ok, text) = openssl(
        d.dir(),
        &[
            "dgst",
            "-sha256",
            "-sign",
            "attacker.key",
            "-out",
            "forged.sig",
            "forged.tbs",
        ],
    );
    assert!(ok, "{text}");
    let signed = SignedCheckpoint {
        checkpoint,
        algorithm: base64ct::Base64::encode_string(
            &der::Encode::to_der(&tessera_issuer_ca::signature_algorithm(
                tessera_issuer_types::config::KeyAlg::P256,
            ))
            .unwrap(),
        ),
        signature: base64ct::Base64::encode_string(
            &std::fs::read(d.dir().join("forged.sig")).unwrap(),
        ),
    };
    store
        .write(|tx| {
            tx.insert_checkpoint(&StoredCheckpoint {
                records: keep as i64,
                at: 2_000_000_000,
                head: signed.checkpoint.head.clone(),
                signed: serde_json::to_string(&signed).unwrap(),
            })
        })
        .unwrap();
    diesel::sql_query(format!("DELETE FROM audit_log WHERE seq > {keep}"))
        .execute(&mut *store.raw().unwrap())
        .unwrap();
    // The forgery is consistent in itself: without the pin it would pass.
    let pinned = tessera_issuer_types::config::Config::load(&d.data)
        .unwrap()
        .audit_key_sha256
        .unwrap();
    let (ok, text) = run(&[
        "audit",
        "verify",
        "--data-dir",
        d.data(),
        "--audit-key",
        &key_id(&spki),
    ]);
    assert!(
        ok,
        "the forgery is not consistent, so the test shows nothing: {text}"
    );
    let (ok, text) = run(&["audit", "verify", "--data-dir", d.data()]);
    assert!(!ok && text.contains("it was replaced"), "{text}");
    let (ok, text) = run(&[
        "audit",
        "verify",
        "--data-dir",
        d.data(),
        "--audit-key",
        &pinned,
    ]);
    assert!(!ok && text.contains("it was replaced"), "{text}");
}

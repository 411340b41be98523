//! The admin portal against a running `serve --portal-listen`, through curl with client
//! certificates our CA issued to officers' cards (keys made by openssl, registered with a
//! CSR): sign-in with the service ID only; what a page needs before anything changes
//! (the anti-forgery token, the portal's origin); four eyes shown and enforced; an
//! auditor who can change nothing, a forged POST refused and audited; a session ended at
//! once when the officer's card is suspended; security headers on every page.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::cli::Cli;

const ISSUER: &str = env!("CARGO_BIN_EXE_tessera-issuer");

/// One officer's browser: their certificate and key, and a cookie jar.
struct Browser {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    jar: PathBuf,
    ca: PathBuf,
    base: String,
}

/// What a request got: status, headers (lowercase names), body.
struct Got {
    status: u16,
    headers: String,
    body: String,
}

impl Browser {
    fn curl(&self, extra: &[&str], path: &str) -> Got {
        let dir = self.jar.parent().unwrap();
        let head = dir.join(format!("head-{}", common::cli::rand_name()));
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "-o", "-", "-w", "%{http_code}"])
            .arg("--cacert")
            .arg(&self.ca)
            .arg("-b")
            .arg(&self.jar)
            .arg("-c")
            .arg(&self.jar)
            .arg("-D")
            .arg(&head);
        if let (Some(c), Some(k)) = (&self.cert, &self.key) {
            cmd.arg("--cert").arg(c).arg("--key").arg(k);
        }
        let out = cmd
            .args(extra)
            .arg(format!("{}{path}", self.base))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.split_at(text.len().saturating_sub(3));
        let headers = std::fs::read_to_string(&head)
            .unwrap_or_default()
            .to_ascii_lowercase();
        let _ = std::fs::remove_file(&head);
        Got {
            status: code.parse().unwrap_or(0),
            headers,
            body: body.to_owned(),
        }
    }

    fn get(&self, path: &str) -> Got {
        self.curl(&[], path)
    }

    fn post(&self, path: &str, form: &[(&str, &str)]) -> Got {
        let mut args = vec!["-X".to_owned(), "POST".to_owned()];
        for (k, v) in form {
            args.push("--data-urlencode".into());
            args.push(format!("{k}={v}"));
        }
        if form.is_empty() {
            args.extend(["-d".into(), String::new()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.curl(&args, path)
    }

    /// Signs in through the form; returns the dashboard's answer.
    fn sign_in(&self) -> Got {
        let page = self.get("/admin/sign-in");
        assert_eq!(page.status, 200, "{}", page.body);
        let csrf = hidden(&page.body, "csrf");
        self.post("/admin/sign-in", &[("csrf", &csrf)])
    }
}

/// The value of the first hidden input `name` on a page.
fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        + marker.len();
    body[start..].split('"').next().unwrap().to_owned()
}

/// A person with a proofed identity and an ACTIVE smart card whose authentication
/// certificate (from a CSR, key made by openssl) is in `dir/authentication.pem`, key in
/// `dir/card.key`. Returns (person id, carrier id).
fn person_with_card(
    t: &Cli,
    hr: &str,
    anna: &str,
    bo: &str,
    n: u32,
    dir: &Path,
) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let pnr = [
        "19811218-9876",
        "19900101-0017",
        "19850505-0008",
        "19870312-1239",
        "19920615-1236",
        "19920615-2341",
    ][n as usize];
    let email = format!("officer{n}@example.org");
    let p = t.ok(
        hr,
        &[
            "person",
            "add",
            "--employee-number",
            &format!("E{n}"),
            "--given-name",
            ["Carl", "Dana", "Eve", "Frida", "Hanna", "Ivar"][n as usize],
            "--family-name",
            "Officer",
            "--email",
            &email,
            "--upn",
            &email,
            "--identity-number",
            pnr,
        ],
    );
    let person = p["id"].as_str().unwrap().to_owned();
    t.proof(
        anna,
        &person,
        "passport",
        "Service desk",
        &pnr.replace('-', ""),
    );
    let c = t.ok(
        anna,
        &["carrier", "add", "--kind", "smart_card", &format!("SC-{n}")],
    );
    let carrier = c["id"].as_str().unwrap().to_owned();
    let a = t.ok(
        anna,
        &[
            "carrier", "assign", &carrier, "--person", &person, "--terms", "2026-1",
        ],
    );
    t.ok(bo, &["approve", "yes", a[0]["id"].as_str().unwrap()]);
    let csr = common::card_csr(dir, "card.key");
    std::fs::write(dir.join("card.csr.pem"), csr).unwrap();
    let spec = format!("authentication={}", dir.join("card.csr.pem").display());
    t.ok(
        anna,
        &[
            "carrier",
            "keys",
            &carrier,
            "--csr",
            &spec,
            "--certificates-out",
            dir.to_str().unwrap(),
        ],
    );
    t.ok(
        anna,
        &[
            "carrier",
            "activate",
            &carrier,
            "--receipt",
            &format!("R-{n}"),
        ],
    );
    (person, carrier)
}

/// Trusts Chromium's virtual authenticator for passkeys — in tests only. Its attestation
/// certificate ("Batch Certificate", AAGUID 01020304-…) is self-signed with the example
/// attestation key of the FIDO U2F specification and marked CA:FALSE; a CA certificate of
/// the same name and key, made here, is what it chains to. Never trust this outside tests:
/// the key is public.
fn chromium_test_authenticator(root: &Path, data: &Path) {
    // FIDO U2F raw message formats, registration example: the attestation private key.
    const U2F_EXAMPLE_KEY: &str =
        "f3fccc0d00d8031954f90864d43c247f4bf5f0665c6b50cc17749a27d1cf7664";
    let der = [
        &b"\x30\x31\x02\x01\x01\x04\x20"[..],
        &hex::decode(U2F_EXAMPLE_KEY).unwrap(),
        &b"\xa0\x0a\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07"[..],
    ]
    .concat();
    std::fs::write(root.join("u2f-example.der"), der).unwrap();
    let dir = data.join("passkey-authenticators");
    std::fs::create_dir_all(&dir).unwrap();
    for args in [
        vec![
            "ec",
            "-inform",
            "der",
            "-in",
            "u2f-example.der",
            "-out",
            "u2f-example.pem",
        ],
        vec![
            "req",
            "-x509",
            "-new",
            "-key",
            "u2f-example.pem",
            "-subj",
            "/C=US/O=Chromium/OU=Authenticator Attestation/CN=Batch Certificate",
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-out",
        ],
    ] {
        let mut cmd = Command::new("openssl");
        cmd.current_dir(root).args(&args);
        if args[0] == "req" {
            cmd.arg(dir.join("01020304-0506-0708-0102-030405060708.pem"));
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// An issuer with the portal, officers with tokens (admin, anna, bo, hr), and Carl and
/// Frida (registration officers), Dana (an auditor), Hanna (an HR admin) and Ivar (an
/// administrator) with service IDs of their own; Eve holds one but is no officer.
struct Site {
    _server: common::Kill,
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    portal: String,
    t: Cli,
    admin: String,
    anna: String,
    bo: String,
    hr: String,
    carl_card: String,
    dana_person: String,
}

impl Site {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let data = root.join("data");
        let out = Command::new(ISSUER)
            .args(["init", "--data-dir", data.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        common::allow_upn_domain(&data, "example.org");
        chromium_test_authenticator(&root, &data);
        let portal_port = common::free_port();
        let (server, base) = common::serve(
            &data,
            &[
                "--portal-listen",
                &format!("127.0.0.1:{portal_port}"),
                "--portal-origin",
                &format!("https://localhost:{portal_port}"),
            ],
        );
        let t = Cli {
            base,
            dir: root.clone(),
        };
        let bootstrap = std::fs::read_to_string(data.join("bootstrap-admin.token")).unwrap();
        let first = t.ok(
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
        );
        let admin = first["first_token"]["token"].as_str().unwrap().to_owned();
        let anna = t.officer(&admin, "anna", "registration_officer");
        let bo = t.officer(&admin, "bo", "registration_officer");
        let hr = t.officer(&admin, "hr", "hr_admin");
        let (carl_person, carl_card) = person_with_card(&t, &hr, &anna, &bo, 0, &root.join("carl"));
        let (dana_person, _) = person_with_card(&t, &hr, &anna, &bo, 1, &root.join("dana"));
        person_with_card(&t, &hr, &anna, &bo, 2, &root.join("eve"));
        let (frida_person, _) = person_with_card(&t, &hr, &anna, &bo, 3, &root.join("frida"));
        let (hanna_person, _) = person_with_card(&t, &hr, &anna, &bo, 4, &root.join("hanna"));
        let (ivar_person, _) = person_with_card(&t, &hr, &anna, &bo, 5, &root.join("ivar"));
        for (id, name, role, person) in [
            ("carl", "Carl Officer", "registration_officer", &carl_person),
            ("dana", "Dana Officer", "auditor", &dana_person),
            (
                "frida",
                "Frida Officer",
                "registration_officer",
                &frida_person,
            ),
            ("hanna", "Hanna Officer", "hr_admin", &hanna_person),
            ("ivar", "Ivar Officer", "administrator", &ivar_person),
        ] {
            t.ok(
                &admin,
                &[
                    "officer", "add", id, "--name", name, "--role", role, "--person", person,
                ],
            );
        }
        Self {
            _server: server,
            _tmp: tmp,
            root,
            data,
            // A name, not an address: the passkeys' relying-party id is the host.
            portal: format!("https://localhost:{portal_port}"),
            t,
            admin,
            anna,
            bo,
            hr,
            carl_card,
            dana_person,
        }
    }

    /// A browser (curl with a cookie jar) presenting `who`'s card certificate, if any.
    fn browser(&self, who: Option<&str>) -> Browser {
        let jar = self.root.join(format!("jar-{}", common::cli::rand_name()));
        std::fs::write(&jar, "").unwrap();
        Browser {
            cert: who.map(|w| self.root.join(w).join("authentication.pem")),
            key: who.map(|w| self.root.join(w).join("card.key")),
            jar,
            ca: self.data.join("tls-ca.pem"),
            base: self.portal.clone(),
        }
    }
}

#[test]
fn officers_sign_in_with_their_service_id_and_the_portal_holds_the_line() {
    if !common::require(&["curl", "openssl"], &["/usr/lib/softhsm/libsofthsm2.so"]) {
        return;
    }
    let site = Site::new();
    let (t, root) = (&site.t, site.root.as_path());
    let (admin, anna, bo, hr) = (&site.admin, &site.anna, &site.bo, &site.hr);
    let (carl_card, dana_person) = (&site.carl_card, &site.dana_person);
    let browser = |who: Option<&str>| site.browser(who);

    // Without a session every page sends the browser to sign in.
    let nobody = browser(None);
    let got = nobody.get("/admin/people");
    assert_eq!(got.status, 303, "{}", got.body);
    assert!(
        got.headers.contains("location: /admin/sign-in"),
        "{}",
        got.headers
    );
    // Security headers on every page, the sign-in page too.
    let got = nobody.get("/admin/sign-in");
    for h in [
        "content-security-policy: default-src 'none'; script-src 'self';",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "strict-transport-security: max-age=",
        "x-content-type-options: nosniff",
        "cache-control: no-store",
    ] {
        assert!(got.headers.contains(h), "{h} missing: {}", got.headers);
    }
    // Script is allowed only on the two passkey pages; everywhere else, none at all.
    let css = nobody.get("/admin/static/portal.css");
    assert!(
        css.headers
            .contains("content-security-policy: default-src 'none'; style-src 'self';"),
        "{}",
        css.headers
    );
    // Script only from the portal itself (the passkey ceremonies), never inline.
    for tag in got.body.split("<script").skip(1) {
        assert!(
            tag.starts_with(r#" src="/admin/static/passkey.js""#),
            "{}",
            got.body
        );
    }
    // No certificate: the page says what to do.
    let got = nobody.sign_in();
    assert_eq!(got.status, 401, "{}", got.body);
    assert!(got.body.contains("sent no certificate"), "{}", got.body);
    // A certificate from another CA does not get through the TLS handshake.
    let stranger = root.join("stranger");
    std::fs::create_dir(&stranger).unwrap();
    let (ok, text) = common::openssl(
        &stranger,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "card.key",
            "-out",
            "authentication.pem",
            "-subj",
            "/CN=Carl Officer",
            "-days",
            "30",
        ],
    );
    assert!(ok, "{text}");
    assert_eq!(browser(Some("stranger")).get("/admin/sign-in").status, 0);
    // A good service ID of someone who is no officer: refused, and audited — once a
    // minute, however often it is tried (any employee's card gets through TLS).
    for _ in 0..3 {
        let got = browser(Some("eve")).sign_in();
        assert_eq!(got.status, 403, "{}", got.body);
        assert!(got.body.contains("not an officer"), "{}", got.body);
    }

    // Carl signs in; the form without its anti-forgery value changes nothing.
    let carl = browser(Some("carl"));
    let page = carl.get("/admin/sign-in");
    let got = carl.post("/admin/sign-in", &[("csrf", "0000")]);
    assert_eq!(got.status, 403, "{}", got.body);
    let got = carl.post("/admin/sign-in", &[("csrf", &hidden(&page.body, "csrf"))]);
    assert_eq!(got.status, 303, "{}", got.body);
    assert!(
        got.headers.contains("set-cookie: __host-tessera-session="),
        "{}",
        got.headers
    );
    assert!(got.headers.contains("httponly") && got.headers.contains("samesite=strict"));
    let home = carl.get("/admin/");
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(home.body.contains("Carl Officer"), "{}", home.body);
    // The cookie alone is nothing: without Carl's card, or with another officer's, the
    // session does not answer (and is not ended: Carl goes on).
    for other in [None, Some("dana")] {
        let thief = Browser {
            cert: other.map(|w| root.join(w).join("authentication.pem")),
            key: other.map(|w| root.join(w).join("card.key")),
            jar: carl.jar.clone(),
            ca: carl.ca.clone(),
            base: carl.base.clone(),
        };
        let got = thief.get("/admin/people");
        assert_eq!(got.status, 303, "{other:?}: {}", got.body);
    }
    assert_eq!(carl.get("/admin/").status, 200);
    // In Swedish when asked.
    let sv = carl.get("/admin/people?lang=sv");
    assert!(
        sv.body.contains("Anställningsnummer") && sv.body.contains("lang=\"sv\""),
        "{}",
        sv.body
    );
    // Back to English (the choice is remembered in a cookie).
    let people = carl.get("/admin/people?q=offi&lang=en");
    assert!(people.body.contains("lang=\"en\""), "{}", people.body);
    assert!(
        people.body.contains("E1") && people.body.contains("E2"),
        "{}",
        people.body
    );
    // Names outside ASCII are found as typed.
    let asa = t.ok(
        hr,
        &[
            "person",
            "add",
            "--employee-number",
            "E7",
            "--given-name",
            "Åsa",
            "--family-name",
            "Örnsköld",
            "--identity-number",
            "19700202-0001",
        ],
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let found = carl.get("/admin/people?q=%C3%85sa");
    assert!(found.body.contains("Örnsköld"), "{}", found.body);
    let found = carl.get("/admin/people?q=%C3%96rn");
    assert!(found.body.contains("Örnsköld"), "{}", found.body);
    let person = carl.get(&format!("/admin/people/{dana_person}"));
    assert_eq!(person.status, 200, "{}", person.body);
    assert!(person.body.contains("SC-1"), "{}", person.body);

    // Carl asks for a card for Eve's colleague... for Dana: a second card. He cannot
    // approve his own request: the page says why, and a POST anyway is refused, audited.
    let carl_token = {
        t.ok(admin, &["officer", "token", "carl"])["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let c = t.ok(
        &carl_token,
        &["carrier", "add", "--kind", "smart_card", "SC-9"],
    );
    let new_card = c["id"].as_str().unwrap().to_owned();
    let a = t.ok(
        &carl_token,
        &[
            "carrier",
            "assign",
            &new_card,
            "--person",
            dana_person,
            "--terms",
            "2026-1",
        ],
    );
    let approval = a[0]["id"].as_str().unwrap().to_owned();
    let page = carl.get("/admin/approvals");
    assert!(
        page.body.contains("You cannot decide this one"),
        "{}",
        page.body
    );
    assert!(!page
        .body
        .contains(&format!("/admin/approvals/{approval}/decision")));
    let csrf = hidden(&page.body, "csrf");
    let got = carl.post(
        &format!("/admin/approvals/{approval}/decision"),
        &[("csrf", &csrf), ("decision", "approve")],
    );
    assert_eq!(got.status, 403, "{}", got.body);
    // Without the token, or from another origin, nothing is decided either.
    let got = carl.post(
        &format!("/admin/approvals/{approval}/decision"),
        &[("decision", "approve")],
    );
    assert_eq!(got.status, 403, "{}", got.body);
    let got = carl.curl(
        &[
            "-X",
            "POST",
            "-H",
            "Origin: https://evil.example",
            "--data-urlencode",
            &format!("csrf={csrf}"),
            "--data-urlencode",
            "decision=approve",
        ],
        &format!("/admin/approvals/{approval}/decision"),
    );
    assert_eq!(got.status, 403, "{}", got.body);
    let pending = t.ok(anna, &["approve", "list"]);
    assert!(pending.to_string().contains(&approval), "{pending}");

    // Dana, an auditor, reads but sees no control that changes anything; a forged POST
    // with her own valid token is refused by the RA and audited.
    let dana = browser(Some("dana"));
    assert_eq!(dana.sign_in().status, 303);
    let page = dana.get("/admin/approvals");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains("name=\"decision\""), "{}", page.body);
    let csrf = hidden(&page.body, "csrf");
    let got = dana.post(
        &format!("/admin/approvals/{approval}/decision"),
        &[("csrf", &csrf), ("decision", "approve")],
    );
    assert_eq!(got.status, 403, "{}", got.body);
    let audit = dana.get("/admin/audit");
    assert_eq!(audit.status, 200, "{}", audit.body);
    assert!(audit.body.contains("Chain verified"), "{}", audit.body);
    assert!(audit.body.contains("portal.signed_in"), "{}", audit.body);
    let refusals = dana.get("/admin/audit?action=refused");
    for why in [
        "not an officer",
        "approval.decide needs the role",
        "carl asked for this; a second officer must decide",
    ] {
        assert!(
            refusals.body.to_lowercase().contains(why),
            "{why} not audited: {}",
            refusals.body
        );
    }
    // Carl may not read the audit trail.
    assert_eq!(carl.get("/admin/audit").status, 403);

    // Dana exports the evidence: JSON lines, in order, each with its hash, as a download;
    // the export itself is in the trail. Carl may not export.
    let export = dana.post("/admin/audit/export", &[("csrf", &csrf), ("after", "0")]);
    assert_eq!(export.status, 200, "{}", export.body);
    assert!(
        export
            .headers
            .contains("content-disposition: attachment; filename=\"tessera-audit-after-0.jsonl\""),
        "{}",
        export.headers
    );
    let mut previous = 0;
    for line in export.body.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let seq = r["seq"].as_i64().unwrap();
        assert_eq!(seq, previous + 1, "{line}");
        assert!(r["hash"].as_str().is_some_and(|h| h.len() == 64), "{line}");
        previous = seq;
    }
    assert!(previous > 10, "{}", export.body.len());
    assert!(dana
        .get("/admin/audit?action=audit.exported")
        .body
        .contains("audit.exported"));
    let carl_csrf0 = hidden(&carl.get("/admin/people").body, "csrf");
    let got = carl.post("/admin/audit/export", &[("csrf", &carl_csrf0)]);
    assert_eq!(got.status, 403, "{}", got.body);

    // The registration forms hold the same line. Dana (auditor) posting a proofing with
    // her valid token: refused by the RA. Carl without the token, or revoking without
    // confirming: refused, the card still active. Carl's own card offers him nothing.
    let dana_page = carl.get(&format!("/admin/people/{}", site.dana_person));
    assert!(dana_page.body.contains("/proofing"), "{}", dana_page.body);
    let dana_card = dana_page
        .body
        .split("href=\"/admin/carriers/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no card on {}", dana_page.body))
        .to_owned();
    let proofing = [
        ("document_type", "passport"),
        ("document_number", "X1"),
        ("issuing_country", "SE"),
        ("document_expiry", "2035-01-01"),
        ("identity_number", "19900101-0017"),
        ("place", "nowhere"),
    ];
    let mut with_token = vec![("csrf", csrf.as_str())];
    with_token.extend(proofing);
    let got = dana.post(
        &format!("/admin/people/{}/proofing", site.dana_person),
        &with_token,
    );
    assert_eq!(got.status, 403, "{}", got.body);
    let revoke = format!("/admin/carriers/{dana_card}/revocation");
    let got = carl.post(&revoke, &[("reason", "stolen"), ("confirm", "yes")]);
    assert_eq!(got.status, 403, "{}", got.body);
    let carl_csrf = hidden(&carl.get("/admin/people").body, "csrf");
    let got = carl.post(&revoke, &[("csrf", &carl_csrf), ("reason", "stolen")]);
    assert_eq!(got.status, 400, "{}", got.body);
    let got = carl.post(
        &revoke,
        &[
            ("csrf", &carl_csrf),
            ("reason", "no-such"),
            ("confirm", "yes"),
        ],
    );
    assert_eq!(got.status, 400, "{}", got.body);
    let card = carl.get(&format!("/admin/carriers/{dana_card}"));
    assert!(card.body.contains(">active<"), "{}", card.body);
    // Only the reasons an officer revokes for are offered.
    assert!(!card.body.contains("value=\"superseded\""), "{}", card.body);

    // A card request the RA refuses (the person is not proofed) leaves no card in stock:
    // the blank card is registered in the same transaction as the request.
    let ulla = t.ok(
        hr,
        &[
            "person",
            "add",
            "--employee-number",
            "U1",
            "--given-name",
            "Ulla",
            "--family-name",
            "Unproofed",
        ],
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = carl.post(
        &format!("/admin/people/{ulla}/issuance"),
        &[
            ("csrf", &carl_csrf),
            ("kind", "smart_card"),
            ("serial_number", "SC-GHOST"),
            ("terms_version", "1.0"),
        ],
    );
    assert!(
        matches!(got.status, 400 | 409),
        "{}: {}",
        got.status,
        got.body
    );
    assert!(got.body.contains("cannot issue"), "{}", got.body);
    t.ok(anna, &["carrier", "add", "SC-GHOST"]);

    // A PIN unblock for a card whose PUK was never escrowed (its keys came from a CSR):
    // refused with why, nothing asked for.
    let got = carl.post(
        &format!("/admin/carriers/{dana_card}/unblock"),
        &[("csrf", &carl_csrf), ("verification", "in_person")],
    );
    assert!(
        matches!(got.status, 400 | 404 | 409),
        "{}: {}",
        got.status,
        got.body
    );
    assert!(got.body.contains("PUK"), "{}", got.body);
    assert!(!got.body.contains("release code"), "{}", got.body);

    // A substitute card for Dana's person (Carl asks, Bo approves): keys from a CSR and the
    // hand-over in the portal, the period ended early (confirmed), the card wiped and
    // back in stock.
    let got = carl.post(
        &format!("/admin/people/{dana_person}/substitute-card"),
        &[
            ("csrf", &carl_csrf),
            ("serial_number", "SUB-1"),
            ("days", "30"),
        ],
    );
    assert_eq!(got.status, 303, "{}", got.body);
    let card = got
        .headers
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap()
        .trim()
        .to_owned();
    let pending = t.ok(bo, &["approve", "list"]);
    // The list's shape aside: the approval object of kind "substitute", wherever it is.
    fn find_kind(v: &serde_json::Value, kind: &str) -> Option<String> {
        match v {
            serde_json::Value::Object(o) if o.get("kind").is_some_and(|k| k == kind) => {
                o.get("id").and_then(|i| i.as_str()).map(str::to_owned)
            }
            serde_json::Value::Object(o) => o.values().find_map(|v| find_kind(v, kind)),
            serde_json::Value::Array(a) => a.iter().find_map(|v| find_kind(v, kind)),
            _ => None,
        }
    }
    let substitute = find_kind(&pending, "substitute")
        .unwrap_or_else(|| panic!("no substitute approval in {pending}"));
    t.ok(bo, &["approve", "yes", &substitute]);
    let csr = common::card_csr(root, "substitute.key");
    let got = carl.post(
        &format!("{card}/keys"),
        &[("csrf", &carl_csrf), ("csr_authentication", &csr)],
    );
    assert_eq!(got.status, 303, "{}", got.body);
    let got = carl.post(
        &format!("{card}/activation"),
        &[("csrf", &carl_csrf), ("receipt", "R-SUB-1")],
    );
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(
        got.body.contains("End the substitute period"),
        "{}",
        got.body
    );
    let got = carl.post(&format!("{card}/substitute-end"), &[("csrf", &carl_csrf)]);
    assert_eq!(got.status, 400, "{}", got.body);
    let got = carl.post(
        &format!("{card}/substitute-end"),
        &[("csrf", &carl_csrf), ("confirm", "yes")],
    );
    assert_eq!(got.status, 303, "{}", got.body);
    let page = carl.get(&card);
    assert!(
        page.body.contains("revoked (period_ended)"),
        "{}",
        page.body
    );
    let got = carl.post(
        &format!("{card}/retirement"),
        &[("csrf", &carl_csrf), ("outcome", "restock")],
    );
    assert_eq!(got.status, 303, "{}", got.body);
    assert!(carl.get(&card).body.contains(">stock<"));
    let own = carl.get(&format!("/admin/carriers/{carl_card}"));
    assert_eq!(own.status, 200, "{}", own.body);
    assert!(!own.body.contains("/revocation"), "{}", own.body);
    assert!(!own.body.contains("/suspension"), "{}", own.body);

    // Officer management is the administrators': Ivar adds an officer (the first token shown
    // once), makes and revokes a token of Carl's; disabling needs the confirmation. Carl
    // sees his own tokens, not Dana's, and not the officers' list.
    assert_eq!(carl.get("/admin/officers").status, 403);
    assert_eq!(carl.get("/admin/officers/carl").status, 200);
    assert_eq!(carl.get("/admin/officers/dana").status, 403);
    let ivar = browser(Some("ivar"));
    assert_eq!(ivar.sign_in().status, 303);
    let list = ivar.get("/admin/officers");
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(list.body.contains("Hanna Officer"), "{}", list.body);
    let ivar_csrf = hidden(&list.body, "csrf");
    // Neither a person record (for the card) nor an API token: an account nobody could
    // use is refused, and nothing is made.
    let unusable = ivar.post(
        "/admin/officers",
        &[
            ("csrf", &ivar_csrf),
            ("id", "nils"),
            ("name", "Nils New"),
            ("role", "registration_officer"),
            ("person", ""),
        ],
    );
    assert_eq!(unusable.status, 400, "{}", unusable.body);
    assert!(unusable.body.contains("person record"), "{}", unusable.body);
    assert_eq!(ivar.get("/admin/officers/nils").status, 404);
    let added = ivar.post(
        "/admin/officers",
        &[
            ("csrf", &ivar_csrf),
            ("id", "nils"),
            ("name", "Nils New"),
            ("role", "registration_officer"),
            ("person", &asa),
        ],
    );
    assert_eq!(added.status, 200, "{}", added.body);
    assert!(
        added.body.contains("Officer added (nils)"),
        "{}",
        added.body
    );
    // No API token unless asked for: the administrator sees none of Nils's.
    assert!(!added.body.contains("shown only now"), "{}", added.body);
    let added = ivar.post(
        "/admin/officers",
        &[
            ("csrf", &ivar_csrf),
            ("id", "olga"),
            ("name", "Olga Other"),
            ("role", "auditor"),
            ("api_token", "yes"),
        ],
    );
    assert_eq!(added.status, 200, "{}", added.body);
    assert!(added.body.contains("shown only now"), "{}", added.body);
    let token = ivar.post(
        "/admin/officers/carl/tokens",
        &[("csrf", &ivar_csrf), ("label", "laptop"), ("days", "7")],
    );
    assert_eq!(token.status, 200, "{}", token.body);
    assert!(
        token.body.contains("A new API token is made"),
        "{}",
        token.body
    );
    let revoke_at = token
        .body
        .split("action=\"/admin/officers/carl/tokens/")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no token to revoke: {}", token.body))
        .to_owned();
    let got = ivar.post(
        &format!("/admin/officers/carl/tokens/{revoke_at}"),
        &[("csrf", &ivar_csrf)],
    );
    assert_eq!(got.status, 303, "{}", got.body);
    let got = ivar.post("/admin/officers/nils/disabling", &[("csrf", &ivar_csrf)]);
    assert_eq!(got.status, 400, "{}", got.body);
    let got = ivar.post(
        "/admin/officers/nils/disabling",
        &[("csrf", &ivar_csrf), ("confirm", "yes")],
    );
    assert_eq!(got.status, 303, "{}", got.body);
    assert!(ivar.get("/admin/officers/nils").body.contains(">disabled<"));
    let got = carl.post(
        "/admin/officers",
        &[
            ("csrf", &carl_csrf),
            ("id", "mallory"),
            ("name", "M"),
            ("role", "administrator"),
        ],
    );
    assert_eq!(got.status, 403, "{}", got.body);

    // The import page is HR's: Carl gets 403. Hanna's upload of something not an HR file
    // is refused with why; her checked file is hers alone (anyone else: no such import).
    assert_eq!(carl.get("/admin/import").status, 403);
    let hanna = browser(Some("hanna"));
    assert_eq!(hanna.sign_in().status, 303);
    let hanna_csrf = hidden(&hanna.get("/admin/import").body, "csrf");
    let upload = |who: &Browser, token: &str, file: &Path| {
        who.curl(
            &[
                "-F",
                &format!("csrf={token}"),
                "-F",
                &format!("file=@{};type=text/csv", file.display()),
            ],
            "/admin/import",
        )
    };
    let junk = site.root.join("junk.csv");
    std::fs::write(&junk, b"\x00\xff\xfe garbage,\n\x01\x02").unwrap();
    let got = upload(&hanna, &hanna_csrf, &junk);
    assert_eq!(got.status, 400, "{}", got.body);
    assert!(got.body.contains("unknown columns"), "{}", got.body);
    let good = site.root.join("one.csv");
    std::fs::write(
        &good,
        "employee_number,given_name,family_name\nZ1,Zelda,Zed\n",
    )
    .unwrap();
    let got = upload(&hanna, "", &good);
    assert_eq!(got.status, 403, "{}", got.body);
    let got = upload(&carl, &carl_csrf, &good);
    assert_eq!(got.status, 403, "{}", got.body);
    let got = upload(&hanna, &hanna_csrf, &good);
    assert_eq!(got.status, 303, "{}", got.body);
    let job = got
        .headers
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(carl.get(&job).status, 404);
    assert_eq!(
        carl.post(&format!("{job}/apply"), &[("csrf", &carl_csrf)])
            .status,
        403
    );
    // Checked, not applied: Zelda is not in the register until Hanna applies.
    let mut report = hanna.get(&job);
    for _ in 0..50 {
        if !report.body.contains("<progress") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        report = hanna.get(&job);
    }
    assert!(
        report.body.contains("Nothing has changed yet"),
        "{}",
        report.body
    );
    assert!(!t
        .ok(&site.hr, &["person", "list"])
        .to_string()
        .contains("Zelda"));

    // Bo approves in the portal? Bo has no card: he approves through the API; the page
    // then shows nothing pending for that request.
    t.ok(bo, &["approve", "yes", &approval]);
    assert!(!carl.get("/admin/approvals").body.contains(&approval));

    // Carl's card suspended: his session ends at his next click, and he cannot sign in.
    t.ok(
        anna,
        &[
            "carrier",
            "suspend",
            carl_card,
            "--reason",
            "temporarily_lost",
            "--days",
            "3",
        ],
    );
    let got = carl.get("/admin/");
    assert_eq!(got.status, 303, "{}", got.body);
    let got = carl.sign_in();
    assert_eq!(got.status, 403, "{}", got.body);
    assert!(got.body.contains("suspended"), "{}", got.body);

    // Today's page shows the suspension and its deadline (three days off).
    let today = dana.get("/admin/");
    let section = today
        .body
        .split("id=\"suspensions\"")
        .nth(1)
        .and_then(|s| s.split("id=\"due-back\"").next())
        .unwrap_or_default()
        .to_owned();
    assert!(section.contains(carl_card.as_str()), "{}", today.body);
    assert!(section.contains("suspended"), "{section}");

    // Dana signs out: the session is over, and the trail says so.
    let page = dana.get("/admin/");
    let got = dana.post("/admin/sign-out", &[("csrf", &hidden(&page.body, "csrf"))]);
    assert_eq!(got.status, 303, "{}", got.body);
    assert_eq!(dana.get("/admin/").status, 303);
    let trail = t
        .ok(admin, &["audit", "list", "--limit", "1000"])
        .to_string();
    assert_eq!(trail.matches("not an officer").count(), 1, "{trail}");
    assert!(trail.contains("portal.session_ended"), "{trail}");
    assert!(trail.contains("signed out"), "{trail}");
    assert!(trail.contains("this service ID is suspended"), "{trail}");

    // A record edited in the database: the evidence export stops before it, never hands
    // it over as if the chain held (the records before it may come, then the download
    // fails: how much of the last chunk a client gets before the abort is up to timing).
    let config = tessera_issuer_types::config::Config::load(&site.data).unwrap();
    let store = tessera_issuer_store::Store::open_configured(&config.database, &site.data).unwrap();
    diesel::RunQueryDsl::execute(
        diesel::sql_query("UPDATE audit_log SET details = '{\"n\":99}' WHERE seq = 3"),
        &mut store.raw().unwrap(),
    )
    .unwrap();
    drop(store);
    assert_eq!(dana.sign_in().status, 303);
    let csrf = hidden(&dana.get("/admin/audit").body, "csrf");
    let export = dana.post("/admin/audit/export", &[("csrf", &csrf), ("after", "0")]);
    let seqs: Vec<i64> = export
        .body
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["seq"].as_i64())
        .collect();
    // Aborted before or after the headers went out (curl reports 000 or 200), never refused.
    assert!(matches!(export.status, 0 | 200), "{}", export.status);
    assert!(seqs.iter().all(|s| *s < 3), "{}", export.body);
}

/// The portal in Debian's headless Chromium, driven by Playwright (`tests/portal/browser.py`),
/// each officer's browser presenting their card's certificate: sign-in, today, people,
/// a person, approvals (an own request shown without buttons, another's approved with a
/// click), a form without its token refused, Swedish, the auditor's read-only pages and the
/// verified audit trail with a filter, sign-out; axe-core on every main page (no serious or
/// critical violation). Screenshots stay in the target directory's
/// `tmp/portal-browser/`.
#[test]
fn the_portal_in_chromium_with_officers_cards() {
    let python = std::env::var("TESSERA_PLAYWRIGHT_PYTHON").ok();
    let Some(python) = python.filter(|p| Path::new(p).exists()) else {
        assert!(
            std::env::var("CI").is_err(),
            "TESSERA_PLAYWRIGHT_PYTHON (a Python with playwright and axe-playwright-python; deploy/dev/test.sh sets it up) is required with CI=true"
        );
        eprintln!("skipped: TESSERA_PLAYWRIGHT_PYTHON not set (deploy/dev/test.sh sets it up)");
        return;
    };
    if !common::require(&["curl", "openssl", "chromium"], &["/usr/bin/chromium"]) {
        return;
    }
    let site = Site::new();
    let t = &site.t;
    // Carl asks for a second card for Dana (his own request); Anna asks for one for Eve.
    let carl_token = t.ok(&site.admin, &["officer", "token", "carl"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let request = |token: &str, person: &str, serial: &str| {
        let c = t.ok(token, &["carrier", "add", "--kind", "smart_card", serial]);
        let card = c["id"].as_str().unwrap().to_owned();
        let a = t.ok(
            token,
            &[
                "carrier", "assign", &card, "--person", person, "--terms", "2026-1",
            ],
        );
        a[0]["id"].as_str().unwrap().to_owned()
    };
    let own = request(&carl_token, &site.dana_person, "SC-20");
    let people = t.ok(&site.hr, &["person", "list"]).to_string();
    let eve = serde_json::from_str::<serde_json::Value>(&people)
        .ok()
        .and_then(|v| {
            v.as_array()?
                .iter()
                .find(|p| p["employee_number"] == "E2")
                .map(|p| p["id"].as_str().unwrap_or_default().to_owned())
        })
        .unwrap_or_else(|| panic!("no E2 in {people}"));
    request(&site.anna, &eve, "SC-21");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("portal-browser");
    let _ = std::fs::remove_dir_all(&out);
    let config = site.root.join("browser.json");
    let officer = |w: &str| {
        serde_json::json!({
            "cert": site.root.join(w).join("authentication.pem"),
            "key": site.root.join(w).join("card.key"),
        })
    };
    // The walk-through's HR file (a bad row first, then the file put right) and the keys
    // Greta's card and her temporary card generate (CSRs; the keys stay here).
    let walk = site.root.join("walk");
    std::fs::create_dir_all(&walk).unwrap();
    let header = "employee_number,given_name,family_name,email,upn,identity_number\n";
    let rows = "W1,Greta,Walker,greta@example.org,greta@example.org,19950101-1234\n\
                W2,Hugo,Walker,hugo@example.org,hugo@example.org,19880808-1239\n";
    std::fs::write(
        walk.join("hr-bad.csv"),
        format!("{header}{rows}W3,Ines,Walker,ines@example.org,ines@example.org,19880808-1230\n"),
    )
    .unwrap();
    std::fs::write(walk.join("hr.csv"), format!("{header}{rows}")).unwrap();
    let card_csr = common::card_csr(&walk, "greta-card.key");
    let temporary_csr = common::card_csr(&walk, "greta-temporary.key");
    std::fs::write(
        &config,
        serde_json::json!({
            "base": site.portal,
            "carl": officer("carl"),
            "dana": officer("dana"),
            "frida": officer("frida"),
            "hanna": officer("hanna"),
            "ivar": officer("ivar"),
            "hr_bad": walk.join("hr-bad.csv"),
            "hr": walk.join("hr.csv"),
            "card_csr": card_csr,
            "temporary_csr": temporary_csr,
            "own_request": own,
            "own_request_subject": "Dana Officer",
            "other_request_subject": "Eve Officer",
        })
        .to_string(),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/portal/browser.py");
    let run = Command::new(python)
        .arg(script)
        .arg(&config)
        .arg(&out)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        run.status.success(),
        "the browser walk-through failed:\n{text}"
    );
    eprintln!("{text}");
    assert!(out.join("accessibility.json").exists());
    // What the browser did is in the audit trail: Carl's approval of Eve's card.
    let trail = t
        .ok(&site.admin, &["audit", "list", "--limit", "1000"])
        .to_string();
    assert!(trail.contains("approval.decided"), "{trail}");
    assert!(!t
        .ok(&site.anna, &["approve", "list"])
        .to_string()
        .contains("Eve Officer"));
}

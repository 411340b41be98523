//! SSO end to end, with parts we did not write: the issuer (`tessera-issuer`, run as a
//! deployment runs it) issues Eva's service ID; pysaml2 (PyPI) is the relying party, a web
//! service on loopback; Debian's Chromium, driven by Playwright, is Eva's browser and
//! presents her card's certificate to the login host (`tests/sso/browser.py`). Then the
//! card is revoked: the issuer's status feed ends her session within seconds and the next
//! login is refused. Screenshots and axe reports stay in the target directory's
//! `tmp/idp-sso/`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::issuer::{curl, free_port, issuer, openssl, run, Kill};
use common::IDP;

struct Peers {
    playwright: String,
    pysaml2: String,
}

fn peers() -> Option<Peers> {
    let var = |name: &str| std::env::var(name).ok().filter(|p| Path::new(p).exists());
    let missing: Vec<&str> = [
        "curl",
        "openssl",
        "xmlsec1",
        "/usr/bin/chromium",
        "/usr/lib/softhsm/libsofthsm2.so",
    ]
    .into_iter()
    .filter(|p| {
        !(Path::new(p).exists()
            || Command::new("sh")
                .args(["-c", &format!("command -v {p}")])
                .output()
                .is_ok_and(|o| o.status.success()))
    })
    .collect();
    match (
        var("TESSERA_PLAYWRIGHT_PYTHON"),
        var("TESSERA_PYSAML2_PYTHON"),
        missing.is_empty(),
    ) {
        (Some(playwright), Some(pysaml2), true) => Some(Peers {
            playwright,
            pysaml2,
        }),
        _ => {
            let msg = format!(
                "TESSERA_PLAYWRIGHT_PYTHON and TESSERA_PYSAML2_PYTHON, and {missing:?} (deploy/dev/test.sh sets them up)"
            );
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "required with CI=true: {msg}"
            );
            eprintln!("skipped: {msg}");
            None
        }
    }
}

#[test]
fn sso_with_pysaml2_and_chromium_and_revocation_ends_the_session() {
    let Some(peers) = peers() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let issuer = issuer(dir);

    // The IdP, with the card login for the issuer's CA.
    let (idp_port, login_port, sp_port) = (free_port(), free_port(), free_port());
    let idp_base = format!("http://127.0.0.1:{idp_port}");
    let login = format!("https://localhost:{login_port}");
    let data = dir.join("idp");
    // The SP: its key and certificate (also its TLS, from a CA of its own that the IdP's
    // logout client is told to trust), its metadata into our registry.
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "sp-ca.key",
            "-out",
            "sp-ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Test SP CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "sp.key",
            "-out",
            "sp.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("sp.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "sp.csr",
            "-CA",
            "sp-ca.pem",
            "-CAkey",
            "sp-ca.key",
            "-CAcreateserial",
            "-out",
            "sp.pem",
            "-days",
            "2",
            "-extfile",
            "sp.ext",
        ],
    );
    run(
        Path::new(IDP),
        &[
            "init",
            "--data-dir",
            data.to_str().unwrap(),
            "--issuer-url",
            &issuer.base,
            "--base-url",
            &idp_base,
            "--login-url",
            &login,
            "--card-ca",
            dir.join("issuing.pem").to_str().unwrap(),
            "--card-policy",
            &issuer.policy,
            "--issuer-token-file",
            issuer.idp_token.to_str().unwrap(),
            "--logout-ca",
            dir.join("sp-ca.pem").to_str().unwrap(),
        ],
    );
    let sp_base = format!("https://127.0.0.1:{sp_port}");
    let sp_config = serde_json::json!({
        "entity_id": format!("{sp_base}/sp"), "base": sp_base, "port": sp_port,
        "key": dir.join("sp.key"), "cert": dir.join("sp.pem"),
        "idp_metadata": dir.join("idp-metadata.xml"),
    });
    std::fs::write(dir.join("sp.json"), sp_config.to_string()).unwrap();
    let script = |name: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/sso")
            .join(name)
    };
    let metadata = run(
        Path::new(&peers.pysaml2),
        &[
            script("sp.py").to_str().unwrap(),
            "metadata",
            dir.join("sp.json").to_str().unwrap(),
        ],
    );
    std::fs::create_dir_all(data.join("relying-parties")).unwrap();
    std::fs::write(data.join("relying-parties/sp.xml"), metadata).unwrap();

    let mut idp = Command::new(IDP)
        .args(["serve", "--data-dir", data.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{idp_port}")])
        .args(["--login-listen", &format!("127.0.0.1:{login_port}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("idp.log")).unwrap())
        .spawn()
        .unwrap();
    let _idp_guard = {
        let mut grace = 0;
        while curl(&[&format!("{idp_base}/readyz")]).0 != 200 {
            assert!(
                idp.try_wait().unwrap().is_none(),
                "the IdP stopped: {}",
                std::fs::read_to_string(dir.join("idp.log")).unwrap()
            );
            grace += 1;
            assert!(grace < 300, "the IdP did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        Kill(idp)
    };
    let (status, idp_metadata) = curl(&[&format!("{idp_base}/saml/metadata")]);
    assert_eq!(status, 200);
    std::fs::write(dir.join("idp-metadata.xml"), idp_metadata).unwrap();
    let mut sp = Command::new(&peers.pysaml2)
        .arg(script("sp.py"))
        .args(["serve", dir.join("sp.json").to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(sp.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "listening");
    let _sp = Kill(sp);

    // A signed Redirect request taken twice: the second is a replay, refused with a page.
    let (status, _) = curl(&[
        "-k",
        "-o",
        "/dev/null",
        "-D",
        dir.join("h").to_str().unwrap(),
        &format!("{sp_base}/login?n=0"),
    ]);
    assert_eq!(status, 303);
    let headers = std::fs::read_to_string(dir.join("h")).unwrap();
    let location = headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("location: ")
                .or_else(|| l.strip_prefix("Location: "))
        })
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        location.starts_with(&format!("{idp_base}/saml/sso?SAMLRequest=")),
        "{location}"
    );
    let (first, _) = curl(&["-o", "/dev/null", &location]);
    assert_eq!(first, 303, "to the login host");
    let (second, page) = curl(&[&location]);
    assert_eq!(second, 400);
    assert!(page.contains("was received before (a replay)"), "{page}");
    // Changed in transit: the signature no longer holds.
    let (tampered, page) = curl(&[&location.replace("RelayState=rs-0", "RelayState=rs-9")]);
    assert_eq!(tampered, 400, "{page}");
    // The login host asks every client for a card: without one there is no TLS at all.
    let (no_card, _) = curl(&["-k", &format!("https://127.0.0.1:{login_port}/login?p=x")]);
    assert_eq!(
        no_card, 0,
        "the handshake fails without a client certificate"
    );

    // The login host serves one request per connection: a second request never rides on
    // the first one's handshake (the card signs for every login).
    let card = |extra: &[&str]| -> (u16, String) {
        let mut args = vec![
            "-k",
            "--cert",
            dir.join("authentication.pem")
                .to_str()
                .unwrap()
                .to_owned()
                .leak(),
            "--key",
            dir.join("card.key").to_str().unwrap().to_owned().leak(),
        ];
        args.extend_from_slice(extra);
        curl(&args)
    };
    let (_, connects) = card(&[
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{num_connects}\n",
        &format!("https://localhost:{login_port}/healthz"),
        &format!("https://localhost:{login_port}/healthz"),
    ]);
    assert_eq!(
        connects.split_whitespace().collect::<Vec<_>>(),
        ["1", "1"],
        "{connects}"
    );

    // A hand-over carried to another browser: refused, its ticket spent and its session
    // ended, so the URL is worth nothing afterwards either.
    let jar = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let location_of = |headers: &str| -> String {
        headers
            .lines()
            .find_map(|l| {
                l.strip_prefix("location: ")
                    .or_else(|| l.strip_prefix("Location: "))
            })
            .unwrap_or_else(|| panic!("no Location in {headers}"))
            .trim()
            .to_owned()
    };
    // To the login host: the URL the card logs in at.
    let begin = |n: u32, browser: &str, query: &str| -> String {
        let (status, headers) = curl(&[
            "-k",
            "-s",
            "-o",
            "/dev/null",
            "-D",
            "-",
            &format!("{sp_base}/login?n=1{n}{query}"),
        ]);
        assert_eq!(status, 303, "{headers}");
        let sso = location_of(&headers);
        let (status, headers) = curl(&[
            "-s",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-c",
            &jar(browser),
            &sso,
        ]);
        assert_eq!(status, 303, "{headers}");
        location_of(&headers)
    };
    let start = |n: u32, browser: &str, query: &str| -> String {
        let login_url = begin(n, browser, query);
        let (status, headers) = card(&["-s", "-o", "/dev/null", "-D", "-", &login_url]);
        assert_eq!(status, 303, "the card logs in: {headers}");
        location_of(&headers)
    };
    let handover = start(1, "jar-a", "");
    curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-c",
        &jar("jar-b"),
        &format!("{idp_base}/healthz"),
    ]);
    let (status, page) = curl(&["-b", &jar("jar-b"), &handover]);
    assert_eq!(status, 403, "no browser cookie at all: {page}");
    assert!(page.contains("started in another browser"), "{page}");
    let (status, page) = curl(&["-b", &jar("jar-a"), &handover]);
    assert_eq!(
        status, 400,
        "the ticket was spent by the refused attempt: {page}"
    );
    assert!(page.contains("hand-over is not valid"), "{page}");

    // The release form belongs to its request and session: a forged token is refused.
    // (The request names Eva with a PrincipalSelection: her card logs in.)
    let handover = start(2, "jar-c", "&principal=E1@5590000001");
    let (status, page) = curl(&["-b", &jar("jar-c"), "-c", &jar("jar-c"), &handover]);
    assert_eq!(status, 200, "the release page: {page}");
    let p = page
        .split("name=\"p\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let (status, page) = curl(&[
        "-b",
        &jar("jar-c"),
        "-d",
        &format!("p={p}&token={}&choice=approve", "0".repeat(64)),
        &format!("{idp_base}/saml/consent"),
    ]);
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("does not belong to this login"), "{page}");
    // A PrincipalSelection naming someone else: Eva's card is refused, and the way back
    // tells the e-service AuthnFailed.
    let login_url = begin(3, "jar-d", "&principal=E2@5590000001");
    let (status, page) = card(&[&login_url]);
    assert_eq!(status, 403, "{page}");
    assert!(
        page.contains("asked for another person (by orgAffiliation)") && !page.contains("E2@"),
        "{page}"
    );
    let back = page
        .split("href=\"")
        .find_map(|h| {
            h.split('"')
                .next()
                .filter(|u| u.contains("/saml/failed?p="))
        })
        .unwrap()
        .replace("&amp;", "&");
    // Another browser cannot spend it; this one gets the Response to post back.
    let (status, _) = curl(&["-b", &jar("jar-b"), &back]);
    assert_eq!(status, 403);
    let (status, page) = curl(&["-b", &jar("jar-d"), &back]);
    assert_eq!(status, 200, "{page}");
    let response = page
        .split("name=\"SAMLResponse\" value=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .unwrap_or_else(|| panic!("no SAMLResponse in {page}"));
    let response =
        String::from_utf8(<base64ct::Base64 as base64ct::Encoding>::decode_vec(response).unwrap())
            .unwrap();
    assert!(
        response.contains("urn:oasis:names:tc:SAML:2.0:status:AuthnFailed")
            && !response.contains("Assertion"),
        "{response}"
    );
    // Embedded in another site's page, the login host does nothing.
    let (status, _) = card(&[
        "-H",
        "Sec-Fetch-Dest: image",
        &format!("https://localhost:{login_port}/login?p=x"),
    ]);
    assert_eq!(status, 403);

    // Eva in Chromium.
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("idp-sso");
    let _ = std::fs::remove_dir_all(&out);
    let browser_config = serde_json::json!({
        "sp": sp_base, "idp": idp_base, "login": login,
        "cert": dir.join("authentication.pem"), "key": dir.join("card.key"), "out": out,
    });
    std::fs::write(dir.join("browser.json"), browser_config.to_string()).unwrap();
    let browse = |phase: &str| {
        let r = Command::new(&peers.playwright)
            .arg(script("browser.py"))
            .args([dir.join("browser.json").to_str().unwrap(), phase])
            .output()
            .unwrap();
        assert!(
            r.status.success(),
            "browser.py {phase}: {}{}\nIdP log:\n{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr),
            std::fs::read_to_string(dir.join("idp.log")).unwrap_or_default()
        );
    };
    browse("first");
    let got: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("first.json")).unwrap()).unwrap();
    assert_eq!(got["issuer"], format!("{idp_base}/saml/metadata"));
    assert_eq!(
        got["loa"],
        serde_json::json!(["http://id.swedenconnect.se/loa/1.0/uncertified-loa3"])
    );
    assert_eq!(
        got["name_id_format"],
        "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
    );
    assert_eq!(got["name_id"].as_str().unwrap().len(), 64);
    assert_eq!(got["encrypted"], true, "the assertion travelled encrypted");
    assert_eq!(got["relay_state"], "rs-1");
    let attributes = &got["attributes"];
    assert_eq!(attributes["displayName"], serde_json::json!(["Eva Ek"]));
    assert_eq!(
        attributes["orgAffiliation"],
        serde_json::json!(["E1@5590000001"])
    );
    assert_eq!(
        attributes["o"],
        serde_json::json!(["Tessera Trial Organisation"])
    );
    assert_eq!(attributes["mail"], serde_json::json!(["e1@example.org"]));
    let cancelled = std::fs::read_to_string(out.join("cancelled.txt")).unwrap();
    assert!(cancelled.contains("cancel"), "{cancelled}");

    // The administrators see her sessions.
    let admin_token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let bearer = format!("Authorization: Bearer {admin_token}");
    let sessions = || -> Vec<serde_json::Value> {
        let (status, body) = curl(&["-H", &bearer, &format!("{idp_base}/admin/api/sessions")]);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Vec<serde_json::Value>>(&body)
            .unwrap()
            .into_iter()
            .filter(|s| s["serial"] == issuer.serial.as_str())
            .collect()
    };
    let live = sessions();
    assert!(!live.is_empty());
    assert!(
        live.iter()
            .any(|s| s["relying_parties"] == serde_json::json!([format!("{sp_base}/sp")])),
        "{live:?}"
    );
    assert_eq!(curl(&[&format!("{idp_base}/admin/api/sessions")]).0, 401);
    assert_eq!(
        curl(&[
            "-H",
            "Authorization: Bearer nope",
            &format!("{idp_base}/admin/api/sessions")
        ])
        .0,
        401
    );

    // The card is revoked at the issuer: her sessions end within seconds.
    let revoked_at = Instant::now();
    issuer.t.ok(
        &issuer.anna,
        &["carrier", "revoke", &issuer.carrier, "--reason", "lost"],
    );
    while !sessions().is_empty() {
        assert!(
            revoked_at.elapsed() < Duration::from_secs(10),
            "sessions still live after 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "sessions ended {:?} after the revocation",
        revoked_at.elapsed()
    );
    // The SP is told over SOAP, signed, for the session it was given (pysaml2 checked the
    // signature against our metadata and the Destination).
    let forced: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("forced.json")).unwrap()).unwrap();
    let indexes = [&got["session_index"], &forced["session_index"]].map(|i| serde_json::json!([i]));
    let logouts = loop {
        let (status, body) = curl(&["-k", &format!("{sp_base}/logouts")]);
        assert_eq!(status, 200, "{body}");
        let logouts: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        let told = |i| logouts.iter().any(|l| &l["session_index"] == i);
        if indexes.iter().all(told) || revoked_at.elapsed() > Duration::from_secs(20) {
            break logouts;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Every session that answered the SP is ended there (the first phase logs in twice:
    // SSO, then ForceAuthn), each LogoutRequest verified by pysaml2.
    assert!(
        logouts.iter().all(|l| l["error"].is_null()
            && l["name_id"] == got["name_id"]
            && l["issuer"] == format!("{idp_base}/saml/metadata")),
        "{logouts:?}"
    );
    // Both sessions (the first, and ForceAuthn's) ended with the revocation.
    for (i, reason) in indexes.iter().zip(["admin", "admin"]) {
        assert!(
            logouts.iter().any(|l| &l["session_index"] == i
                && l["reason"] == format!("urn:oasis:names:tc:SAML:2.0:logout:{reason}")),
            "no {reason} logout for {i}: {logouts:?}"
        );
    }
    eprintln!(
        "the SP was told {:?} after the revocation",
        revoked_at.elapsed()
    );
    browse("revoked");
    let passive = std::fs::read_to_string(out.join("passive.txt")).unwrap();
    assert!(
        passive.contains("NoPassive") || passive.contains("no session"),
        "{passive}"
    );

    // Everything is in the audit chain, and the chain holds.
    let (status, body) = curl(&["-H", &bearer, &format!("{idp_base}/admin/api/audit")]);
    assert_eq!(status, 200);
    let records: Vec<tessera_issuer_types::audit::AuditRecord> =
        serde_json::from_str(&body).unwrap();
    let mut check = tessera_issuer_types::audit::ChainCheck::after(0);
    for r in &records {
        check.next(r).unwrap();
    }
    let actions: std::collections::BTreeSet<&str> =
        records.iter().map(|r| r.action.as_str()).collect();
    for a in [
        "sso.request",
        "sso.refused",
        "login",
        "sso.response",
        "consent.remembered",
        "consent.withdrawn",
        "sso.status",
        "session.ended",
        "login.refused",
        "slo.notice",
    ] {
        assert!(actions.contains(a), "no {a} in {actions:?}");
    }
    let ended = records
        .iter()
        .find(|r| r.action == "session.ended" && r.actor == "status-feed")
        .unwrap();
    assert!(ended.details.contains(&issuer.serial), "{}", ended.details);
    let notice = records.iter().find(|r| r.action == "slo.notice").unwrap();
    assert!(
        notice.details.contains("logged out at the relying party"),
        "{}",
        notice.details
    );
}

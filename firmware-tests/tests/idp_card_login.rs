//! The identity provider's card login with the reference card through our PKCS#11 module,
//! by a client we did not write: gnutls-cli with a `pkcs11:` URL. In a private PC/SC lab
//! (pcscd, vpcd, the reference card) the issuer certifies a key made and attested on the
//! card; the IdP (`tessera-idp serve`) takes an AuthnRequest by HTTP-POST, gnutls-cli logs
//! in at the login host with the card (PIN through our module), and the browser's side
//! (curl with the request's cookie) approves the release and gets the sealed Response, which
//! `xmlsec1` decrypts with the relying party's key. Then the card is revoked and the same
//! login is refused.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{tessera_module, yk, Lab};

/// A workspace binary beside this test's directory, built if missing.
fn binary(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(bin);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        assert!(
            Command::new(cargo)
                .args(["build", "-p", package, "--bin", bin])
                .status()
                .expect("cargo")
                .success(),
            "building {bin}"
        );
    }
    path
}

/// Runs in the lab; asserts success; returns stdout alone.
fn stdout(lab: &Lab, program: &str, args: &[&str]) -> String {
    let out = lab.run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn wait_until(lab: &Lab, what: &str, url: &str) {
    for _ in 0..300 {
        if lab
            .run("curl", &["-sf", "-o", "/dev/null", url])
            .status
            .success()
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{what} did not come up");
}

/// The `tessera` CLI in the lab with an officer's token; its JSON answer.
fn tessera(lab: &Lab, cli: &Path, token: &str, args: &[&str]) -> serde_json::Value {
    std::fs::write(lab.dir.path().join("t"), token).expect("token");
    let mut all = vec![
        "--url",
        "http://127.0.0.1:8080",
        "--json",
        "--token-file",
        "t",
    ];
    all.extend_from_slice(args);
    json(&stdout(lab, &cli.to_string_lossy(), &all))
}

/// The value of `name="…" value="…"` in a page.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        + marker.len();
    page[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_card_logs_in_through_our_module_with_gnutls_cli_and_not_after_revocation() {
    if !support::require(
        &[
            "unshare",
            "nsenter",
            "pcscd",
            "ip",
            "yubico-piv-tool",
            "openssl",
            "curl",
            "gnutls-cli",
            "xmlsec1",
        ],
        &[support::VPCD_DRIVER, "/usr/lib/softhsm/libsofthsm2.so"],
    ) {
        return;
    }
    let (issuer, cli, idp) = (
        binary("tessera-issuer", "tessera-issuer"),
        binary("tessera-cli", "tessera"),
        binary("tessera-idp", "tessera-idp"),
    );
    let mut lab = Lab::start(support::CardOptions::default());
    let dir = lab.dir.path().to_owned();
    let s = |p: &Path| p.to_string_lossy().into_owned();

    // The issuer, trusting the reference card's manufacturer for attestations.
    let data = dir.join("issuer");
    stdout(&lab, &s(&issuer), &["init", "--data-dir", &s(&data)]);
    std::fs::create_dir_all(data.join("attestation-roots")).expect("roots");
    std::fs::copy(
        tessera_firmware_tests::state::manufacturer_ca_path(&lab.state),
        data.join("attestation-roots/card.pem"),
    )
    .expect("manufacturer CA");
    lab.spawn(
        &s(&issuer),
        &[
            "serve",
            "--data-dir",
            &s(&data),
            "--listen",
            "127.0.0.1:8080",
            "--public-url",
            "http://127.0.0.1:8080",
        ],
        "issuer.log",
    );
    wait_until(&lab, "the issuer", "http://127.0.0.1:8080/readyz");
    let t = |token: &str, args: &[&str]| tessera(&lab, &cli, token, args);
    let token = |v: serde_json::Value| v["token"].as_str().expect("token").to_owned();
    let bootstrap = std::fs::read_to_string(data.join("bootstrap-admin.token")).expect("bootstrap");
    let admin = token(
        t(
            &bootstrap,
            &[
                "officer",
                "add",
                "admin",
                "--name",
                "A",
                "--role",
                "administrator",
            ],
        )["first_token"]
            .clone(),
    );
    let officer = |id: &str, role: &str| {
        t(
            &admin,
            &["officer", "add", id, "--name", id, "--role", role],
        );
        token(t(&admin, &["officer", "token", id]))
    };
    let (anna, bo, hr, idp_token) = (
        officer("anna", "registration_officer"),
        officer("bo", "registration_officer"),
        officer("hr", "hr_admin"),
        officer("idp", "identity_provider"),
    );
    std::fs::write(dir.join("idp.token"), &idp_token).expect("idp token");

    // Eva's card: the key made and attested on the card, certified, handed over.
    let person = t(
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
        ],
    )["id"]
        .as_str()
        .expect("person")
        .to_owned();
    t(
        &anna,
        &[
            "proof",
            &person,
            "--document-type",
            "passport",
            "--document-number",
            "AA1",
            "--issuing-country",
            "SE",
            "--document-expiry",
            "2035-01-01",
            "--place",
            "desk",
            "--identity-number",
            "198112189876",
        ],
    );
    let carrier = t(&anna, &["carrier", "add", "REF-1"])["id"]
        .as_str()
        .expect("carrier")
        .to_owned();
    let approval = t(
        &anna,
        &[
            "carrier", "assign", &carrier, "--person", &person, "--terms", "2026-1",
        ],
    )[0]["id"]
        .as_str()
        .expect("approval")
        .to_owned();
    t(&bo, &["approve", "yes", &approval]);
    yk(
        &lab,
        &[
            "-a",
            "generate",
            "-s",
            "9a",
            "-A",
            "ECCP256",
            "-o",
            "/dev/null",
        ],
    );
    yk(&lab, &["-a", "attest", "-s", "9a", "-o", "att.pem"]);
    yk(
        &lab,
        &["-a", "read-certificate", "-s", "f9", "-o", "f9.pem"],
    );
    t(
        &anna,
        &[
            "carrier",
            "keys",
            &carrier,
            "--attestation",
            "authentication=att.pem,f9.pem",
            "--certificates-out",
            &s(&dir),
        ],
    );
    yk(
        &lab,
        &[
            "-a",
            "import-certificate",
            "-s",
            "9a",
            "-i",
            "authentication.pem",
        ],
    );
    t(
        &anna,
        &["carrier", "activate", &carrier, "--receipt", "R-1"],
    );

    // The IdP, and a relying party of its own registry (unsigned requests, an RSA key to
    // encrypt to).
    let config: serde_json::Value =
        json(&std::fs::read_to_string(data.join("issuer.json")).expect("issuer.json"));
    let idp_dir = dir.join("idp");
    stdout(
        &lab,
        &s(&idp),
        &[
            "init",
            "--data-dir",
            &s(&idp_dir),
            "--issuer-url",
            "http://127.0.0.1:8080",
            "--base-url",
            "http://127.0.0.1:8445",
            "--login-url",
            "https://localhost:8446",
            "--card-ca",
            &s(&data.join("issuing-ca.pem")),
            "--card-policy",
            config["policy_oid"].as_str().expect("policy"),
            "--issuer-token-file",
            &s(&dir.join("idp.token")),
        ],
    );
    lab.run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "sp.key",
            "-out",
            "sp.pem",
            "-days",
            "2",
            "-subj",
            "/CN=sp.example.org",
        ],
    );
    let sp_cert: String = std::fs::read_to_string(dir.join("sp.pem"))
        .expect("sp.pem")
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    std::fs::create_dir_all(idp_dir.join("relying-parties")).expect("registry");
    std::fs::write(
        idp_dir.join("relying-parties/sp.xml"),
        format!(
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://sp.example.org"><md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="encryption"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{sp_cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://sp.example.org/acs" index="0"/></md:SPSSODescriptor></md:EntityDescriptor>"#
        ),
    )
    .expect("sp.xml");
    lab.spawn(
        &s(&idp),
        &[
            "serve",
            "--data-dir",
            &s(&idp_dir),
            "--listen",
            "127.0.0.1:8445",
            "--login-listen",
            "127.0.0.1:8446",
        ],
        "idp.log",
    );
    wait_until(&lab, "the IdP", "http://127.0.0.1:8445/readyz");

    // One login: the request by HTTP-POST, the card at the login host through our module,
    // the release approved, the Response. Returns the login host's answer and, when it
    // let the card in, the sealed Response (base64).
    let login = |n: u32| -> (String, Option<String>) {
        let now = stdout(&lab, "date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]);
        let request = format!(
            r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_req{n}" Version="2.0" IssueInstant="{}" Destination="http://127.0.0.1:8445/saml/sso" AssertionConsumerServiceURL="https://sp.example.org/acs"><saml:Issuer>https://sp.example.org</saml:Issuer></samlp:AuthnRequest>"#,
            now.trim()
        );
        use base64ct::Encoding;
        let encoded = base64ct::Base64::encode_string(request.as_bytes());
        let jar = format!("jar{n}");
        let headers = stdout(
            &lab,
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "-D",
                "-",
                "-c",
                &jar,
                "--data-urlencode",
                &format!("SAMLRequest={encoded}"),
                "http://127.0.0.1:8445/saml/sso",
            ],
        );
        let location = headers
            .lines()
            .find_map(|l| l.strip_prefix("location: "))
            .unwrap_or_else(|| panic!("no redirect to the login host: {headers}"))
            .trim()
            .to_owned();
        let path = location
            .strip_prefix("https://localhost:8446")
            .unwrap_or_else(|| panic!("{location}"))
            .to_owned();
        // gnutls-cli with the card's certificate and key through Tessera's module (its
        // input held open until the server has answered and closed).
        let url =
            |kind: &str| format!("pkcs11:manufacturer=Tessera;id=%01;type={kind};pin-value=123456");
        let answer = stdout(
            &lab,
            "sh",
            &[
                "-c",
                &format!(
                    "(printf 'GET {path} HTTP/1.1\\r\\nHost: localhost:8446\\r\\nConnection: close\\r\\n\\r\\n'; sleep 3) | gnutls-cli --provider '{}' --no-ca-verification --x509certfile '{}' --x509keyfile '{}' -p 8446 127.0.0.1 2>&1; true",
                    tessera_module(),
                    url("cert"),
                    url("private")
                ),
            ],
        );
        let Some(next) = answer
            .lines()
            .find_map(|l| l.strip_prefix("location: "))
            .map(str::trim)
        else {
            return (answer, None);
        };
        // Back at the SSO host in the browser that brought the request: the release.
        let page = stdout(&lab, "curl", &["-s", "-b", &jar, "-c", &jar, next]);
        let form = stdout(
            &lab,
            "curl",
            &[
                "-s",
                "-b",
                &jar,
                "-c",
                &jar,
                "-d",
                &format!(
                    "p={}&token={}&choice=approve",
                    hidden(&page, "p"),
                    hidden(&page, "token")
                ),
                "http://127.0.0.1:8445/saml/consent",
            ],
        );
        (answer, Some(hidden(&form, "SAMLResponse")))
    };

    let (answer, response) = login(1);
    let response = response.unwrap_or_else(|| {
        panic!(
            "the card did not log in:\n{answer}\nIdP log:\n{}",
            lab.read_log("idp.log")
        )
    });
    use base64ct::Encoding;
    let xml = base64ct::Base64::decode_vec(&response).expect("base64");
    std::fs::write(dir.join("response.xml"), &xml).expect("response");
    // xmlsec1 decrypts the assertion with the relying party's key: Eva, at LoA3.
    let decrypted = lab.run_ok(
        "xmlsec1",
        &["--decrypt", "--privkey-pem", "sp.key", "response.xml"],
    );
    for want in ["Eva Ek", "E1@", "uncertified-loa3", "status:Success"] {
        assert!(decrypted.contains(want), "{want} not in {decrypted}");
    }

    // Revoked, the card logs in no more.
    tessera(
        &lab,
        &cli,
        &anna,
        &["carrier", "revoke", &carrier, "--reason", "lost"],
    );
    let (answer, response) = login(2);
    assert!(response.is_none(), "a revoked card logged in");
    assert!(
        answer.contains("403") && answer.contains("revoked"),
        "{answer}"
    );
}

//! Card certificates checked as the login will check them, against a CA, an OCSP
//! responder and a CRL we did not write (OpenSSL's `openssl ca` index answered by
//! `openssl ocsp`, behind a loopback HTTP relay since `openssl ocsp -port` listens on every
//! interface, and a CRL made by `openssl ca -gencrl` served over HTTP on loopback): a
//! good card logs in with its status from OCSP; a revoked one is refused; with the
//! responder down the CRL answers; with both down the card is refused (fail closed);
//! another CA's, an expired, a wrong-EKU and a policy-less certificate are refused before
//! any status is asked; a responder that signs for another CA is not believed.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tessera_idp::card::{check, CardError, StatusSource, Trust};

const POLICY: &str = "1.3.6.1.4.1.99999.1.3";

/// Kills a server when the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA in `dir` (`openssl ca` layout) with an OCSP signer, and the extension sections
/// its certificates use; OCSP and CRL URLs on the given ports.
fn ca(dir: &Path, name: &str, ocsp_port: u16, crl_port: u16) {
    std::fs::create_dir_all(dir.join("new")).unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "1000\n").unwrap();
    std::fs::write(dir.join("crlnumber"), "01\n").unwrap();
    std::fs::write(
        dir.join("ca.cnf"),
        format!(
            r#"[ req ]
distinguished_name = dn
[ dn ]
[ ca ]
default_ca = ca
dir = .
database = ./index.txt
new_certs_dir = ./new
certificate = ./ca.pem
private_key = ./ca.key
serial = ./serial
crlnumber = ./crlnumber
default_md = sha256
default_crl_days = 1
policy = anything
unique_subject = no
copy_extensions = none
[ anything ]
commonName = supplied
[ card ]
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
certificatePolicies = {POLICY}
authorityInfoAccess = OCSP;URI:http://127.0.0.1:{ocsp_port}/
crlDistributionPoints = URI:http://127.0.0.1:{crl_port}/ca.crl
[ wrong_eku ]
keyUsage = critical, digitalSignature
extendedKeyUsage = emailProtection
certificatePolicies = {POLICY}
authorityInfoAccess = OCSP;URI:http://127.0.0.1:{ocsp_port}/
[ no_policy ]
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityInfoAccess = OCSP;URI:http://127.0.0.1:{ocsp_port}/
[ ocsp ]
keyUsage = critical, digitalSignature
extendedKeyUsage = OCSPSigning
[ v3_ca ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
"#
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
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
            &format!("/CN={name}"),
            "-days",
            "30",
            "-extensions",
            "v3_ca",
            "-config",
            "ca.cnf",
        ],
    );
    openssl(
        dir,
        &["x509", "-in", "ca.pem", "-outform", "DER", "-out", "ca.der"],
    );
    issue(dir, "responder", "ocsp", &[]);
}

/// Issues `name` with the extension section `section` (extra `openssl ca` arguments such
/// as dates); returns its DER.
fn issue(dir: &Path, name: &str, section: &str, extra: &[&str]) -> Vec<u8> {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    let csr = format!("{name}.csr");
    let mut args = vec![
        "ca",
        "-batch",
        "-config",
        "ca.cnf",
        "-extensions",
        section,
        "-in",
        &csr,
    ];
    let out = format!("{name}.pem");
    args.extend(["-out", &out]);
    if extra.is_empty() {
        args.extend(["-days", "10"]);
    }
    args.extend(extra);
    openssl(dir, &args);
    openssl(
        dir,
        &[
            "x509",
            "-in",
            &out,
            "-outform",
            "DER",
            "-out",
            &format!("{name}.der"),
        ],
    );
    std::fs::read(dir.join(format!("{name}.der"))).unwrap()
}

fn ocsp_responder(dir: &Path, port: u16) -> Server {
    ocsp_relay(dir, port, None)
}

/// The relay in an attacker's `mode` (see `ocsp_http.py`), or honest.
fn ocsp_relay(dir: &Path, port: u16, mode: Option<&str>) -> Server {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/card/ocsp_http.py");
    let port_text = port.to_string();
    let mut args = vec![script, &port_text, dir.to_str().unwrap()];
    args.extend(mode);
    python(dir, &args, port)
}

/// The CA directory over HTTP (the CRL at `/ca.crl`).
fn crl_server(dir: &Path, port: u16) -> Server {
    python(
        dir,
        &[
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ],
        port,
    )
}

/// `python3 args` in `dir`, once it listens on `port`.
fn python(dir: &Path, args: &[&str], port: u16) -> Server {
    let child = Command::new("python3")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(port);
    Server(child)
}

fn wait_for(port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {port}");
}

fn trust(dir: &Path) -> Trust {
    Trust {
        issuing_cas: vec![std::fs::read(dir.join("ca.der")).unwrap()],
        policy: POLICY.parse().unwrap(),
        loa: "http://id.swedenconnect.se/loa/1.0/uncertified-loa3".into(),
        ocsp_url: None,
        skew: Duration::from_secs(60),
        max_status_age: Duration::from_secs(3600),
        max_crl_age: Duration::from_secs(3600),
        require_nonce: true,
        timeout: Duration::from_secs(5),
    }
}

#[allow(clippy::disallowed_methods)] // the peers' clock: OpenSSL dates its answers now
fn now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
}

#[test]
fn card_certificates_are_checked_and_their_status_fails_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().join("ca");
    let (ocsp_port, crl_port) = (free_port(), free_port());
    ca(&dir, "Tessera Test Issuing CA", ocsp_port, crl_port);
    let good = issue(&dir, "anna", "card", &[]);
    let revoked = issue(&dir, "bo", "card", &[]);
    let wrong_eku = issue(&dir, "eve", "wrong_eku", &[]);
    let no_policy = issue(&dir, "mallory", "no_policy", &[]);
    let expired = issue(
        &dir,
        "old",
        "card",
        &[
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200201000000Z",
        ],
    );
    openssl(
        &dir,
        &[
            "ca",
            "-config",
            "ca.cnf",
            "-revoke",
            "bo.pem",
            "-crl_reason",
            "keyCompromise",
        ],
    );
    openssl(
        &dir,
        &["ca", "-config", "ca.cnf", "-gencrl", "-out", "ca.crl.pem"],
    );
    openssl(
        &dir,
        &[
            "crl",
            "-in",
            "ca.crl.pem",
            "-outform",
            "DER",
            "-out",
            "ca.crl",
        ],
    );
    let trust = trust(&dir);

    // Refused before any status is asked (no responder runs yet).
    let t = now();
    assert_eq!(
        check(&wrong_eku, &trust, t)
            .err()
            .map(|e| matches!(e, CardError::WrongUsage(_))),
        Some(true)
    );
    assert_eq!(
        check(&no_policy, &trust, t).err(),
        Some(CardError::NoPolicy)
    );
    assert_eq!(
        check(&expired, &trust, t).err(),
        Some(CardError::NotValidNow)
    );
    assert!(matches!(
        check(b"junk", &trust, t),
        Err(CardError::Malformed(_))
    ));
    let other = tmp.path().join("other");
    ca(&other, "Tessera Test Issuing CA", ocsp_port, crl_port); // same name, other key
    let stranger = issue(&other, "stranger", "card", &[]);
    assert_eq!(check(&stranger, &trust, t).err(), Some(CardError::OtherCa));

    // Nothing answers: refused, fail closed.
    let got = check(&good, &trust, now());
    assert!(
        matches!(got, Err(CardError::StatusUnknown { .. })),
        "{got:?}"
    );

    // The CRL alone answers.
    let _crl = crl_server(&dir, crl_port);
    let card = check(&good, &trust, now()).unwrap();
    assert_eq!(card.status_from, StatusSource::Crl);
    assert_eq!(
        check(&revoked, &trust, now()).err(),
        Some(CardError::Revoked)
    );

    // OCSP answers (its delegated responder signs).
    let _ocsp = ocsp_responder(&dir, ocsp_port);
    let card = check(&good, &trust, now()).unwrap();
    assert_eq!(card.status_from, StatusSource::Ocsp);
    assert_eq!(
        card.loa,
        "http://id.swedenconnect.se/loa/1.0/uncertified-loa3"
    );
    assert!(card.subject.contains("CN=anna"), "{}", card.subject);
    assert_eq!(
        check(&revoked, &trust, now()).err(),
        Some(CardError::Revoked)
    );

    // A responder for another CA (its own delegated signer) is not believed, and the CRL
    // it does not serve is then missing too: refused.
    drop(_ocsp);
    drop(_crl);
    let other_port = free_port();
    let _liar = ocsp_responder(&other, other_port);
    let mut misled = trust.clone();
    misled.ocsp_url = Some(format!("http://127.0.0.1:{other_port}/"));
    let got = check(&good, &misled, now());
    match got {
        Err(CardError::StatusUnknown { ocsp, .. }) => {
            assert!(ocsp.contains("not signed by the CA"), "{ocsp}")
        }
        other => panic!("{other:?}"),
    }
}

/// An attacker between the IdP and the issuer's status services: an unsigned "try later"
/// to force the CRL, then a CRL from before the revocation; a captured "good" without our
/// nonce; and a certificate the CA signed but does not know. Each is refused.
#[test]
fn an_attacker_on_the_status_path_cannot_bring_a_revoked_card_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().join("ca");
    let (ocsp_port, crl_port) = (free_port(), free_port());
    ca(&dir, "Tessera Test Issuing CA", ocsp_port, crl_port);
    let revoked = issue(&dir, "bo", "card", &[]);
    // What the attacker kept from before the revocation: a CRL two hours old that does
    // not list bo, and OpenSSL's "good" for bo without a nonce.
    openssl(
        &dir,
        &[
            "ca",
            "-config",
            "ca.cnf",
            "-gencrl",
            "-crl_lastupdate",
            &stamp(now() - Duration::from_secs(7200)),
            "-crl_nextupdate",
            &stamp(now() + Duration::from_secs(86_400)),
            "-out",
            "old.crl.pem",
        ],
    );
    openssl(
        &dir,
        &[
            "crl",
            "-in",
            "old.crl.pem",
            "-outform",
            "DER",
            "-out",
            "ca.crl",
        ],
    );
    openssl(
        &dir,
        &[
            "ocsp",
            "-issuer",
            "ca.pem",
            "-cert",
            "bo.pem",
            "-no_nonce",
            "-reqout",
            "old.req",
        ],
    );
    openssl(
        &dir,
        &[
            "ocsp",
            "-index",
            "index.txt",
            "-CA",
            "ca.pem",
            "-rsigner",
            "responder.pem",
            "-rkey",
            "responder.key",
            "-reqin",
            "old.req",
            "-respout",
            "old.resp",
            "-nmin",
            "60",
        ],
    );
    openssl(&dir, &["ca", "-config", "ca.cnf", "-revoke", "bo.pem"]);
    let trust = trust(&dir);
    let _crl = crl_server(&dir, crl_port);

    // Forced to the CRL, which is too old to count.
    let liar = ocsp_relay(&dir, ocsp_port, Some("trylater"));
    let got = check(&revoked, &trust, now());
    match got {
        Err(CardError::StatusUnknown { crl, .. }) => assert!(crl.contains("too old"), "{crl}"),
        other => panic!("{other:?}"),
    }
    drop(liar);
    // A replayed "good" without our nonce: refused, and no fallback to the CRL.
    let replay = ocsp_relay(&dir, ocsp_port, Some("old.resp"));
    match check(&revoked, &trust, now()) {
        Err(CardError::StatusUnknown { ocsp, crl }) => {
            assert!(ocsp.contains("nonce"), "{ocsp}");
            assert!(crl.contains("not asked"), "{crl}");
        }
        other => panic!("{other:?}"),
    }
    drop(replay);
    // A certificate the CA signed but has no record of: OCSP says unknown, refused.
    let ghost = issue(&dir, "ghost", "card", &[]);
    let index = std::fs::read_to_string(dir.join("index.txt")).unwrap();
    let kept: String = index
        .lines()
        .filter(|l| !l.ends_with("CN=ghost"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(kept, index);
    std::fs::write(dir.join("index.txt"), kept).unwrap();
    let _honest = ocsp_responder(&dir, ocsp_port);
    assert_eq!(
        check(&ghost, &trust, now()).err(),
        Some(CardError::UnknownToIssuer)
    );
    assert_eq!(
        check(&revoked, &trust, now()).err(),
        Some(CardError::Revoked)
    );
}

/// `YYYYMMDDHHMMSSZ` for OpenSSL.
fn stamp(t: Duration) -> String {
    let s = tessera_idp::metadata::instant(t);
    s.replace(['-', ':', 'T'], "")
}

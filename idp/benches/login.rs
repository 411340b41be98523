//! Card logins per second, end to end (`cargo bench -p tessera-idp --bench login`): a
//! load generator on loopback runs whole logins against `tessera-idp serve` — the
//! AuthnRequest by HTTP-POST to the SSO host, a full TLS handshake with the card's client
//! certificate at the login host (no resumption: every login is a new card signature),
//! `card::check` with a live OCSP query to the issuer and the issuer's holder lookup, the
//! ticket back to the SSO host, and the sealed Response (assertion signed, encrypted,
//! Response signed in the SoftHSM2 token). The release is remembered, as for a returning
//! user. It prints logins/s, p50 and p99, and the CPU seconds the IdP and the issuer used,
//! so that logins per IdP core-second can be read off on a machine the load generator
//! shares.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed benchmark

#[path = "../tests/common/issuer.rs"]
mod issuer;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64ct::Encoding;
use issuer::{curl, free_port, openssl, run, Kill};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

const IDP: &str = env!("CARGO_BIN_EXE_tessera-idp");
/// Logins in flight at once.
const CLIENTS: usize = 4;
/// How long load is applied (after a warm-up of a few logins).
const RUN: Duration = Duration::from_secs(15);

/// An answer: status, headers (lower-cased names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// HTTP/1.1 over any stream, one request per connection (written by hand: a load
/// generator needs exact control of connections and handshakes, and no cookie jar).
fn exchange(stream: &mut impl ReadWrite, request: &str) -> Answer {
    stream.write_all(request.as_bytes()).unwrap();
    stream.flush().unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The login host's own certificate, pinned (it is self-signed).
#[derive(Debug)]
struct Pinned {
    certificate: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.certificate.as_slice() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not the login host's certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime), counted from 3 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Target {
    sso: String,
    login_port: u16,
    tls: Arc<rustls::ClientConfig>,
}

/// One whole login; returns the SAMLResponse's length.
fn login(t: &Target, n: usize) -> usize {
    #[allow(clippy::disallowed_methods)] // the request is stamped with the real time
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let request = format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_bench{n}_{}" Version="2.0" IssueInstant="{}" Destination="http://{}/saml/sso" AssertionConsumerServiceURL="https://sp.example.org/acs"><saml:Issuer>https://sp.example.org</saml:Issuer></samlp:AuthnRequest>"#,
        now.as_nanos(),
        tessera_saml::response::instant(now),
        t.sso
    );
    let body = format!(
        "SAMLRequest={}",
        percent(&base64ct::Base64::encode_string(request.as_bytes()))
    );
    let mut tcp = TcpStream::connect(&t.sso).unwrap();
    let a = exchange(
        &mut tcp,
        &format!(
            "POST /saml/sso HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            t.sso,
            body.len()
        ),
    );
    assert_eq!(a.status, 303, "{}", a.body);
    let cookie = a
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    let location = a.header("location").unwrap();
    let path = &location[location.find("/login").unwrap()..];
    // The card at the login host: a new connection, a full handshake.
    let tcp = TcpStream::connect(("127.0.0.1", t.login_port)).unwrap();
    let conn = rustls::ClientConnection::new(
        Arc::clone(&t.tls),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let a = exchange(
        &mut tls,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(a.status, 303, "the card did not log in: {}", a.body);
    let next = a.header("location").unwrap();
    let path = &next[next.find("/saml/continue").unwrap()..];
    let mut tcp = TcpStream::connect(&t.sso).unwrap();
    let a = exchange(
        &mut tcp,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nCookie: {cookie}\r\n\r\n",
            t.sso
        ),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let start = a
        .body
        .find("name=\"SAMLResponse\" value=\"")
        .unwrap_or_else(|| panic!("no Response (release not remembered?): {}", a.body));
    a.body[start..].find("\">").unwrap()
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let issuer = issuer::issuer(dir);
    let (sso_port, login_port) = (free_port(), free_port());
    let sso = format!("127.0.0.1:{sso_port}");
    let data = dir.join("idp");
    run(
        Path::new(IDP),
        &[
            "init",
            "--data-dir",
            data.to_str().unwrap(),
            "--issuer-url",
            &issuer.base,
            "--base-url",
            &format!("http://{sso}"),
            "--login-url",
            &format!("https://localhost:{login_port}"),
            "--card-ca",
            dir.join("issuing.pem").to_str().unwrap(),
            "--card-policy",
            &issuer.policy,
            "--issuer-token-file",
            issuer.idp_token.to_str().unwrap(),
        ],
    );
    openssl(
        dir,
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
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    std::fs::create_dir_all(data.join("relying-parties")).unwrap();
    std::fs::write(
        data.join("relying-parties/sp.xml"),
        format!(
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://sp.example.org"><md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="encryption"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{sp_cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://sp.example.org/acs" index="0"/></md:SPSSODescriptor></md:EntityDescriptor>"#
        ),
    )
    .unwrap();
    let idp = Kill(
        Command::new(IDP)
            .args([
                "serve",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                &sso,
            ])
            .args(["--login-listen", &format!("127.0.0.1:{login_port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut up = false;
    for _ in 0..300 {
        if curl(&[&format!("http://{sso}/readyz")]).0 == 200 {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(up, "the IdP did not come up");

    // The card: its certificate and key (the key in a file here: the load generator
    // stands in for many card holders' browsers).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![CertificateDer::from_pem_file(dir.join("authentication.pem")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(dir.join("card.key")).unwrap();
    let pinned = CertificateDer::from_pem_file(data.join("tls-login-1.pem")).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            certificate: pinned.as_ref().to_vec(),
            provider,
        }))
        .with_client_auth_cert(chain, key)
        .unwrap();
    tls.resumption = rustls::client::Resumption::disabled();
    let target = Arc::new(Target {
        sso: sso.clone(),
        login_port,
        tls: Arc::new(tls),
    });

    // The first login approves the release and remembers it, as a returning user has.
    remember_release(&target);
    for n in 1..=5 {
        login(&target, n); // warm-up
    }

    let (idp_cpu, issuer_cpu) = (cpu_seconds(idp.0.id()), cpu_seconds(issuer.server_pid()));
    let started = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let target = Arc::clone(&target);
            std::thread::spawn(move || {
                let mut times = Vec::new();
                let mut n = 1000 * (w + 1);
                while started.elapsed() < RUN {
                    let t = Instant::now();
                    login(&target, n);
                    times.push(t.elapsed());
                    n += 1;
                }
                times
            })
        })
        .collect();
    let mut times: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let elapsed = started.elapsed();
    let (idp_cpu, issuer_cpu) = (
        cpu_seconds(idp.0.id()) - idp_cpu,
        cpu_seconds(issuer.server_pid()) - issuer_cpu,
    );
    times.sort();
    let pick = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    let logins = times.len() as f64;
    println!(
        "card logins (TLS client auth + OCSP + holder + sealed Response), {CLIENTS} clients, {:.0} s, {} cores",
        elapsed.as_secs_f64(),
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    );
    println!(
        "  {:>7.1} logins/s  p50 {:>6.1} ms  p99 {:>6.1} ms  ({} logins)",
        logins / elapsed.as_secs_f64(),
        pick(0.50).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        times.len()
    );
    println!(
        "  CPU: IdP {idp_cpu:.1} s ({:.0} logins per IdP core-second), issuer {issuer_cpu:.1} s (OCSP + holder lookups)",
        logins / idp_cpu.max(0.01)
    );
}

/// The release page, approved with "remember" once.
fn remember_release(t: &Target) {
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let request = format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_first{}" Version="2.0" IssueInstant="{}" Destination="http://{}/saml/sso" AssertionConsumerServiceURL="https://sp.example.org/acs"><saml:Issuer>https://sp.example.org</saml:Issuer></samlp:AuthnRequest>"#,
        now.as_nanos(),
        tessera_saml::response::instant(now),
        t.sso
    );
    let body = format!(
        "SAMLRequest={}",
        percent(&base64ct::Base64::encode_string(request.as_bytes()))
    );
    let mut tcp = TcpStream::connect(&t.sso).unwrap();
    let a = exchange(
        &mut tcp,
        &format!(
            "POST /saml/sso HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            t.sso,
            body.len()
        ),
    );
    let cookie = a
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    let location = a.header("location").unwrap();
    let path = &location[location.find("/login").unwrap()..];
    let tcp = TcpStream::connect(("127.0.0.1", t.login_port)).unwrap();
    let conn = rustls::ClientConnection::new(
        Arc::clone(&t.tls),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let a = exchange(
        &mut tls,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    );
    let next = a.header("location").unwrap();
    let path = &next[next.find("/saml/continue").unwrap()..];
    let mut tcp = TcpStream::connect(&t.sso).unwrap();
    let a = exchange(
        &mut tcp,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nCookie: {cookie}\r\n\r\n",
            t.sso
        ),
    );
    let field = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        let s = a.body.find(&marker).unwrap() + marker.len();
        a.body[s..].split('"').next().unwrap().to_owned()
    };
    let form = format!(
        "p={}&token={}&choice=approve&remember=yes",
        field("p"),
        field("token")
    );
    let session = a
        .headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .filter_map(|(_, v)| v.split(';').next())
        .find(|c| c.starts_with("tessera_idp_session="))
        .unwrap()
        .to_owned();
    let mut tcp = TcpStream::connect(&t.sso).unwrap();
    let a = exchange(
        &mut tcp,
        &format!(
            "POST /saml/consent HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nCookie: {cookie}; {session}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            t.sso,
            form.len()
        ),
    );
    assert!(a.body.contains("SAMLResponse"), "{}", a.body);
}

//! Signature latency through PKCS#11 on the TPM virtual card against the raw TPM signature
//! (tss-esapi directly, the same TPM commands: `PolicySecret` on a PIN index, then `Sign`
//! with a loaded P-256 key), in one run, with swtpm as it is and with 200 ms injected before
//! every TPM command (a real TPM's order). Prints p50/p99 and the overhead;
//! `cargo bench -p tessera-agent`.
//!
//! Everything runs inside the firmware tests' lab (swtpm, a latency proxy, the agent and
//! pcscd in private namespaces): this binary re-executes itself there with `--inner-…`.

#[path = "../../firmware-tests/tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use support::{certify, require, tessera_module, Lab, VPCD_DRIVER};
use tessera_agent::tpm::{policy_secret_digest, Tpm};
use tessera_piv::piv::Algorithm;

const AGENT: &str = env!("CARGO_BIN_EXE_tessera-agent");
const SWTPM_PORT: u16 = 2321;
const PROXY_PORT: u16 = 2421;
const READER: &str = "Tessera VSC 921 00 00";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--inner-proxy") => proxy(args[2].parse().expect("delay ms")),
        Some("--inner-raw") => raw(&args[2], args[3].parse().expect("count")),
        Some("--inner-pkcs11") => pkcs11(&args[2], args[3].parse().expect("count")),
        _ => outer(),
    }
}

/// Forwards the TPM command port with `delay_ms` before each command, and the control
/// port as it is. Commands and responses are framed by their TPM headers (tag, size, code).
fn proxy(delay_ms: u64) {
    let control = TcpListener::bind(("127.0.0.1", PROXY_PORT + 1)).expect("bind control");
    std::thread::spawn(move || {
        for client in control.incoming().flatten() {
            let server = TcpStream::connect(("127.0.0.1", SWTPM_PORT + 1)).expect("swtpm control");
            pipe(client, server);
        }
    });
    let commands = TcpListener::bind(("127.0.0.1", PROXY_PORT)).expect("bind");
    eprintln!("proxy listening");
    for client in commands.incoming().flatten() {
        let mut client = client;
        let mut server = TcpStream::connect(("127.0.0.1", SWTPM_PORT)).expect("swtpm");
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        std::thread::spawn(move || {
            while let Some(command) = read_tpm_message(&mut client) {
                std::thread::sleep(Duration::from_millis(delay_ms));
                if server.write_all(&command).is_err() {
                    break;
                }
                let Some(response) = read_tpm_message(&mut server) else {
                    break;
                };
                if client.write_all(&response).is_err() {
                    break;
                }
            }
        });
    }
}

/// Copies both ways until either side closes, then closes both (swtpm serves one client
/// at a time: a half-open control connection would keep the next one waiting).
fn pipe(a: TcpStream, b: TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().expect("clone"), b.try_clone().expect("clone"));
    let (mut a, mut b) = (a, b);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b2);
        let _ = a.shutdown(std::net::Shutdown::Both);
        let _ = b2.shutdown(std::net::Shutdown::Both);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut b, &mut a2);
        let _ = b.shutdown(std::net::Shutdown::Both);
        let _ = a2.shutdown(std::net::Shutdown::Both);
    });
}

/// One TPM command or response: a 10-byte header whose bytes 2..6 are the total size.
fn read_tpm_message(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut header = [0u8; 10];
    s.read_exact(&mut header).ok()?;
    let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
    let mut message = header.to_vec();
    message.resize(size.max(10), 0);
    s.read_exact(&mut message[10..]).ok()?;
    Some(message)
}

/// `count` signatures with a PIN-bound P-256 key straight through tss-esapi, as the agent
/// makes them: prints one latency in microseconds per line.
fn raw(tcti: &str, count: usize) {
    let mut tpm = Tpm::open(tcti, None).expect("TPM");
    let index = tpm
        .free_nv_index(tessera_agent::tpm::FIRST_NV_INDEX + 0x100, &[])
        .expect("free index");
    let auth = [7u8; 32];
    let name = tpm
        .define_pin_index(index, &auth, 3, &[1u8; 32])
        .expect("PIN index");
    let blob = tpm
        .create_key(Algorithm::EccP256, Some(policy_secret_digest(&name)))
        .expect("key");
    let digest = [9u8; 32];
    // The first signature loads the key and starts the policy session, as on the card.
    tpm.sign(&blob, Algorithm::EccP256, &digest, Some((index, &auth)))
        .expect("sign");
    for _ in 0..count {
        let start = Instant::now();
        tpm.sign(&blob, Algorithm::EccP256, &digest, Some((index, &auth)))
            .expect("sign");
        println!("{}", start.elapsed().as_micros());
    }
    tpm.undefine(index).expect("undefine");
}

/// `count` signatures with the card's 9A key through a PKCS#11 module, logged in once.
fn pkcs11(module: &str, count: usize) {
    let p11 = Pkcs11::new(module).expect("load module");
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = p11.get_slots_with_token().expect("slots")[0];
    let session = p11.open_ro_session(slot).expect("session");
    session
        .login(UserType::User, Some(&AuthPin::from("123456".to_owned())))
        .expect("login");
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(vec![1]),
        ])
        .expect("find key")[0];
    let digest = [9u8; 32];
    session.sign(&Mechanism::Ecdsa, key, &digest).expect("sign");
    for _ in 0..count {
        let start = Instant::now();
        session.sign(&Mechanism::Ecdsa, key, &digest).expect("sign");
        println!("{}", start.elapsed().as_micros());
    }
}

fn outer() {
    if !require(
        &[
            "unshare",
            "nsenter",
            "pcscd",
            "opensc-tool",
            "ip",
            "swtpm",
            "yubico-piv-tool",
            "openssl",
        ],
        &[VPCD_DRIVER],
    ) {
        return;
    }
    let me = std::env::current_exe().expect("own path");
    let me = me.to_string_lossy().into_owned();
    println!("TPM virtual card: ECDSA P-256 signature latency, PKCS#11 (ours, through pcscd, vpcd and the agent) against tss-esapi directly");
    println!(
        "{:<22} {:>12} {:>12} {:>14} {:>14} {:>14}",
        "TPM", "raw p50 ms", "raw p99 ms", "PKCS#11 p50", "PKCS#11 p99", "overhead p50"
    );
    for (label, delay, count) in [
        ("swtpm", 0u64, 200usize),
        ("swtpm + 200 ms/command", 200, 10),
    ] {
        let mut lab = Lab::empty(None);
        lab.spawn_swtpm(SWTPM_PORT);
        lab.spawn(&me, &["--inner-proxy", &delay.to_string()], "proxy.log");
        lab.wait_for_log("proxy.log", "proxy listening");
        let tcti = format!("swtpm:host=127.0.0.1,port={PROXY_PORT}");
        let agent = |args: &[&str]| {
            let mut all = vec!["--data-dir", "agent", "--tcti", &tcti];
            all.extend_from_slice(args);
            lab.run_ok(AGENT, &all)
        };
        // swtpm is up once the agent reaches it.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = lab.run(
                AGENT,
                &[
                    "--data-dir",
                    "agent",
                    "--tcti",
                    &tcti,
                    "vsc",
                    "create",
                    "alice",
                ],
            );
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no TPM: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let raw = samples(&lab.run_ok(&me, &["--inner-raw", &tcti, &count.to_string()]));
        let conf = agent(&["reader-conf", "--driver-dir", &lab.path("drivers")]);
        lab.write_reader_conf(&conf);
        lab.spawn(
            AGENT,
            &["--data-dir", "agent", "--tcti", &tcti, "serve"],
            "agent.log",
        );
        lab.wait_for_log("agent.log", "127.0.0.1:922");
        lab.start_pcscd();
        lab.wait_for_card_in(READER, true);
        lab.run_ok(
            "yubico-piv-tool",
            &[
                "-r", READER, "-a", "generate", "-s", "9a", "-A", "ECCP256", "-o", "9a.pub",
            ],
        );
        certify(&lab, "9a.pub", "9a.crt", "Bench");
        lab.run_ok(
            "yubico-piv-tool",
            &[
                "-r",
                READER,
                "-a",
                "import-certificate",
                "-s",
                "9a",
                "-i",
                "9a.crt",
            ],
        );
        let card = samples(&lab.run_ok(
            &me,
            &["--inner-pkcs11", &tessera_module(), &count.to_string()],
        ));
        let (r50, r99) = (percentile(&raw, 50), percentile(&raw, 99));
        let (c50, c99) = (percentile(&card, 50), percentile(&card, 99));
        println!(
            "{label:<22} {:>12.2} {:>12.2} {:>14.2} {:>14.2} {:>14.2}",
            r50,
            r99,
            c50,
            c99,
            c50 - r50
        );
    }
}

/// Microseconds, one per line, as milliseconds.
fn samples(text: &str) -> Vec<f64> {
    let mut v: Vec<f64> = text
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .map(|us| us / 1000.0)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

fn percentile(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = (sorted.len() * p).div_ceil(100).saturating_sub(1);
    sorted[i.min(sorted.len() - 1)]
}

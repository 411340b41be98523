//! Tessera's PKCS#11 module against OpenSC's on the reference card, in one run: "load the
//! module, read the authentication certificate, verify the PIN, sign" measured as APDUs
//! (counted by the card's trace) and wall time, plus signatures per second with the session
//! kept open, by one process and by two processes signing at once on the same card (every
//! call a PC/SC transaction). Prints its figures; `cargo bench -p tessera-firmware-tests`.
//!
//! The measurement runs inside the lab's namespace: this binary re-executes itself there
//! with `--inner`, because the private pcscd is reachable only inside it.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use support::{personalise, require, CardOptions, Lab, OPENSC_PKCS11, VPCD_DRIVER};

const PIN: &str = "123456";
const RUNS: usize = 10;
const SIGNATURES: usize = 200;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--inner-first") => inner_first(&args[2]),
        Some("--inner-throughput") => inner_throughput(&args[2]),
        Some("--inner-count") => inner_count(&args[2]),
        // cargo bench passes `--bench`; anything else runs the outer driver.
        _ => outer(),
    }
}

/// Everything from loading the module to the first signature, once. Prints microseconds.
fn inner_first(module: &str) {
    let start = Instant::now();
    let p11 = Pkcs11::new(module).expect("load module");
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = p11.get_slots_with_token().expect("slots")[0];
    let session = p11.open_ro_session(slot).expect("session");
    let cert = session
        .find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Id(vec![1]),
        ])
        .expect("find cert")[0];
    let value = session
        .get_attributes(cert, &[AttributeType::Value])
        .expect("cert value");
    assert!(!value.is_empty());
    session
        .login(UserType::User, Some(&AuthPin::from(PIN.to_owned())))
        .expect("login");
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(vec![1]),
        ])
        .expect("find key")[0];
    let sig = session
        .sign(&Mechanism::Ecdsa, key, &[0x42; 32])
        .expect("sign");
    assert_eq!(sig.len(), 64);
    println!("{}", start.elapsed().as_micros());
}

/// Signatures per second with one session kept open. Prints signatures per second.
fn inner_throughput(module: &str) {
    let p11 = Pkcs11::new(module).expect("load module");
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = p11.get_slots_with_token().expect("slots")[0];
    let session = p11.open_ro_session(slot).expect("session");
    session
        .login(UserType::User, Some(&AuthPin::from(PIN.to_owned())))
        .expect("login");
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(vec![1]),
        ])
        .expect("find key")[0];
    let start = Instant::now();
    for _ in 0..SIGNATURES {
        session
            .sign(&Mechanism::Ecdsa, key, &[0x42; 32])
            .expect("sign");
    }
    println!("{:.1}", SIGNATURES as f64 / start.elapsed().as_secs_f64());
}

/// `SIGNATURES` signatures in one open session, counting failures instead of stopping at
/// the first: one of two processes signing at once. Prints `ok failed seconds`.
fn inner_count(module: &str) {
    let p11 = Pkcs11::new(module).expect("load module");
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = p11.get_slots_with_token().expect("slots")[0];
    let session = p11.open_ro_session(slot).expect("session");
    // The other process may have logged the card in already.
    let _ = session.login(UserType::User, Some(&AuthPin::from(PIN.to_owned())));
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(vec![1]),
        ])
        .expect("find key")[0];
    let (mut ok, mut failed) = (0usize, 0usize);
    let start = Instant::now();
    for _ in 0..SIGNATURES {
        match session.sign(&Mechanism::Ecdsa, key, &[0x42; 32]) {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    println!("{ok} {failed} {:.4}", start.elapsed().as_secs_f64());
}

/// Two processes signing at once on the same card: total signatures per second and the
/// failures both saw.
fn two_processes(lab: &Lab, module: &str) -> String {
    let me = std::env::current_exe().expect("own path");
    lab.run_ok("opensc-tool", &["-s", "00 20 FF 80"]);
    let children: Vec<_> = (0..2)
        .map(|_| {
            lab.command(&me)
                .args(["--inner-count", module])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("signer")
        })
        .collect();
    let (mut ok, mut failed, mut seconds) = (0usize, 0usize, 0f64);
    for child in children {
        let out = child.wait_with_output().expect("signer output");
        let text = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<&str> = text.split_whitespace().collect();
        ok += fields
            .first()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        failed += fields
            .get(1)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(SIGNATURES);
        seconds = seconds.max(
            fields
                .get(2)
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN),
        );
    }
    format!("{:.1} ({failed} failed)", ok as f64 / seconds)
}

fn outer() {
    if !require(
        &[
            "unshare",
            "nsenter",
            "pcscd",
            "opensc-tool",
            "yubico-piv-tool",
            "openssl",
        ],
        &[VPCD_DRIVER, OPENSC_PKCS11],
    ) {
        return;
    }
    let lab = Lab::start(CardOptions {
        trace: true,
        ..CardOptions::default()
    });
    personalise(&lab);
    // The bench binary sits in target/<profile>/deps, beside the cdylib cargo built for it.
    let ours = std::env::current_exe()
        .expect("own path")
        .with_file_name("libtessera_pkcs11.so");
    assert!(ours.exists(), "{} not built", ours.display());
    println!("PKCS#11 modules on tessera-card-sim (pcscd + vpcd on loopback), {RUNS} runs each:");
    println!(
        "{:<28} {:>14} {:>10} {:>10} {:>8} {:>12} {:>24}",
        "module", "median ms", "min ms", "max ms", "APDUs", "sig/s open", "sig/s, 2 processes"
    );
    for (name, module) in [
        (
            "tessera libtessera_pkcs11",
            ours.to_str().expect("utf-8 path"),
        ),
        ("OpenSC opensc-pkcs11", OPENSC_PKCS11),
    ] {
        let m = measure(&lab, module);
        let both = two_processes(&lab, module);
        println!(
            "{name:<28} {:>14.1} {:>10.1} {:>10.1} {:>8} {:>12} {:>24}",
            ms(m.times[RUNS / 2]),
            ms(m.times[0]),
            ms(m.times[RUNS - 1]),
            m.apdus[RUNS / 2],
            m.rate,
            both
        );
    }
}

struct Measured {
    times: Vec<Duration>,
    apdus: Vec<usize>,
    rate: String,
}

fn measure(lab: &Lab, module: &str) -> Measured {
    let me = std::env::current_exe().expect("own path");
    let me = me.to_str().expect("utf-8 path");
    let trace = lab.dir.path().join("apdu.trace");
    let mut times = Vec::new();
    let mut apdus = Vec::new();
    for _ in 0..RUNS {
        // Log out between runs, so that no run inherits the previous one's PIN status.
        lab.run_ok("opensc-tool", &["-s", "00 20 FF 80"]);
        std::fs::write(&trace, b"").expect("truncate trace");
        let out = lab.run_ok(me, &["--inner-first", module]);
        let micros: u64 = out.trim().parse().expect("microseconds");
        times.push(Duration::from_micros(micros));
        // The trace also notes the card's state-file writes; count the APDUs only.
        apdus.push(
            std::fs::read_to_string(&trace)
                .expect("trace")
                .lines()
                .filter(|l| !l.starts_with("state saved"))
                .count(),
        );
    }
    times.sort();
    apdus.sort_unstable();
    lab.run_ok("opensc-tool", &["-s", "00 20 FF 80"]);
    let rate = lab
        .run_ok(me, &["--inner-throughput", module])
        .trim()
        .to_owned();
    Measured { times, apdus, rate }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

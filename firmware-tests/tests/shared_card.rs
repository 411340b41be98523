//! One card, several programs, real desktop conditions, through pcscd + vpcd: a logged-in
//! consumer that keeps signing while other programs (ours and OpenSC's, through
//! `pkcs11-tool`) come and go; a program that tries to use another's context-specific login;
//! hostile cards; pcscd stopped and started under p11-kit; slot events; the contactless
//! card-authentication key.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::{require, tessera_module, yk, CardOptions, Lab, OPENSC_PKCS11, READER, VPCD_DRIVER};

const SUITE: &str = env!("CARGO_BIN_EXE_tessera-pkcs11-suite");

fn lab(extra: &[&str]) -> Option<Lab> {
    let mut programs = vec!["pkcs11-tool"];
    programs.extend_from_slice(extra);
    support::personalised_lab(&programs)
}

/// Starts a consumer (`tessera-pkcs11-suite --consumer …`) in the lab.
fn consumer(lab: &Lab, args: &[&str]) -> Child {
    lab.command(SUITE)
        .args(["--module", &tessera_module(), "--consumer"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("consumer")
}

/// The `RESULT` line of a finished consumer, with its error output on failure.
fn result(child: Child) -> String {
    let out = child.wait_with_output().expect("consumer output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "consumer failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line: {text}"))
        .to_owned()
}

fn field<'a>(result: &'a str, name: &str) -> &'a str {
    result
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {name} in {result}"))
}

/// Signs `msg` with the 9A key through `module` in a new process and checks the signature
/// with openssl against the certificate's key.
fn sign_and_verify(lab: &Lab, module: &str, tag: &str) {
    let sig = format!("sig-{tag}");
    lab.run_ok(
        "pkcs11-tool",
        &[
            "--module",
            module,
            "--login",
            "--pin",
            "123456",
            "--sign",
            "--id",
            "01",
            "-m",
            "ECDSA-SHA256",
            "--signature-format",
            "openssl",
            "-i",
            "msg",
            "-o",
            &sig,
        ],
    );
    let verified = lab.run_ok(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-verify",
            "9a.pem",
            "-signature",
            &sig,
            "msg",
        ],
    );
    assert!(verified.contains("Verified OK"), "{tag}: {verified}");
}

#[test]
fn a_logged_in_consumer_keeps_its_login_while_other_programs_come_and_go() {
    let Some(lab) = lab(&[]) else { return };
    std::fs::write(lab.path("msg"), b"signed by another program").unwrap();
    lab.run_ok(
        "openssl",
        &[
            "x509", "-in", "9a.crt", "-pubkey", "-noout", "-out", "9a.pem",
        ],
    );
    // A: ssh-agent's pattern: one login, a signature every 50 ms, for 25 s.
    let holder = consumer(&lab, &["hold", "--seconds", "25", "--interval-ms", "50"]);
    std::thread::sleep(Duration::from_secs(2));
    // B: other programs, one after another, each a new process that loads a module, uses
    // the card and exits: listing with ours, signing with ours and with OpenSC's.
    let deadline = Instant::now() + Duration::from_secs(18);
    let mut rounds = 0;
    while Instant::now() < deadline {
        rounds += 1;
        let listed = lab.run_ok("pkcs11-tool", &["--module", &tessera_module(), "-L"]);
        assert!(listed.contains(READER), "{listed}");
        sign_and_verify(&lab, &tessera_module(), &format!("ours-{rounds}"));
        sign_and_verify(&lab, OPENSC_PKCS11, &format!("opensc-{rounds}"));
    }
    let tally = result(holder);
    println!("holder: {tally}; {rounds} rounds of other programs");
    assert!(rounds >= 3, "too few rounds of other programs: {rounds}");
    assert_eq!(field(&tally, "errors"), "[]", "{tally}");
    assert_eq!(field(&tally, "bad"), "0", "{tally}");
    assert!(field(&tally, "ok").parse::<u64>().unwrap() > 100, "{tally}");
}

#[test]
fn another_program_cannot_use_a_context_specific_login_made_through_ours() {
    let Some(lab) = lab(&[]) else { return };
    // A: 9C signatures, each after its own context-specific login, with a 100 ms pause
    // between the login and the signature: the window an intruder would use.
    let signer = consumer(
        &lab,
        &["context-sign", "--count", "60", "--interval-ms", "100"],
    );
    // The intruder: raw APDUs, no transaction: VERIFY status (which leaves PIN-always
    // freshness in place) and its own GENERAL AUTHENTICATE with 9C, over and over.
    let intruder = lab
        .command(env!("CARGO_BIN_EXE_tessera-pcsc-intruder"))
        .args(["--reader", READER, "--seconds", "8"])
        .output()
        .expect("intruder");
    let intruder_out = String::from_utf8_lossy(&intruder.stdout).into_owned();
    let tally = result(signer);
    println!("signer: {tally}; intruder: {intruder_out}");
    assert!(intruder.status.success(), "{intruder:?}");
    let stolen: u64 = intruder_out
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{intruder_out}"));
    let tries: u64 = intruder_out
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{intruder_out}"));
    assert!(tries > 10, "the intruder hardly ran: {intruder_out}");
    assert_eq!(stolen, 0, "signatures without a PIN: {intruder_out}");
    assert_eq!(field(&tally, "ok"), "60", "{tally}");
}

fn stolen(intruder: &std::process::Output) -> (u64, u64) {
    let text = String::from_utf8_lossy(&intruder.stdout).into_owned();
    assert!(intruder.status.success(), "{intruder:?}");
    let n = |i: usize| -> u64 {
        text.split_whitespace()
            .nth(i)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{text}"))
    };
    (n(1), n(3))
}

#[test]
fn no_login_leaves_a_pin_always_freshness_for_another_program() {
    let Some(lab) = lab(&[]) else { return };
    // A program that logs in and leaves, over and over; then one that makes a context
    // login for 9C and closes the session without signing. Each VERIFY makes the PIN fresh;
    // the module must end that freshness before it lets the card go.
    for args in [
        ["login-loop", "--count", "150"],
        ["abandon-context", "--count", "100"],
    ] {
        let consumer = consumer(&lab, &args);
        let intruder = lab
            .command(env!("CARGO_BIN_EXE_tessera-pcsc-intruder"))
            .args(["--reader", READER, "--seconds", "6"])
            .output()
            .expect("intruder");
        let tally = result(consumer);
        let (stolen, tries) = stolen(&intruder);
        println!("{}: {tally}; intruder {stolen} of {tries}", args[0]);
        assert!(tries > 10, "the intruder hardly ran: {tries}");
        assert_eq!(stolen, 0, "{}: signatures without a PIN", args[0]);
        assert_eq!(field(&tally, "errors"), "[]", "{tally}");
    }
}

#[test]
fn a_program_that_keeps_a_context_login_busy_loses_the_card_at_the_hold_limit() {
    let Some(lab) = lab(&[]) else { return };
    // The holder: a context login never used, then C_GetTokenInfo every second for 30 s.
    let mut holder = consumer(
        &lab,
        &["hold-and-poll", "--seconds", "30", "--interval-ms", "1000"],
    );
    let mut lines = BufReader::new(holder.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().expect("a line").expect("utf-8"), "HOLDING");
    // Another program (OpenSC's tool, which takes a transaction of its own) gets the card
    // once the hold limit is reached, while the holder still runs.
    let other = lab.run_ok("opensc-tool", &["-s", "00 A4 04 00 05 A0 00 00 03 08"]);
    assert!(other.contains("SW1=0x90"), "{other}");
    assert!(
        holder.try_wait().expect("holder").is_none(),
        "the other program got the card only after the holder ended"
    );
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn a_card_another_program_holds_gives_an_error_not_a_hang() {
    let Some(lab) = lab(&["timeout"]) else { return };
    let mut holder = hold_card(&lab, "60");
    let out = lab.run(
        "timeout",
        &[
            "50",
            SUITE,
            "--module",
            &tessera_module(),
            "--consumer",
            "probe",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = holder.kill();
    let _ = holder.wait();
    println!("{text}");
    assert_ne!(
        out.status.code(),
        Some(124),
        "the module waited for ever: {text}"
    );
    // CKR_DEVICE_ERROR, after the module waited its bound for the card.
    assert!(text.contains("probe: error"), "{text}");
}

/// Starts `tessera-pcsc-intruder --mode hold` and waits until it has the card.
fn hold_card(lab: &Lab, seconds: &str) -> Child {
    let mut holder = lab
        .command(env!("CARGO_BIN_EXE_tessera-pcsc-intruder"))
        .args(["--reader", READER, "--mode", "hold", "--seconds", seconds])
        .stdout(Stdio::piped())
        .spawn()
        .expect("holder");
    let mut lines = BufReader::new(holder.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().expect("a line").expect("utf-8"), "HOLDING");
    holder
}

/// The `busy-card` consumer: its stdin to signal it, and its output lines.
struct Busy {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Busy {
    fn start(lab: &Lab, recover: bool) -> Self {
        let mut cmd = lab.command("timeout");
        cmd.args(["90", SUITE, "--module", &tessera_module()])
            .args(["--consumer", "busy-card"]);
        if recover {
            cmd.arg("--recover");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("busy-card");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut busy = Self {
            child,
            stdin,
            lines,
        };
        assert_eq!(busy.line(), "LOADED");
        busy
    }

    fn line(&mut self) -> String {
        self.lines
            .next()
            .unwrap_or_else(|| panic!("busy-card ended: {:?}", self.child.wait()))
            .expect("utf-8")
    }

    fn go(&mut self) {
        use std::io::Write;
        writeln!(self.stdin).expect("signal busy-card");
    }

    /// The `BUSY` line's two outcomes, as (value, milliseconds).
    fn busy(&mut self) -> Vec<(String, u64)> {
        let line = self.line();
        let rest = line
            .strip_prefix("BUSY ")
            .unwrap_or_else(|| panic!("{line}"));
        rest.split_whitespace()
            .map(|kv| {
                let (_, v) = kv.split_once('=').expect("key=value");
                let (what, ms) = v.rsplit_once(':').expect("value:ms");
                (what.to_owned(), ms.parse().expect("milliseconds"))
            })
            .collect()
    }

    fn finalized(mut self) {
        let line = self.line();
        assert!(line.starts_with("FINALIZED "), "{line}");
        let status = self.child.wait().expect("busy-card");
        assert!(status.success(), "busy-card: {status:?} (124: it hung)");
    }
}

#[test]
fn a_card_held_by_another_program_costs_one_bounded_wait_and_finalize_does_not_hang() {
    let Some(lab) = lab(&["timeout"]) else { return };
    let mut busy = Busy::start(&lab, false);
    let mut holder = hold_card(&lab, "120");
    busy.go();
    let calls = busy.busy();
    println!("{calls:?}");
    // The first call waits the module's bound and fails; the second fails at once, without
    // a second waiting thread, and in step with the card thread.
    assert_eq!(calls[0].0, "DeviceError");
    assert_eq!(calls[1].0, "DeviceError");
    assert!(
        calls[1].1 < 2_000,
        "the second call waited again: {calls:?}"
    );
    // C_Finalize while the abandoned card thread still waits in pcsc-lite.
    busy.finalized();
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn once_the_other_program_lets_go_the_module_connects_again() {
    let Some(lab) = lab(&["timeout"]) else { return };
    let mut busy = Busy::start(&lab, true);
    let mut holder = hold_card(&lab, "120");
    busy.go();
    let calls = busy.busy();
    assert_eq!(calls[0].0, "DeviceError", "{calls:?}");
    let _ = holder.kill();
    let _ = holder.wait();
    // The abandoned card thread gets the card, lets it go and ends; then the module
    // connects afresh, with the token and its objects as they were.
    std::thread::sleep(Duration::from_secs(1));
    busy.go();
    let after = busy.line();
    assert_eq!(after, "AFTER ok");
    busy.finalized();
}

/// Runs our module over a hostile card (`tessera-hostile-card --mode MODE` in both vpcd
/// slots) and asserts it comes back with an answer, soon, without growing.
fn survives(mode: &str) {
    if !require(
        &[
            "unshare",
            "nsenter",
            "pcscd",
            "opensc-tool",
            "ip",
            "timeout",
        ],
        &[VPCD_DRIVER],
    ) {
        return;
    }
    let lab = Lab::start(CardOptions {
        listen: true,
        hostile: Some(mode.to_owned()),
        ..CardOptions::default()
    });
    // pcscd powers the hostile cards up; give it a moment to see them.
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let out = lab.run(
        "timeout",
        &[
            "120",
            SUITE,
            "--module",
            &tessera_module(),
            "--consumer",
            "probe",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{mode}: {text} in {:?}", started.elapsed());
    assert_ne!(
        out.status.code(),
        Some(124),
        "{mode}: the module hung: {text}"
    );
    assert!(
        out.status.success(),
        "{mode}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rss: u64 = text
        .split("peak_rss_kb=")
        .nth(1)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(rss < 100 * 1024, "{mode}: grew to {rss} kB");
    let seconds: f64 = text
        .split("seconds=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(seconds < 60.0, "{mode}: took {seconds} s");
}

#[test]
fn a_card_answering_61_00_forever_gets_an_error_not_a_hang() {
    survives("endless61");
}

#[test]
fn a_card_answering_data_and_61_00_forever_does_not_grow_the_module() {
    survives("endless61-data");
}

#[test]
fn a_card_answering_huge_frames_does_not_grow_the_module() {
    survives("huge-answers");
}

#[test]
fn a_card_with_oversized_lengths_gets_an_error() {
    survives("oversized-lengths");
}

#[test]
fn a_card_with_malformed_tlv_gets_an_error() {
    survives("malformed-tlv");
}

/// Registers our module with p11-kit inside the lab, beside the system's modules: a copy
/// of the package module directory, with ours added, mounted over it in the lab's mount
/// namespace (p11-kit ignores a user's own configuration for root).
fn register_with_p11kit(lab: &Lab) {
    let dir = lab.path("p11-kit-modules");
    std::fs::create_dir_all(&dir).expect("module directory");
    for entry in std::fs::read_dir("/usr/share/p11-kit/modules").expect("p11-kit modules") {
        let entry = entry.expect("module file");
        std::fs::copy(
            entry.path(),
            format!("{dir}/{}", entry.file_name().to_string_lossy()),
        )
        .expect("copying a module file");
    }
    std::fs::write(
        format!("{dir}/tessera.module"),
        format!("module: {}\n", tessera_module()),
    )
    .expect("writing our module file");
    lab.run_ok("mount", &["--bind", &dir, "/usr/share/p11-kit/modules"]);
}

fn list_modules(lab: &Lab) -> (bool, String) {
    let out = lab.run("p11-kit", &["list-modules"]);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn without_pcscd_p11_kit_lists_every_module_and_the_token_comes_with_pcscd() {
    let Some(mut lab) = lab(&["p11-kit", "mount"]) else {
        return;
    };
    register_with_p11kit(&lab);
    let (ok, listed) = list_modules(&lab);
    assert!(ok, "{listed}");
    assert!(
        listed.contains("tessera"),
        "our module not registered: {listed}"
    );
    assert!(
        listed.contains("Alice Auth"),
        "token missing with pcscd up: {listed}"
    );

    // A long-lived program (a browser) that loaded the module while pcscd runs, waiting
    // for slot events.
    let mut watcher = consumer(&lab, &["watch-events", "--count", "2"]);
    let mut lines = BufReader::new(watcher.stdout.take().expect("stdout")).lines();
    let mut errors = watcher.stderr.take().expect("stderr");
    let mut next = || match lines.next() {
        Some(line) => line.expect("utf-8"),
        None => {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut errors, &mut text);
            panic!("the watcher ended early: {text}");
        }
    };
    assert_eq!(next(), "NO-EVENT");
    assert_eq!(next(), "WAITING");

    lab.stop_pcscd();
    let (ok, listed) = list_modules(&lab);
    assert!(ok, "p11-kit failed without pcscd: {listed}");
    for module in ["p11-kit-trust", "opensc-pkcs11", "tessera"] {
        assert!(
            listed.contains(module),
            "{module} missing without pcscd: {listed}"
        );
    }
    assert!(!listed.contains("Alice Auth"), "{listed}");
    // The card went with pcscd: an event for the watcher.
    let removed = next();
    assert!(removed.starts_with("EVENT slot=0 present=no"), "{removed}");

    // pcscd comes back and the card (which keeps trying to reach vpcd) with it.
    lab.start_pcscd();
    lab.wait_for_card(true);
    let inserted = next();
    assert!(
        inserted.starts_with("EVENT slot=0 present=yes"),
        "{inserted}"
    );
    assert!(watcher.wait().unwrap().success());
    let (ok, listed) = list_modules(&lab);
    assert!(ok, "{listed}");
    assert!(
        listed.contains("Alice Auth"),
        "token missing after pcscd came back: {listed}"
    );
}

#[test]
fn contactless_the_card_authentication_key_signs_without_login() {
    let Some(mut lab) = lab(&[]) else { return };
    // 9E with its certificate, written over the contact interface.
    yk(
        &lab,
        &[
            "-a", "generate", "-s", "9e", "-A", "ECCP256", "-o", "9e.pub",
        ],
    );
    support::certify(&lab, "9e.pub", "9e.crt", "Alice Card Auth");
    yk(
        &lab,
        &["-a", "import-certificate", "-s", "9e", "-i", "9e.crt"],
    );
    lab.run_ok(
        "openssl",
        &[
            "x509", "-in", "9e.crt", "-pubkey", "-noout", "-out", "9e.pem",
        ],
    );
    lab.start_card(&CardOptions {
        contactless: true,
        ..CardOptions::default()
    });
    let module = tessera_module();
    // C_GetTokenInfo works over contactless (no PIN counter to report).
    let slots = lab.run_ok("pkcs11-tool", &["--module", &module, "-L"]);
    assert!(slots.contains("token label"), "{slots}");
    // Without login: the 9E certificate and private key, and nothing of 9A.
    let objects = lab.run_ok("pkcs11-tool", &["--module", &module, "-O"]);
    assert!(objects.contains("Private Key Object; EC"), "{objects}");
    assert!(objects.contains("Card Authentication"), "{objects}");
    assert!(
        !objects.contains("Alice Auth"),
        "9A over contactless: {objects}"
    );
    std::fs::write(lab.path("challenge"), b"door 7, 08:02").unwrap();
    lab.run_ok(
        "pkcs11-tool",
        &[
            "--module",
            &module,
            "--sign",
            "--id",
            "04",
            "-m",
            "ECDSA-SHA256",
            "--signature-format",
            "openssl",
            "-i",
            "challenge",
            "-o",
            "challenge.sig",
        ],
    );
    let verified = lab.run_ok(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-verify",
            "9e.pem",
            "-signature",
            "challenge.sig",
            "challenge",
        ],
    );
    assert!(verified.contains("Verified OK"), "{verified}");
    // No PIN over contactless, and no read-write session on the write-protected token.
    let login = lab.run(
        "pkcs11-tool",
        &["--module", &module, "--login", "--pin", "123456", "-O"],
    );
    assert!(!login.status.success(), "{login:?}");
}

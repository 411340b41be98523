//! A private PC/SC lab for tests: pcscd with the vpcd reader driver and the reference card,
//! in their own mount and network namespaces (a tmpfs on /run hides the host's pcscd socket;
//! vpcd listens on the namespace's own loopback), and helpers to run peer tools inside it.
//!
//! Missing tools are a failure when `CI=true` and a loud skip otherwise.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The reader driver Debian's vsmartcard-vpcd installs.
pub const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";
/// OpenSC's PKCS#11 module on Debian.
pub const OPENSC_PKCS11: &str = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so";
/// The first reader vpcd opens for our reader.conf entry.
pub const READER: &str = "Tessera vpcd 00 00";

/// Whether the programs and files a test needs exist. With `CI=true` a missing one panics:
/// CI must never pass by skipping.
pub fn require(programs: &[&str], files: &[&str]) -> bool {
    let mut missing: Vec<String> = programs
        .iter()
        .filter(|p| !on_path(p))
        .map(|p| (*p).to_owned())
        .collect();
    missing.extend(
        files
            .iter()
            .filter(|f| !Path::new(f).exists())
            .map(|f| (*f).to_owned()),
    );
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "missing test peers: {} (run deploy/dev/test.sh, which installs them)",
        missing.join(", ")
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Options of the card the lab starts.
#[derive(Debug, Clone, Default)]
pub struct CardOptions {
    pub contactless: bool,
    /// Write the card's APDU trace to `apdu.trace` in the lab directory.
    pub trace: bool,
    /// Use this state file instead of a new blank card.
    pub state: Option<PathBuf>,
    /// Reversed vpcd mode: the cards listen and vpcd connects. Two cards are started, one
    /// per vpcd slot (pcscd 1.9.9 aborts unless every slot port has a listener).
    pub listen: bool,
    /// More arguments for `tessera-card-sim` (a fault point, say).
    pub extra: Vec<String>,
    /// In reversed mode, serve `tessera-hostile-card --mode MODE` in both vpcd slots
    /// instead of the reference card.
    pub hostile: Option<String>,
}

/// pcscd + vpcd + the reference card in a private namespace.
pub struct Lab {
    pub dir: tempfile::TempDir,
    holder: Child,
    ns_pid: String,
    user_ns: bool,
    readers: PathBuf,
    pcscd: Option<Child>,
    card: Option<Child>,
    second_card: Option<Child>,
    /// Other programs started in the lab ([`Lab::spawn`]), stopped with it.
    children: Vec<Child>,
    pub state: PathBuf,
}

/// The reference card's binary (this crate's own; other crates that use the lab start
/// their own card servers with [`Lab::spawn`]).
fn card_sim() -> &'static str {
    match option_env!("CARGO_BIN_EXE_tessera-card-sim") {
        Some(path) => path,
        None => panic!("tessera-card-sim is built by the firmware-tests crate only"),
    }
}

fn hostile_card() -> &'static str {
    match option_env!("CARGO_BIN_EXE_tessera-hostile-card") {
        Some(path) => path,
        None => panic!("tessera-hostile-card is built by the firmware-tests crate only"),
    }
}

impl Lab {
    /// Starts pcscd and a card; waits until the card is present in the reader.
    pub fn start(opts: CardOptions) -> Self {
        // vpcd listens on 35963 (and 35964 for its second slot) inside the namespace; the
        // card connects (TESTBED.md: DEVICENAME /dev/null:PORT).
        // In reversed mode vpcd connects to the cards on 127.0.0.1.
        let device = if opts.listen {
            "127.0.0.1"
        } else {
            "/dev/null"
        };
        let mut lab = Self::empty(opts.state.clone());
        lab.write_reader_conf(&format!(
            "FRIENDLYNAME \"Tessera vpcd\"\nDEVICENAME {device}:35963\nLIBPATH {VPCD_DRIVER}\nCHANNELID 0x8C7B\n"
        ));
        if opts.listen {
            lab.start_listening_cards(opts.hostile.as_deref());
        }
        lab.start_pcscd();
        if opts.listen {
            if opts.hostile.is_none() {
                lab.wait_for_card(true);
            }
        } else {
            lab.start_card(&opts);
        }
        lab
    }

    /// The private namespaces and directory alone: no reader configuration, no pcscd, no
    /// card. A test then writes its reader configuration, starts its card servers with
    /// [`Lab::spawn`] and pcscd with [`Lab::start_pcscd`].
    pub fn empty(state: Option<PathBuf>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let readers = dir.path().join("reader.conf.d");
        std::fs::create_dir(&readers).expect("reader.conf.d");
        let user_ns = !is_root();
        let mut unshare = Command::new("unshare");
        if user_ns {
            unshare.args(["--user", "--map-root-user"]);
        }
        let mut holder = unshare
            .args([
                "--mount",
                "--net",
                "--fork",
                "--kill-child",
                "--",
                "sh",
                "-c",
            ])
            .arg(
                "mount -t tmpfs tmpfs /run && mkdir -p /run/pcscd && ip link set lo up \
                 && echo $$ && exec sleep 100000",
            )
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("namespace holder pid");
        let ns_pid = line.trim().to_owned();
        assert!(!ns_pid.is_empty(), "namespace set-up failed");
        let state = state.unwrap_or_else(|| dir.path().join("card.json"));
        Self {
            dir,
            holder,
            ns_pid,
            user_ns,
            readers,
            pcscd: None,
            card: None,
            second_card: None,
            children: Vec::new(),
            state,
        }
    }

    /// pcscd's reader configuration in the lab.
    pub fn write_reader_conf(&self, content: &str) {
        std::fs::write(self.readers.join("tessera-vpcd"), content).expect("reader conf");
    }

    /// Starts a program in the lab in the background, its output in the log `log`; it is
    /// stopped when the lab is. Returns its index for [`Lab::stop`].
    pub fn spawn(&mut self, program: &str, args: &[&str], log: &str) -> usize {
        let out = self.log_file(log);
        let child = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        self.children.push(child);
        self.children.len() - 1
    }

    /// A software TPM (swtpm) in the lab on `port` (commands) and `port + 1` (control), its
    /// state in the lab's `tpm` directory; log `swtpm.log`.
    pub fn spawn_swtpm(&mut self, port: u16) -> usize {
        std::fs::create_dir_all(self.path("tpm")).expect("tpm state dir");
        let state = format!("dir={}", self.path("tpm"));
        self.spawn(
            "swtpm",
            &[
                "socket",
                "--tpm2",
                "--tpmstate",
                &state,
                "--server",
                &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
                "--ctrl",
                &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
                "--flags",
                "not-need-init,startup-clear",
            ],
            "swtpm.log",
        )
    }

    /// Stops (kills) a program started with [`Lab::spawn`].
    pub fn stop(&mut self, index: usize) {
        if let Some(c) = self.children.get_mut(index) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until `text` shows in the log `log`.
    pub fn wait_for_log(&self, log: &str, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.read_log(log).contains(text) {
            assert!(
                Instant::now() < deadline,
                "{text:?} never showed in {log}: {}",
                self.read_log(log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts pcscd in the lab (again, after [`Lab::stop_pcscd`]).
    pub fn start_pcscd(&mut self) {
        let log = self.log_file("pcscd.log");
        self.pcscd = Some(
            self.command("pcscd")
                .args(["-f", "-c"])
                .arg(&self.readers)
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("pcscd"),
        );
    }

    /// Stops pcscd, and waits until its socket is gone: to programs there is no PC/SC
    /// service. A card in connect mode keeps trying to reach vpcd.
    pub fn stop_pcscd(&mut self) {
        if let Some(mut p) = self.pcscd.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        // pcscd removes its socket on a clean exit only.
        let _ = self.run("rm", &["-f", "/run/pcscd/pcscd.comm"]);
    }

    /// Reversed mode: two cards listening on both vpcd slot ports, up before pcscd starts.
    fn start_listening_cards(&mut self, hostile: Option<&str>) {
        for (port, log, slot) in [(35963, "card.log", 0), (35964, "card2.log", 1)] {
            let state = if slot == 0 {
                self.state.clone()
            } else {
                self.dir.path().join("card2.json")
            };
            let vpcd = format!("127.0.0.1:{port}");
            let child = match hostile {
                Some(mode) => self
                    .command(hostile_card())
                    .args(["--mode", mode, "--vpcd", &vpcd])
                    .stderr(self.log_file(log))
                    .spawn()
                    .expect("tessera-hostile-card"),
                None => self
                    .command(card_sim())
                    .args(["--mode", "listen", "--vpcd", &vpcd])
                    .arg("--state")
                    .arg(&state)
                    .stderr(self.log_file(log))
                    .spawn()
                    .expect("tessera-card-sim"),
            };
            if slot == 0 {
                self.card = Some(child);
            } else {
                self.second_card = Some(child);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while !self.read_log(log).contains("listening for vpcd") {
                assert!(
                    Instant::now() < deadline,
                    "card {slot} never listened: {}",
                    self.read_log(log)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn log_file(&self, name: &str) -> std::fs::File {
        std::fs::File::create(self.dir.path().join(name)).expect("log file")
    }

    /// Starts (or restarts) the card process and waits for it in the reader.
    pub fn start_card(&mut self, opts: &CardOptions) {
        self.stop_card();
        let log = self.log_file("card.log");
        let mut cmd = self.command(card_sim());
        cmd.arg("--state").arg(&self.state);
        if opts.contactless {
            cmd.arg("--contactless");
        }
        if opts.trace {
            cmd.arg("--trace").arg(self.dir.path().join("apdu.trace"));
        }
        cmd.args(&opts.extra);
        self.card = Some(cmd.stderr(log).spawn().expect("tessera-card-sim"));
        self.wait_for_card(true);
    }

    /// Stops the card process: to pcscd the card is removed.
    pub fn stop_card(&mut self) {
        if let Some(mut c) = self.card.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.wait_for_card(false);
        }
    }

    /// Waits until pcscd reports the card present (or gone) in the first reader.
    pub fn wait_for_card(&self, present: bool) {
        self.wait_for_card_in(READER, present);
    }

    /// Waits until pcscd reports a card present (or none) in `reader`.
    pub fn wait_for_card_in(&self, reader: &str, present: bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.command("opensc-tool").arg("-l").output();
            let listed = out
                .as_ref()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let has_card = listed
                .lines()
                .any(|l| l.contains(reader) && l.split_whitespace().nth(1) == Some("Yes"));
            if has_card == present {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "card {} the reader after 30 s; pcscd log:\n{}\ncard log:\n{}",
                if present {
                    "never appeared in"
                } else {
                    "never left"
                },
                self.read_log("pcscd.log"),
                self.read_log("card.log"),
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// A command that runs inside the lab's namespaces.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.ns_pid, "-m", "-n"]);
        if self.user_ns {
            c.args(["-U", "--preserve-credentials"]);
        }
        // Entering a mount namespace resets the working directory to its root.
        c.arg(format!("--wd={}", self.dir.path().display()));
        c.arg("--").arg(program);
        c
    }

    /// Runs a program in the lab; returns its output whatever the exit status.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"))
    }

    /// Runs a program in the lab, asserts success, returns stdout and stderr together.
    pub fn run_ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.run(program, args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{program} {args:?} failed ({}):\n{text}\ncard log:\n{}",
            out.status,
            self.read_log("card.log")
        );
        text
    }

    /// A path inside the lab directory, as a string for command lines.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in [self.card.take(), self.second_card.take()]
            .into_iter()
            .flatten()
            .chain(self.children.drain(..))
        {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut p) = self.pcscd.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// yubico-piv-tool against the lab's card (its reader filter defaults to "Yubikey").
pub fn yk(lab: &Lab, args: &[&str]) -> String {
    let mut all = vec!["-r", "Tessera"];
    all.extend_from_slice(args);
    lab.run_ok("yubico-piv-tool", &all)
}

/// Issues a certificate for a public key read from the card, from a throwaway test CA.
/// (yubico-piv-tool 2.2.0's `selfsign-certificate` fails under OpenSSL 3 before it sends
/// anything to the card — Yubico/yubico-piv-tool#388 — so the tests certify with openssl,
/// as an issuer would.)
pub fn certify(lab: &Lab, pubkey: &str, cert: &str, cn: &str) {
    if !Path::new(&lab.path("ca.key")).exists() {
        lab.run_ok(
            "openssl",
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
                "ca.crt",
                "-subj",
                "/CN=Test CA",
                "-days",
                "30",
            ],
        );
        lab.run_ok(
            "openssl",
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "throwaway.key",
                "-out",
                "throwaway.csr",
                "-subj",
                "/CN=placeholder",
            ],
        );
    }
    lab.run_ok(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "throwaway.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-force_pubkey",
            pubkey,
            "-subj",
            &format!("/CN={cn}"),
            "-days",
            "30",
            "-out",
            cert,
        ],
    );
}

/// Gives the lab's card what the PKCS#11 tests expect, generated on the card: a P-256 key
/// with certificate in 9A, RSA-2048 keys with certificates in 9C and 9D.
/// A lab with the reference card personalised (see [`personalise`]), if the programs the
/// PKCS#11 tests drive (and `extra` ones) are there; a loud skip (a failure with
/// `CI=true`) if not.
pub fn personalised_lab(extra: &[&str]) -> Option<Lab> {
    let mut programs = vec![
        "unshare",
        "nsenter",
        "pcscd",
        "opensc-tool",
        "ip",
        "yubico-piv-tool",
        "openssl",
    ];
    programs.extend_from_slice(extra);
    if !require(&programs, &[VPCD_DRIVER, OPENSC_PKCS11]) {
        return None;
    }
    let lab = Lab::start(CardOptions::default());
    personalise(&lab);
    Some(lab)
}

pub fn personalise(lab: &Lab) {
    for (slot, alg, cn) in [
        ("9a", "ECCP256", "Alice Auth"),
        ("9c", "RSA2048", "Alice Sign"),
        ("9d", "RSA2048", "Alice TLS RSA"),
    ] {
        let (public, cert) = (format!("{slot}.pub"), format!("{slot}.crt"));
        yk(
            lab,
            &["-a", "generate", "-s", slot, "-A", alg, "-o", &public],
        );
        certify(lab, &public, &cert, cn);
        yk(lab, &["-a", "import-certificate", "-s", slot, "-i", &cert]);
    }
}

/// Tessera's PKCS#11 module as cargo built it for these tests (a dev-dependency, so the
/// cdylib sits in the same `deps` directory as the test binary), or the one
/// `TESSERA_PKCS11_MODULE` names.
pub fn tessera_module() -> String {
    // Another build of the module (an installed one, or an older one to show that a test
    // fails without a fix).
    if let Ok(other) = std::env::var("TESSERA_PKCS11_MODULE") {
        return other;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps directory");
    let module = deps.join("libtessera_pkcs11.so");
    assert!(module.exists(), "{} not built", module.display());
    module.to_string_lossy().into_owned()
}

/// TLS 1.3 client authentication with a card key through our module: gnutls-cli
/// (`--provider`) against `openssl s_server -Verify 1` on the lab's loopback. `object`
/// picks the certificate and key in a PKCS#11 URL (`manufacturer=Tessera;id=%01`); the
/// server trusts `ca.crt` (made by [`certify`]).
pub fn tls_client_auth(lab: &Lab, object: &str, port: u16) -> String {
    if !Path::new(&lab.path("srv.crt")).exists() {
        lab.run_ok(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "srv.key",
                "-out",
                "srv.crt",
                "-subj",
                "/CN=localhost",
                "-days",
                "1",
            ],
        );
    }
    let mut server = lab
        .command("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-naccept",
            "1",
            "-tls1_3",
            "-cert",
            "srv.crt",
            "-key",
            "srv.key",
            "-Verify",
            "1",
            "-CAfile",
            "ca.crt",
            "-www",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("s_server");
    std::thread::sleep(Duration::from_millis(500));
    let url = |kind: &str| format!("pkcs11:{object};type={kind};pin-value=123456");
    let client = lab
        .command("sh")
        .arg("-c")
        .arg(format!(
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | gnutls-cli --provider '{}' \
             --no-ca-verification --x509certfile '{}' --x509keyfile '{}' -p {port} 127.0.0.1",
            tessera_module(),
            url("cert"),
            url("private")
        ))
        .output()
        .expect("gnutls-cli");
    let _ = server.kill();
    let server_out = server.wait_with_output().expect("s_server output");
    format!(
        "{}{}{}",
        String::from_utf8_lossy(&client.stdout),
        String::from_utf8_lossy(&client.stderr),
        String::from_utf8_lossy(&server_out.stderr)
    )
}

/// Sets up pam_p11 with our module in the lab: a private /etc/pam.d with a
/// `tessera-login` service, and a user `tessera-alice` whose `~/.eid/authorized_certificates`
/// is `cert` (PEM), both visible only inside the lab's mount namespace (binding over /root
/// would hide the build directory when it lives there).
pub fn pam_p11_user(lab: &Lab, cert: &str) {
    let pamd = lab.path("pam.d");
    std::fs::create_dir(&pamd).expect("pam.d");
    std::fs::write(format!("{pamd}/other"), "auth required pam_deny.so\n").expect("pam other");
    std::fs::write(
        format!("{pamd}/tessera-login"),
        format!(
            "auth required pam_p11.so {}\naccount required pam_permit.so\n",
            tessera_module()
        ),
    )
    .expect("pam service");
    let home = lab.path("alice");
    std::fs::create_dir_all(format!("{home}/.eid")).expect("~/.eid");
    std::fs::copy(cert, format!("{home}/.eid/authorized_certificates"))
        .expect("authorized_certificates");
    let mut passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd.push_str(&format!("tessera-alice:x:0:0:Alice:{home}:/bin/false\n"));
    std::fs::write(lab.path("passwd"), passwd).expect("lab passwd");
    lab.run_ok("mount", &["--bind", &pamd, "/etc/pam.d"]);
    lab.run_ok("mount", &["--bind", &lab.path("passwd"), "/etc/passwd"]);
}

/// `pamtester tessera-login tessera-alice authenticate` with `pin` typed: whether PAM
/// accepted, and what it printed.
pub fn pam_login(lab: &Lab, pin: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = lab
        .command("pamtester")
        .args(["tessera-login", "tessera-alice", "authenticate"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pamtester");
    writeln!(child.stdin.take().expect("stdin"), "{pin}").expect("typing the PIN");
    let out = child.wait_with_output().expect("pamtester output");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

//! A private software TPM for tests: `swtpm` on loopback with its state in a temporary
//! directory, restartable with its state kept (a reboot), killed on drop.
//!
//! A missing swtpm is a failure when `CI=true` and a loud skip otherwise.

#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera_agent::worker::TpmClient;

/// Whether swtpm is installed; with `CI=true` its absence panics.
pub fn have_swtpm() -> bool {
    if Path::new("/usr/bin/swtpm").exists() {
        return true;
    }
    let msg = "missing test peer: swtpm (run deploy/dev/test.sh, which installs it)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// A running swtpm.
pub struct Swtpm {
    pub state: PathBuf,
    pub port: u16,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

/// Two consecutive free loopback ports (server and control).
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let a = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = a.local_addr().expect("addr").port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free ports");
}

impl Swtpm {
    /// A new TPM with empty state (a factory-fresh chip).
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("tpm");
        std::fs::create_dir(&state).expect("tpm state dir");
        let mut tpm = Self {
            state,
            port: 0,
            child: None,
            _dir: Some(dir),
        };
        tpm.boot();
        tpm
    }

    /// The TCTI string for tss-esapi.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// A connection to this TPM on its own thread.
    pub fn client(&self) -> TpmClient {
        TpmClient::spawn(&self.tcti(), None).expect("TPM client")
    }

    fn boot(&mut self) {
        let port = free_port_pair();
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", self.state.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm");
        self.child = Some(child);
        self.port = port;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "swtpm never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the TPM and starts it again on its saved state (a reboot).
    pub fn reboot(&mut self) {
        self.stop();
        self.boot();
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

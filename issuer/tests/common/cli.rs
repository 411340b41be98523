//! The `tessera` admin CLI, run as a test runs it: one officer's token per call.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `tessera` CLI binary beside `tessera-issuer` (built if it is not: cargo builds a
/// package's own binaries for its tests, not other packages').
pub fn cli() -> PathBuf {
    sibling("tessera-cli", "tessera")
}

/// A binary of another workspace package beside `tessera-issuer`, built if missing.
pub fn sibling(package: &str, bin: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_tessera-issuer")).with_file_name(bin);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", package, "--bin", bin])
            .status()
            .unwrap()
            .success();
        assert!(ok, "building {bin}");
    }
    path
}

/// Runs `tessera --json ARGS` with `token`; returns the exit code and the parsed answer
/// (or the error text).
/// The admin CLI against one issuer.
pub struct Cli {
    pub base: String,
    pub dir: PathBuf,
}

impl Cli {
    pub fn run(&self, token: &str, args: &[&str]) -> (i32, serde_json::Value, String) {
        let file = self.dir.join(format!("token-{}", rand_name()));
        std::fs::write(&file, token).unwrap();
        let out = Command::new(cli())
            .args(["--url", &self.base, "--json", "--token-file"])
            .arg(&file)
            .args(args)
            .output()
            .unwrap();
        std::fs::remove_file(&file).unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let value = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
        (out.status.code().unwrap_or(-1), value, stderr)
    }

    /// Runs and requires success.
    /// A new officer `id` with `role`, made by `admin`; returns the officer's first token.
    pub fn officer(&self, admin: &str, id: &str, role: &str) -> String {
        self.ok(admin, &["officer", "add", id, "--name", id, "--role", role]);
        self.ok(admin, &["officer", "token", id])["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub fn ok(&self, token: &str, args: &[&str]) -> serde_json::Value {
        let (code, v, err) = self.run(token, args);
        assert_eq!(code, 0, "tessera {args:?}: {err}");
        v
    }

    /// An in-person identity check of `person` by the officer behind `token`: a Swedish
    /// document, valid for long, showing identity number `pnr`.
    pub fn proof(&self, token: &str, person: &str, document: &str, place: &str, pnr: &str) {
        self.ok(
            token,
            &[
                "proof",
                person,
                "--document-type",
                document,
                "--document-number",
                "AA123",
                "--issuing-country",
                "SE",
                "--document-expiry",
                "2099-01-01",
                "--place",
                place,
                "--identity-number",
                pnr,
            ],
        );
    }
}

pub fn rand_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

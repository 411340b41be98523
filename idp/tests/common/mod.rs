//! What the IdP's integration tests share: `tessera-idp serve` on a port of its own choosing,
//! killed when the test ends however it ends, and plain HTTP GETs.
#![allow(clippy::unwrap_used, dead_code)] // test helpers: a failed unwrap is a failed test

pub(crate) mod issuer;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub(crate) const IDP: &str = env!("CARGO_BIN_EXE_tessera-idp");

/// A running `serve` and its base URL; killed on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `serve` for the deployment in `dir`, on a port of its choosing (read from its first line).
pub(crate) fn serve(dir: &Path) -> Server {
    let mut child = Command::new(IDP)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    Server { child, base }
}

/// GET `url`: status and body (an error status is an answer, not a failure).
pub(crate) fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.get(url).call().unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap())
}

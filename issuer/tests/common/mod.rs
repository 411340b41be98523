//! Helpers the issuer's test binaries share: running openssl and requiring test peers.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::Command;

/// Runs openssl in `dir`; returns success and stdout+stderr.
pub fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Whether the programs and files a test needs exist; with `CI=true` a missing one fails.
pub fn require(programs: &[&str], files: &[&str]) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {p}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .chain(files.iter().copied().filter(|f| !Path::new(f).exists()))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("missing test peers: {missing:?} (deploy/dev/test.sh installs them)");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    false
}

/// A card's P-256 key made by openssl (as a card would) in `dir/<file>`; returns the PEM
/// SubjectPublicKeyInfo.
pub fn card_public_key(dir: &Path, file: &str) -> String {
    let (ok, text) = openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            file,
        ],
    );
    assert!(ok, "{text}");
    let (ok, pubkey) = openssl(dir, &["pkey", "-in", file, "-pubout"]);
    assert!(ok, "{pubkey}");
    pubkey
}

/// A card's P-256 key made by openssl in `dir/<file>`, and a PKCS#10 request signed by it
/// (the proof of possession the issuer asks for); returns the request, PEM.
pub fn card_csr(dir: &Path, file: &str) -> String {
    card_public_key(dir, file);
    let csr = format!("{file}.csr");
    let (ok, text) = openssl(
        dir,
        &[
            "req", "-new", "-key", file, "-subj", "/CN=card", "-out", &csr,
        ],
    );
    assert!(ok, "{text}");
    std::fs::read_to_string(dir.join(csr)).expect("request")
}

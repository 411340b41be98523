//! `tessera-issuer init` and `audit verify` through the binary, with peers we did not write:
//! openssl verifies the certificate chain, pkcs11-tool inspects the keys in SoftHSM2.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::Path;
use std::process::{Command, Output};

use diesel::prelude::*;
use tessera_issuer_store::audit::{self, AuditEvent};
use tessera_issuer_store::schema::audit_log;
use tessera_issuer_store::{Conn, Store};
use tessera_issuer_types::config::Config;

const ISSUER: &str = env!("CARGO_BIN_EXE_tessera-issuer");
const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Whether the peers exist; with `CI=true` a missing one fails the test.
fn peers() -> bool {
    let missing: Vec<&str> = ["openssl", "pkcs11-tool"]
        .into_iter()
        .filter(|p| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {p}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .chain((!Path::new(SOFTHSM).exists()).then_some(SOFTHSM))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("missing test peers: {missing:?} (deploy/dev/test.sh installs them)");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    false
}

fn run(args: &[&str]) -> Output {
    Command::new(ISSUER)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("tessera-issuer")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn init(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["init", "--data-dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

fn openssl_ok(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
    text(&out)
}

#[test]
fn init_creates_a_verifiable_ca_with_keys_that_never_leave_the_token() {
    if !peers() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let printed = init(&dir, &["--organization", "Example Kommun"]);
    assert!(printed.contains("root CA        SHA-256 "), "{printed}");

    let chain = openssl_ok(
        &dir,
        &["verify", "-CAfile", "root-ca.pem", "issuing-ca.pem"],
    );
    assert!(chain.contains("issuing-ca.pem: OK"), "{chain}");
    let ocsp = openssl_ok(
        &dir,
        &[
            "verify",
            "-CAfile",
            "root-ca.pem",
            "-untrusted",
            "issuing-ca.pem",
            "-purpose",
            "ocsphelper",
            "ocsp-responder.pem",
        ],
    );
    assert!(ocsp.contains("ocsp-responder.pem: OK"), "{ocsp}");
    let text_ocsp = openssl_ok(
        &dir,
        &["x509", "-in", "ocsp-responder.pem", "-noout", "-text"],
    );
    assert!(
        text_ocsp.contains("OCSP Signing") && text_ocsp.contains("OCSP No Check"),
        "{text_ocsp}"
    );
    let root = openssl_ok(
        &dir,
        &[
            "x509",
            "-in",
            "root-ca.pem",
            "-noout",
            "-subject",
            "-fingerprint",
            "-sha256",
        ],
    );
    assert!(root.contains("CN = Example Kommun Root CA"), "{root}");
    // The fingerprint printed is the certificate's.
    let fp = root
        .lines()
        .find_map(|l| l.split('=').nth(1).filter(|_| l.contains("Fingerprint")))
        .unwrap();
    assert!(printed.contains(fp.trim()), "{printed} vs {fp}");

    // Secrets are owner-only.
    use std::os::unix::fs::PermissionsExt;
    for f in [
        "bootstrap-admin.token",
        "ca-activation.secret",
        "tls-key.pem",
    ] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }

    // The keys are in the token, sensitive and never extractable (pkcs11-tool's view).
    let pin = std::fs::read_to_string(dir.join("ca-activation.secret")).unwrap();
    let out = Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
        .args([
            "--module",
            SOFTHSM,
            "--token-label",
            "tessera-ca",
            "--login",
            "--pin",
            &pin,
            "--list-objects",
            "--type",
            "privkey",
        ])
        .output()
        .unwrap();
    let listing = text(&out);
    assert!(out.status.success(), "{listing}");
    for label in [
        "root-ca",
        "issuing-ca-1",
        "ocsp-responder-1",
        "audit-1",
        "tls-ca-1",
    ] {
        assert!(
            listing.contains(&format!("label:      {label}")),
            "{listing}"
        );
    }
    assert_eq!(listing.matches("never extractable").count(), 5, "{listing}");
    assert!(listing.matches("sensitive").count() >= 5, "{listing}");

    let verified = run(&["audit", "verify", "--data-dir", dir.to_str().unwrap()]);
    assert!(
        verified.status.success() && text(&verified).contains("audit chain intact: 5 records"),
        "{}",
        text(&verified)
    );
}

/// pkcs11-tool against a SoftHSM2 token directory: logs in as `user` ("so" or "user")
/// with `pin`, and for the security officer tries to set a new user PIN (the attack on a
/// copied token).
fn token_accepts(conf: &Path, user: &str, pin: &str) -> bool {
    let mut args = vec![
        "--module",
        SOFTHSM,
        "--token-label",
        "tessera-ca",
        "--login",
        "--login-type",
        user,
    ];
    if user == "so" {
        args.extend(["--so-pin", pin, "--init-pin", "--new-pin", "654321"]);
    } else {
        args.extend(["--pin", pin, "--list-objects", "--type", "privkey"]);
    }
    Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", conf)
        .args(&args)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn no_file_of_a_shared_custody_deployment_or_its_backup_opens_the_token() {
    if !peers() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    init(&dir, &["--custodians", "2-of-3"]);
    // The custodians take their shares away.
    let shares: Vec<Vec<u8>> = (1..=3)
        .map(|i| {
            let f = dir.join(format!("custodian-{i}.share"));
            let s = std::fs::read(&f).unwrap();
            std::fs::remove_file(&f).unwrap();
            s
        })
        .collect();
    // A backup of the directory, its SoftHSM2 configuration pointed at the copy.
    let backup = tmp.path().join("backup");
    assert!(Command::new("cp")
        .args(["-a", dir.to_str().unwrap(), backup.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    let conf = backup.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            backup.join("tokens").display()
        ),
    )
    .unwrap();
    // Every text file in it, tried as the security officer's PIN and as the user's.
    let mut tried = 0;
    let mut stack = vec![backup.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(content) = String::from_utf8(std::fs::read(&path).unwrap()) else {
                continue;
            };
            let pin = content.trim();
            if pin.is_empty() || pin.len() > 255 || pin.contains('\0') {
                continue;
            }
            tried += 1;
            for user in ["so", "user"] {
                assert!(
                    !token_accepts(&conf, user, pin),
                    "{} opens the backup's token as {user}",
                    path.display()
                );
            }
        }
    }
    assert!(tried >= 3, "only {tried} files tried");
    // Two custodians together do open it (the check above could have seen a PIN work).
    let share_files: Vec<std::path::PathBuf> = shares[..2]
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let f = tmp.path().join(format!("share-{i}"));
            std::fs::write(&f, s).unwrap();
            f
        })
        .collect();
    let secret =
        tessera_hsm::custody::activation_secret(&backup, "2-of-3".parse().unwrap(), &share_files)
            .unwrap();
    assert!(token_accepts(&conf, "user", &secret));
}

#[test]
fn p384_and_rsa_keys_make_valid_chains() {
    if !peers() {
        return;
    }
    for alg in ["p384", "rsa2048", "rsa3072"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(alg);
        init(&dir, &["--key-alg", alg]);
        let chain = openssl_ok(
            &dir,
            &["verify", "-CAfile", "root-ca.pem", "issuing-ca.pem"],
        );
        assert!(chain.contains("OK"), "{alg}: {chain}");
        let issuing = openssl_ok(&dir, &["x509", "-in", "issuing-ca.pem", "-noout", "-text"]);
        let expected = if alg == "p384" {
            "ecdsa-with-SHA384"
        } else {
            "sha256WithRSAEncryption"
        };
        assert!(issuing.contains(expected), "{alg}: {issuing}");
    }
}

#[test]
fn init_refuses_an_existing_deployment_and_changes_nothing() {
    if !peers() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    init(&dir, &[]);
    let before = std::fs::read(dir.join("tessera.db")).unwrap();
    let root_before = std::fs::read(dir.join("root-ca.pem")).unwrap();
    let out = run(&["init", "--data-dir", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("already holds a Tessera deployment"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(dir.join("tessera.db")).unwrap(), before);
    assert_eq!(std::fs::read(dir.join("root-ca.pem")).unwrap(), root_before);
}

#[test]
fn bad_input_leaves_no_half_made_deployment() {
    if !peers() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let out = run(&[
        "init",
        "--data-dir",
        dir.to_str().unwrap(),
        "--organization",
        "Evil,CN=Root",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--organization"), "{}", text(&out));
    assert!(!dir.exists(), "init left {} behind", dir.display());
    let out = run(&[
        "init",
        "--data-dir",
        dir.to_str().unwrap(),
        "--key-alg",
        "rsa1024",
    ]);
    assert!(!out.status.success(), "a weak key algorithm was accepted");
}

/// A deployment with eight audit records (five from `init`), tampered with by `f`;
/// returns `audit verify`'s output and whether it passed.
fn tampered(database: Option<&str>, f: impl FnOnce(&mut Conn)) -> (bool, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    match database {
        Some(url) => init(&dir, &["--database-url", url]),
        None => init(&dir, &[]),
    };
    let config = Config::load(&dir).unwrap();
    let store = Store::open_configured(&config.database, &dir).unwrap();
    for i in 0..3 {
        store
            .write(|tx| {
                tx.audit(
                    "officer-1",
                    &AuditEvent::ApiTokenCreated {
                        name: format!("test-{i}"),
                        role: "officer".into(),
                    },
                    2_000_000_000 + i,
                )
                .map(drop)
            })
            .unwrap();
    }
    f(&mut store.raw().unwrap());
    drop(store);
    let out = run(&["audit", "verify", "--data-dir", dir.to_str().unwrap()]);
    (out.status.success(), text(&out))
}

fn audit_verify_names_an_edited_record(database: Option<&str>) {
    let (ok, out) = tampered(database, |c| {
        diesel::sql_query("UPDATE audit_log SET details = '{\"n\":99}' WHERE seq = 4")
            .execute(c)
            .unwrap();
    });
    assert!(!ok && out.contains("audit record 4 was edited"), "{out}");
}

fn audit_verify_names_a_deleted_record(database: Option<&str>) {
    let (ok, out) = tampered(database, |c| {
        diesel::sql_query("DELETE FROM audit_log WHERE seq = 3")
            .execute(c)
            .unwrap();
    });
    assert!(!ok && out.contains("audit record 3 is missing"), "{out}");
}

fn audit_verify_names_reordered_records(database: Option<&str>) {
    // Swap records 3 and 4 whole (contents and hashes).
    let (ok, out) = tampered(database, |c| {
        for q in [
            "UPDATE audit_log SET seq = -3 WHERE seq = 3",
            "UPDATE audit_log SET seq = 3 WHERE seq = 4",
            "UPDATE audit_log SET seq = 4 WHERE seq = -3",
        ] {
            diesel::sql_query(q).execute(c).unwrap();
        }
    });
    assert!(
        !ok && out.contains("audit record 3 was moved: it was written as record 4"),
        "{out}"
    );
}

fn audit_verify_catches_a_rewritten_record_with_a_recomputed_hash(database: Option<&str>) {
    // An attacker who knows the hash function rewrites record 2 consistently; record 3 no
    // longer follows it.
    let (ok, out) = tampered(database, |c| {
        let r: audit::Record = audit_log::table
            .filter(audit_log::seq.eq(2))
            .select(audit::Record::as_select())
            .first(c)
            .unwrap();
        let details = "{\"forged\":true}";
        let hash = audit::record_hash(&r.prev_hash, r.seq, r.at, &r.actor, &r.action, details);
        diesel::update(audit_log::table.filter(audit_log::seq.eq(2)))
            .set((audit_log::details.eq(details), audit_log::hash.eq(hash)))
            .execute(c)
            .unwrap();
    });
    assert!(
        !ok && out.contains("audit record 3 does not follow"),
        "{out}"
    );
}

mod pg;

/// Each tamper check on SQLite and on a real PostgreSQL.
macro_rules! on_both_backends {
    ($($check:ident),*) => {
        mod on_sqlite {
            $(#[test]
            fn $check() {
                if super::peers() {
                    super::$check(None);
                }
            })*
        }
        mod on_postgresql {
            $(#[test]
            fn $check() {
                if !super::peers() {
                    return;
                }
                if let Some(pg) = super::pg::Postgres::start() {
                    super::$check(Some(&pg.url));
                }
            })*
        }
    };
}

on_both_backends!(
    audit_verify_names_an_edited_record,
    audit_verify_names_a_deleted_record,
    audit_verify_names_reordered_records,
    audit_verify_catches_a_rewritten_record_with_a_recomputed_hash
);

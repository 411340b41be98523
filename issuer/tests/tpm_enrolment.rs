//! A TPM virtual card enrolled end to end against a running issuer: swtpm provisioned by
//! `swtpm_setup --create-ek-cert` (its local CA configured in `DIR/tpm-roots`), the agent's
//! `vsc enrol` as a registration officer runs it, certificates that chain to our CA and
//! that OCSP calls good after activation; and the proofs the issuer must refuse, each
//! changing nothing: a key that is not the certified one (a software key claimed to be in
//! the TPM), a key from another swtpm, a forged or re-aimed `TPM2_Certify`, a credential
//! never activated, an EK from a CA nobody trusts, a key usable without the PIN.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::{sibling, Cli};
use common::Kill;
use tessera_agent::enrol::{self, Issuer};
use tessera_agent::tpm::policy_secret_digest;
use tessera_agent::worker::TpmClient;
use tessera_issuer_types::api::{TpmChallenge, TpmChallengeRequest};
use tessera_issuer_types::ProfileName;
use tessera_piv::piv::Algorithm;

const ISSUER: &str = env!("CARGO_BIN_EXE_tessera-issuer");

/// A swtpm with an EK certificate from the local CA in `ca` (made on first use).
struct Swtpm {
    _process: Kill,
    tcti: String,
}

fn provisioned_swtpm(dir: &Path, ca: &Path) -> Swtpm {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(ca).unwrap();
    let localca = dir.join("localca.conf");
    std::fs::write(
        &localca,
        format!(
            "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
            ca = ca.display()
        ),
    )
    .unwrap();
    let setup = dir.join("setup.conf");
    std::fs::write(
        &setup,
        format!(
            "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = /etc/swtpm-localca.options\nactive_pcr_banks = sha256\n",
            localca.display()
        ),
    )
    .unwrap();
    let out = Command::new("swtpm_setup")
        .args(["--tpm2", "--create-ek-cert", "--overwrite", "--tpmstate"])
        .arg(&state)
        .arg("--config")
        .arg(&setup)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "swtpm_setup: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let port = loop {
        let p = common::free_port();
        if std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let process = Kill(
        Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    common::wait_for("swtpm", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Swtpm {
        _process: process,
        tcti: format!("swtpm:host=127.0.0.1,port={port}"),
    }
}

/// An issuer that trusts `trusted_ca`'s EK certificates, its officers, and the agent on
/// the holder's workstation (TPM `tpm`, data in `ROOT/agent`).
struct Site {
    _server: Kill,
    base: String,
    t: Cli,
    anna: String,
    bo: String,
    hr: String,
    auditor: String,
    anna_file: std::path::PathBuf,
    agent: std::path::PathBuf,
    agent_dir: std::path::PathBuf,
    tcti: String,
}

impl Site {
    fn new(root: &Path, trusted_ca: &Path, tpm: &Swtpm, serve_args: &[&str]) -> Self {
        let data = root.join("data");
        let out = Command::new(ISSUER)
            .args(["init", "--data-dir", data.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::create_dir(data.join("tpm-roots")).unwrap();
        std::fs::copy(
            trusted_ca.join("issuercert.pem"),
            data.join("tpm-roots/swtpm-localca.pem"),
        )
        .unwrap();
        common::allow_upn_domain(&data, "example.org");
        let (server, base) = common::serve(&data, serve_args);
        common::fetch_issuing_pem(root, &base);
        let t = Cli {
            base: base.clone(),
            dir: root.to_owned(),
        };
        let bootstrap = std::fs::read_to_string(data.join("bootstrap-admin.token")).unwrap();
        let first = t.ok(
            &bootstrap,
            &[
                "officer",
                "add",
                "admin",
                "--name",
                "Ada",
                "--role",
                "administrator",
            ],
        );
        let admin = first["first_token"]["token"].as_str().unwrap().to_owned();
        let officer = |id: &str, role: &str| t.officer(&admin, id, role);
        let anna = officer("anna", "registration_officer");
        let anna_file = root.join("anna.token");
        std::fs::write(&anna_file, &anna).unwrap();
        Self {
            bo: officer("bo", "registration_officer"),
            hr: officer("hr", "hr_admin"),
            auditor: officer("audit", "auditor"),
            anna,
            anna_file,
            _server: server,
            base,
            t,
            agent: sibling("tessera-agent", "tessera-agent"),
            agent_dir: root.join("agent"),
            tcti: tpm.tcti.clone(),
        }
    }

    /// Runs the agent: whether it succeeded, and what it printed.
    fn agent(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(&self.agent)
            .arg("--data-dir")
            .arg(&self.agent_dir)
            .args(["--tcti", &self.tcti])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// The card's file as JSON.
    fn card(&self, name: &str) -> serde_json::Value {
        let path = self.agent_dir.join(format!("cards/{name}.json"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Enrols card `name` for `carrier` as officer Anna, with the keys of `profiles` (the
    /// agent's default when empty).
    fn enrol(&self, name: &str, carrier: &str, profiles: &[&str]) -> (bool, String) {
        let mut args = vec![
            "vsc",
            "enrol",
            name,
            "--issuer",
            &self.base,
            "--carrier",
            carrier,
            "--token-file",
            self.anna_file.to_str().unwrap(),
        ];
        for p in profiles {
            args.extend(["--profile", p]);
        }
        self.agent(&args)
    }
}

/// An assigned and approved carrier of `kind` for a new proofed person.
fn approved_carrier(t: &Cli, hr: &str, anna: &str, bo: &str, n: u32, kind: &str) -> String {
    let upn = format!("p{n}@example.org");
    let pnr = [
        "19811218-9876",
        "19900101-0017",
        "19850505-0008",
        "19700202-0001",
    ][n as usize];
    let p = t.ok(
        hr,
        &[
            "person",
            "add",
            "--employee-number",
            &format!("E{n}"),
            "--given-name",
            "Tove",
            "--family-name",
            "Tpm",
            "--email",
            &upn,
            "--upn",
            &upn,
            "--identity-number",
            pnr,
        ],
    );
    let person = p["id"].as_str().unwrap().to_owned();
    t.proof(
        anna,
        &person,
        "passport",
        "Service desk",
        &pnr.replace('-', ""),
    );
    let c = t.ok(
        anna,
        &["carrier", "add", "--kind", kind, &format!("VSC-{n}")],
    );
    let carrier = c["id"].as_str().unwrap().to_owned();
    let a = t.ok(
        anna,
        &[
            "carrier", "assign", &carrier, "--person", &person, "--terms", "2026-1",
        ],
    );
    t.ok(bo, &["approve", "yes", a[0]["id"].as_str().unwrap()]);
    carrier
}

fn good_request(
    ch: &TpmChallenge,
    secret: &[u8],
    evidence: &[enrol::KeyEvidence],
) -> tessera_issuer_types::api::KeysRequest {
    enrol::keys_request(&ch.challenge, secret, evidence)
}

#[test]
fn a_tpm_virtual_card_is_enrolled_on_tpm_attestation_and_forgeries_are_refused() {
    if !common::require(
        &["curl", "openssl", "swtpm", "swtpm_setup"],
        &["/usr/lib/softhsm/libsofthsm2.so", "/usr/bin/swtpm_localca"],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let trusted_ca = root.join("tpm-ca");
    let tpm_a = provisioned_swtpm(&root.join("tpm-a"), &trusted_ca);
    let tpm_b = provisioned_swtpm(&root.join("tpm-b"), &trusted_ca);
    let tpm_c = provisioned_swtpm(&root.join("tpm-c"), &root.join("other-ca"));

    let site = Site::new(root, &trusted_ca, &tpm_a, &[]);
    let (t, base, anna, bo, hr) = (&site.t, &site.base, &site.anna, &site.bo, &site.hr);
    let (anna_file, auditor) = (&site.anna_file, &site.auditor);
    let run_agent = |args: &[&str]| site.agent(args);
    let (ok, text) = run_agent(&["vsc", "create", "tove"]);
    assert!(ok, "{text}");
    // A physical card's carrier takes no TPM proof.
    let smart_card = approved_carrier(t, hr, anna, bo, 0, "smart_card");
    let enrol = |carrier: &str| site.enrol("tove", carrier, &[]);
    let (ok, text) = enrol(&smart_card);
    assert!(!ok && text.contains("invalid_field"), "{text}");

    let carrier = approved_carrier(t, hr, anna, bo, 1, "tpm_virtual_card");
    let (ok, text) = enrol(&carrier);
    assert!(ok, "{text}");
    assert!(text.contains("2 certificates"), "{text}");
    let c = t.ok(anna, &["carrier", "show", &carrier]);
    let serials: Vec<String> = c["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(serials.len(), 2, "{c}");
    // The audit trail keeps what each certificate's TPM proof rested on: the EK
    // certificate, the AK, the key and the TPM's firmware.
    let trail = t
        .ok(auditor, &["audit", "list", "--limit", "1000"])
        .to_string();
    assert_eq!(
        trail.matches("tpm: ek certificate sha256 ").count(),
        2,
        "{trail}"
    );
    // Born on hold; good after the hand-over.
    t.ok(
        anna,
        &["carrier", "activate", &carrier, "--receipt", "R-VSC1"],
    );
    for serial in &serials {
        assert_eq!(common::ocsp(root, base, serial), "good");
    }
    // The certificates are on the card, and chain to our issuing CA.
    let card = site.card("tove");
    for tag in ["5FC105", "5FC101"] {
        let object = card["card"]["objects"][tag].as_str().unwrap_or_default();
        let content = hex::decode(object).unwrap();
        let der = tessera_piv::tlv::find(&content, 0x70).unwrap().unwrap();
        std::fs::write(root.join("card.der"), der).unwrap();
        let (ok, text) = common::openssl(
            root,
            &[
                "verify",
                "-partial_chain",
                "-CAfile",
                "issuing.pem",
                "card.der",
            ],
        );
        assert!(ok && text.contains("OK"), "{tag}: {text}");
    }

    // The forgeries, against one approved carrier (each refusal changes nothing).
    let target = approved_carrier(t, hr, anna, bo, 2, "tpm_virtual_card");
    let issuer = Issuer::new(base, anna_file, None).unwrap();
    let a = TpmClient::spawn(&tpm_a.tcti, None).unwrap();
    let b = TpmClient::spawn(&tpm_b.tcti, None).unwrap();
    let c_tpm = TpmClient::spawn(&tpm_c.tcti, None).unwrap();
    // A key bound to a PIN-fail index, as the agent makes them: (blob, the index's public).
    let pin_bound = |tpm: &TpmClient| {
        tpm.call(|t| {
            let index = t
                .free_nv_index(tessera_agent::tpm::FIRST_NV_INDEX + 0x200, &[])
                .unwrap();
            let name = t.define_pin_index(index, &[5; 32], 3, &[6; 32]).unwrap();
            let blob = t
                .create_key(Algorithm::EccP256, Some(policy_secret_digest(&name)))
                .unwrap();
            (blob, t.index_public_bytes(index).unwrap())
        })
        .unwrap()
    };
    let challenge = |tpm: &TpmClient| -> anyhow::Result<TpmChallenge> {
        let (ek_certificate, ak) = enrol::start_attestation(tpm)?;
        issuer.post(
            &format!("/carriers/{target}/tpm-challenge"),
            &TpmChallengeRequest {
                ek_certificate,
                ak_public: hex::encode(ak),
            },
        )
    };
    let refused = |req: &tessera_issuer_types::api::KeysRequest, why: &str| {
        let answer: anyhow::Result<serde_json::Value> =
            issuer.post(&format!("/carriers/{target}/keys"), req);
        let e = answer.expect_err(why).to_string();
        eprintln!("refused as it should be: {why}: {e}");
        assert!(e.contains("bad_proof"), "{why}: {e}");
    };
    // An EK certified by a CA the issuer does not trust gets no challenge.
    let e = challenge(&c_tpm).expect_err("an untrusted EK").to_string();
    assert!(e.contains("bad_proof"), "{e}");
    enrol::finish_attestation(&c_tpm);

    // An attestation key that is not a restricted signing key gets no challenge.
    let unrestricted = a
        .call(|t| t.create_key(Algorithm::EccP256, None))
        .unwrap()
        .unwrap();
    let (ek_certificate, _) = enrol::start_attestation(&a).unwrap();
    let e = issuer
        .post::<serde_json::Value>(
            &format!("/carriers/{target}/tpm-challenge"),
            &TpmChallengeRequest {
                ek_certificate,
                ak_public: hex::encode(&unrestricted.public),
            },
        )
        .expect_err("an unrestricted AK")
        .to_string();
    assert!(e.contains("bad_proof"), "{e}");
    enrol::finish_attestation(&a);

    // An attestation key whose admin role is a policy (what a software key's public part,
    // loaded on its own into a genuine TPM, could satisfy to activate the credential).
    let (ek_certificate, mut ak) = enrol::start_attestation(&a).unwrap();
    ak[7] |= 0x80; // TPMT_PUBLIC: type, nameAlg, then objectAttributes; bit 7 adminWithPolicy
    let e = issuer
        .post::<serde_json::Value>(
            &format!("/carriers/{target}/tpm-challenge"),
            &TpmChallengeRequest {
                ek_certificate,
                ak_public: hex::encode(ak),
            },
        )
        .expect_err("an AK with adminWithPolicy")
        .to_string();
    assert!(e.contains("adminWithPolicy"), "{e}");
    enrol::finish_attestation(&a);

    let (key, index) = pin_bound(&a);
    let ch = challenge(&a).unwrap();
    let (secret, evidence) = enrol::answer_challenge(
        &a,
        &ch,
        &[(
            ProfileName::Authentication,
            key.clone(),
            Some(index.clone()),
        )],
    )
    .unwrap();
    let good = good_request(&ch, &secret, &evidence);
    // A credential nobody activated.
    refused(
        &enrol::keys_request(&ch.challenge, &[7u8; 32], &evidence),
        "a wrong secret",
    );
    // A software key claimed to be the certified one (its point in the TPM key's area).
    let mut claimed = evidence.clone();
    let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let point = sk.public_key().to_sec1_bytes();
    // The unique field ends the area: x and y, each a 2-byte size and 32 bytes.
    let n = claimed[0].public.len();
    claimed[0].public[n - 66..n - 34].copy_from_slice(&point[1..33]);
    claimed[0].public[n - 32..].copy_from_slice(&point[33..65]);
    refused(
        &enrol::keys_request(&ch.challenge, &secret, &claimed),
        "a key other than the certified one",
    );
    // A forged attestation: one byte of the certified name changed.
    let mut forged = evidence.clone();
    let last = forged[0].attest.len() - 40;
    forged[0].attest[last] ^= 1;
    refused(
        &enrol::keys_request(&ch.challenge, &secret, &forged),
        "a forged TPM2_Certify",
    );
    // A key of another swtpm, certified there, sent with this TPM's challenge.
    let (foreign, foreign_index) = pin_bound(&b);
    let ch_b = challenge(&b).unwrap();
    let (_, from_b) = enrol::answer_challenge(
        &b,
        &ch_b,
        &[(ProfileName::Authentication, foreign, Some(foreign_index))],
    )
    .unwrap();
    enrol::finish_attestation(&b);
    refused(
        &enrol::keys_request(&ch.challenge, &secret, &from_b),
        "a key from another TPM",
    );
    // The right AK's certify over another nonce (a replayed or re-aimed attestation).
    let nonce_elsewhere = TpmChallenge {
        nonce: hex::encode([9u8; 32]),
        ..ch.clone()
    };
    let replay = a
        .call(move |t| t.certify(&key, &hex::decode(&nonce_elsewhere.nonce).unwrap()))
        .unwrap()
        .unwrap();
    let mut re_aimed = evidence.clone();
    (re_aimed[0].attest, re_aimed[0].signature) = replay;
    refused(
        &enrol::keys_request(&ch.challenge, &secret, &re_aimed),
        "a certify over another nonce",
    );
    // Keys the TPM uses without the PIN, for the authentication profile: one by its empty
    // authValue, one through a policy its holder can always satisfy (PolicyAuthValue),
    // shown with a genuine PIN index.
    enrol::finish_attestation(&a);
    let policy_auth_value: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::new()
            .chain_update([0u8; 32])
            .chain_update(0x0000_016Bu32.to_be_bytes())
            .finalize()
            .into()
    };
    let keys = a
        .call(move |t| {
            (
                t.create_key(Algorithm::EccP256, None).unwrap(),
                t.create_key(Algorithm::EccP256, Some(policy_auth_value))
                    .unwrap(),
            )
        })
        .unwrap();
    let ch2 = challenge(&a).unwrap();
    let (s2, e2) = enrol::answer_challenge(
        &a,
        &ch2,
        &[
            (ProfileName::Authentication, keys.0, None),
            (ProfileName::Signature, keys.1, Some(index.clone())),
        ],
    )
    .unwrap();
    enrol::finish_attestation(&a);
    refused(
        &enrol::keys_request(&ch2.challenge, &s2, &e2[..1]),
        "a key usable by its empty authValue",
    );
    refused(
        &enrol::keys_request(&ch2.challenge, &s2, &e2[1..]),
        "a key under a policy its holder satisfies at will",
    );
    // The genuine evidence without its PIN index is incomplete.
    let mut no_index = evidence.clone();
    no_index[0].pin_index = None;
    let e = issuer
        .post::<serde_json::Value>(
            &format!("/carriers/{target}/keys"),
            &enrol::keys_request(&ch.challenge, &secret, &no_index),
        )
        .expect_err("no PIN index")
        .to_string();
    assert!(e.contains("invalid_field"), "{e}");
    // A challenge answers only for the carrier (and assignment) it was made for.
    let other = approved_carrier(t, hr, anna, bo, 3, "tpm_virtual_card");
    let e = issuer
        .post::<serde_json::Value>(
            &format!("/carriers/{other}/keys"),
            &good_request(&ch, &secret, &evidence),
        )
        .expect_err("another carrier's challenge")
        .to_string();
    assert!(e.contains("bad_proof"), "{e}");
    // After all that the carrier is untouched, and the genuine proof of the first
    // challenge is still accepted: the issuer keeps nothing between the two steps, and the
    // TPM's part was done when the evidence was made.
    let done: serde_json::Value = issuer
        .post(&format!("/carriers/{target}/keys"), &good)
        .unwrap();
    assert_eq!(done["state"], "personalised", "{done}");
}

/// A proxy in front of the issuer at `base` that forwards every request and loses the
/// answer to the first one for a path ending in `lose`: the issuer did the work, the
/// client sees the connection close, as when a link drops or the agent is killed while
/// the issuer answers. Unless `forward`, that request never reaches the issuer (the agent
/// killed before it).
fn losing_proxy(base: &str, lose: &'static str, forward: bool) -> String {
    use std::io::{BufRead, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = base.trim_start_matches("http://").to_owned();
    std::thread::spawn(move || {
        let mut lost = false;
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let mut reader = std::io::BufReader::new(client.try_clone().unwrap());
            let (mut head, mut length) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if !lower.starts_with("connection:") {
                    head.push_str(&line);
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let path = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            if !forward && !lost && path.ends_with(lose) {
                lost = true;
                continue;
            }
            let mut server = std::net::TcpStream::connect(&upstream).unwrap();
            server
                .write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())
                .unwrap();
            server.write_all(&body).unwrap();
            let mut answer = Vec::new();
            let _ = server.read_to_end(&mut answer);
            if !lost && path.ends_with(lose) {
                lost = true;
                continue;
            }
            let _ = client.write_all(&answer);
        }
    });
    format!("http://{addr}")
}

/// The PIN line of `vsc status`.
fn pin_line(status: &str) -> &str {
    status
        .lines()
        .find(|l| l.starts_with("PIN "))
        .unwrap_or_default()
}

/// The certificate in a card file's object `tag` (hex of 53 { 70 cert, 71, FE }), DER.
fn card_certificate(card: &serde_json::Value, tag: &str) -> Vec<u8> {
    let object = card["card"]["objects"][tag].as_str().unwrap_or_default();
    let content = hex::decode(object).unwrap();
    tessera_piv::tlv::find(&content, 0x70)
        .unwrap()
        .unwrap()
        .to_vec()
}

#[test]
fn a_tpm_virtual_card_renews_itself_before_expiry_with_only_the_pin() {
    if !common::require(
        &["curl", "openssl", "swtpm", "swtpm_setup"],
        &["/usr/lib/softhsm/libsofthsm2.so", "/usr/bin/swtpm_localca"],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let trusted_ca = root.join("tpm-ca");
    let tpm = provisioned_swtpm(&root.join("tpm"), &trusted_ca);
    let offset = root.join("clock-offset");
    let site = Site::new(
        root,
        &trusted_ca,
        &tpm,
        &["--clock-offset-file", offset.to_str().unwrap()],
    );
    let (t, anna) = (&site.t, &site.anna);
    let (ok, text) = site.agent(&["vsc", "create", "tove"]);
    assert!(ok, "{text}");
    let carrier = approved_carrier(t, &site.hr, anna, &site.bo, 1, "tpm_virtual_card");
    // With a decryption key, whose predecessor the card must keep.
    let (ok, text) = site.enrol(
        "tove",
        &carrier,
        &["authentication", "encryption", "card-authentication"],
    );
    assert!(ok, "{text}");
    t.ok(
        anna,
        &["carrier", "activate", &carrier, "--receipt", "R-VSC1"],
    );
    let old: Vec<String> = t.ok(anna, &["carrier", "show", &carrier])["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    // The holder sets their own PIN (the factory one came with the card).
    let pin_file = root.join("pin");
    std::fs::write(&pin_file, "123456").unwrap();
    let renew_through = |pin: &str, issuer: &str| {
        std::fs::write(&pin_file, pin).unwrap();
        site.agent(&[
            "vsc",
            "renew",
            "tove",
            "--issuer",
            issuer,
            "--pin-file",
            pin_file.to_str().unwrap(),
        ])
    };
    let renew = |pin: &str| renew_through(pin, &site.base);

    // Three years less a week is not yet due: refused, and the card file is untouched.
    let before = site.card("tove");
    let (ok, text) = renew("123456");
    assert!(!ok && text.contains("not due for renewal before"), "{text}");
    assert_eq!(site.card("tove"), before);

    // Within the last 30 days: a wrong PIN is refused by the card itself, which counts it,
    // before any key is made or anything reaches the issuer.
    std::fs::write(&offset, ((3 * 365 - 7) * 86_400).to_string()).unwrap();
    let (ok, text) = renew("654321");
    assert!(!ok && text.contains("the card refused the PIN"), "{text}");
    let (ok, text) = site.agent(&["vsc", "status", "tove"]);
    assert!(
        ok && pin_line(&text).contains("2 of 3 tries left"),
        "{text}"
    );
    assert!(!text.contains("renewal"), "{text}");
    // (Officers' tokens live 30 days: they act at the real time.)
    std::fs::write(&offset, "0").unwrap();
    assert_eq!(
        t.ok(anna, &["carrier", "show", &carrier])["certificates"],
        serde_json::json!(old)
    );
    std::fs::write(&offset, ((3 * 365 - 7) * 86_400).to_string()).unwrap();

    // A request signed by another key than the card's is refused (no officer, no card).
    let anonymous = Issuer::anonymous(&site.base, None).unwrap();
    let forged = tessera_issuer_types::api::RenewalRequest {
        keys: vec![tessera_issuer_types::api::CarrierKey {
            profile: ProfileName::Authentication,
            csr: None,
            attestation: None,
            tpm: Some(tessera_issuer_types::api::TpmKeyProof {
                challenge: "AA==".into(),
                secret: "00".into(),
                public: "00".into(),
                attest: "00".into(),
                signature: "00".into(),
                pin_index: None,
            }),
        }],
        algorithm: "ecdsa-with-SHA256".into(),
        signature: {
            use base64ct::Encoding;
            use p256::ecdsa::signature::Signer;
            let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
            let s: p256::ecdsa::DerSignature = key.sign(b"tessera renewal v1\n");
            base64ct::Base64::encode_string(s.as_bytes())
        },
    };
    let e = anonymous
        .post::<serde_json::Value>(&format!("/carriers/{carrier}/renewal"), &forged)
        .expect_err("a foreign signature")
        .to_string();
    assert!(e.contains("forbidden"), "{e}");

    // Whoever gets one signature from the card (malware in the holder's session, with the
    // PIN verified) cannot renew onto keys bound to a PIN index of their own in the same
    // TPM: the issuer holds the card to the PIN index it was enrolled with.
    {
        let client = TpmClient::spawn(&tpm.tcti, None).unwrap();
        let data = tessera_agent::vsc::DataDir::open(&site.agent_dir).unwrap();
        let (store, state, _) = tessera_agent::vsc::TpmKeyStore::open(
            &client,
            data.state_file("tove"),
            data.card("tove").unwrap(),
        )
        .unwrap();
        let (own, own_index, pinless) = client
            .call(|t| {
                let index = t
                    .free_nv_index(tessera_agent::tpm::FIRST_NV_INDEX + 0x200, &[])
                    .unwrap();
                let name = t.define_pin_index(index, &[5; 32], 9, &[6; 32]).unwrap();
                let policy = Some(policy_secret_digest(&name));
                (
                    [
                        t.create_key(Algorithm::EccP256, policy).unwrap(),
                        t.create_key(Algorithm::EccP256, policy).unwrap(),
                    ],
                    t.index_public_bytes(index).unwrap(),
                    t.create_key(Algorithm::EccP256, None).unwrap(),
                )
            })
            .unwrap();
        let (ek_certificate, ak) = enrol::start_attestation(&client).unwrap();
        let ch: TpmChallenge = anonymous
            .post(
                &format!("/carriers/{carrier}/renewal-challenge"),
                &TpmChallengeRequest {
                    ek_certificate,
                    ak_public: hex::encode(ak),
                },
            )
            .unwrap();
        let [auth, encryption] = own;
        let (secret, evidence) = enrol::answer_challenge(
            &client,
            &ch,
            &[
                (ProfileName::Authentication, auth, Some(own_index.clone())),
                (ProfileName::Encryption, encryption, Some(own_index)),
                (ProfileName::CardAuthentication, pinless, None),
            ],
        )
        .unwrap();
        enrol::finish_attestation(&client);
        let keys = enrol::keys_request(&ch.challenge, &secret, &evidence).keys;
        let message = tessera_issuer_types::api::renewal_message(&carrier, &keys);
        let (_, _, algorithm, signature) =
            tessera_agent::renew::card_signature(store, state, b"123456", &message).unwrap();
        let e = anonymous
            .post::<serde_json::Value>(
                &format!("/carriers/{carrier}/renewal"),
                &tessera_issuer_types::api::RenewalRequest {
                    keys,
                    algorithm: algorithm.into(),
                    signature: {
                        use base64ct::Encoding;
                        base64ct::Base64::encode_string(&signature)
                    },
                },
            )
            .expect_err("keys bound to another PIN index")
            .to_string();
        assert!(e.contains("bad_proof") && e.contains("PIN index"), "{e}");
    }

    // The right PIN renews: new keys in the TPM, new certificates on the card that chain
    // to our CA, the old ones superseded. Cut short twice — the issuer's answer to the
    // renewal lost, then its answer to the confirmation — and run again each time, it
    // ends with one set of new certificates.
    let old_key = before["keys"]["154"]["public"].clone(); // slot 9A
    assert!(old_key.is_string(), "{before}");
    let (ok, text) = renew_through("123456", &losing_proxy(&site.base, "/renewal", true));
    assert!(!ok, "{text}");
    let (ok, text) = site.agent(&["vsc", "status", "tove"]);
    assert!(
        ok && text.contains("new keys made, not yet certified"),
        "{text}"
    );
    assert_eq!(site.card("tove")["keys"]["154"]["public"], old_key);
    std::fs::write(&offset, "0").unwrap();
    let unfinished: Vec<String> = t.ok(anna, &["carrier", "show", &carrier])["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .filter(|s| !old.contains(s))
        .collect();
    assert_eq!(unfinished.len(), 3, "{unfinished:?}");
    std::fs::write(&offset, ((3 * 365 - 7) * 86_400).to_string()).unwrap();
    // The card file put back from before the attempt (its new keys lost): the next attempt
    // makes new keys, and the issuer supersedes the unfinished renewal's certificates.
    let path = site.agent_dir.join("cards/tove.json");
    let mut restored = site.card("tove");
    restored.as_object_mut().unwrap().remove("pending");
    std::fs::write(&path, restored.to_string()).unwrap();
    let (ok, text) = renew_through(
        "123456",
        &losing_proxy(&site.base, "/renewal-confirmation", false),
    );
    assert!(!ok, "{text}");
    let (ok, text) = site.agent(&["vsc", "status", "tove"]);
    assert!(ok && text.contains("not yet confirmed"), "{text}");
    // Until the confirmation, the certificates the card had stay good, each of them (not
    // only the one it signs with); the unfinished renewal's are superseded.
    std::fs::write(&offset, "0").unwrap();
    for s in &old {
        assert_eq!(common::ocsp(root, &site.base, s), "good", "{s}");
    }
    for s in &unfinished {
        assert_eq!(
            common::ocsp(root, &site.base, s),
            "revoked superseded",
            "{s}"
        );
    }
    std::fs::write(&offset, ((3 * 365 - 7) * 86_400).to_string()).unwrap();
    // The confirmation done, its answer lost; then confirmed again.
    let (ok, text) = renew_through(
        "123456",
        &losing_proxy(&site.base, "/renewal-confirmation", true),
    );
    assert!(!ok, "{text}");
    let (ok, text) = renew("123456");
    assert!(
        ok && text.contains("the renewal it already carries is confirmed"),
        "{text}"
    );
    let card = site.card("tove");
    assert_ne!(card["keys"]["154"]["public"], old_key);
    // The old decryption key and its certificate in the first retired slot (82), and the
    // key history object counting it.
    assert_eq!(card["keys"]["130"], before["keys"]["157"], "{card}");
    assert_ne!(
        card["keys"]["157"]["public"],
        before["keys"]["157"]["public"]
    );
    assert_eq!(
        card["card"]["objects"]["5FC10D"],
        before["card"]["objects"]["5FC10B"]
    );
    assert_eq!(card["card"]["objects"]["5FC10C"], "c10101c20100fe00");
    assert!(card.get("pending").is_none(), "{card}");
    let (ok, text) = site.agent(&["vsc", "status", "tove"]);
    assert!(
        ok && pin_line(&text).contains("3 of 3 tries left"),
        "{text}"
    );
    assert!(!text.contains("renewal"), "{text}");
    std::fs::write(&offset, "0").unwrap();
    let now: Vec<String> = t.ok(anna, &["carrier", "show", &carrier])["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    let new: Vec<&String> = now
        .iter()
        .filter(|s| !old.contains(s) && !unfinished.contains(s))
        .collect();
    assert_eq!(new.len(), 3, "{now:?}");
    for tag in ["5FC105", "5FC10B", "5FC101"] {
        std::fs::write(root.join("card.der"), card_certificate(&card, tag)).unwrap();
        let (ok, text) = common::openssl(
            root,
            &[
                "x509", "-inform", "DER", "-in", "card.der", "-noout", "-serial",
            ],
        );
        assert!(ok, "{text}");
        let serial = text
            .trim()
            .trim_start_matches("serial=")
            .to_ascii_lowercase();
        assert!(
            new.iter().any(|s| s.eq_ignore_ascii_case(&serial)),
            "{tag}: {serial} not among {new:?}"
        );
    }
    // The new certificates' validity begins now (the moved clock), so they are checked
    // against the issuing CA at that time.
    let at = ((3 * 365 - 7) * 86_400 + 1_800) as u64;
    #[allow(clippy::disallowed_methods)]
    let then = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + at;
    let (ok, text) = common::openssl(
        root,
        &[
            "verify",
            "-partial_chain",
            "-attime",
            &then.to_string(),
            "-CAfile",
            "issuing.pem",
            "card.der",
        ],
    );
    assert!(ok && text.contains("OK"), "{text}");
    // OCSP (asked at the real time): new good, old superseded.
    for s in &new {
        assert_eq!(common::ocsp(root, &site.base, s), "good");
    }
    for s in old.iter().chain(&unfinished) {
        assert_eq!(
            common::ocsp(root, &site.base, s),
            "revoked superseded",
            "{s}"
        );
    }
    // The audit trail names the card as the actor of its renewal.
    let trail = t
        .ok(&site.auditor, &["audit", "list", "--limit", "1000"])
        .to_string();
    assert!(trail.contains("carrier.renewed"), "{trail}");
    assert!(trail.contains("carrier.renewal_confirmed"), "{trail}");
    assert!(
        trail.contains("not bound to this card's PIN index"),
        "a refused renewal the card signed is audited: {trail}"
    );

    // Renewed, the card is not due again.
    std::fs::write(&offset, ((3 * 365 - 7) * 86_400).to_string()).unwrap();
    let (ok, text) = renew("123456");
    assert!(!ok && text.contains("not due for renewal"), "{text}");
    // A suspended card does not renew itself.
    std::fs::write(&offset, "0").unwrap();
    t.ok(
        anna,
        &[
            "carrier",
            "suspend",
            &carrier,
            "--reason",
            "temporarily_lost",
            "--days",
            "1",
        ],
    );
    let (ok, text) = renew("123456");
    assert!(!ok && text.contains("suspended"), "{text}");
}

//! Relying parties from the federation's signed aggregate, as a deployment keeps them: a
//! good aggregate taken and kept on disk; one with a bad signature, from another key, or
//! past its `validUntil` refused while the last good copy stays in use (also after a
//! restart); the last good copy honoured only until its own `validUntil`; the local
//! registry beside it; and `serve` taking the aggregate at start (its metrics say so).
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64ct::Encoding;
use tessera_idp::config::Config;
use tessera_idp::parties::{Refreshed, Registry, LAST_GOOD, LOCAL_DIR};
use tessera_xmlsec::testing::Key;
use tessera_xmlsec::SignatureAlg;

mod common;

use common::IDP;
const NOW: Duration = Duration::from_secs(1_796_205_600); // 2026-12-02T10:00:00Z
const DAY: Duration = Duration::from_secs(86_400);

const NS: &str = r#"xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#""#;

fn sp(entity_id: &str, cert: &[u8]) -> String {
    format!(
        r#"<md:EntityDescriptor entityID="{entity_id}"><md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" AuthnRequestsSigned="true"><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{entity_id}/acs" index="0"/></md:SPSSODescriptor></md:EntityDescriptor>"#,
        base64ct::Base64::encode_string(cert)
    )
}

fn aggregate(signer: &Key, valid_until: &str, entities: &[String]) -> Vec<u8> {
    signer
        .sign_doc(&format!(
            r#"<md:EntitiesDescriptor {NS} ID="_fed" validUntil="{valid_until}">{}</md:EntitiesDescriptor>"#,
            entities.concat()
        ))
        .into_bytes()
}

fn init(dir: &Path, federation: &Key, source: &Path) {
    let out = Command::new(IDP)
        .args(["init", "--data-dir"])
        .arg(dir)
        .args([
            "--issuer-url",
            "https://issuer.example.org",
            "--federation-metadata",
        ])
        .arg(source)
        .arg("--federation-certificate")
        .arg(federation.cert_pem())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_last_good_aggregate_stays_in_use_until_its_own_valid_until() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, source) = (tmp.path().join("idp"), tmp.path().join("federation.xml"));
    let federation = Key::new(SignatureAlg::RsaSha256);
    let sp_key = Key::new(SignatureAlg::RsaSha256);
    init(&dir, &federation, &source);
    let config = Config::load(&dir).unwrap();
    let fed = config.federation.clone().unwrap();

    let registry = Registry::load(&dir, &config, NOW).unwrap();
    assert_eq!(registry.count(NOW), 0);
    let good = aggregate(
        &federation,
        "2026-12-09T10:00:00Z",
        &[sp("https://sp1.example.org", &sp_key.cert)],
    );
    assert_eq!(
        registry.refresh(&dir, &fed, &good, NOW),
        Refreshed::Taken(1)
    );
    assert_eq!(std::fs::read(dir.join(LAST_GOOD)).unwrap(), good);
    assert!(registry.get("https://sp1.example.org", NOW).is_some());
    assert!(registry.get("https://unknown.example.org", NOW).is_none());

    // Refused: changed after signing, signed by another key, past its validUntil. Each
    // time the last good copy stays, in memory and on disk.
    let tampered = String::from_utf8(good.clone())
        .unwrap()
        .replace("https://sp1.example.org/acs", "https://evil.example/acs")
        .into_bytes();
    let forged = aggregate(
        &Key::new(SignatureAlg::RsaSha256),
        "2026-12-09T10:00:00Z",
        &[sp("https://evil.example.org", &sp_key.cert)],
    );
    let expired = aggregate(
        &federation,
        "2026-12-01T10:00:00Z",
        &[sp("https://sp2.example.org", &sp_key.cert)],
    );
    for (what, bytes) in [
        ("tampered", &tampered),
        ("forged", &forged),
        ("expired", &expired),
    ] {
        let got = registry.refresh(&dir, &fed, bytes, NOW);
        assert!(matches!(got, Refreshed::Refused(_)), "{what}: {got:?}");
        assert_eq!(
            registry
                .get("https://sp1.example.org", NOW)
                .unwrap()
                .assertion_consumer_services[0]
                .location,
            "https://sp1.example.org/acs",
            "{what}"
        );
        assert_eq!(std::fs::read(dir.join(LAST_GOOD)).unwrap(), good, "{what}");
    }
    assert!(registry.get("https://evil.example.org", NOW).is_none());
    // Properly signed, but older than the copy in use (a replay), or claiming too long a
    // validity: refused too.
    let older = aggregate(
        &federation,
        "2026-12-05T10:00:00Z",
        &[sp("https://sp1.example.org", &sp_key.cert)],
    );
    let forever = aggregate(
        &federation,
        "2027-03-01T10:00:00Z",
        &[sp("https://sp1.example.org", &sp_key.cert)],
    );
    for (what, bytes) in [("older", &older), ("too long", &forever)] {
        let got = registry.refresh(&dir, &fed, bytes, NOW);
        assert!(matches!(got, Refreshed::Refused(_)), "{what}: {got:?}");
        assert_eq!(std::fs::read(dir.join(LAST_GOOD)).unwrap(), good, "{what}");
    }

    // After a restart the last good copy is used, and a local descriptor beside it.
    std::fs::create_dir_all(dir.join(LOCAL_DIR)).unwrap();
    let local = sp("https://local.example.org", &sp_key.cert).replacen(
        "<md:EntityDescriptor ",
        &format!("<md:EntityDescriptor {NS} "),
        1,
    );
    std::fs::write(dir.join(LOCAL_DIR).join("local.xml"), local).unwrap();
    let restarted = Registry::load(&dir, &config, NOW + DAY).unwrap();
    assert!(restarted
        .get("https://sp1.example.org", NOW + DAY)
        .is_some());
    assert!(restarted
        .get("https://local.example.org", NOW + DAY)
        .is_some());
    assert_eq!(restarted.count(NOW + DAY), 2);
    // Once the last good copy's own validUntil has passed, its relying parties are gone
    // (the local one stays).
    let later = NOW + 8 * DAY;
    assert!(restarted.get("https://sp1.example.org", later).is_none());
    assert_eq!(restarted.count(later), 1);
    let reloaded = Registry::load(&dir, &config, later).unwrap();
    assert!(reloaded.get("https://sp1.example.org", later).is_none());
}

#[test]
fn serve_takes_the_aggregate_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, source) = (tmp.path().join("idp"), tmp.path().join("federation.xml"));
    let federation = Key::new(SignatureAlg::EcdsaP256Sha256);
    let sp_key = Key::new(SignatureAlg::RsaSha256);
    init(&dir, &federation, &source);
    // Valid for twenty days from whenever this runs (within the 30 days allowed).
    let until = tessera_idp::metadata::instant(
        tessera_issuer_types::clock::Clock::now(&tessera_issuer_types::SystemClock) + 20 * DAY,
    );
    std::fs::write(
        &source,
        aggregate(
            &federation,
            &until,
            &[
                sp("https://sp1.example.org", &sp_key.cert),
                sp("https://sp2.example.org", &sp_key.cert),
            ],
        ),
    )
    .unwrap();
    let server = common::serve(&dir);
    let base = server.base.clone();
    // The first refresh runs at start; wait for it (a few seconds at most).
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = ureq::get(&format!("{base}/metrics"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        if metrics.contains("tessera_idp_federation_refreshes_total 1") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(server);
    assert!(
        metrics.contains("tessera_idp_federation_refreshes_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tessera_idp_relying_parties 2"),
        "{metrics}"
    );
    assert!(dir.join(LAST_GOOD).exists());
}

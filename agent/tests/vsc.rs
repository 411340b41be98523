//! The TPM virtual card against a real (software) TPM: the PIV conformance catalogue, PIN
//! counting per card in TPM PIN indices, and what a copy of the agent's files is worth.
#![allow(clippy::disallowed_methods)] // tests make cards at the real time

mod support;

use std::time::SystemTime;

use support::{have_swtpm, Swtpm};
use tessera_agent::vsc::{CardFile, DataDir, TpmKeyStore};
use tessera_agent::worker::TpmClient;
use tessera_firmware_tests::conformance::{self, Config, Verdict};
use tessera_piv::card::{Applet, Interface};
use tessera_piv::host::{PinStatus, PivClient};
use tessera_piv::piv::{Algorithm, KeyRef};

fn open(data: &DataDir, tpm: &TpmClient, card: CardFile) -> PivClient<Applet<TpmKeyStore>> {
    let store = TpmKeyStore::new(
        tpm.clone(),
        data.state_file(&card.meta.name),
        card.meta,
        card.keys,
    );
    PivClient::new(Applet::new(card.card, store, Interface::Contact))
}

#[test]
fn every_conformance_check_passes_on_the_tpm_card() {
    if !have_swtpm() {
        return;
    }
    let tpm = Swtpm::start();
    let client = tpm.client();
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let card = data
        .create(&client, "alice", None, SystemTime::now())
        .unwrap();
    let mut applet = open(&data, &client, card).into_transport();
    let config = Config {
        destructive: true,
        ..Config::default()
    };
    let outcomes = conformance::run(&mut applet, &config);
    let report = conformance::report(&outcomes);
    println!("{report}");
    assert!(conformance::all_passed(&outcomes), "{report}");
    for o in &outcomes {
        if let Verdict::NotApplicable(why) = &o.verdict {
            assert!(
                why.starts_with("contactless interface only")
                    || (o.check.id.starts_with("issued.") && why.starts_with("blank card")),
                "{}: {why}",
                o.check.id
            );
        }
    }
}

#[test]
fn wrong_pins_block_one_card_only_and_no_restore_gives_tries_back() {
    if !have_swtpm() {
        return;
    }
    let mut tpm = Swtpm::start();
    let client = tpm.client();
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    data.create(&client, "alice", None, SystemTime::now())
        .unwrap();
    data.create(&client, "bob", None, SystemTime::now())
        .unwrap();
    let digest = [7u8; 32];
    for name in ["alice", "bob"] {
        let mut c = open(&data, &client, data.card(name).unwrap());
        c.authenticate_management(Algorithm::Tdes, &tessera_piv::card::DEFAULT_MANAGEMENT_KEY)
            .unwrap();
        c.generate(KeyRef::AUTHENTICATION, Algorithm::EccP256, None)
            .unwrap();
    }
    let alice_before = std::fs::read(data.root().join("cards/alice.json")).unwrap();
    let mut alice = open(&data, &client, data.card("alice").unwrap());
    for _ in 0..3 {
        assert!(alice.verify_pin(b"999999").is_err());
    }
    assert_eq!(alice.pin_status().unwrap(), PinStatus::Blocked);
    assert!(
        alice.verify_pin(b"123456").is_err(),
        "a blocked PIN takes no value"
    );
    drop(alice);
    // Bob's card on the same TPM still verifies and signs.
    let mut bob = open(&data, &client, data.card("bob").unwrap());
    bob.verify_pin(b"123456").unwrap();
    bob.sign(KeyRef::AUTHENTICATION, Algorithm::EccP256, &digest)
        .unwrap();
    drop(bob);
    drop(client);
    // The TPM reboots with its state, the agent starts again: still blocked.
    tpm.reboot();
    let client = tpm.client();
    let mut alice = open(&data, &client, data.card("alice").unwrap());
    assert_eq!(alice.pin_status().unwrap(), PinStatus::Blocked);
    drop(alice);
    // The card file from before the wrong PINs gives no tries back.
    std::fs::write(data.root().join("cards/alice.json"), &alice_before).unwrap();
    let mut alice = open(&data, &client, data.card("alice").unwrap());
    assert_eq!(alice.pin_status().unwrap(), PinStatus::Blocked);
    assert!(alice.verify_pin(b"123456").is_err());
    // The PUK unblocks it, and the new PIN signs.
    alice.unblock_pin(b"12345678", b"24682468").unwrap();
    alice.verify_pin(b"24682468").unwrap();
    alice
        .sign(KeyRef::AUTHENTICATION, Algorithm::EccP256, &digest)
        .unwrap();
}

#[test]
fn the_card_file_holds_no_pin_and_its_keys_are_useless_elsewhere() {
    if !have_swtpm() {
        return;
    }
    let tpm = Swtpm::start();
    let client = tpm.client();
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    data.create(&client, "alice", None, SystemTime::now())
        .unwrap();
    let mut c = open(&data, &client, data.card("alice").unwrap());
    c.authenticate_management(Algorithm::Tdes, &tessera_piv::card::DEFAULT_MANAGEMENT_KEY)
        .unwrap();
    c.generate(KeyRef::AUTHENTICATION, Algorithm::EccP256, None)
        .unwrap();
    c.change_reference(KeyRef::PIN, b"123456", b"86428642")
        .unwrap();
    drop(c);
    let file = std::fs::read_to_string(data.root().join("cards/alice.json")).unwrap();
    for secret in [&b"86428642"[..], b"123456\xff\xff", b"12345678"] {
        assert!(
            !file.contains(&hex::encode(secret)),
            "a PIN or PUK is in the card file"
        );
    }
    // Without the PIN the key signs nothing (the applet refuses, and so would the TPM).
    let card = data.card("alice").unwrap();
    let blob = card.keys[&KeyRef::AUTHENTICATION].clone();
    let pin_index = card.meta.pin_index;
    let refused = client
        .call(move |tpm| {
            let b = tessera_agent::tpm::KeyBlob {
                public: blob.public,
                private: blob.private,
            };
            tpm.sign(
                &b,
                Algorithm::EccP256,
                &[1; 32],
                Some((pin_index, &[0u8; 32])),
            )
        })
        .unwrap();
    assert!(refused.is_err(), "the TPM signed with a wrong PIN secret");
    // The data directory copied next to another TPM: the card cannot sign with the right PIN.
    let other = Swtpm::start();
    let other_client = other.client();
    let copy = tempfile::tempdir().unwrap();
    std::fs::create_dir(copy.path().join("cards")).unwrap();
    std::fs::copy(
        data.root().join("cards/alice.json"),
        copy.path().join("cards/alice.json"),
    )
    .unwrap();
    let copied = DataDir::open(copy.path()).unwrap();
    let mut c = open(&copied, &other_client, copied.card("alice").unwrap());
    assert!(c.verify_pin(b"86428642").is_err());
    assert!(c
        .sign(KeyRef::AUTHENTICATION, Algorithm::EccP256, &[1; 32])
        .is_err());
}

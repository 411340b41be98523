//! The TPM virtual card against a real (software) TPM: the PIV conformance catalogue, PIN
//! counting per card in TPM PIN indices, and what a copy of the agent's files is worth.
#![allow(clippy::disallowed_methods)] // tests make cards at the real time
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod support;

use std::time::SystemTime;

use support::{have_swtpm, Swtpm};
use tessera_agent::vsc::{CardFile, DataDir, TpmKeyStore};
use tessera_agent::worker::TpmClient;
use tessera_firmware_tests::conformance::{self, Config};
use tessera_piv::apdu::{Command, StatusWord};
use tessera_piv::card::{Applet, Interface, DEFAULT_MANAGEMENT_KEY};
use tessera_piv::host::{PinStatus, PivClient};
use tessera_piv::piv::{Algorithm, KeyRef};

/// A software TPM, the agent's TPM thread on it, and a data directory holding new cards
/// of these names (the directory lives as long as `_dir`).
struct Setup {
    tpm: Swtpm,
    client: TpmClient,
    data: DataDir,
    _dir: tempfile::TempDir,
}

fn setup(cards: &[&str]) -> Option<Setup> {
    if !have_swtpm() {
        return None;
    }
    let tpm = Swtpm::start();
    let client = tpm.client();
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    for name in cards {
        data.create(&client, name, None, SystemTime::now()).unwrap();
    }
    Some(Setup {
        tpm,
        client,
        data,
        _dir: dir,
    })
}

fn open(data: &DataDir, tpm: &TpmClient, card: CardFile) -> PivClient<Applet<TpmKeyStore>> {
    open_with_warnings(data, tpm, card).0
}

fn open_with_warnings(
    data: &DataDir,
    tpm: &TpmClient,
    card: CardFile,
) -> (PivClient<Applet<TpmKeyStore>>, Vec<String>) {
    let (store, state, warnings) =
        TpmKeyStore::open(tpm, data.state_file(&card.meta.name), card).unwrap();
    (
        PivClient::new(Applet::new(state, store, Interface::Contact)),
        warnings,
    )
}

fn personalised(data: &DataDir, tpm: &TpmClient, name: &str) -> PivClient<Applet<TpmKeyStore>> {
    let mut c = open(data, tpm, data.card(name).unwrap());
    c.authenticate_management(Algorithm::Tdes, &DEFAULT_MANAGEMENT_KEY)
        .unwrap();
    c.generate(KeyRef::AUTHENTICATION, Algorithm::EccP256, None)
        .unwrap();
    c
}

fn block_pin_and_puk(c: &mut PivClient<Applet<TpmKeyStore>>) {
    for _ in 0..3 {
        assert!(c.verify_pin(b"999999").is_err());
        assert!(c.unblock_pin(b"99999999", b"999999").is_err());
    }
    assert_eq!(c.pin_status().unwrap(), PinStatus::Blocked);
}

fn reset(c: &mut PivClient<Applet<TpmKeyStore>>) -> StatusWord {
    c.send(&Command::new(0, 0xFB, 0, 0)).unwrap().sw
}

#[test]
fn every_conformance_check_passes_on_the_tpm_card() {
    let Some(Setup {
        tpm: _tpm,
        client,
        data,
        _dir,
    }) = setup(&[])
    else {
        return;
    };
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
    let unjustified = conformance::unjustified_not_applicable(&outcomes);
    assert!(unjustified.is_empty(), "{unjustified:?}");
}

#[test]
fn wrong_pins_block_one_card_only_and_no_restore_gives_tries_back() {
    let Some(Setup {
        mut tpm,
        client,
        data,
        _dir,
    }) = setup(&["alice", "bob"])
    else {
        return;
    };
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
    let Some(Setup {
        tpm: _tpm,
        client,
        data,
        _dir,
    }) = setup(&["alice"])
    else {
        return;
    };
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

#[test]
fn a_reset_card_gives_no_old_key_back_with_the_factory_pin() {
    let Some(Setup {
        tpm: _tpm,
        client,
        data,
        _dir,
    }) = setup(&["alice"])
    else {
        return;
    };
    let mut c = personalised(&data, &client, "alice");
    c.change_reference(KeyRef::PIN, b"123456", b"86428642")
        .unwrap();
    // The new PIN counts as verified after the change, as on a YubiKey: it signs.
    c.sign(KeyRef::AUTHENTICATION, Algorithm::EccP256, &[5; 32])
        .unwrap();
    drop(c);
    let with_key = std::fs::read(data.root().join("cards/alice.json")).unwrap();
    // Anyone on the machine can block a card's PIN and PUK and reset it.
    let mut c = open(&data, &client, data.card("alice").unwrap());
    block_pin_and_puk(&mut c);
    assert_eq!(reset(&mut c), StatusWord::SUCCESS);
    c.verify_pin(b"123456").unwrap();
    drop(c);
    // The card file from before the reset, with its key, put back: the key is dead.
    std::fs::write(data.root().join("cards/alice.json"), &with_key).unwrap();
    let (mut c, warnings) = open_with_warnings(&data, &client, data.card("alice").unwrap());
    assert!(
        warnings.iter().any(|w| w.contains("cannot be used")),
        "{warnings:?}"
    );
    c.verify_pin(b"123456").unwrap();
    assert!(c
        .sign(KeyRef::AUTHENTICATION, Algorithm::EccP256, &[5; 32])
        .is_err());
}

#[test]
fn a_stale_counter_mirror_still_answers_as_the_tpm_counts() {
    let Some(Setup {
        tpm: _tpm,
        client,
        data,
        _dir,
    }) = setup(&["alice"])
    else {
        return;
    };
    // Two applets over one card: the second's mirror is from before the first blocked it.
    let mut first = open(&data, &client, data.card("alice").unwrap());
    let mut second = open(&data, &client, data.card("alice").unwrap());
    for _ in 0..3 {
        assert!(first.verify_pin(b"999999").is_err());
    }
    let sw = second
        .send(&Command::new(0, 0x20, 0, 0x80).with_data(b"123456\xff\xff".to_vec()))
        .unwrap()
        .sw;
    assert!(
        sw == StatusWord::AUTH_METHOD_BLOCKED || sw == StatusWord::tries_left(0),
        "a blocked PIN answered {sw:?}"
    );
    // RESET needs the TPM's counters at zero, not the mirror's.
    let mut third = open(&data, &client, data.card("alice").unwrap());
    assert_eq!(reset(&mut third), StatusWord::CONDITIONS_NOT_SATISFIED);
}

#[test]
fn a_lost_puk_index_never_comes_back_as_the_factory_puk() {
    let Some(Setup {
        tpm: _tpm,
        client,
        data,
        _dir,
    }) = setup(&["alice"])
    else {
        return;
    };
    drop(personalised(&data, &client, "alice"));
    // A cut between the undefine and the define of the PUK index.
    let puk = data.card("alice").unwrap().meta.puk_index;
    client.call(move |t| t.undefine(puk)).unwrap().unwrap();
    let (mut c, warnings) = open_with_warnings(&data, &client, data.card("alice").unwrap());
    assert!(warnings.iter().any(|w| w.contains("PUK")), "{warnings:?}");
    for _ in 0..3 {
        assert!(c.verify_pin(b"999999").is_err());
    }
    assert!(c.unblock_pin(b"12345678", b"24682468").is_err());
    assert!(c.verify_pin(b"24682468").is_err());
}

//! The applet in memory, through the host client: behaviours the conformance suite does not
//! pin down because they are design choices rather than SP 800-73-4 requirements.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use tessera_piv::apdu::{Command, StatusWord};
use tessera_piv::card::{
    Applet, CardState, Checked, Interface, KeyError, KeyInfo, KeyStore, Persist, Reference,
    References, SoftKeyStore, DEFAULT_MANAGEMENT_KEY,
};
use tessera_piv::host::{Error, PinStatus, PivClient};
use tessera_piv::piv::{Algorithm, KeyRef, PinPolicy};

fn card() -> PivClient<Applet<SoftKeyStore>> {
    let state = CardState::factory(&mut rand::rngs::OsRng, 12_345_678);
    PivClient::new(Applet::new(state, SoftKeyStore::new(), Interface::Contact))
}

#[test]
fn a_challenge_request_keeps_the_management_key_authentication() {
    // OpenSC takes random bytes from 9B challenges; that must not log another tool's
    // administration session out.
    let mut c = card();
    c.authenticate_management(Algorithm::Tdes, &DEFAULT_MANAGEMENT_KEY)
        .unwrap();
    let challenge = Command::new(0, 0x87, 0x03, 0x9B)
        .with_data(vec![0x7C, 0x02, 0x81, 0x00])
        .with_le(256);
    c.call(&challenge).unwrap();
    c.put_data(0x5FC10D, b"still authenticated").unwrap();
}

#[test]
fn a_failed_management_proof_ends_the_authentication() {
    let mut c = card();
    c.authenticate_management(Algorithm::Tdes, &DEFAULT_MANAGEMENT_KEY)
        .unwrap();
    let mut wrong = DEFAULT_MANAGEMENT_KEY;
    // Not the low bit: DES ignores parity bits, so that would be the same key.
    wrong[0] ^= 0x10;
    assert!(c.authenticate_management(Algorithm::Tdes, &wrong).is_err());
    match c.put_data(0x5FC10D, b"x") {
        Err(Error::Card(StatusWord::SECURITY_STATUS_NOT_SATISFIED)) => {}
        other => panic!("PUT DATA after a failed proof: {other:?}"),
    }
}

/// A key store that records what the applet asks it to persist (and the PIN counter at that
/// moment), and can be told to fail a kind of write: the carrier's storage as the applet
/// sees it.
#[derive(Debug, Default)]
struct Recording {
    keys: SoftKeyStore,
    saved: SoftKeyStore,
    writes: Log,
    fail: FailSwitch,
}

impl KeyStore for Recording {
    fn generate(
        &mut self,
        slot: KeyRef,
        alg: Algorithm,
        pin_policy: PinPolicy,
        touch: u8,
    ) -> Result<KeyInfo, KeyError> {
        self.keys.generate(slot, alg, pin_policy, touch)
    }
    fn info(&self, slot: KeyRef) -> Option<&KeyInfo> {
        self.keys.info(slot)
    }
    fn sign(&mut self, slot: KeyRef, input: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.keys.sign(slot, input)
    }
    fn ecdh(&mut self, slot: KeyRef, peer: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.keys.ecdh(slot, peer)
    }
    fn delete(&mut self, slot: KeyRef) {
        self.keys.delete(slot);
    }
    fn persist(&mut self, state: &CardState, why: Persist) -> Result<(), KeyError> {
        if self.fail.get() == Some(why) {
            return Err(KeyError::Backend("storage failed".into()));
        }
        self.writes.borrow_mut().push((why, state.pin().left()));
        self.saved = self.keys.clone();
        Ok(())
    }

    fn rollback(&mut self) {
        self.keys = self.saved.clone();
    }
}

type Log = Rc<RefCell<Vec<(Persist, u8)>>>;
/// Which kind of write the store should fail.
type FailSwitch = Rc<Cell<Option<Persist>>>;

fn recorded_card() -> (PivClient<Applet<Recording>>, Log, FailSwitch) {
    let state = CardState::factory(&mut rand::rngs::OsRng, 12_345_678);
    let store = Recording::default();
    let (log, fail) = (Rc::clone(&store.writes), Rc::clone(&store.fail));
    (
        PivClient::new(Applet::new(state, store, Interface::Contact)),
        log,
        fail,
    )
}

#[test]
fn a_pin_try_is_written_before_the_comparison_and_right_and_wrong_write_alike() {
    let (mut c, log, _) = recorded_card();
    // Wrong PIN: counted (3 → 2) and written before comparing, then settled at 2.
    assert!(c.verify_pin(b"000000").is_err());
    assert_eq!(*log.borrow(), [(Persist::Try, 2), (Persist::Settle, 2)]);
    log.borrow_mut().clear();
    // Right PIN: counted (2 → 1) and written before comparing, then back to 3. The same
    // two writes, so the writes alone do not tell a right guess from a wrong one.
    c.verify_pin(b"123456").unwrap();
    assert_eq!(*log.borrow(), [(Persist::Try, 1), (Persist::Settle, 3)]);
    // A malformed PIN uses no try and writes nothing.
    log.borrow_mut().clear();
    let malformed = Command::new(0, 0x20, 0, 0x80).with_data(vec![0x31; 5]);
    assert_eq!(c.send(&malformed).unwrap().sw, StatusWord::INCORRECT_DATA);
    assert!(log.borrow().is_empty());
}

#[test]
fn a_failed_write_of_the_try_answers_memory_failure_and_counts_nothing() {
    let (mut c, log, fail) = recorded_card();
    fail.set(Some(Persist::Try));
    match c.verify_pin(b"123456") {
        Err(Error::Card(StatusWord::MEMORY_FAILURE)) => {}
        other => panic!("{other:?}"),
    }
    fail.set(None);
    assert!(log.borrow().is_empty());
    assert_eq!(c.pin_status().unwrap(), PinStatus::TriesLeft(3));
}

#[test]
fn a_failed_write_after_a_right_pin_leaves_the_pin_unverified() {
    let (mut c, _, fail) = recorded_card();
    fail.set(Some(Persist::Settle));
    match c.verify_pin(b"123456") {
        Err(Error::Card(StatusWord::MEMORY_FAILURE)) => {}
        other => panic!("{other:?}"),
    }
    fail.set(None);
    // Unverified, and the counter is what the storage holds: the try written before the
    // comparison.
    assert_eq!(c.pin_status().unwrap(), PinStatus::TriesLeft(2));
}

#[test]
fn the_puk_is_any_eight_bytes() {
    let (mut c, _, _) = recorded_card();
    // SP 800-73-4 Part 2 §2.4.3: no padding rule for the PUK.
    let binary_puk = [0x00, 0xFF, 0x10, 0x80, 0x7F, 0xFE, 0x01, 0xFF];
    c.change_reference(KeyRef::PUK, b"12345678", &binary_puk)
        .unwrap();
    c.unblock_pin(&binary_puk, b"654321").unwrap();
    c.verify_pin(b"654321").unwrap();
    // The new PIN keeps the PIN's format.
    let mut data = binary_puk.to_vec();
    data.extend_from_slice(&[0x31, 0x32, 0xFF, 0x33, 0xFF, 0xFF, 0xFF, 0xFF]);
    let bad_pin = Command::new(0, 0x2C, 0, 0x80).with_data(data);
    assert_eq!(c.send(&bad_pin).unwrap().sw, StatusWord::INCORRECT_DATA);
}

#[test]
fn a_key_generated_in_a_command_whose_write_failed_is_forgotten() {
    let (mut c, _, fail) = recorded_card();
    c.authenticate_management(Algorithm::Tdes, &DEFAULT_MANAGEMENT_KEY)
        .unwrap();
    fail.set(Some(Persist::Change));
    match c.generate(KeyRef::AUTHENTICATION, Algorithm::EccP256, None) {
        Err(Error::Card(StatusWord::MEMORY_FAILURE)) => {}
        other => panic!("{other:?}"),
    }
    fail.set(None);
    // The card answered 6581: no key is there, and the next write (a PIN try) does not
    // put one on storage.
    match c.metadata(KeyRef::AUTHENTICATION) {
        Err(Error::Card(StatusWord::NOT_FOUND)) => {}
        other => panic!("metadata after a failed generation: {other:?}"),
    }
    c.verify_pin(b"123456").unwrap();
    assert!(c.metadata(KeyRef::AUTHENTICATION).is_err());
}

#[test]
fn counters_are_written_at_a_fixed_width() {
    let mut state = CardState::factory(&mut rand::rngs::OsRng, 12_345_678);
    let size = |s: &CardState| serde_json::to_string(s).unwrap().len();
    let at = |tries: u8, s: &mut CardState| {
        let mut c = PivClient::new(Applet::new(
            s.clone(),
            SoftKeyStore::new(),
            Interface::Contact,
        ));
        c.authenticate_management(Algorithm::Tdes, &DEFAULT_MANAGEMENT_KEY)
            .unwrap();
        c.verify_pin(b"123456").unwrap();
        c.call(&Command::new(0, 0xFA, tries, tries)).unwrap();
        *s = c.into_transport().state().clone();
    };
    at(10, &mut state);
    let full = size(&state);
    let mut c = PivClient::new(Applet::new(state, SoftKeyStore::new(), Interface::Contact));
    assert!(c.verify_pin(b"000000").is_err());
    // 10 tries left → 9: one digit fewer, yet the same size.
    assert_eq!(size(c.into_transport().state()), full);
}

/// A key store whose PIN and PUK live with a holder that counts tries itself (as the TPM
/// virtual card's PIN indices do): the shared cell is the holder, outliving any applet.
#[derive(Debug, Default)]
struct Holder {
    values: [Vec<u8>; 2],
    left: [u8; 2],
    total: [u8; 2],
    forgotten: u32,
}

#[derive(Debug)]
struct HeldStore {
    keys: SoftKeyStore,
    holder: Rc<RefCell<Holder>>,
    written: Rc<RefCell<Vec<String>>>,
}

fn index(which: Reference) -> usize {
    match which {
        Reference::Pin => 0,
        Reference::Puk => 1,
    }
}

impl References for HeldStore {
    fn counter(&mut self, which: Reference) -> Result<(u8, u8), KeyError> {
        let h = self.holder.borrow();
        Ok((h.left[index(which)], h.total[index(which)]))
    }
    fn check(&mut self, which: Reference, offered: &[u8]) -> Result<Checked, KeyError> {
        let mut h = self.holder.borrow_mut();
        let i = index(which);
        if h.left[i] == 0 {
            return Ok(Checked::Wrong { left: 0 });
        }
        if h.values[i] == offered {
            h.left[i] = h.total[i];
            Ok(Checked::Right)
        } else {
            h.left[i] -= 1;
            Ok(Checked::Wrong { left: h.left[i] })
        }
    }
    fn set(&mut self, which: Reference, value: &[u8], tries: u8) -> Result<(), KeyError> {
        let mut h = self.holder.borrow_mut();
        let i = index(which);
        h.values[i] = value.to_vec();
        (h.left[i], h.total[i]) = (tries, tries);
        Ok(())
    }
    fn reset(&mut self, pin: &[u8], puk: &[u8], tries: u8) -> Result<(), KeyError> {
        self.set(Reference::Pin, pin, tries)?;
        self.set(Reference::Puk, puk, tries)
    }
    fn forget_pin(&mut self) {
        self.holder.borrow_mut().forgotten += 1;
    }
}

impl KeyStore for HeldStore {
    fn generate(
        &mut self,
        slot: KeyRef,
        alg: Algorithm,
        pin_policy: PinPolicy,
        touch: u8,
    ) -> Result<KeyInfo, KeyError> {
        self.keys.generate(slot, alg, pin_policy, touch)
    }
    fn info(&self, slot: KeyRef) -> Option<&KeyInfo> {
        self.keys.info(slot)
    }
    fn sign(&mut self, slot: KeyRef, input: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.keys.sign(slot, input)
    }
    fn ecdh(&mut self, slot: KeyRef, peer: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.keys.ecdh(slot, peer)
    }
    fn delete(&mut self, slot: KeyRef) {
        self.keys.delete(slot);
    }
    fn persist(&mut self, state: &CardState, _why: Persist) -> Result<(), KeyError> {
        let json = serde_json::to_string(state).map_err(|e| KeyError::Backend(e.to_string()))?;
        self.written.borrow_mut().push(json);
        Ok(())
    }
    fn rollback(&mut self) {}
    fn references(&mut self) -> Option<&mut dyn References> {
        Some(self)
    }
}

#[test]
fn a_store_that_holds_the_pin_counts_it_and_the_state_keeps_no_value() {
    let holder = Rc::new(RefCell::new(Holder::default()));
    let written = Rc::new(RefCell::new(Vec::new()));
    let factory = CardState::factory(&mut rand::rngs::OsRng, 7);
    let applet_over = |state: CardState| {
        PivClient::new(Applet::new(
            state,
            HeldStore {
                keys: SoftKeyStore::new(),
                holder: Rc::clone(&holder),
                written: Rc::clone(&written),
            },
            Interface::Contact,
        ))
    };
    {
        let mut h = holder.borrow_mut();
        h.values = [b"123456\xFF\xFF".to_vec(), b"12345678".to_vec()];
        h.left = [3, 3];
        h.total = [3, 3];
    }
    let mut c = applet_over(factory.clone());
    c.verify_pin(b"123456").unwrap();
    c.change_reference(KeyRef::PIN, b"123456", b"24682468")
        .unwrap();
    assert_eq!(holder.borrow().values[0], b"24682468");
    // Neither the old nor the new PIN is in any state the card wrote.
    for json in written.borrow().iter() {
        assert!(!json.contains(&hex::encode(b"123456\xFF\xFF")), "{json}");
        assert!(!json.contains(&hex::encode(b"24682468")), "{json}");
    }
    let before_wrong = written.borrow().last().cloned().unwrap();
    assert!(c.verify_pin(b"000000").is_err());
    assert!(c.verify_pin(b"000000").is_err());
    // A card started again from the state written before the wrong tries gets none back.
    let old: CardState = serde_json::from_str(&before_wrong).unwrap();
    let mut c = applet_over(old);
    assert_eq!(c.pin_status().unwrap(), PinStatus::TriesLeft(1));
    // Ending the PIN's status is passed on to the holder.
    let forgotten = holder.borrow().forgotten;
    c.send(&Command::new(0, 0x20, 0xFF, 0x80)).unwrap();
    assert!(holder.borrow().forgotten > forgotten);
    // The PUK unblocks through the holder.
    assert!(c.verify_pin(b"000000").is_err());
    assert_eq!(c.pin_status().unwrap(), PinStatus::Blocked);
    c.unblock_pin(b"12345678", b"13571357").unwrap();
    c.verify_pin(b"13571357").unwrap();
    assert_eq!(holder.borrow().left, [3, 3]);
}

//! The card-side applet: any sequence of APDUs gets an answer with a status word, never a
//! panic, and the card still answers SELECT afterwards.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_piv::card::{Applet, CardState, Interface, SoftKeyStore};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else { return };
    let interface = if mode & 1 == 0 { Interface::Contact } else { Interface::Contactless };
    let state = CardState::factory(&mut rand::rngs::OsRng, 12_345_678);
    let mut applet = Applet::new(state, SoftKeyStore::new(), interface);
    // Input: a series of length-prefixed APDUs.
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (apdu, next) = tail.split_at(len);
        let resp = applet.process(apdu);
        assert!(resp.len() >= 2, "every answer carries a status word");
        rest = next;
    }
    let select = [0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08];
    // The first SELECT may end an unfinished command chain, as its last link or refused
    // with 6883 (ISO 7816-4 §5.1.1.1); the second must succeed.
    applet.process(&select);
    let resp = applet.process(&select);
    assert_eq!(&resp[resp.len() - 2..], &[0x90, 0x00]);
});

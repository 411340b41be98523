//! APDU and BER-TLV parsers: no input may panic, and what parses re-encodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_piv::apdu::{Command, Response};
use tessera_piv::tlv;

fuzz_target!(|data: &[u8]| {
    if let Ok(cmd) = Command::parse(data) {
        let again = Command::parse(&cmd.to_bytes()).expect("re-encoded command parses");
        assert_eq!(again.data, cmd.data);
        assert_eq!(again.le, cmd.le);
    }
    let _ = Response::parse(data);
    if let Ok(items) = tlv::parse_all(data) {
        let mut out = Vec::new();
        for t in &items {
            tlv::push(&mut out, t.tag, t.value);
        }
        // Re-encoding uses the shortest lengths, so it parses to the same elements.
        assert_eq!(tlv::parse_all(&out).expect("re-encoded TLV parses"), items);
    }
    let _ = tlv::find(data, 0x53);
});

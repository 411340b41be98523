//! The applet in memory, through the host client: behaviours the conformance suite does not
//! pin down because they are design choices rather than SP 800-73-4 requirements.

use tessera_piv::apdu::{Command, StatusWord};
use tessera_piv::card::{Applet, CardState, Interface, SoftKeyStore, DEFAULT_MANAGEMENT_KEY};
use tessera_piv::host::{Error, PivClient};
use tessera_piv::piv::Algorithm;

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

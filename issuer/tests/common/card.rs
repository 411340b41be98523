//! The reference card in memory (`tessera-card-sim`'s applet over software keys), for
//! tests that need keys generated on a card and their PIV attestations.

use std::time::SystemTime;

use tessera_piv::card::{Applet, Interface, SoftKeyStore, DEFAULT_MANAGEMENT_KEY};
use tessera_piv::host::PivClient;
use tessera_piv::piv::{object, Algorithm, KeyRef, PinPolicy};

pub type Card = PivClient<Applet<SoftKeyStore>>;

pub fn pem(der: &[u8]) -> String {
    der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der).unwrap()
}

/// A blank reference card in memory and its manufacturer CA (PEM).
pub fn card() -> (Card, String) {
    // The time through the injected clock, as the issuer reads it.
    let now = tessera_issuer_types::Clock::now(&tessera_issuer_types::SystemClock);
    let new =
        tessera_firmware_tests::manufacture::blank_card(SystemTime::UNIX_EPOCH + now).unwrap();
    let mut c = PivClient::new(Applet::new(new.card, new.keys, Interface::Contact));
    c.authenticate_management(Algorithm::Tdes, &DEFAULT_MANAGEMENT_KEY)
        .unwrap();
    (c, new.manufacturer_ca_pem)
}

/// Generates a P-256 key in `slot` with `policy` and returns its attestation and the card's
/// attestation certificate, PEM.
pub fn attest(c: &mut Card, slot: KeyRef, policy: PinPolicy) -> (String, String) {
    c.generate(slot, Algorithm::EccP256, Some(policy)).unwrap();
    let attestation = c.attest(slot).unwrap();
    let f9 = c.get_data(object::YK_ATTESTATION_CERT).unwrap();
    let f9 = tessera_piv::tlv::find(&f9, 0x70)
        .ok()
        .flatten()
        .unwrap_or(&f9)
        .to_vec();
    (pem(&attestation), pem(&f9))
}

//! The card side: the PIV applet as a state machine over a [`KeyStore`].
//!
//! A carrier (the reference card, the TPM virtual card) feeds it command APDUs and sends
//! back what it answers. The applet makes its state durable through
//! [`KeyStore::persist`] before it answers a command that changed it, and in the middle of
//! every PIN and PUK check (the try is written before the comparison).

mod applet;
pub mod cert;
mod keystore;
mod state;

/// Secret bytes as hex in serialised state, zeroized in memory (the card's PIN, PUK,
/// management key and software keys).
mod secret_hex {
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    pub(super) fn serialize<S: Serializer>(
        v: &Zeroizing<Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v.as_slice()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Zeroizing<Vec<u8>>, D::Error> {
        let s = Zeroizing::new(String::deserialize(d)?);
        hex::decode(s.as_str())
            .map(Zeroizing::new)
            .map_err(serde::de::Error::custom)
    }
}

pub use applet::{Applet, Interface, HISTORICAL_BYTES};
pub use keystore::{
    Checked, KeyError, KeyInfo, KeyStore, Origin, Persist, PublicKey, Reference, References,
    SoftKeyStore,
};
pub use state::{
    pad8, CardState, ManagementKey, RetryCounted, DEFAULT_MANAGEMENT_KEY, DEFAULT_PIN, DEFAULT_PUK,
    DEFAULT_RETRIES, VERSION,
};

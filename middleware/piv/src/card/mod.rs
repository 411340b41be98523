//! The card side: the PIV applet as a state machine over a [`KeyStore`].
//!
//! A carrier (the reference card, the TPM virtual card) feeds it command APDUs and sends
//! back what it answers; after each command it asks [`Applet::take_dirty`] whether the
//! persistent state changed and must be saved.

mod applet;
pub mod cert;
mod keystore;
mod state;

pub use applet::{Applet, Interface, HISTORICAL_BYTES};
pub use keystore::{KeyError, KeyInfo, KeyStore, Origin, PublicKey, SoftKeyStore};
pub use state::{
    pad8, CardState, ManagementKey, RetryCounted, DEFAULT_MANAGEMENT_KEY, DEFAULT_PIN, DEFAULT_PUK,
    DEFAULT_RETRIES, VERSION,
};

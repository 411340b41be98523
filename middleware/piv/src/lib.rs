//! The PIV card edge (NIST SP 800-73-4) with the Yubico extensions that real tools expect.
//!
//! Shared by every Tessera carrier and every host program:
//! - [`apdu`] and [`tlv`]: ISO 7816-4 command/response APDUs and BER-TLV, with
//!   bounds-checked readers (malformed input is an error, never a panic);
//! - [`piv`]: the identifiers of the PIV application (AID, key references, algorithms,
//!   data-object tags);
//! - [`host`]: PIV commands over a [`host::Transport`] (PC/SC or in-memory);
//! - [`card`]: the card-side applet, a state machine over a [`card::KeyStore`].
#![forbid(unsafe_code)]

pub mod apdu;
pub mod card;
pub mod host;
pub mod mgmt;
pub mod piv;
pub mod tlv;

//! The Tessera reference PIV card: the shared applet with software keys, its state file and
//! simulated manufacturer, the vpcd wire protocol that puts it into a real pcscd, and the
//! conformance suite that qualifies any PIV card.
#![forbid(unsafe_code)]

pub mod conformance;
pub mod manufacture;
pub mod pkcs11_suite;
pub mod state;
pub mod vpcd;

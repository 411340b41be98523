//! The Tessera reference PIV card: the shared applet with software keys in its state file
//! and a simulated manufacturer (put into a real pcscd by `tessera-carrier`), and the
//! conformance suite that qualifies any PIV card.
#![forbid(unsafe_code)]

pub mod conformance;
pub mod consumers;
pub mod manufacture;
pub mod pkcs11_suite;
pub mod state;

//! The Tessera reference PIV card: the shared applet with software keys, its state file and
//! simulated manufacturer, and the vpcd wire protocol that puts it into a real pcscd.
#![forbid(unsafe_code)]

pub mod manufacture;
pub mod state;
pub mod vpcd;

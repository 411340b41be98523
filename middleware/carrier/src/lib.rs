//! What every Tessera virtual card carrier shares, whatever keeps its keys (software keys in
//! the reference card, the TPM in the workstation agent's virtual card):
//! - [`vpcd`]: the link to pcscd through vsmartcard's vpcd reader driver, in both of its
//!   modes (the card connects, or the card listens), with the framing and control codes;
//! - [`store`]: the card's state file, replaced atomically and made durable before the card
//!   answers, with a fault point that tests use to cut the power at a chosen write.
#![forbid(unsafe_code)]

pub mod store;
pub mod vpcd;

//! The Tessera workstation agent: TPM 2.0 virtual smart cards (see docs/agent.md).

pub mod enrol;
pub mod renew;
pub mod serve;
pub mod tpm;
pub mod vsc;
pub mod worker;

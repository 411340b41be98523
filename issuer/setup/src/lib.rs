//! Setting the issuer up, apart from the code that runs it (no runtime crate depends on
//! this one; `issuer/tests/tidy.rs` checks):
//! - [`init`]: a new deployment (token, keys, CA certificates, database, configuration),
//!   and `install-ca-cert` for a deployment whose root stays offline;
//! - [`ceremony`]: the offline root's key ceremonies, each driven by a reviewed file.
#![forbid(unsafe_code)]

pub mod ceremony;
mod files;
pub mod init;

pub use tessera_issuer_ca::x509::read_certificate;

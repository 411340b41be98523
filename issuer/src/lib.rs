//! The Tessera issuer: the certificate authorities of an organisation's service IDs.
//!
//! What exists so far is the embedded deployment's foundation: `init` creates a data
//! directory with a SoftHSM2 token holding the CA and OCSP keys (generated inside the
//! token, never exportable), the root, issuing-CA and OCSP-responder certificates, the
//! SQLite database and a bootstrap administrator token; every step leaves an audit record
//! in a hash chain that `audit verify` checks.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod ca;
pub mod ceremony;
pub mod clock;
pub mod crl;
pub mod custody;
pub mod db;
pub mod hsm;
pub mod init;
pub mod ocsp;
pub mod profile;
pub mod x509;

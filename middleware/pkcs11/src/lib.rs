//! The safe core of the Tessera PKCS#11 module: every PIV card in a PC/SC reader is a
//! PKCS#11 token; slots are readers. The C ABI lives in the thin `tessera-pkcs11-ffi`
//! cdylib, which calls [`module`] and maps [`Error`] to `CK_RV` in one place.
//!
//! PKCS#11 v3.0 (OASIS) is cited as "PKCS#11 §x.y" (the base specification).
#![forbid(unsafe_code)]

pub mod error;
pub mod mechanism;
pub mod module;
pub mod object;
pub mod token;

pub use cryptoki_sys as sys;
pub use error::{Error, Result};

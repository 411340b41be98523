//! `libtessera_pkcs11.so`: the C ABI of the Tessera PKCS#11 module. It exports only
//! `C_GetFunctionList` (PKCS#11 2.40) and `C_GetInterfaceList`/`C_GetInterface` (3.0);
//! every other function is reached through the lists. Each function has the same shape:
//! a panic boundary, NULL and length checks, an inner function returning `Result`, and the
//! one mapping of errors to `CK_RV` ([`tessera_pkcs11_core::Error::rv`]).
//!
//! This crate is the FFI boundary and so the one place with `unsafe`: dereferencing the
//! caller's pointers. All logic lives in the safe `tessera-pkcs11-core` crate.
#![allow(unsafe_code)]

mod functions;

pub use functions::{C_GetFunctionList, C_GetInterface, C_GetInterfaceList};

mod lists;
mod unsupported;

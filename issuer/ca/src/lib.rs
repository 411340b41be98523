//! The issuer's signing context, with Boulder's shape: whatever holds the signing keys takes
//! instructions only from the registration authority, and only in a form it checks itself.
//!
//! - The CA keys live in a PKCS#11 token (`tessera-hsm`: SoftHSM2 embedded, any HSM in
//!   production), generated inside it as sensitive, non-extractable objects, with M-of-N
//!   custody of its activation secret. This crate does not re-export it: the layers above
//!   reach the keys only through the CA.
//! - [`issuing::IssuingCa::prepare`] checks a request against its [`profile`], builds the
//!   TBS certificate, lints it ([`lint`]) and has the caller record the intent; only
//!   [`issuing::IssuingCa::issue`], given the [`issuing::IssuanceToken`] that `prepare`
//!   returned, makes the token sign. CRLs and OCSP responses are signed from their typed
//!   contents. No public function signs bytes it is handed: a [`signer::Signer`] receives a
//!   [`signer::Tbs`], which only this crate can make.
//! - [`authority`]: the CA's own certificates, for `init` and the key ceremonies.
#![forbid(unsafe_code)]

pub mod authority;
pub mod checkpoint;
pub mod crl;
pub mod issuing;
pub mod lint;
pub mod pop;
pub mod profile;
pub mod signer;
pub mod tpm;
pub mod x509;

pub use issuing::{CaError, Intent, IssuanceToken, Issued, IssuingCa, Request, Urls};
pub use signer::{KeyRole, Signer, Tbs, TokenSigner};
pub use tessera_hsm::signature_algorithm;
pub use tessera_issuer_types::config::KeyAlg;

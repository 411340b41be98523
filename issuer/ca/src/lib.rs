//! The issuer's signing context, with Boulder's shape: whatever holds the signing keys takes
//! instructions only from the registration authority, and only in a form it checks itself.
//!
//! - [`token`]: the CA keys in a PKCS#11 token (SoftHSM2 embedded, any HSM in production),
//!   generated inside it as sensitive, non-extractable objects; [`custody`]: M-of-N shares
//!   of its activation secret.
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
pub mod custody;
pub mod issuing;
pub mod lint;
pub mod pop;
pub mod profile;
pub mod signer;
pub mod token;
pub mod tpm;
pub mod x509;

pub use issuing::{CaError, Intent, IssuanceToken, Issued, IssuingCa, Request, Urls};
pub use signer::{KeyRole, Signer, Tbs, TokenSigner};
pub use tessera_issuer_types::config::KeyAlg;

/// The X.509 signature algorithm a key of this kind signs with.
pub fn signature_algorithm(alg: KeyAlg) -> spki::AlgorithmIdentifierOwned {
    let oid = match alg {
        KeyAlg::P256 => const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
        KeyAlg::P384 => const_oid::db::rfc5912::ECDSA_WITH_SHA_384,
        KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => const_oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
    };
    // RFC 5758 §3.2: ECDSA identifiers have no parameters; RFC 4055 §5: RSA ones NULL.
    let parameters = match alg {
        KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => Some(der::asn1::Null.into()),
        _ => None,
    };
    spki::AlgorithmIdentifierOwned { oid, parameters }
}

//! Revocation status for relying parties, fed by the status outbox and never by request
//! handlers:
//! - [`ocsp`]: the RFC 6960 responder and its cache of pre-signed responses;
//! - [`crl`]: the CRL publisher (numbers reserved against the state they describe);
//! - [`Status`]: both, with the follower that reads the outbox — invalidating cached
//!   responses and publishing a CRL within a bounded delay of each change, whichever
//!   issuer process made it.
#![forbid(unsafe_code)]

pub mod crl;
mod follow;
pub mod ocsp;

pub use follow::{Settings, Status};

/// Why status could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    #[error(transparent)]
    Store(#[from] tessera_issuer_store::StoreError),
    #[error(transparent)]
    Ca(#[from] tessera_issuer_ca::CaError),
    #[error("encoding: {0}")]
    Encoding(String),
    /// Not done yet; the follower tries again.
    #[error("{0}")]
    Retry(String),
}

impl StatusError {
    pub fn code(&self) -> tessera_issuer_types::ErrorCode {
        use tessera_issuer_store::StoreError as S;
        use tessera_issuer_types::ErrorCode;
        match self {
            Self::Store(S::Unavailable(_)) | Self::Retry(_) => ErrorCode::Unavailable,
            Self::Ca(e) => e.code(),
            Self::Store(_) | Self::Encoding(_) => ErrorCode::Internal,
        }
    }
}

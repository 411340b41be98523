//! Where a certificate stands.

use crate::RevocationReason;

/// A certificate's status, as the store records it and OCSP and CRLs report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateStatus {
    /// The intent to sign is recorded; the signed certificate is not (yet) stored. Such a
    /// serial may exist in the world: it is revocable, and OCSP answers "good" for it until
    /// it is revoked (RFC 6960 §2.2 leaves "good" for issued serials).
    Intent,
    Issued,
    /// Revoked at `at` (Unix seconds); with `CertificateHold`, suspended.
    Revoked {
        at: i64,
        reason: RevocationReason,
    },
}

impl CertificateStatus {
    pub fn is_on_hold(self) -> bool {
        matches!(
            self,
            Self::Revoked {
                reason: RevocationReason::CertificateHold,
                ..
            }
        )
    }
}

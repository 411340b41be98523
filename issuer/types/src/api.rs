//! The request and response bodies of the issuer's HTTP API (`/api/v1`), as the OpenAPI
//! document describes them.

use crate::{ErrorCode, ProfileName, RevocationReason, Serial, Subject};

/// `POST /api/v1/certificates`. Exactly one of `csr`, `attestation` and `public_key`
/// carries the key to certify.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    pub profile: ProfileName,
    pub subject: Subject,
    /// A PKCS#10 request (PEM), signed by the key: proof that the requester holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
    /// A PIV attestation of a key generated on the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<Attestation>,
    /// A bare SubjectPublicKeyInfo (PEM): no proof; only for profiles that allow it, and
    /// audited as such.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Days of validity; the profile's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity_days: Option<u32>,
}

/// A PIV attestation in Yubico's format: the certificate the card's attestation key (`F9`)
/// made for the key, and the card's attestation certificate (object `5FFF01`) that signed
/// it, both PEM; the issuer chains them to a manufacturer CA it trusts and checks the slot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    pub certificate: String,
    pub intermediate: String,
}

/// The answer to an issuance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IssueResponse {
    pub serial: Serial,
    /// The certificate, PEM.
    pub certificate: String,
}

/// `POST /api/v1/certificates/{serial}/revocation`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    pub reason: RevocationReason,
}

/// The answer to a revocation or the release of a hold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RevocationResponse {
    pub serial: Serial,
    /// `revoked` or `good`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RevocationReason>,
}

/// Every error answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

//! The stable error codes API clients see (`{"error": {"code": …, "message": …}}`). Every
//! failure inside the issuer maps to one of these; the HTTP edge maps each to a status in
//! one `match` without a wildcard, so a new code cannot silently become a generic one (the
//! enum is deliberately not `#[non_exhaustive]`, so that match stays exhaustive).

use std::fmt;

/// A stable, documented error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No or an unknown Bearer token.
    Unauthorized,
    /// The request body is not the JSON the endpoint takes.
    MalformedJson,
    /// The request body is larger than the endpoint takes.
    PayloadTooLarge,
    UnknownProfile,
    BadPublicKey,
    /// The proof of possession (CSR signature, attestation) does not hold.
    BadProof,
    BadSubject,
    ValidityTooLong,
    BadSerial,
    BadReason,
    NotFound,
    AlreadyRevoked,
    NotOnHold,
    /// The token's role does not allow this (revoking the issuer's own certificates).
    Forbidden,
    /// A certificate failed its profile check before signing: a bug, never the client's.
    LintFailed,
    /// A field's value is not acceptable (an identity number's checksum, a date, a role);
    /// the message names the field.
    InvalidField,
    /// The record exists already (an employee number, an officer id, a card serial).
    AlreadyExists,
    /// The life cycle does not allow this from the record's current state, which the
    /// message names (another officer may have acted first).
    InvalidTransition,
    /// A second officer must do this: not the one who asked, nor the person concerned
    /// (LoA3 K3.4).
    FourEyesRequired,
    /// The issuer cannot serve now (database or token down); retry later.
    Unavailable,
    /// Anything else; the issuer's log has the details.
    Internal,
}

impl ErrorCode {
    /// Every code (the OpenAPI document lists exactly these: `issuer/tests/tidy.rs`).
    pub const ALL: [Self; 21] = [
        Self::Unauthorized,
        Self::MalformedJson,
        Self::PayloadTooLarge,
        Self::UnknownProfile,
        Self::BadPublicKey,
        Self::BadProof,
        Self::BadSubject,
        Self::ValidityTooLong,
        Self::BadSerial,
        Self::BadReason,
        Self::NotFound,
        Self::AlreadyRevoked,
        Self::NotOnHold,
        Self::Forbidden,
        Self::LintFailed,
        Self::InvalidField,
        Self::AlreadyExists,
        Self::InvalidTransition,
        Self::FourEyesRequired,
        Self::Unavailable,
        Self::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::MalformedJson => "malformed_json",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnknownProfile => "unknown_profile",
            Self::BadPublicKey => "bad_public_key",
            Self::BadProof => "bad_proof",
            Self::BadSubject => "bad_subject",
            Self::ValidityTooLong => "validity_too_long",
            Self::BadSerial => "bad_serial",
            Self::BadReason => "bad_reason",
            Self::NotFound => "not_found",
            Self::AlreadyRevoked => "already_revoked",
            Self::NotOnHold => "not_on_hold",
            Self::Forbidden => "forbidden",
            Self::LintFailed => "lint_failed",
            Self::InvalidField => "invalid_field",
            Self::AlreadyExists => "already_exists",
            Self::InvalidTransition => "invalid_transition",
            Self::FourEyesRequired => "four_eyes_required",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

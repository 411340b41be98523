//! The service error, converted at the HTTP edge: internals never reach the client, the
//! client gets a stable code and a clear message (Boulder `errors/errors.go`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tessera_issuer_ra::RaError;
use tessera_issuer_status::StatusError;
use tessera_issuer_types::api::{ErrorBody, ErrorDetail};
use tessera_issuer_types::ErrorCode;

/// The HTTP status of each code: one match, no wildcard, so a new code cannot silently
/// become a generic answer.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::MalformedJson
        | ErrorCode::UnknownProfile
        | ErrorCode::BadPublicKey
        | ErrorCode::BadProof
        | ErrorCode::BadSubject
        | ErrorCode::ValidityTooLong
        | ErrorCode::BadSerial
        | ErrorCode::BadReason
        | ErrorCode::InvalidField => StatusCode::BAD_REQUEST,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyRevoked
        | ErrorCode::NotOnHold
        | ErrorCode::AlreadyExists
        | ErrorCode::InvalidTransition => StatusCode::CONFLICT,
        ErrorCode::Forbidden | ErrorCode::FourEyesRequired => StatusCode::FORBIDDEN,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::LintFailed | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// An internal failure: logged in full, answered in general terms.
    pub fn internal(what: impl std::fmt::Display) -> Self {
        tracing::error!(error = %what, "internal error");
        Self::new(
            ErrorCode::Internal,
            "internal error; the issuer's log has the details (look for this request's id)",
        )
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        Self::new(code, code.as_str())
    }
}

impl From<RaError> for ApiError {
    fn from(e: RaError) -> Self {
        match e.code() {
            ErrorCode::Internal | ErrorCode::LintFailed => Self::internal(&e),
            ErrorCode::Unavailable => {
                tracing::warn!(error = %e, "unavailable");
                Self::new(
                    ErrorCode::Unavailable,
                    "the issuer cannot serve now; retry later",
                )
            }
            code => Self::new(code, e.to_string()),
        }
    }
}

impl From<StatusError> for ApiError {
    fn from(e: StatusError) -> Self {
        match e.code() {
            ErrorCode::Unavailable => {
                tracing::warn!(error = %e, "unavailable");
                Self::new(
                    ErrorCode::Unavailable,
                    "the issuer cannot serve now; retry later",
                )
            }
            _ => Self::internal(&e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut r = (status_of(self.code), Json(body)).into_response();
        if self.code == ErrorCode::Unauthorized {
            // RFC 6750 §3: which scheme the client should use.
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

//! The issuer's vocabulary, shared by every issuer crate and by the programs that talk to
//! the issuer (the IdP, the workstation agent, the `tessera` admin CLI): serials, profile
//! names, subjects, certificate statuses, revocation reasons, stable error codes, the HTTP
//! API's request and response bodies, the injected clock, the deployment's configuration
//! and the HR export's format. Serde and csv only: no database, no token, no HTTP server.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod clock;
pub mod config;
pub mod error;
pub mod hr_file;
pub mod identity;
pub mod lifecycle;
pub mod profile;
pub mod reason;
pub mod serial;
pub mod status;
pub mod subject;

pub use clock::{Clock, FixedClock, SystemClock};
pub use error::ErrorCode;
pub use profile::ProfileName;
pub use reason::RevocationReason;
pub use serial::Serial;
pub use status::CertificateStatus;
pub use subject::Subject;

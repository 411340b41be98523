//! The issuer's HTTP edge. It calls only the registration authority (the API) and the
//! status layer (CRL, OCSP, CA certificate, readiness); never the CA or the database
//! (the crate graph forbids it: `issuer/tests/tidy.rs`).
//!
//! - [`routes`]: the routes, their handlers, and the one conversion of every failure to a
//!   stable error code and HTTP status ([`error::ApiError`]);
//! - `registration`: the registration authority's routes (officers, people, carriers,
//!   approvals, reconciliation), each a thin call into the RA;
//! - [`scim`]: SCIM 2.0 `/scim/v2/Users` for HR provisioning, over the RA's HR feed;
//! - [`metrics`]: Prometheus metrics at `/metrics`;
//! - [`serve`]: the listeners (plain HTTP, one single-threaded runtime per core; HTTPS with
//!   rustls), with header and handshake timeouts and back-off on accept errors.
#![forbid(unsafe_code)]

pub mod error;
pub mod metrics;
mod registration;
pub mod routes;
pub mod scim;
pub mod serve;

pub use routes::{public_router, router, App, OPENAPI, ROUTES};

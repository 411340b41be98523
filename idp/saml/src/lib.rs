//! The IdP's SAML messages, without I/O (so that the parsers can be fuzzed alone):
//! [`request`] decodes AuthnRequests from their binding, checks their signatures, and
//! reads them only from the bytes that were checked; [`accept`] checks one against its
//! relying party and says where the answer goes; [`metadata`] reads relying parties
//! from a federation's signed aggregate (signature and `validUntil` first) or a local file;
//! [`response`] writes our Responses and seals them (assertion signed, encrypted, Response
//! signed) with [`xml`], the deterministic writer; [`logout`] writes the LogoutRequests that
//! tell relying parties a session ended and reads their answers (SOAP back channel).
#![forbid(unsafe_code)]

pub mod accept;
pub mod logout;
pub mod metadata;
pub mod request;
pub mod response;
pub mod xml;

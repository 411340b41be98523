//! The Tessera IdP (`tessera-idp`): SAML 2.0 on the Swedish eID Framework for the service
//! ID. The deployment (`init`: keys in a PKCS#11 token, K4.3), `serve` with our signed
//! metadata, SSO (`sso`), the card login host (`login`), sessions that end on revocation
//! through the issuer's status feed, the user's page and the administrators' API
//! (`admin`); the XML layer (`tessera-xmlsec`) signs and checks signatures the way
//! PROFILES.md requires. docs/idp.md says what is built and what is next.
#![forbid(unsafe_code)]

mod admin;
pub mod card;
pub mod config;
pub mod init;
pub mod issuer;
pub mod keys;
mod login;
mod logout;
pub mod metadata;
pub mod parties;
pub mod serve;
mod sso;
pub mod web;

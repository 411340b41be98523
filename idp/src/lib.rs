//! The Tessera IdP (`tessera-idp`): SAML 2.0 on the Swedish eID Framework for the service
//! ID. Built so far: the deployment (`init`: keys in a PKCS#11 token, K4.3), our signed
//! metadata served by `serve`, and the XML layer (`tessera-xmlsec`) that signs and checks
//! signatures the way PROFILES.md requires. docs/idp.md says what is built and what is next.
#![forbid(unsafe_code)]

pub mod card;
pub mod config;
pub mod init;
pub mod keys;
pub mod metadata;
pub mod parties;
pub mod serve;

//! Making a blank card, as a manufacturer would: a random serial, factory PIN/PUK/management
//! key, a fresh CHUID, and an attestation key certified by a (simulated) manufacturer CA.
//!
//! The manufacturer CA key exists only while the card is made; its certificate is written
//! beside the state file so that attestations can be checked against it.

use std::str::FromStr;
use std::time::SystemTime;

use anyhow::{Context, Result};
use der::{Encode, EncodePem};
use ecdsa::signature::hazmat::PrehashSigner;
use pkcs8::EncodePublicKey;
use rand::RngCore;
use sha2::Digest;
use tessera_piv::card::cert::{self, CertTemplate};
use tessera_piv::card::{CardState, KeyStore, SoftKeyStore};
use tessera_piv::piv::{object, Algorithm, KeyRef, PinPolicy};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::name::Name;
use x509_cert::time::Validity;

/// A blank card and the PEM certificate of the CA that certified its attestation key.
#[derive(Debug)]
pub struct NewCard {
    pub card: CardState,
    pub keys: SoftKeyStore,
    pub manufacturer_ca_pem: String,
}

/// Makes a blank card. `now` is the manufacturing time (the attestation certificates are
/// valid from then for 20 years, as a token's lifetime).
pub fn blank_card(now: SystemTime) -> Result<NewCard> {
    let mut rng = rand::rngs::OsRng;
    // Serials below 10 000 000 look like old YubiKey serials; keep clear of them.
    let serial = 10_000_000 + rng.next_u32() % 80_000_000;
    let mut card = CardState::factory(&mut rng, serial);
    let mut keys = SoftKeyStore::new();

    let validity = validity(now, 20 * 365)?;
    let ca_key = p256::ecdsa::SigningKey::random(&mut rng);
    let ca_spki = p256::PublicKey::from(ca_key.verifying_key())
        .to_public_key_der()?
        .into_vec();
    let ca_name = Name::from_str("CN=Tessera Reference Card Manufacturer CA,O=Tessera test bed")?;
    let sign_with_ca = |tbs: &[u8]| -> std::result::Result<Vec<u8>, String> {
        let digest = sha2::Sha256::digest(tbs);
        let sig: p256::ecdsa::Signature =
            ca_key.sign_prehash(&digest).map_err(|e| e.to_string())?;
        Ok(sig.to_der().as_bytes().to_vec())
    };
    let ca_der = cert::build(
        CertTemplate {
            serial: &random_serial(),
            issuer: ca_name.clone(),
            subject: ca_name.clone(),
            validity,
            spki_der: &ca_spki,
            extensions: ca_extensions(None)?,
        },
        cert::ecdsa_with_sha256(),
        sign_with_ca,
    )?;

    let f9 = keys.generate(KeyRef::ATTESTATION, Algorithm::EccP256, PinPolicy::Never, 1)?;
    let f9_spki = f9.public.to_spki_der()?;
    let f9_name = Name::from_str(&format!("CN=Tessera PIV Attestation,serialNumber={serial}"))?;
    let f9_der = cert::build(
        CertTemplate {
            serial: &random_serial(),
            issuer: ca_name,
            subject: f9_name,
            validity,
            spki_der: &f9_spki,
            extensions: ca_extensions(Some(0))?,
        },
        cert::ecdsa_with_sha256(),
        sign_with_ca,
    )?;
    card.set_object(object::YK_ATTESTATION_CERT, cert::object_content(&f9_der));

    let ca_cert = <x509_cert::Certificate as der::Decode>::from_der(&ca_der)?;
    let manufacturer_ca_pem = ca_cert
        .to_pem(der::pem::LineEnding::LF)
        .context("encoding the manufacturer CA certificate")?;
    Ok(NewCard {
        card,
        keys,
        manufacturer_ca_pem,
    })
}

fn ca_extensions(path_len: Option<u8>) -> Result<Vec<x509_cert::ext::Extension>> {
    let bc = BasicConstraints {
        ca: true,
        path_len_constraint: path_len,
    };
    let ku = KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign);
    Ok(vec![
        cert::extension(
            const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS,
            true,
            &bc.to_der()?,
        )?,
        cert::extension(const_oid::db::rfc5280::ID_CE_KEY_USAGE, true, &ku.to_der()?)?,
    ])
}

fn random_serial() -> [u8; 16] {
    let mut s = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s[0] = (s[0] & 0x7F) | 0x01;
    s
}

fn validity(now: SystemTime, days: u64) -> Result<Validity> {
    cert::validity(now, days).context("certificate validity")
}

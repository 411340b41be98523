//! Where the card keeps its asymmetric keys. The applet talks only to [`KeyStore`]; the
//! reference card uses [`SoftKeyStore`] (software keys in its state file), the TPM virtual
//! card will keep them in the TPM.

use std::collections::BTreeMap;

use ecdsa::signature::hazmat::PrehashSigner;
use pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use rand::{CryptoRng, RngCore};
use rsa::traits::PublicKeyParts;
use rsa::BigUint;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::Zeroizing;

use super::state::CardState;
use crate::piv::{Algorithm, KeyRef, PinPolicy};

/// Why a key operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No key in that slot.
    #[error("no key in slot {0}")]
    NoKey(KeyRef),
    /// The slot cannot hold a key of that algorithm, or the algorithm is not supported.
    #[error("algorithm {0:?} not supported here")]
    UnsupportedAlgorithm(Algorithm),
    /// The operation does not fit the key (ECDH with RSA, input of the wrong size, a point
    /// not on the curve).
    #[error("invalid input for this key: {0}")]
    InvalidInput(&'static str),
    /// The key material in the store could not be read back.
    #[error("stored key in slot {0} is corrupt")]
    Corrupt(KeyRef),
    /// The backend failed.
    #[error("key store failure: {0}")]
    Backend(String),
}

/// Where a key came from (Yubico metadata tag `03`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Origin {
    Generated,
    Imported,
}

/// A public key as PIV transports it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum PublicKey {
    /// RSA modulus and public exponent, big-endian.
    Rsa {
        #[serde(with = "hex::serde")]
        modulus: Vec<u8>,
        #[serde(with = "hex::serde")]
        exponent: Vec<u8>,
    },
    /// An uncompressed SEC1 point on the curve of `alg`.
    Ec {
        alg: Algorithm,
        #[serde(with = "hex::serde")]
        point: Vec<u8>,
    },
}

impl PublicKey {
    /// The value of the `7F49` template (SP 800-73-4 Part 2 Table 11: `81`/`82` for RSA,
    /// `86` for ECC).
    pub fn piv_template_value(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::Rsa { modulus, exponent } => {
                crate::tlv::push(&mut out, 0x81, modulus);
                crate::tlv::push(&mut out, 0x82, exponent);
            }
            Self::Ec { point, .. } => crate::tlv::push(&mut out, 0x86, point),
        }
        out
    }

    /// The DER `SubjectPublicKeyInfo`.
    pub fn to_spki_der(&self) -> Result<Vec<u8>, KeyError> {
        let der = match self {
            Self::Rsa { modulus, exponent } => rsa::RsaPublicKey::new(
                BigUint::from_bytes_be(modulus),
                BigUint::from_bytes_be(exponent),
            )
            .map_err(|_| KeyError::InvalidInput("RSA public key"))?
            .to_public_key_der(),
            Self::Ec {
                alg: Algorithm::EccP256,
                point,
            } => p256::PublicKey::from_sec1_bytes(point)
                .map_err(|_| KeyError::InvalidInput("P-256 point"))?
                .to_public_key_der(),
            Self::Ec {
                alg: Algorithm::EccP384,
                point,
            } => p384::PublicKey::from_sec1_bytes(point)
                .map_err(|_| KeyError::InvalidInput("P-384 point"))?
                .to_public_key_der(),
            Self::Ec { alg, .. } => return Err(KeyError::UnsupportedAlgorithm(*alg)),
        };
        der.map(|d| d.into_vec())
            .map_err(|e| KeyError::Backend(e.to_string()))
    }
}

/// What the card knows about a key besides the private part.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct KeyInfo {
    pub alg: Algorithm,
    pub pin_policy: PinPolicy,
    /// Yubico touch policy byte (`01` never; the reference card has no button).
    pub touch_policy: u8,
    pub origin: Origin,
    pub public: PublicKey,
}

/// Why the applet asks its carrier to make the state durable (see [`KeyStore::persist`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Persist {
    /// A PIN or PUK try was counted and is about to be compared: the carrier must have it
    /// on stable storage before this returns, so that cutting the power during the
    /// comparison cannot give the try back.
    Try,
    /// The comparison is done: the counter is back to its total (right) or stays counted
    /// (wrong). Written for every try, right or wrong, so that whether and how much is
    /// written does not tell a right guess from a wrong one.
    Settle,
    /// Any other change of the card's state (objects, keys, PINs, management key).
    Change,
}

/// The two reference data the applet counts tries of.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Reference {
    Pin,
    Puk,
}

/// What the holder of a reference answered to an offered value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Checked {
    /// The value was right; the counter is back to its total.
    Right,
    /// The value was wrong, or the reference is blocked; `left` tries remain (0: blocked).
    Wrong { left: u8 },
}

/// PIN and PUK kept outside the card state by a holder that counts their tries itself: the
/// TPM virtual card keeps them in TPM PIN indices, so that neither the value nor the count
/// is in a file a copy or a restore could use. The applet still mirrors the counters in its
/// state (for status queries and metadata) and writes them as it does for its own.
pub trait References {
    /// Tries left and the total of `which`, as the holder counts them.
    fn counter(&mut self, which: Reference) -> Result<(u8, u8), KeyError>;

    /// Compares `offered` (8 bytes, `FF`-padded as it travels) with the reference. The
    /// holder makes the try durable before it compares; a right value resets the count.
    fn check(&mut self, which: Reference, offered: &[u8]) -> Result<Checked, KeyError>;

    /// Replaces the reference value and gives it `tries` tries. For the PIN, the new value
    /// counts as verified for what it unlocks (CHANGE REFERENCE DATA leaves the PIN
    /// verified); the applet ends that with [`References::forget_pin`] where it must.
    fn set(&mut self, which: Reference, value: &[u8], tries: u8) -> Result<(), KeyError>;

    /// The card was reset (Yubico RESET, its keys already deleted and the deletion made
    /// durable): the PIN and PUK get `pin` and `puk` with `tries` tries, bound to nothing
    /// the card had before, so that no copy of a deleted key works with the factory PIN.
    fn reset(&mut self, pin: &[u8], puk: &[u8], tries: u8) -> Result<(), KeyError>;

    /// The PIN's security status ended: forget whatever a verified PIN unlocked.
    fn forget_pin(&mut self);
}

/// The card's asymmetric keys, one per key reference, and the carrier's stable storage.
pub trait KeyStore {
    /// Generates a key in `slot`, replacing any key there.
    fn generate(
        &mut self,
        slot: KeyRef,
        alg: Algorithm,
        pin_policy: PinPolicy,
        touch_policy: u8,
    ) -> Result<KeyInfo, KeyError>;

    /// The key in `slot`, if any.
    fn info(&self, slot: KeyRef) -> Option<&KeyInfo>;

    /// The private-key operation behind GENERAL AUTHENTICATE: for ECC `input` is a digest
    /// already fitted to the curve size and the result a DER ECDSA signature; for RSA
    /// `input` has the modulus size and the result is the raw RSA private operation.
    fn sign(&mut self, slot: KeyRef, input: &[u8]) -> Result<Vec<u8>, KeyError>;

    /// ECDH with the key in `slot` and the uncompressed peer point; returns the shared x.
    fn ecdh(&mut self, slot: KeyRef, peer_point: &[u8]) -> Result<Vec<u8>, KeyError>;

    /// Removes the key in `slot`.
    fn delete(&mut self, slot: KeyRef);

    /// Makes `state` and the keys durable before the applet answers: the carrier's EEPROM
    /// write. The applet calls it in the middle of PIN and PUK checks ([`Persist::Try`]
    /// before the comparison, [`Persist::Settle`] after it) and after every other change.
    /// An error makes the applet answer `6581` (memory failure) and, for a PIN check,
    /// leaves the PIN unverified. A store that keeps nothing (tests, in-memory cards)
    /// keeps the default, which succeeds.
    fn persist(&mut self, state: &CardState, why: Persist) -> Result<(), KeyError> {
        let _ = (state, why);
        Ok(())
    }

    /// Forgets key changes made since the last successful [`KeyStore::persist`]: the applet
    /// calls it when a write fails, so that the keys in memory are those on storage (a key
    /// generated in a command answered `6581` must not be written by the next one).
    /// Required: a store whose `persist` can fail must say how it undoes.
    fn rollback(&mut self);

    /// The holder of the PIN and PUK when it is not the card state (see [`References`]).
    /// The default, `None`, keeps them in the state, compared by the applet.
    fn references(&mut self) -> Option<&mut dyn References> {
        None
    }
}

/// Software private keys, serialised as PKCS#8 in the card's state.
#[derive(Default, Clone, Serialize, Deserialize)]
pub struct SoftKeyStore {
    keys: BTreeMap<KeyRef, SoftKey>,
}

impl std::fmt::Debug for SoftKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SoftKeyStore")
            .field("slots", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct SoftKey {
    info: KeyInfo,
    /// PKCS#8 DER of the private key.
    #[serde(with = "super::secret_hex")]
    pkcs8: Zeroizing<Vec<u8>>,
}

impl SoftKeyStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The slots that hold keys.
    pub fn slots(&self) -> impl Iterator<Item = KeyRef> + '_ {
        self.keys.keys().copied()
    }

    fn key(&self, slot: KeyRef) -> Result<&SoftKey, KeyError> {
        self.keys.get(&slot).ok_or(KeyError::NoKey(slot))
    }

    fn generate_with(
        &mut self,
        rng: &mut (impl CryptoRng + RngCore),
        slot: KeyRef,
        alg: Algorithm,
        pin_policy: PinPolicy,
        touch_policy: u8,
    ) -> Result<KeyInfo, KeyError> {
        let backend = |e: pkcs8::Error| KeyError::Backend(e.to_string());
        let (pkcs8, public) = match alg {
            Algorithm::EccP256 => {
                let sk = p256::SecretKey::random(rng);
                let point = sk.public_key().to_sec1_bytes().to_vec();
                (
                    sk.to_pkcs8_der().map_err(backend)?,
                    PublicKey::Ec { alg, point },
                )
            }
            Algorithm::EccP384 => {
                let sk = p384::SecretKey::random(rng);
                let point = sk.public_key().to_sec1_bytes().to_vec();
                (
                    sk.to_pkcs8_der().map_err(backend)?,
                    PublicKey::Ec { alg, point },
                )
            }
            Algorithm::Rsa2048 => {
                let sk = rsa::RsaPrivateKey::new(rng, 2048)
                    .map_err(|e| KeyError::Backend(e.to_string()))?;
                let public = PublicKey::Rsa {
                    modulus: sk.n().to_bytes_be(),
                    exponent: sk.e().to_bytes_be(),
                };
                (sk.to_pkcs8_der().map_err(backend)?, public)
            }
            other => return Err(KeyError::UnsupportedAlgorithm(other)),
        };
        let info = KeyInfo {
            alg,
            pin_policy,
            touch_policy,
            origin: Origin::Generated,
            public,
        };
        self.keys.insert(
            slot,
            SoftKey {
                info: info.clone(),
                pkcs8: Zeroizing::new(pkcs8.as_bytes().to_vec()),
            },
        );
        Ok(info)
    }
}

impl KeyStore for SoftKeyStore {
    fn generate(
        &mut self,
        slot: KeyRef,
        alg: Algorithm,
        pin_policy: PinPolicy,
        touch_policy: u8,
    ) -> Result<KeyInfo, KeyError> {
        self.generate_with(&mut rand::rngs::OsRng, slot, alg, pin_policy, touch_policy)
    }

    fn info(&self, slot: KeyRef) -> Option<&KeyInfo> {
        self.keys.get(&slot).map(|k| &k.info)
    }

    /// Nothing to undo: on its own this store keeps nothing, so its `persist` never fails.
    /// A carrier that wraps it and writes it out keeps its own copy of what it last saved.
    fn rollback(&mut self) {}

    fn sign(&mut self, slot: KeyRef, input: &[u8]) -> Result<Vec<u8>, KeyError> {
        let key = self.key(slot)?;
        let corrupt = |_| KeyError::Corrupt(slot);
        let bad_digest = |_| KeyError::InvalidInput("digest");
        match key.info.alg {
            Algorithm::EccP256 => {
                let sk = p256::ecdsa::SigningKey::from_pkcs8_der(&key.pkcs8).map_err(corrupt)?;
                let sig: p256::ecdsa::Signature = sk.sign_prehash(input).map_err(bad_digest)?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            Algorithm::EccP384 => {
                let sk = p384::ecdsa::SigningKey::from_pkcs8_der(&key.pkcs8).map_err(corrupt)?;
                let sig: p384::ecdsa::Signature = sk.sign_prehash(input).map_err(bad_digest)?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            Algorithm::Rsa2048 => {
                let sk = rsa::RsaPrivateKey::from_pkcs8_der(&key.pkcs8).map_err(corrupt)?;
                let size = sk.size();
                if input.len() != size {
                    return Err(KeyError::InvalidInput(
                        "RSA input must have the modulus size",
                    ));
                }
                let c = BigUint::from_bytes_be(input);
                if &c >= sk.n() {
                    return Err(KeyError::InvalidInput("RSA input not below the modulus"));
                }
                let m = rsa::hazmat::rsa_decrypt_and_check(&sk, Some(&mut rand::rngs::OsRng), &c)
                    .map_err(|e| KeyError::Backend(e.to_string()))?;
                let bytes = m.to_bytes_be();
                let mut out = vec![0u8; size - bytes.len()];
                out.extend_from_slice(&bytes);
                Ok(out)
            }
            other => Err(KeyError::UnsupportedAlgorithm(other)),
        }
    }

    fn ecdh(&mut self, slot: KeyRef, peer_point: &[u8]) -> Result<Vec<u8>, KeyError> {
        let key = self.key(slot)?;
        let corrupt = |_| KeyError::Corrupt(slot);
        let bad_point = |_| KeyError::InvalidInput("peer point not on the curve");
        match key.info.alg {
            Algorithm::EccP256 => {
                let sk = p256::SecretKey::from_pkcs8_der(&key.pkcs8).map_err(corrupt)?;
                let peer = p256::PublicKey::from_sec1_bytes(peer_point).map_err(bad_point)?;
                let shared = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), peer.as_affine());
                Ok(shared.raw_secret_bytes().to_vec())
            }
            Algorithm::EccP384 => {
                let sk = p384::SecretKey::from_pkcs8_der(&key.pkcs8).map_err(corrupt)?;
                let peer = p384::PublicKey::from_sec1_bytes(peer_point).map_err(bad_point)?;
                let shared = p384::ecdh::diffie_hellman(sk.to_nonzero_scalar(), peer.as_affine());
                Ok(shared.raw_secret_bytes().to_vec())
            }
            _ => Err(KeyError::InvalidInput("ECDH needs an EC key")),
        }
    }

    fn delete(&mut self, slot: KeyRef) {
        self.keys.remove(&slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecdsa::signature::hazmat::PrehashVerifier;
    use sha2::Digest;

    #[test]
    fn p256_signature_verifies_and_survives_serialisation() {
        let mut ks = SoftKeyStore::new();
        let info = ks
            .generate(
                KeyRef::AUTHENTICATION,
                Algorithm::EccP256,
                PinPolicy::Once,
                1,
            )
            .unwrap();
        let json = serde_json_roundtrip(&ks);
        let mut ks: SoftKeyStore = json;
        let digest = sha2::Sha256::digest(b"hello");
        let sig = ks.sign(KeyRef::AUTHENTICATION, &digest).unwrap();
        let PublicKey::Ec { point, .. } = info.public else {
            panic!()
        };
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
        let sig = p256::ecdsa::Signature::from_der(&sig).unwrap();
        vk.verify_prehash(&digest, &sig).unwrap();
    }

    #[test]
    fn rsa_raw_operation_inverts_public_operation() {
        let mut ks = SoftKeyStore::new();
        let info = ks
            .generate(KeyRef::SIGNATURE, Algorithm::Rsa2048, PinPolicy::Always, 1)
            .unwrap();
        let PublicKey::Rsa { modulus, exponent } = info.public else {
            panic!()
        };
        let mut input = vec![0u8; 256];
        input[1] = 1;
        input[255] = 7;
        let out = ks.sign(KeyRef::SIGNATURE, &input).unwrap();
        let n = BigUint::from_bytes_be(&modulus);
        let back = BigUint::from_bytes_be(&out).modpow(&BigUint::from_bytes_be(&exponent), &n);
        assert_eq!(back, BigUint::from_bytes_be(&input));
        assert!(ks.sign(KeyRef::SIGNATURE, &input[1..]).is_err());
        assert!(ks.sign(KeyRef::SIGNATURE, &[0xFF; 256]).is_err());
    }

    fn serde_json_roundtrip(ks: &SoftKeyStore) -> SoftKeyStore {
        serde_json::from_str(&serde_json::to_string(ks).unwrap()).unwrap()
    }
}

//! Who signs for the CA. [`Signer`] is the boundary the rest of the issuer sees: the token
//! in production ([`TokenSigner`]), software keys in unit tests ([`MemorySigner`], feature
//! `memory-signer`). What it signs is a [`Tbs`]: bytes that only this crate can wrap, after
//! it built and linted them, so no caller can have the CA sign bytes of its choosing.

use std::sync::Mutex;

use tessera_issuer_types::config::KeyAlg;

use tessera_hsm::Token;

/// The key a signature is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// The issuing CA: end-entity certificates and CRLs.
    Issuing,
    /// The delegated OCSP responder.
    Ocsp,
    /// Signs checkpoints of the audit chain's head.
    Audit,
    /// The CA of the issuer's own HTTPS certificates, apart from the workforce CA.
    TlsCa,
    /// An embedded root (not in a deployment whose root stays offline): its CRL only.
    Root,
}

/// Data to be signed that this crate built and checked.
#[derive(Debug)]
pub struct Tbs<'a>(&'a [u8]);

impl<'a> Tbs<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        self.0
    }
}

/// Makes the CA's signatures, and seals the secrets the issuer keeps for cards (PUKs) under
/// a key that never leaves the same token.
pub trait Signer: Send + Sync {
    /// The algorithm of both keys.
    fn algorithm(&self) -> KeyAlg;

    /// The signature as X.509 carries it (DER ECDSA-Sig-Value, or PKCS#1 v1.5 for RSA).
    fn sign(&self, key: KeyRole, tbs: Tbs<'_>) -> anyhow::Result<Vec<u8>>;

    /// The key's SubjectPublicKeyInfo (DER).
    fn public_key(&self, key: KeyRole) -> anyhow::Result<Vec<u8>>;

    /// Whether the signer can sign now (for `/readyz`): the token answers.
    fn ping(&self) -> anyhow::Result<()>;

    /// Seals `secret`, bound to `aad` (AES-256-GCM under the token's escrow key).
    fn seal(&self, aad: &[u8], secret: &[u8]) -> anyhow::Result<Vec<u8>>;

    /// Opens a sealed secret; fails if it or `aad` differs from what was sealed.
    fn unseal(&self, aad: &[u8], sealed: &[u8]) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>>;
}

/// The key labels in the CA token.
pub mod labels {
    pub const TOKEN: &str = "tessera-ca";
    pub const ROOT: &str = "root-ca";
    pub const ISSUING: &str = "issuing-ca-1";
    pub const OCSP: &str = "ocsp-responder-1";
    /// Signs checkpoints of the audit chain's head.
    pub const AUDIT: &str = "audit-1";
    /// The CA of the issuer's own HTTPS certificates, apart from the workforce CA.
    pub const TLS_CA: &str = "tls-ca-1";
    /// The AES key that seals escrowed card PUKs.
    pub const ESCROW: &str = "puk-escrow-1";
}

/// The token, logged in. One session, used one signature at a time.
pub struct TokenSigner {
    token: Mutex<Token>,
    alg: KeyAlg,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    pub fn new(token: Token, alg: KeyAlg) -> Self {
        Self {
            token: Mutex::new(token),
            alg,
        }
    }

    fn label(key: KeyRole) -> &'static str {
        match key {
            KeyRole::Issuing => labels::ISSUING,
            KeyRole::Ocsp => labels::OCSP,
            KeyRole::Audit => labels::AUDIT,
            KeyRole::TlsCa => labels::TLS_CA,
            KeyRole::Root => labels::ROOT,
        }
    }

    fn token(&self) -> std::sync::MutexGuard<'_, Token> {
        // A panic while signing leaves the session usable (the token holds no state of ours).
        self.token.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Signer for TokenSigner {
    fn algorithm(&self) -> KeyAlg {
        self.alg
    }

    fn sign(&self, key: KeyRole, tbs: Tbs<'_>) -> anyhow::Result<Vec<u8>> {
        self.token().sign(Self::label(key), self.alg, tbs.bytes())
    }

    fn public_key(&self, key: KeyRole) -> anyhow::Result<Vec<u8>> {
        self.token().public_key(Self::label(key), self.alg)
    }

    fn ping(&self) -> anyhow::Result<()> {
        self.token().ping()
    }

    fn seal(&self, aad: &[u8], secret: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.token().seal(labels::ESCROW, aad, secret)
    }

    fn unseal(&self, aad: &[u8], sealed: &[u8]) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
        self.token().unseal(labels::ESCROW, aad, sealed)
    }
}

#[cfg(feature = "memory-signer")]
pub use memory::MemorySigner;

#[cfg(feature = "memory-signer")]
mod memory {
    use ecdsa::signature::Signer as _;
    use pkcs8::EncodePublicKey;

    use super::{KeyAlg, KeyRole, Signer, Tbs};

    /// Software P-256 keys made at construction, for unit tests of the layers above. Never
    /// in a deployment: the binary does not enable the feature.
    pub struct MemorySigner {
        escrow: ring::aead::LessSafeKey,
        issuing: p256::ecdsa::SigningKey,
        ocsp: p256::ecdsa::SigningKey,
        audit: p256::ecdsa::SigningKey,
        tls_ca: p256::ecdsa::SigningKey,
        root: p256::ecdsa::SigningKey,
    }

    impl std::fmt::Debug for MemorySigner {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MemorySigner").finish_non_exhaustive()
        }
    }

    impl Default for MemorySigner {
        fn default() -> Self {
            Self::new()
        }
    }

    impl MemorySigner {
        pub fn new() -> Self {
            let key = || p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
            let mut aes = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut aes);
            Self {
                escrow: ring::aead::LessSafeKey::new(
                    ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &aes)
                        .expect("a 256-bit key"),
                ),
                issuing: key(),
                ocsp: key(),
                audit: key(),
                tls_ca: key(),
                root: key(),
            }
        }

        fn key(&self, key: KeyRole) -> &p256::ecdsa::SigningKey {
            match key {
                KeyRole::Issuing => &self.issuing,
                KeyRole::Ocsp => &self.ocsp,
                KeyRole::Audit => &self.audit,
                KeyRole::TlsCa => &self.tls_ca,
                KeyRole::Root => &self.root,
            }
        }

        /// Signs what `authority` builds for a test CA (this crate only).
        pub(crate) fn sign_bytes(&self, key: KeyRole, bytes: &[u8]) -> Vec<u8> {
            let sig: p256::ecdsa::DerSignature = self.key(key).sign(bytes);
            sig.as_bytes().to_vec()
        }
    }

    impl Signer for MemorySigner {
        fn algorithm(&self) -> KeyAlg {
            KeyAlg::P256
        }

        fn sign(&self, key: KeyRole, tbs: Tbs<'_>) -> anyhow::Result<Vec<u8>> {
            Ok(self.sign_bytes(key, tbs.bytes()))
        }

        fn public_key(&self, key: KeyRole) -> anyhow::Result<Vec<u8>> {
            Ok(p256::PublicKey::from(self.key(key).verifying_key())
                .to_public_key_der()?
                .into_vec())
        }

        fn ping(&self) -> anyhow::Result<()> {
            Ok(())
        }

        fn seal(&self, aad: &[u8], secret: &[u8]) -> anyhow::Result<Vec<u8>> {
            let mut iv = [0u8; 12];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut iv);
            let mut body = secret.to_vec();
            self.escrow
                .seal_in_place_append_tag(
                    ring::aead::Nonce::assume_unique_for_key(iv),
                    ring::aead::Aad::from(aad),
                    &mut body,
                )
                .map_err(|_| anyhow::anyhow!("sealing failed"))?;
            Ok([&[1u8][..], &iv, &body].concat())
        }

        fn unseal(&self, aad: &[u8], sealed: &[u8]) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
            let (Some(&1), Some(iv), Some(body)) =
                (sealed.first(), sealed.get(1..13), sealed.get(13..))
            else {
                anyhow::bail!("not a sealed secret of this issuer");
            };
            let iv: [u8; 12] = iv.try_into()?;
            let mut body = zeroize::Zeroizing::new(body.to_vec());
            let plain = self
                .escrow
                .open_in_place(
                    ring::aead::Nonce::assume_unique_for_key(iv),
                    ring::aead::Aad::from(aad),
                    &mut body,
                )
                .map_err(|_| anyhow::anyhow!("the sealed secret or its binding was changed"))?
                .to_vec();
            Ok(zeroize::Zeroizing::new(plain))
        }
    }
}

/// A signer that reports how long each signature took (for the token-latency metric).
pub struct Timed<S> {
    inner: S,
    observe: Box<dyn Fn(std::time::Duration) + Send + Sync>,
}

impl<S> std::fmt::Debug for Timed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timed").finish_non_exhaustive()
    }
}

impl<S: Signer> Timed<S> {
    pub fn new(inner: S, observe: impl Fn(std::time::Duration) + Send + Sync + 'static) -> Self {
        Self {
            inner,
            observe: Box::new(observe),
        }
    }
}

impl<S: Signer> Signer for Timed<S> {
    fn algorithm(&self) -> KeyAlg {
        self.inner.algorithm()
    }

    fn sign(&self, key: KeyRole, tbs: Tbs<'_>) -> anyhow::Result<Vec<u8>> {
        let start = std::time::Instant::now();
        let r = self.inner.sign(key, tbs);
        (self.observe)(start.elapsed());
        r
    }

    fn public_key(&self, key: KeyRole) -> anyhow::Result<Vec<u8>> {
        self.inner.public_key(key)
    }

    fn ping(&self) -> anyhow::Result<()> {
        self.inner.ping()
    }

    fn seal(&self, aad: &[u8], secret: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.inner.seal(aad, secret)
    }

    fn unseal(&self, aad: &[u8], sealed: &[u8]) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
        self.inner.unseal(aad, sealed)
    }
}

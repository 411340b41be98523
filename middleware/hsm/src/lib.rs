//! Signing keys in a PKCS#11 token (SoftHSM2 in the embedded deployment, any HSM in
//! production: the module and token are the deployment's configuration), for the issuer's
//! CA and the IdP's assertion signer (LoA3 K4.3). Keys are generated inside the token as
//! sensitive, non-extractable objects; this crate only ever asks the token to sign, seal
//! or open. [`custody`] keeps the token's activation secret under M-of-N control.
//!
//! [`Token::sign`] signs whatever bytes it is handed, so which crates may use this one is a
//! checked rule (`issuer/tests/tidy.rs`): the issuer's CA (which signs only what it
//! prepared and checked itself), the issuer's set-up and binary (which open the token and
//! hand it to the CA), and the IdP's signer. The RA, the web edge and the portal reach the
//! keys only through the CA.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use der::{Decode, Encode};
use sha2::Digest;
use tessera_issuer_types::config::{files, KeyAlg};
use zeroize::Zeroizing;

pub mod custody;

/// Debian's SoftHSM2 module.
pub const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Writes a SoftHSM2 configuration that keeps the tokens in `dir/tokens`, and returns its
/// path (SoftHSM2 finds it through `SOFTHSM2_CONF`).
pub fn softhsm_config(dir: &Path) -> Result<PathBuf> {
    let tokens = dir.join(files::SOFTHSM_TOKENS);
    std::fs::create_dir_all(&tokens).with_context(|| format!("creating {}", tokens.display()))?;
    let conf = dir.join(files::SOFTHSM_CONF);
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .with_context(|| format!("writing {}", conf.display()))?;
    Ok(conf)
}

/// Loads a PKCS#11 module with the environment it needs (SoftHSM2's `SOFTHSM2_CONF`,
/// tpm2-pkcs11's store and TCTI).
pub fn load(module: &Path, environment: &[(String, String)]) -> Result<Pkcs11> {
    for (name, value) in environment {
        // Set before the module is loaded and before any thread exists: the modules read
        // their variables once, in C_Initialize.
        std::env::set_var(name, value);
    }
    let p11 = Pkcs11::new(module)
        .with_context(|| format!("loading PKCS#11 module {}", module.display()))?;
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .context("C_Initialize")?;
    Ok(p11)
}

/// Loads the deployment's module (with its environment) and logs in to its token with the
/// activation secret.
pub fn open_configured(
    config: &tessera_issuer_types::config::TokenConfig,
    secret: &Zeroizing<String>,
) -> Result<Token> {
    // SoftHSM2 reads each token's file when asked for its tokens; a process that reads it
    // while another rewrites it (SoftHSM2 rewrites it on logins) sees no token. Such a miss
    // is retried with the module loaded afresh, for up to ten seconds; a token that really
    // is not there is reported after that.
    let mut attempt = 0;
    loop {
        let p11 = load(&config.module, &config.environment)?;
        match Token::open(p11, &config.label, secret) {
            Err(e) if e.downcast_ref::<NoToken>().is_some() && attempt < 50 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// No token with the label asked for (found now).
#[derive(Debug, thiserror::Error)]
#[error("no token labelled {0}")]
pub struct NoToken(String);

/// Initialises a new token in the first free slot and sets its user PIN. The security
/// officer's PIN is made, used and wiped here: kept anywhere, it would let whoever holds it
/// (and a copy of the token's files) set a new user PIN and sign as the CA, whatever the
/// custody of the user PIN.
pub fn init_token(p11: &Pkcs11, label: &str, user_pin: &str) -> Result<()> {
    let so_pin = Zeroizing::new(random_pin());
    let slot = free_slot(p11)?;
    let so = AuthPin::from(so_pin.to_string());
    p11.init_token(slot, &so, label).context("C_InitToken")?;
    let slot = find_token(p11, label)?;
    let session = p11.open_rw_session(slot).context("C_OpenSession")?;
    session
        .login(UserType::So, Some(&so))
        .context("C_Login (SO)")?;
    session
        .init_pin(&AuthPin::from(user_pin.to_owned()))
        .context("C_InitPIN")?;
    session.logout().context("C_Logout (SO)")?;
    Ok(())
}

/// Takes over a token someone else initialised (an HSM's, or tpm2-pkcs11's, made with its
/// own tool): logs in with the user PIN that was handed over and changes it to `new_pin`,
/// so that it no longer opens the token. The security officer's PIN, which could reset the
/// user PIN, is retired afterwards with [`retire_so_pin`], once the deployment is made:
/// until then it is the way back if setting up fails.
pub fn adopt_token(p11: &Pkcs11, label: &str, handed_over_pin: &str, new_pin: &str) -> Result<()> {
    let slot = find_token(p11, label)?;
    let session = p11.open_rw_session(slot).context("C_OpenSession")?;
    let old = AuthPin::from(handed_over_pin.to_owned());
    session
        .login(UserType::User, Some(&old))
        .context("logging in to the token with the PIN given (--token-pin-file)")?;
    session
        .set_pin(&old, &AuthPin::from(new_pin.to_owned()))
        .context("C_SetPIN (the token's user PIN becomes the activation secret)")?;
    Ok(())
}

/// Replaces a taken-over token's security-officer PIN with a random one that is wiped at
/// once: whoever set the token up could otherwise set a new user PIN and sign as the CA,
/// whatever the custody of the user PIN. Loads the module afresh (no user session may be
/// open: PKCS#11 allows one user type per application).
pub fn retire_so_pin(
    config: &tessera_issuer_types::config::TokenConfig,
    so_pin: &str,
) -> Result<()> {
    let p11 = load(&config.module, &config.environment)?;
    let slot = find_token(&p11, &config.label)?;
    let session = p11.open_rw_session(slot).context("C_OpenSession")?;
    let old = AuthPin::from(so_pin.to_owned());
    session.login(UserType::So, Some(&old)).context(
        "logging in to the token as security officer with the PIN given (--token-so-pin-file)",
    )?;
    let discarded = Zeroizing::new(random_pin());
    session
        .set_pin(&old, &AuthPin::from(discarded.to_string()))
        .context("C_SetPIN (the security officer's PIN is replaced and forgotten)")?;
    session.logout().context("C_Logout (SO)")?;
    Ok(())
}

/// 32 hex digits from the OS's CSPRNG (a PIN or activation secret).
pub fn random_pin() -> String {
    let mut b = Zeroizing::new([0u8; 16]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, b.as_mut());
    hex::encode(b.as_ref())
}

fn free_slot(p11: &Pkcs11) -> Result<Slot> {
    for slot in p11.get_slots_with_token().context("C_GetSlotList")? {
        let info = p11.get_token_info(slot).context("C_GetTokenInfo")?;
        if !info.token_initialized() {
            return Ok(slot);
        }
    }
    bail!("the PKCS#11 module has no uninitialised token slot")
}

fn find_token(p11: &Pkcs11, label: &str) -> Result<Slot> {
    // A failure to list the tokens or read one's information is a miss too: SoftHSM2
    // reports CKR_GENERAL_ERROR for a token whose file another process is rewriting.
    let missing = |why: String| anyhow::Error::new(NoToken(format!("{label}: {why}")));
    let slots = p11
        .get_slots_with_token()
        .map_err(|e| missing(format!("C_GetSlotList: {e}")))?;
    for slot in slots {
        let info = p11
            .get_token_info(slot)
            .map_err(|e| missing(format!("C_GetTokenInfo: {e}")))?;
        if info.label().trim_end() == label {
            return Ok(slot);
        }
    }
    Err(missing("not in any slot".into()))
}

/// A logged-in session on a token (and the loaded module, kept initialised while it
/// lives).
pub struct Token {
    session: Session,
    _module: Pkcs11,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").finish_non_exhaustive()
    }
}

impl Token {
    /// Opens the token by label and logs in with the activation secret.
    pub fn open(p11: Pkcs11, label: &str, pin: &Zeroizing<String>) -> Result<Self> {
        let slot = find_token(&p11, label)?;
        let session = p11.open_rw_session(slot).context("C_OpenSession")?;
        session
            .login(UserType::User, Some(&AuthPin::from(pin.to_string())))
            .context("logging in to the token (wrong activation secret?)")?;
        Ok(Self {
            session,
            _module: p11,
        })
    }

    /// Another session on the same token, logged in already (a PKCS#11 login is the
    /// application's, not the session's): for work that must not wait behind this
    /// session's, such as TLS handshakes beside XML signing.
    pub fn another_session(&self) -> Result<Self> {
        let slot = self
            .session
            .get_session_info()
            .context("C_GetSessionInfo")?
            .slot_id();
        let session = self
            ._module
            .open_rw_session(slot)
            .context("C_OpenSession")?;
        Ok(Self {
            session,
            _module: self._module.clone(),
        })
    }

    /// Whether the token answers (for `/readyz`).
    pub fn ping(&self) -> Result<()> {
        self.session
            .get_session_info()
            .context("C_GetSessionInfo")?;
        Ok(())
    }

    /// Generates a signing key pair inside the token; returns its SubjectPublicKeyInfo.
    pub fn generate(&self, label: &str, alg: KeyAlg) -> Result<Vec<u8>> {
        if !self.find(label, ObjectClass::PRIVATE_KEY)?.is_empty() {
            bail!("the token already holds a key labelled {label:?}");
        }
        let id = sha2::Sha256::digest(label.as_bytes())[..8].to_vec();
        let common = |class| {
            vec![
                Attribute::Class(class),
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.clone()),
            ]
        };
        let mut public = common(ObjectClass::PUBLIC_KEY);
        public.push(Attribute::Verify(true));
        let mut private = common(ObjectClass::PRIVATE_KEY);
        // The invariant that keeps CA keys in the token: sensitive, never extractable.
        private.extend([
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
        ]);
        let mechanism = match alg {
            KeyAlg::P256 | KeyAlg::P384 => {
                let curve = if alg == KeyAlg::P256 {
                    const_oid::db::rfc5912::SECP_256_R_1
                } else {
                    const_oid::db::rfc5912::SECP_384_R_1
                };
                public.push(Attribute::EcParams(curve.to_der()?));
                Mechanism::EccKeyPairGen
            }
            KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => {
                let bits: u64 = if alg == KeyAlg::Rsa2048 { 2048 } else { 3072 };
                public.push(Attribute::ModulusBits(bits.into()));
                public.push(Attribute::PublicExponent(vec![1, 0, 1]));
                Mechanism::RsaPkcsKeyPairGen
            }
        };
        let (pub_handle, _) = self
            .session
            .generate_key_pair(&mechanism, &public, &private)
            .with_context(|| format!("generating {label} in the token"))?;
        self.spki(pub_handle, alg)
    }

    fn find(&self, label: &str, class: ObjectClass) -> Result<Vec<ObjectHandle>> {
        self.session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .context("C_FindObjects")
    }

    fn one(&self, label: &str, class: ObjectClass) -> Result<ObjectHandle> {
        match self.find(label, class)?.as_slice() {
            [h] => Ok(*h),
            [] => bail!("the token has no key labelled {label:?}"),
            _ => bail!("the token has several keys labelled {label:?}"),
        }
    }

    /// The SubjectPublicKeyInfo of a key pair, read from its public half.
    pub fn public_key(&self, label: &str, alg: KeyAlg) -> Result<Vec<u8>> {
        let h = self.one(label, ObjectClass::PUBLIC_KEY)?;
        self.spki(h, alg)
    }

    fn spki(&self, public: ObjectHandle, alg: KeyAlg) -> Result<Vec<u8>> {
        match alg {
            KeyAlg::P256 | KeyAlg::P384 => {
                let attrs = self
                    .session
                    .get_attributes(public, &[AttributeType::EcPoint])
                    .context("reading the EC point")?;
                let Some(Attribute::EcPoint(der_point)) = attrs.first() else {
                    bail!("public key without CKA_EC_POINT");
                };
                // CKA_EC_POINT is a DER OCTET STRING holding the uncompressed point.
                let point = der::asn1::OctetString::from_der(der_point)?;
                let der = if alg == KeyAlg::P256 {
                    spki::EncodePublicKey::to_public_key_der(
                        &p256::PublicKey::from_sec1_bytes(point.as_bytes())
                            .map_err(|e| anyhow!("P-256 point: {e}"))?,
                    )?
                } else {
                    spki::EncodePublicKey::to_public_key_der(
                        &p384::PublicKey::from_sec1_bytes(point.as_bytes())
                            .map_err(|e| anyhow!("P-384 point: {e}"))?,
                    )?
                };
                Ok(der.into_vec())
            }
            KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => {
                let attrs = self
                    .session
                    .get_attributes(
                        public,
                        &[AttributeType::Modulus, AttributeType::PublicExponent],
                    )
                    .context("reading the RSA public key")?;
                let (mut n, mut e) = (None, None);
                for a in attrs {
                    match a {
                        Attribute::Modulus(v) => n = Some(v),
                        Attribute::PublicExponent(v) => e = Some(v),
                        _ => {}
                    }
                }
                let (n, e) = n
                    .zip(e)
                    .ok_or_else(|| anyhow!("incomplete RSA public key"))?;
                let key = RsaPublicKey {
                    modulus: der::asn1::Uint::new(&n)?,
                    public_exponent: der::asn1::Uint::new(&e)?,
                };
                let spki = spki::SubjectPublicKeyInfoOwned {
                    algorithm: spki::AlgorithmIdentifierOwned {
                        oid: const_oid::db::rfc5912::RSA_ENCRYPTION,
                        parameters: Some(der::asn1::Null.into()),
                    },
                    subject_public_key: der::asn1::BitString::from_bytes(&key.to_der()?)?,
                };
                Ok(spki.to_der()?)
            }
        }
    }

    /// Makes the AES-256 key `label` that seals escrowed secrets (card PUKs), unless the
    /// token holds it: sensitive, never extractable, for encryption and decryption only.
    /// Then checks that the token seals and opens with it (AES-GCM). `init` calls this,
    /// once: two processes making the key at once would leave two under one label.
    pub fn ensure_secret_key(&self, label: &str) -> Result<bool> {
        let made = self.make_secret_key(label)?;
        self.check_secret_key(label)?;
        Ok(made)
    }

    /// Whether the token holds a working escrow key `label` (a seal that opens again).
    pub fn check_secret_key(&self, label: &str) -> Result<()> {
        self.seal(label, b"tessera escrow self-test", b"probe")
            .map(|_| ())
    }

    fn make_secret_key(&self, label: &str) -> Result<bool> {
        if !self.find(label, ObjectClass::SECRET_KEY)?.is_empty() {
            return Ok(false);
        }
        let id = sha2::Sha256::digest(label.as_bytes())[..8].to_vec();
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(cryptoki::object::KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id),
        ];
        self.session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .with_context(|| format!("generating {label} in the token"))?;
        Ok(true)
    }

    /// Makes the HMAC-SHA256 key `label` (256 bits, generic secret: sensitive, never
    /// extractable, for signing only) unless the token holds it; says whether it made it.
    /// The IdP derives its pseudonymous NameIDs with it, so they cannot be linked or
    /// recomputed without the token.
    pub fn ensure_hmac_key(&self, label: &str) -> Result<bool> {
        if !self.find(label, ObjectClass::SECRET_KEY)?.is_empty() {
            // One that is there must be what we would have made.
            let key = self.one(label, ObjectClass::SECRET_KEY)?;
            let attrs = self
                .session
                .get_attributes(
                    key,
                    &[
                        AttributeType::KeyType,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::Sign,
                    ],
                )
                .context("reading the HMAC key's attributes")?;
            let good = attrs.len() == 4
                && attrs.iter().all(|a| match a {
                    Attribute::KeyType(t) => *t == cryptoki::object::KeyType::GENERIC_SECRET,
                    Attribute::Sensitive(v) | Attribute::Sign(v) => *v,
                    Attribute::Extractable(v) => !*v,
                    _ => true,
                });
            if !good {
                bail!("the token's key {label:?} is not a sensitive, non-extractable HMAC key");
            }
            return Ok(false);
        }
        let id = sha2::Sha256::digest(label.as_bytes())[..8].to_vec();
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(cryptoki::object::KeyType::GENERIC_SECRET),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id),
        ];
        self.session
            .generate_key(&Mechanism::GenericSecretKeyGen, &template)
            .with_context(|| format!("generating {label} in the token"))?;
        Ok(true)
    }

    /// HMAC-SHA256 of `data` under the token's key `label`.
    pub fn hmac_sha256(&self, label: &str, data: &[u8]) -> Result<Vec<u8>> {
        let key = self.one(label, ObjectClass::SECRET_KEY)?;
        self.session
            .sign(&Mechanism::Sha256Hmac, key, data)
            .context("C_Sign (HMAC-SHA256)")
    }

    /// Seals `secret` with the AES key `label` (AES-256-GCM, a fresh 96-bit IV, `aad`
    /// bound): `1 || IV || ciphertext || tag`.
    pub fn seal(&self, label: &str, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>> {
        let key = self.one(label, ObjectClass::SECRET_KEY)?;
        let mut iv = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut iv);
        let sealed = {
            let params = cryptoki::mechanism::aead::GcmParams::new(&mut iv, aad, 128.into())
                .context("GCM parameters")?;
            self.session
                .encrypt(&Mechanism::AesGcm(params), key, secret)
                .context("C_Encrypt (AES-GCM)")?
        };
        // The IV as the token left it: some HSMs write their own into the buffer.
        let mut out = Vec::with_capacity(1 + iv.len() + sealed.len());
        out.push(1);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        // Nothing is kept that does not open again.
        if self.unseal(label, aad, &out)?.as_slice() != secret {
            bail!("the token's AES-GCM does not give back what it sealed");
        }
        Ok(out)
    }

    /// Opens what [`Token::seal`] sealed under the same `aad`; fails if anything was
    /// changed.
    pub fn unseal(&self, label: &str, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let key = self.one(label, ObjectClass::SECRET_KEY)?;
        let (Some(&1), Some(iv), Some(body)) =
            (sealed.first(), sealed.get(1..13), sealed.get(13..))
        else {
            bail!("not a sealed secret of this issuer");
        };
        if body.len() < 16 {
            bail!("a sealed secret shorter than its tag");
        }
        let mut iv: [u8; 12] = iv.try_into().context("IV")?;
        let params = cryptoki::mechanism::aead::GcmParams::new(&mut iv, aad, 128.into())
            .context("GCM parameters")?;
        let plain = self
            .session
            .decrypt(&Mechanism::AesGcm(params), key, body)
            .context("C_Decrypt (AES-GCM): the sealed secret or its binding was changed")?;
        Ok(Zeroizing::new(plain))
    }

    /// Signs `tbs` with the key `label`, returning the signature as X.509 carries it (DER
    /// ECDSA-Sig-Value for EC keys, PKCS#1 v1.5 for RSA). In the issuer only the CA calls
    /// this (through its `IssuingCa` and `authority`), as the crate graph check enforces.
    pub fn sign(&self, label: &str, alg: KeyAlg, tbs: &[u8]) -> Result<Vec<u8>> {
        let key = self.one(label, ObjectClass::PRIVATE_KEY)?;
        match alg {
            KeyAlg::P256 => {
                let digest = sha2::Sha256::digest(tbs);
                let raw = self
                    .session
                    .sign(&Mechanism::Ecdsa, key, &digest)
                    .context("C_Sign")?;
                let sig = p256::ecdsa::Signature::from_slice(&raw)
                    .map_err(|e| anyhow!("token signature: {e}"))?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            KeyAlg::P384 => {
                let digest = sha2::Sha384::digest(tbs);
                let raw = self
                    .session
                    .sign(&Mechanism::Ecdsa, key, &digest)
                    .context("C_Sign")?;
                let sig = p384::ecdsa::Signature::from_slice(&raw)
                    .map_err(|e| anyhow!("token signature: {e}"))?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => self
                .session
                .sign(&Mechanism::Sha256RsaPkcs, key, tbs)
                .context("C_Sign"),
        }
    }
}

/// The X.509 signature algorithm of what [`Token::sign`] returns for a key of this kind.
pub fn signature_algorithm(alg: KeyAlg) -> spki::AlgorithmIdentifierOwned {
    let oid = match alg {
        KeyAlg::P256 => const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
        KeyAlg::P384 => const_oid::db::rfc5912::ECDSA_WITH_SHA_384,
        KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => const_oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
    };
    // RFC 5758 §3.2: ECDSA identifiers have no parameters; RFC 4055 §5: RSA ones NULL.
    let parameters = match alg {
        KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => Some(der::asn1::Null.into()),
        _ => None,
    };
    spki::AlgorithmIdentifierOwned { oid, parameters }
}

/// Verifies `signature` over `message` with the key `spki` in the algorithm `alg`: ECDSA
/// P-256/SHA-256, P-384/SHA-384, RSA PKCS#1 v1.5 with SHA-256 (what the ceremony and
/// `init` make).
pub fn verify_signature(
    spki: &spki::SubjectPublicKeyInfoOwned,
    alg: &spki::AlgorithmIdentifierOwned,
    message: &[u8],
    signature: &[u8],
) -> Result<()> {
    // ring's verifiers (constant-time, and several times faster than the pure-Rust curve
    // arithmetic: a card login verifies two or three signatures). The key is the
    // subjectPublicKey's bits: the EC point, or RSAPublicKey for RSA (at least 2048 bits).
    let bad = |e: &dyn std::fmt::Display| anyhow!("bad signature: {e}");
    let alg = alg.oid;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .filter(|_| spki.algorithm.oid == const_oid::db::rfc5912::ID_EC_PUBLIC_KEY)
        .and_then(|p| p.decode_as::<const_oid::ObjectIdentifier>().ok());
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| anyhow!("bad signature: a public key that is not whole bytes"))?;
    let verifier: &dyn ring::signature::VerificationAlgorithm = if alg
        == const_oid::db::rfc5912::ECDSA_WITH_SHA_256
        && curve == Some(const_oid::db::rfc5912::SECP_256_R_1)
    {
        &ring::signature::ECDSA_P256_SHA256_ASN1
    } else if alg == const_oid::db::rfc5912::ECDSA_WITH_SHA_384
        && curve == Some(const_oid::db::rfc5912::SECP_384_R_1)
    {
        &ring::signature::ECDSA_P384_SHA384_ASN1
    } else if alg == const_oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION
        && spki.algorithm.oid == const_oid::db::rfc5912::RSA_ENCRYPTION
    {
        &ring::signature::RSA_PKCS1_2048_8192_SHA256
    } else {
        bail!(
            "signature algorithm {alg} with this key is not accepted \
             (ECDSA P-256/SHA-256, P-384/SHA-384, RSA/SHA-256)"
        )
    };
    ring::signature::UnparsedPublicKey::new(verifier, key)
        .verify(message, signature)
        .map_err(|e| bad(&e))
}

/// RSAPublicKey (RFC 8017 §A.1.1).
#[derive(der::Sequence)]
struct RsaPublicKey {
    modulus: der::asn1::Uint,
    public_exponent: der::asn1::Uint,
}

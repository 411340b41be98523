//! The TPM side of the virtual card, over `tss-esapi` (tpm2-tss's ESAPI):
//! - a persistent storage primary under the owner hierarchy, the parent of every slot key;
//! - slot keys (P-256, P-384, RSA-2048) created under it, fixedTPM and fixedParent, kept
//!   outside the TPM only as wrapped blobs that load on no other TPM;
//! - the PIN and the PUK of each card as **PIN-fail NV indices** (TPM 2.0 Part 1 §37.4.2,
//!   `TPM_NT_PIN_FAIL` with `TPMA_NV_NO_DA`): the index's authValue is derived from the PIN,
//!   the TPM counts each failed authorisation in the index itself and refuses every
//!   authorisation once the count reaches the limit. The count lives in TPM NV, so no file
//!   restore gives tries back, and it is per card, so a user's wrong PINs never touch the
//!   TPM's global dictionary-attack counter that guards everyone else's keys;
//! - each PIN-protected key's use authorised by `PolicySecret` on its card's PIN index: a
//!   copy of the agent's files without the PIN signs nothing.
//!
//! The PIN-fail index protocol and the policy digest are written here by hand: tss-esapi
//! offers the commands, not this use of them.

use std::collections::HashMap;
use std::convert::TryFrom;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use thiserror::Error;
use tss_esapi::attributes::{
    NvIndexAttributesBuilder, ObjectAttributesBuilder, SessionAttributesBuilder,
};
use tss_esapi::constants::response_code::{
    FormatOneResponseCode, FormatZeroResponseCode, Tss2ResponseCode,
};
use tss_esapi::constants::{tss::TPM2_RH_NULL, tss::TPM2_ST_HASHCHECK, NvIndexType, SessionType};
use tss_esapi::handles::{
    KeyHandle, NvIndexHandle, NvIndexTpmHandle, ObjectHandle, PersistentTpmHandle, TpmHandle,
};
use tss_esapi::interface_types::algorithm::{
    HashingAlgorithm, PublicAlgorithm, RsaSchemeAlgorithm,
};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::{Hierarchy, NvAuth, Provision};
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Auth, Data, Digest, EccPoint, EccScheme, HashScheme, HashcheckTicket,
    KeyDerivationFunctionScheme, MaxNvBuffer, Nonce, NvPublicBuilder, Private, Public,
    PublicBuilder, PublicEccParametersBuilder, PublicKeyRsa, PublicRsaParametersBuilder,
    RsaDecryptionScheme, RsaExponent, RsaScheme, Signature, SignatureScheme, SymmetricDefinition,
    SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::Context;
use zeroize::Zeroizing;

use tessera_piv::piv::Algorithm;

/// Where the agent keeps its storage primary (owner persistent range, TPM 2.0 Part 2
/// §7.4; TCG's registry leaves 0x8100_8000..0x817F_FFFF to owners' applications).
pub const PRIMARY_HANDLE: u32 = 0x8101_7E55;

/// The first NV index the agent uses for PIN and PUK indices (owner range 0x01xx_xxxx,
/// outside the TCG-registered sub-ranges at 0x01C0_0000 and above).
pub const FIRST_NV_INDEX: u32 = 0x0154_0000;
/// How many NV index handles the agent looks through for free ones.
pub const NV_INDEX_RANGE: u32 = 0x1_0000;

/// Why a TPM operation failed.
#[derive(Debug, Error)]
pub enum TpmError {
    #[error("TPM: {0}")]
    Tss(#[from] tss_esapi::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, TpmError>;

fn other(msg: impl Into<String>) -> TpmError {
    TpmError::Other(msg.into())
}

/// A slot key as the agent keeps it: the TPM's public area and wrapped private part, both
/// in their TPM marshalled form.
#[derive(Clone, Debug)]
pub struct KeyBlob {
    pub public: Vec<u8>,
    pub private: Vec<u8>,
}

/// What a PIN-fail index holds: failed tries since the last success, and the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinCounter {
    pub failures: u32,
    pub limit: u32,
}

impl PinCounter {
    /// Tries left, as the PIV applet counts them.
    pub fn left(&self) -> u8 {
        u8::try_from(self.limit.saturating_sub(self.failures)).unwrap_or(u8::MAX)
    }

    pub fn limit_u8(&self) -> u8 {
        u8::try_from(self.limit).unwrap_or(u8::MAX)
    }
}

/// What a PIN-fail index answered to an offered authValue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinCheck {
    Right,
    Wrong,
    /// The limit is reached: the TPM refuses every authorisation, right or wrong.
    Blocked,
}

/// A connection to the TPM with the agent's storage primary loaded.
pub struct Tpm {
    ctx: Context,
    primary: KeyHandle,
    owner_auth: Option<Zeroizing<Vec<u8>>>,
    /// ESYS objects of the NV indices in use, one per index: each `TR_FromTPMPublic` makes
    /// an object that lives until closed, so looking an index up for every PIN check would
    /// grow the agent's memory (and keep authValues in it) without bound.
    nv: HashMap<u32, NvIndexHandle>,
    /// Keys kept loaded, most recently used first, by their wrapped private part.
    loaded: Vec<(Vec<u8>, KeyHandle)>,
    /// The policy session for PIN-bound keys, kept between uses.
    policy: Option<AuthSession>,
    /// An attestation under way: the EK (until the credential is activated) and the AK.
    attestation: Option<(Option<KeyHandle>, KeyHandle)>,
}

/// How many slot keys stay loaded at once. swtpm (and many TPMs) hold three transient
/// objects, and a command under the persistent primary needs two of them (the primary, and
/// the object it creates or loads): one key kept leaves exactly that. The one kept is the
/// last used, which is what a run of signatures with one key needs.
pub const MAX_LOADED: usize = 1;

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm").finish_non_exhaustive()
    }
}

/// The policy digest of `TPM2_PolicySecret(authObject)` with an empty policyRef from a
/// fresh session (TPM 2.0 Part 3 §23.4): `H(H(0…0 ‖ TPM_CC_PolicySecret ‖ name) ‖ ref)`.
pub fn policy_secret_digest(auth_object_name: &[u8]) -> [u8; 32] {
    const TPM_CC_POLICY_SECRET: u32 = 0x0000_0151;
    let inner = Sha256::new()
        .chain_update([0u8; 32])
        .chain_update(TPM_CC_POLICY_SECRET.to_be_bytes())
        .chain_update(auth_object_name)
        .finalize();
    Sha256::new().chain_update(inner).finalize().into()
}

impl Tpm {
    /// Connects through a TCTI (`device:/dev/tpmrm0`, `tabrmd:…`, `swtpm:host=…,port=…`)
    /// and loads (creating it on first use) the persistent storage primary.
    pub fn open(tcti: &str, owner_auth: Option<Zeroizing<Vec<u8>>>) -> Result<Self> {
        let conf =
            TctiNameConf::from_str(tcti).map_err(|e| other(format!("TCTI {tcti:?}: {e}")))?;
        let ctx = Context::new(conf)?;
        let mut tpm = Self {
            ctx,
            primary: KeyHandle::Null,
            owner_auth,
            nv: HashMap::new(),
            loaded: Vec::new(),
            policy: None,
            attestation: None,
        };
        if let Some(auth) = &tpm.owner_auth {
            let auth = Auth::try_from(auth.to_vec())?;
            tpm.ctx.tr_set_auth(Hierarchy::Owner.into(), auth)?;
        }
        tpm.flush_leftovers()?;
        tpm.primary = tpm.storage_primary()?;
        Ok(tpm)
    }

    /// Flushes the transient objects and sessions a previous agent left in the TPM. With a
    /// resource manager (`/dev/tpmrm0`, tabrmd) this connection sees none of anyone
    /// else's; without one (a bare device, swtpm) the agent is the TPM's only user, and a
    /// killed agent's keys would otherwise fill the TPM's few slots for good.
    fn flush_leftovers(&mut self) -> Result<()> {
        use tss_esapi::constants::tss::{TPM2_LOADED_SESSION_FIRST, TPM2_TRANSIENT_FIRST};
        use tss_esapi::constants::CapabilityType;
        use tss_esapi::structures::CapabilityData;
        for first in [TPM2_TRANSIENT_FIRST, TPM2_LOADED_SESSION_FIRST] {
            let (data, _) = self
                .ctx
                .get_capability(CapabilityType::Handles, first, 64)?;
            let CapabilityData::Handles(handles) = data else {
                continue;
            };
            for handle in handles.as_ref() {
                // Best effort: what cannot be flushed (a handle ESYS will not take) is left.
                if let Ok(mut obj) = self.ctx.tr_from_tpm_public(*handle) {
                    if self.ctx.flush_context(obj).is_err() {
                        let _ = self.ctx.tr_close(&mut obj);
                    }
                }
            }
        }
        Ok(())
    }

    /// The storage primary's template: an ECC P-256 restricted decryption key with
    /// AES-128-CFB, the TCG's usual SRK shape.
    fn primary_template() -> Result<Public> {
        let attributes = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_restricted(true)
            .with_decrypt(true)
            .with_no_da(true)
            .build()?;
        Ok(PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attributes)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new_restricted_decryption_key(
                    SymmetricDefinitionObject::AES_128_CFB,
                    EccCurve::NistP256,
                )
                .build()?,
            )
            .with_ecc_unique_identifier(EccPoint::default())
            .build()?)
    }

    /// The storage primary at [`PRIMARY_HANDLE`]. A primary key is derived from the owner
    /// hierarchy's seed and the template, so the agent makes it afresh on every start and
    /// accepts the persistent key only if its name is the fresh one's: a key someone else
    /// put at that handle (one whose private part they know, to unwrap the cards' keys)
    /// is refused. On first use the fresh key is made persistent.
    fn storage_primary(&mut self) -> Result<KeyHandle> {
        let handle = PersistentTpmHandle::new(PRIMARY_HANDLE)?;
        let template = Self::primary_template()?;
        let fresh = self
            .with_password(|ctx| {
                ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
            })?
            .key_handle;
        let (_, fresh_name, _) = self.ctx.read_public(fresh)?;
        if let Ok(obj) = self.ctx.tr_from_tpm_public(TpmHandle::Persistent(handle)) {
            let key = KeyHandle::from(obj);
            let (_, name, _) = self.ctx.read_public(key)?;
            self.ctx.flush_context(fresh.into())?;
            if name.value() != fresh_name.value() {
                return Err(other(format!(
                    "persistent handle {PRIMARY_HANDLE:#010x} holds a key that is not the agent's storage primary (another application's, or planted): refusing to use it"
                )));
            }
            return Ok(key);
        }
        let persisted = self.with_password(|ctx| {
            ctx.evict_control(
                Provision::Owner,
                fresh.into(),
                Persistent::Persistent(handle),
            )
        });
        self.ctx.flush_context(fresh.into())?;
        Ok(KeyHandle::from(persisted?))
    }

    /// Runs `f` with a password session (the authValues set with `tr_set_auth`).
    fn with_password<T>(
        &mut self,
        f: impl FnOnce(&mut Context) -> tss_esapi::Result<T>,
    ) -> Result<T> {
        Ok(self
            .ctx
            .execute_with_session(Some(AuthSession::Password), f)?)
    }

    /// Creates a key for `alg` under the storage primary. With `policy`, the key can be
    /// used only through a policy session whose digest matches it (never by its empty
    /// authValue); without, it is used with its empty authValue (PIN policy "never").
    pub fn create_key(&mut self, alg: Algorithm, policy: Option<[u8; 32]>) -> Result<KeyBlob> {
        let attributes = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(policy.is_none())
            .with_sign_encrypt(true)
            .with_decrypt(true)
            .with_no_da(true)
            .build()?;
        let builder = PublicBuilder::new()
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attributes)
            .with_auth_policy(Digest::try_from(
                policy.map(|p| p.to_vec()).unwrap_or_default(),
            )?);
        let template = match alg {
            Algorithm::EccP256 | Algorithm::EccP384 => builder
                .with_public_algorithm(PublicAlgorithm::Ecc)
                .with_ecc_parameters(
                    PublicEccParametersBuilder::new()
                        .with_ecc_scheme(EccScheme::Null)
                        .with_curve(curve(alg)?)
                        .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                        // The builder only checks these flags (and refuses both at once);
                        // the object attributes above make the key sign and decrypt.
                        .with_is_signing_key(false)
                        .with_is_decryption_key(true)
                        .with_restricted(false)
                        .build()?,
                )
                .with_ecc_unique_identifier(EccPoint::default())
                .build()?,
            Algorithm::Rsa2048 => builder
                .with_public_algorithm(PublicAlgorithm::Rsa)
                .with_rsa_parameters(
                    PublicRsaParametersBuilder::new()
                        .with_scheme(RsaScheme::create(RsaSchemeAlgorithm::Null, None)?)
                        .with_key_bits(RsaKeyBits::Rsa2048)
                        .with_exponent(RsaExponent::default())
                        // The builder only checks these flags (and refuses both at once);
                        // the object attributes above make the key sign and decrypt.
                        .with_is_signing_key(false)
                        .with_is_decryption_key(true)
                        .with_restricted(false)
                        .build()?,
                )
                .with_rsa_unique_identifier(PublicKeyRsa::default())
                .build()?,
            other_alg => return Err(other(format!("{other_alg:?} keys are not made in the TPM"))),
        };
        let primary = self.primary;
        // Room for the primary and the new object.
        self.unload_all();
        let created =
            self.with_password(|ctx| ctx.create(primary, template, None, None, None, None))?;
        Ok(KeyBlob {
            public: created.out_public.marshall()?,
            private: created.out_private.value().to_vec(),
        })
    }

    fn load(&mut self, blob: &KeyBlob) -> Result<KeyHandle> {
        let public = Public::unmarshall(&blob.public)?;
        let private = Private::try_from(blob.private.clone())?;
        let primary = self.primary;
        self.with_password(|ctx| ctx.load(primary, private, public))
    }

    /// The key of `blob`, loaded: kept loaded between uses (a signature then costs the TPM
    /// two commands, `PolicySecret` and the operation, as any use of a PIN-bound key must),
    /// at most [`MAX_LOADED`] at a time, the least recently used flushed first (without a
    /// resource manager the TPM's object slots are few).
    fn loaded(&mut self, blob: &KeyBlob) -> Result<KeyHandle> {
        if let Some(i) = self.loaded.iter().position(|(b, _)| b == &blob.private) {
            let entry = self.loaded.remove(i);
            let key = entry.1;
            self.loaded.insert(0, entry);
            return Ok(key);
        }
        while self.loaded.len() >= MAX_LOADED {
            if let Some((_, old)) = self.loaded.pop() {
                self.ctx.flush_context(old.into())?;
            }
        }
        let key = self.load(blob)?;
        self.loaded.insert(0, (blob.private.clone(), key));
        Ok(key)
    }

    /// Flushes every loaded key and the policy session (after an error, so that nothing
    /// half-done is used again).
    fn unload_all(&mut self) {
        for (_, key) in std::mem::take(&mut self.loaded) {
            let _ = self.ctx.flush_context(key.into());
        }
        if let Some(session) = self.policy.take() {
            let _ = self.ctx.flush_context(SessionHandleOf(session).into());
        }
    }

    /// Runs `f` on the loaded key, authorised by the policy session after `PolicySecret`
    /// on the PIN index (when `pin` is given) or by the key's empty authValue. On any
    /// error the keys and the session are flushed.
    fn with_key<T>(
        &mut self,
        blob: &KeyBlob,
        pin: Option<(u32, &[u8])>,
        f: impl FnOnce(&mut Context, KeyHandle) -> tss_esapi::Result<T>,
    ) -> Result<T> {
        let result = (|| -> Result<T> {
            let key = self.loaded(blob)?;
            match pin {
                None => self.with_password(|ctx| f(ctx, key)),
                Some((index, auth)) => self.with_policy_secret(index, auth, |ctx, session| {
                    ctx.execute_with_session(Some(session), |ctx| f(ctx, key))
                }),
            }
        })();
        if result.is_err() {
            self.unload_all();
        }
        result
    }

    /// Satisfies `PolicySecret` on the PIN index with `auth` in the agent's policy session
    /// (started once, with continueSession: the TPM resets its policy after each command it
    /// authorises) and hands the session to `f`.
    fn with_policy_secret<T>(
        &mut self,
        index: u32,
        auth: &[u8],
        f: impl FnOnce(&mut Context, AuthSession) -> tss_esapi::Result<T>,
    ) -> Result<T> {
        let session = match self.policy {
            Some(s) => s,
            None => {
                let session = self.start_policy_session()?;
                let (attributes, mask) = SessionAttributesBuilder::new()
                    .with_continue_session(true)
                    .build();
                self.ctx.tr_sess_set_attributes(session, attributes, mask)?;
                self.policy = Some(session);
                session
            }
        };
        let nv = self.nv_handle(index)?;
        self.ctx
            .tr_set_auth(nv.into(), Auth::try_from(auth.to_vec())?)?;
        let policy = PolicySession::try_from(session)?;
        let secret = self.with_password(|ctx| {
            ctx.policy_secret(
                policy,
                NvAuth::NvIndex(nv).into(),
                Nonce::default(),
                Digest::default(),
                Nonce::default(),
                None,
            )
        });
        // ESYS keeps a copy of the authValue with the object: not beyond this use.
        self.ctx.tr_set_auth(nv.into(), Auth::default())?;
        secret?;
        Ok(f(&mut self.ctx, session)?)
    }

    /// A new policy session (SHA-256, AES-128-CFB parameter encryption available).
    fn start_policy_session(&mut self) -> Result<AuthSession> {
        self.ctx
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )?
            .ok_or_else(|| other("the TPM started no policy session"))
    }

    /// The ESYS object of the index at `handle`, made once and kept.
    fn nv_handle(&mut self, handle: u32) -> Result<NvIndexHandle> {
        if let Some(nv) = self.nv.get(&handle) {
            return Ok(*nv);
        }
        let index = NvIndexTpmHandle::new(handle)?;
        let nv = NvIndexHandle::from(self.ctx.tr_from_tpm_public(TpmHandle::NvIndex(index))?);
        self.nv.insert(handle, nv);
        Ok(nv)
    }

    /// Whether an index is defined at `handle` (without keeping an object for it).
    fn nv_defined(&mut self, handle: u32) -> Result<bool> {
        if self.nv.contains_key(&handle) {
            return Ok(true);
        }
        let index = NvIndexTpmHandle::new(handle)?;
        match self.ctx.tr_from_tpm_public(TpmHandle::NvIndex(index)) {
            Ok(mut obj) => {
                self.ctx.tr_close(&mut obj)?;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// Undefines the index at `handle` if there is one; its ESYS object goes with it.
    fn undefine_if_defined(&mut self, handle: u32) -> Result<()> {
        if !self.nv_defined(handle)? {
            return Ok(());
        }
        let nv = self.nv_handle(handle)?;
        self.with_password(|ctx| ctx.nv_undefine_space(Provision::Owner, nv))?;
        self.nv.remove(&handle);
        Ok(())
    }

    /// Signs a digest already fitted to the curve (ECDSA, DER signature) or performs the raw
    /// RSA private operation on a modulus-sized block.
    pub fn sign(
        &mut self,
        blob: &KeyBlob,
        alg: Algorithm,
        input: &[u8],
        pin: Option<(u32, &[u8])>,
    ) -> Result<Vec<u8>> {
        match alg {
            Algorithm::EccP256 | Algorithm::EccP384 => {
                let hash = if alg == Algorithm::EccP256 {
                    HashingAlgorithm::Sha256
                } else {
                    HashingAlgorithm::Sha384
                };
                let digest = Digest::try_from(input.to_vec())?;
                let scheme = SignatureScheme::EcDsa {
                    hash_scheme: HashScheme::new(hash),
                };
                let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
                    tag: TPM2_ST_HASHCHECK,
                    hierarchy: TPM2_RH_NULL,
                    digest: Default::default(),
                })?;
                let signature =
                    self.with_key(blob, pin, |ctx, key| ctx.sign(key, digest, scheme, ticket))?;
                let Signature::EcDsa(sig) = signature else {
                    return Err(other("the TPM answered another kind of signature"));
                };
                ecdsa_der(alg, sig.signature_r().value(), sig.signature_s().value())
            }
            Algorithm::Rsa2048 => {
                let block = PublicKeyRsa::try_from(input.to_vec())?;
                let out = self.with_key(blob, pin, |ctx, key| {
                    ctx.rsa_decrypt(key, block, RsaDecryptionScheme::Null, Data::default())
                })?;
                let mut raw = vec![0u8; input.len().saturating_sub(out.value().len())];
                raw.extend_from_slice(out.value());
                Ok(raw)
            }
            other_alg => Err(other(format!("{other_alg:?} cannot sign here"))),
        }
    }

    /// ECDH with the key and an uncompressed peer point; returns the shared x coordinate.
    pub fn ecdh(
        &mut self,
        blob: &KeyBlob,
        alg: Algorithm,
        peer: &[u8],
        pin: Option<(u32, &[u8])>,
    ) -> Result<Vec<u8>> {
        let size = match alg {
            Algorithm::EccP256 => 32,
            Algorithm::EccP384 => 48,
            _ => return Err(other("ECDH needs an EC key")),
        };
        let [0x04, xy @ ..] = peer else {
            return Err(other("the peer point is not uncompressed"));
        };
        if xy.len() != 2 * size {
            return Err(other("the peer point has the wrong size"));
        }
        let (x, y) = xy.split_at(size);
        let point = EccPoint::new(
            tss_esapi::structures::EccParameter::try_from(x.to_vec())?,
            tss_esapi::structures::EccParameter::try_from(y.to_vec())?,
        );
        let shared = self.with_key(blob, pin, |ctx, key| ctx.ecdh_z_gen(key, point))?;
        Ok(left_pad(shared.x().value(), size))
    }

    /// The public part of a blob: the TPM's public area.
    pub fn public_of(blob: &KeyBlob) -> Result<Public> {
        Ok(Public::unmarshall(&blob.public)?)
    }

    /// The first NV index from `start` on that is not defined and not in `taken`.
    pub fn free_nv_index(&mut self, start: u32, taken: &[u32]) -> Result<u32> {
        for handle in start..FIRST_NV_INDEX + NV_INDEX_RANGE {
            if !taken.contains(&handle) && !self.nv_defined(handle)? {
                return Ok(handle);
            }
        }
        Err(other("no free NV index left in the agent's range"))
    }

    /// (Re)defines a PIN-fail index at `handle` with `auth` and `limit` tries, none used.
    /// An index already there is replaced. The index's name covers its public area, not its
    /// authValue: redefined with the same `tag` (its authPolicy, which no access attribute
    /// uses; it only makes the name unique), it keeps its name and the keys bound to it keep
    /// working; with a new tag it gets a new name and every key bound to the old one is dead
    /// for good, whatever authValue the index gets later.
    pub fn define_pin_index(
        &mut self,
        handle: u32,
        auth: &[u8],
        limit: u8,
        tag: &[u8],
    ) -> Result<Vec<u8>> {
        let index = NvIndexTpmHandle::new(handle)?;
        self.undefine_if_defined(handle)?;
        let attributes = NvIndexAttributesBuilder::new()
            .with_nv_index_type(NvIndexType::PinFail)
            .with_owner_write(true)
            .with_owner_read(true)
            .with_auth_read(true)
            .with_no_da(true)
            .build()?;
        let public = NvPublicBuilder::new()
            .with_nv_index(index)
            .with_index_name_algorithm(HashingAlgorithm::Sha256)
            .with_index_attributes(attributes)
            .with_index_auth_policy(Digest::try_from(tag.to_vec())?)
            .with_data_area_size(8)
            .build()?;
        let auth = Auth::try_from(auth.to_vec())?;
        let nv =
            self.with_password(|ctx| ctx.nv_define_space(Provision::Owner, Some(auth), public))?;
        self.nv.insert(handle, nv);
        // ESYS keeps the authValue it was given with the new object: not beyond this.
        self.ctx.tr_set_auth(nv.into(), Auth::default())?;
        let mut counter = [0u8; 8];
        counter[4..].copy_from_slice(&u32::from(limit).to_be_bytes());
        let data = MaxNvBuffer::try_from(counter.to_vec())?;
        self.with_password(|ctx| ctx.nv_write(NvAuth::Owner, nv, data, 0))?;
        self.pin_index_name(handle)
    }

    /// The name of the PIN index at `handle` (what key policies are bound to).
    pub fn pin_index_name(&mut self, handle: u32) -> Result<Vec<u8>> {
        let nv = self.nv_handle(handle)?;
        let (_, name) = self.ctx.nv_read_public(nv)?;
        Ok(name.value().to_vec())
    }

    /// The name and authPolicy (the agent's tag) of the index at `handle`, if there is one.
    pub fn index_public(&mut self, handle: u32) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        if !self.nv_defined(handle)? {
            return Ok(None);
        }
        let nv = self.nv_handle(handle)?;
        let (public, name) = self.ctx.nv_read_public(nv)?;
        Ok(Some((
            name.value().to_vec(),
            public.authorization_policy().value().to_vec(),
        )))
    }

    /// The index's `TPMS_NV_PUBLIC`, marshalled (written here by hand: tss-esapi 7 does not
    /// marshal it), checked against the name the TPM reports for it.
    pub fn index_public_bytes(&mut self, handle: u32) -> Result<Vec<u8>> {
        use tss_esapi::tss2_esys::{TPM2_HANDLE, TPMA_NV};
        let nv = self.nv_handle(handle)?;
        let (public, name) = self.ctx.nv_read_public(nv)?;
        let index: TPM2_HANDLE = public.nv_index().into();
        let attributes: TPMA_NV = TPMA_NV::try_from(public.attributes())?;
        let policy = public.authorization_policy().value();
        let mut out = index.to_be_bytes().to_vec();
        out.extend_from_slice(&0x000Bu16.to_be_bytes());
        out.extend_from_slice(&attributes.to_be_bytes());
        out.extend_from_slice(&u16::try_from(policy.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(policy);
        out.extend_from_slice(&u16::try_from(public.data_size()).unwrap_or(0).to_be_bytes());
        let mut computed = 0x000Bu16.to_be_bytes().to_vec();
        computed.extend_from_slice(&Sha256::digest(&out));
        if computed != name.value() {
            return Err(other(
                "the PIN index's public area does not give the TPM's name for it",
            ));
        }
        Ok(out)
    }

    /// Removes the index (a deleted card).
    pub fn undefine(&mut self, handle: u32) -> Result<()> {
        self.undefine_if_defined(handle)
    }

    /// The index's counter, read with the owner's authorisation (no try used).
    pub fn pin_counter(&mut self, handle: u32) -> Result<PinCounter> {
        let nv = self.nv_handle(handle)?;
        let data = self.with_password(|ctx| ctx.nv_read(NvAuth::Owner, nv, 8, 0))?;
        parse_counter(data.value())
    }

    /// Offers `auth` to the PIN index by reading it with that authValue: the TPM counts a
    /// failure in the index before it answers, and a success resets the count.
    pub fn check_pin(&mut self, handle: u32, auth: &[u8]) -> Result<PinCheck> {
        let nv = self.nv_handle(handle)?;
        self.ctx
            .tr_set_auth(nv.into(), Auth::try_from(auth.to_vec())?)?;
        let read = self.with_password(|ctx| ctx.nv_read(NvAuth::NvIndex(nv), nv, 8, 0));
        // Whatever the answer, the ESAPI copy of the authValue is dropped.
        self.ctx.tr_set_auth(nv.into(), Auth::default())?;
        match read {
            Ok(_) => Ok(PinCheck::Right),
            Err(TpmError::Tss(e)) => match response_kind(e) {
                Some(ResponseKind::AuthFail) => Ok(PinCheck::Wrong),
                Some(ResponseKind::NvAuthorization) => Ok(PinCheck::Blocked),
                None => Err(TpmError::Tss(e)),
            },
            Err(e) => Err(e),
        }
    }

    /// Access to the context for what this module does not wrap (tests).
    pub fn context(&mut self) -> &mut Context {
        &mut self.ctx
    }

    /// The endorsement key certificate (RSA 2048, TCG NV index `0x01C00002`), DER, as the
    /// TPM's manufacturer (swtpm_setup, in tests) stored it.
    pub fn ek_certificate(&mut self) -> Result<Vec<u8>> {
        use tss_esapi::abstraction::AsymmetricAlgorithmSelection;
        Ok(tss_esapi::abstraction::ek::retrieve_ek_pubcert(
            &mut self.ctx,
            AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
        )?)
    }

    /// Starts an attestation: the endorsement key (the TCG default RSA template, the key of
    /// the EK certificate) and a fresh attestation key under it (restricted, RSASSA-SHA256,
    /// fixedTPM), both loaded. Returns the AK's `TPMT_PUBLIC`.
    pub fn start_attestation(&mut self) -> Result<Vec<u8>> {
        use tss_esapi::abstraction::{ak, ek};
        use tss_esapi::interface_types::algorithm::AsymmetricAlgorithm;
        use tss_esapi::interface_types::algorithm::SignatureSchemeAlgorithm;
        self.end_attestation();
        // Room for the EK, the AK and, later, the key to certify.
        self.unload_all();
        let ek = ek::create_ek_object(&mut self.ctx, AsymmetricAlgorithm::Rsa, None)?;
        let made = (|| -> Result<(KeyHandle, Vec<u8>)> {
            let created = ak::create_ak(
                &mut self.ctx,
                ek,
                HashingAlgorithm::Sha256,
                SignatureSchemeAlgorithm::RsaSsa,
                None,
                None,
            )?;
            let public = created.out_public.marshall()?;
            let ak = ak::load_ak(
                &mut self.ctx,
                ek,
                None,
                created.out_private,
                created.out_public,
            )?;
            Ok((ak, public))
        })();
        match made {
            Ok((ak, public)) => {
                self.attestation = Some((Some(ek), ak));
                Ok(public)
            }
            Err(e) => {
                let _ = self.ctx.flush_context(ek.into());
                Err(e)
            }
        }
    }

    /// `TPM2_ActivateCredential` with the attestation's AK and EK: the secret the issuer
    /// encrypted to this TPM's EK for that AK. The EK is flushed afterwards.
    pub fn activate(&mut self, id_object: &[u8], encrypted_secret: &[u8]) -> Result<Vec<u8>> {
        use tss_esapi::interface_types::session_handles::PolicySession as Ps;
        use tss_esapi::structures::{EncryptedSecret, IdObject};
        let Some((Some(ek), ak)) = self.attestation else {
            return Err(other("no attestation started, or its EK is gone"));
        };
        let blob = IdObject::try_from(id_object.to_vec())?;
        let secret = EncryptedSecret::try_from(encrypted_secret.to_vec())?;
        let session = self.start_policy_session()?;
        let result = (|| -> Result<Vec<u8>> {
            // The EK's policy: PolicySecret on the endorsement hierarchy (empty auth).
            self.with_password(|ctx| {
                ctx.policy_secret(
                    Ps::try_from(session)?,
                    tss_esapi::handles::AuthHandle::Endorsement,
                    Nonce::default(),
                    Digest::default(),
                    Nonce::default(),
                    None,
                )
            })?;
            let digest = self.ctx.execute_with_sessions(
                (Some(AuthSession::Password), Some(session), None),
                |ctx| ctx.activate_credential(ak, ek, blob, secret),
            )?;
            Ok(digest.value().to_vec())
        })();
        let _ = self.ctx.flush_context(SessionHandleOf(session).into());
        let _ = self.ctx.flush_context(ek.into());
        self.attestation = Some((None, ak));
        result
    }

    /// `TPM2_Certify` of the key in `blob` by the attestation's AK over `nonce`: the
    /// marshalled `TPMS_ATTEST` and `TPMT_SIGNATURE`.
    pub fn certify(&mut self, blob: &KeyBlob, nonce: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        let Some((_, ak)) = self.attestation else {
            return Err(other("no attestation started"));
        };
        let key = self.loaded(blob)?;
        let data = Data::try_from(nonce.to_vec())?;
        let (attest, signature) = self.ctx.execute_with_sessions(
            (
                Some(AuthSession::Password),
                Some(AuthSession::Password),
                None,
            ),
            |ctx| ctx.certify(key.into(), ak, data, SignatureScheme::Null),
        )?;
        Ok((attest.marshall()?, signature.marshall()?))
    }

    /// Flushes the attestation's keys.
    pub fn end_attestation(&mut self) {
        if let Some((ek, ak)) = self.attestation.take() {
            if let Some(ek) = ek {
                let _ = self.ctx.flush_context(ek.into());
            }
            let _ = self.ctx.flush_context(ak.into());
        }
    }
}

impl Drop for Tpm {
    fn drop(&mut self) {
        self.end_attestation();
        self.unload_all();
    }
}

/// `AuthSession` to the handle the TPM flushes.
struct SessionHandleOf(AuthSession);

impl From<SessionHandleOf> for ObjectHandle {
    fn from(s: SessionHandleOf) -> Self {
        let handle: tss_esapi::handles::SessionHandle = s.0.into();
        handle.into()
    }
}

enum ResponseKind {
    AuthFail,
    NvAuthorization,
}

fn response_kind(e: tss_esapi::Error) -> Option<ResponseKind> {
    let tss_esapi::Error::Tss2Error(rc) = e else {
        return None;
    };
    // Only answers of the TPM itself (layer 0): a code of another TSS layer that happens
    // to have the same low bits means something else.
    let (code, format_one) = match rc {
        Tss2ResponseCode::FormatOne(FormatOneResponseCode(code)) => (code, true),
        Tss2ResponseCode::FormatZero(FormatZeroResponseCode(code)) => (code, false),
        Tss2ResponseCode::Success => return None,
    };
    if code & 0xFFFF_0000 != 0 {
        return None;
    }
    if format_one {
        // Format-one codes carry the parameter/session number in bits 8..11; the error
        // is the low 6 bits plus RC_FMT1 (0x080): TPM_RC_AUTH_FAIL (0x08E) for a
        // DA-protected entity, TPM_RC_BAD_AUTH (0x0A2) for one with TPMA_NV_NO_DA. NV_Read
        // has one session, so the failure is the index's authorisation.
        matches!(code & 0xBF, 0x8E | 0xA2).then_some(ResponseKind::AuthFail)
    } else {
        // A PIN-fail index at its limit: TPM_RC_AUTH_UNAVAILABLE (RC_VER1 + 0x02F, what
        // libtpms answers) or TPM_RC_NV_AUTHORIZATION (RC_VER1 + 0x049).
        matches!(code & 0xFFF, 0x12F | 0x149).then_some(ResponseKind::NvAuthorization)
    }
}

fn parse_counter(bytes: &[u8]) -> Result<PinCounter> {
    let [a, b, c, d, e, f, g, h] = bytes else {
        return Err(other("a PIN index holds 8 bytes"));
    };
    Ok(PinCounter {
        failures: u32::from_be_bytes([*a, *b, *c, *d]),
        limit: u32::from_be_bytes([*e, *f, *g, *h]),
    })
}

fn curve(alg: Algorithm) -> Result<EccCurve> {
    match alg {
        Algorithm::EccP256 => Ok(EccCurve::NistP256),
        Algorithm::EccP384 => Ok(EccCurve::NistP384),
        other_alg => Err(other(format!("{other_alg:?} is not a curve"))),
    }
}

fn left_pad(bytes: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size.saturating_sub(bytes.len())];
    out.extend_from_slice(bytes);
    out
}

/// r and s as the TPM returns them (big-endian, leading zeros possibly stripped) to the DER
/// ECDSA-Sig-Value the PIV card answers.
fn ecdsa_der(alg: Algorithm, r: &[u8], s: &[u8]) -> Result<Vec<u8>> {
    let bad = |e: ecdsa::Error| other(format!("the TPM's signature is malformed: {e}"));
    match alg {
        Algorithm::EccP256 => {
            let (r, s) = (left_pad(r, 32), left_pad(s, 32));
            let sig = p256::ecdsa::Signature::from_scalars(
                *p256::FieldBytes::from_slice(&r),
                *p256::FieldBytes::from_slice(&s),
            )
            .map_err(bad)?;
            Ok(sig.to_der().as_bytes().to_vec())
        }
        Algorithm::EccP384 => {
            let (r, s) = (left_pad(r, 48), left_pad(s, 48));
            let sig = p384::ecdsa::Signature::from_scalars(
                *p384::FieldBytes::from_slice(&r),
                *p384::FieldBytes::from_slice(&s),
            )
            .map_err(bad)?;
            Ok(sig.to_der().as_bytes().to_vec())
        }
        _ => Err(other("not an EC algorithm")),
    }
}

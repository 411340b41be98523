//! One TPM virtual smart card: the shared PIV applet over [`TpmKeyStore`], whose keys are
//! TPM objects and whose PIN and PUK are TPM PIN-fail indices, and the card's file in the
//! agent's data directory.
//!
//! What the card file holds is useless without this TPM and the PIN: wrapped key blobs that
//! load only under this TPM's storage primary, the handles and name of the card's PIN
//! indices, and the applet's state without any PIN or PUK value (see
//! [`tessera_piv::card::References`]). The management key is in the file: it lets whoever
//! holds the file replace keys and objects (as on any PIV card the management key does),
//! never use a key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tessera_carrier::store::StateFile;
use tessera_piv::card::cert::{self, CertTemplate};
use tessera_piv::card::{
    pad8, CardState, Checked, KeyError, KeyInfo, KeyStore, Origin, Persist, PublicKey, Reference,
    References, DEFAULT_PIN, DEFAULT_PUK, DEFAULT_RETRIES,
};
use tessera_piv::piv::{object, Algorithm, KeyRef, PinPolicy};
use tss_esapi::structures::Public;
use zeroize::Zeroizing;

use crate::tpm::{policy_secret_digest, KeyBlob, PinCheck, Tpm, FIRST_NV_INDEX};
use crate::worker::TpmClient;

/// The card file's format version.
pub const FORMAT: u32 = 1;

/// A slot key as the card file keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredKey {
    pub info: KeyInfo,
    /// `TPM2B_PUBLIC` as the TPM marshals it.
    #[serde(with = "hex::serde")]
    pub public: Vec<u8>,
    /// `TPM2B_PRIVATE`: the key wrapped by this TPM's storage primary.
    #[serde(with = "hex::serde")]
    pub private: Vec<u8>,
}

impl StoredKey {
    fn blob(&self) -> KeyBlob {
        KeyBlob {
            public: self.public.clone(),
            private: self.private.clone(),
        }
    }
}

/// What identifies a card besides its applet state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CardMeta {
    pub name: String,
    /// Random; mixed into the PIN and PUK authValues so that equal PINs on two cards give
    /// different TPM secrets.
    #[serde(with = "hex::serde")]
    pub id: Vec<u8>,
    /// The loopback port vpcd connects to for this card's reader slot.
    pub port: u16,
    pub pin_index: u32,
    pub puk_index: u32,
    /// The PIN index's name: every PIN-protected key's policy is bound to it.
    #[serde(with = "hex::serde")]
    pub pin_index_name: Vec<u8>,
    /// Random authPolicy values of the two indices, which make their names unique: a new
    /// PIN tag (at RESET) kills every key bound to the old name.
    #[serde(with = "hex::serde")]
    pub pin_index_tag: Vec<u8>,
    #[serde(with = "hex::serde")]
    pub puk_index_tag: Vec<u8>,
    /// The issuer's carrier this card was enrolled as (what a renewal names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    /// The serials of a renewal the card carries but the issuer has not yet been told of
    /// (its confirmation supersedes the old certificates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unconfirmed: Vec<String>,
}

/// A fresh random index tag.
fn new_tag() -> Vec<u8> {
    let mut tag = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut tag);
    tag
}

/// The card file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CardFile {
    pub format: u32,
    pub meta: CardMeta,
    pub card: CardState,
    pub keys: BTreeMap<KeyRef, StoredKey>,
    /// A renewal's new keys, until its certificates arrive and they replace the slots'.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending: BTreeMap<KeyRef, StoredKey>,
}

/// The TPM behind the applet: keys, PIN and PUK, and the card file.
#[derive(Debug)]
pub struct TpmKeyStore {
    tpm: TpmClient,
    file: StateFile,
    meta: CardMeta,
    keys: BTreeMap<KeyRef, StoredKey>,
    /// The keys as last written, for [`KeyStore::rollback`].
    saved: BTreeMap<KeyRef, StoredKey>,
    /// A renewal's new keys (see [`CardFile::pending`]); the applet never sees them.
    pending: BTreeMap<KeyRef, StoredKey>,
    /// The PIN index's authValue from the last right PIN, until the PIN's security status
    /// ends: what `PolicySecret` needs for each use of a PIN-protected key.
    pin_auth: Option<Zeroizing<Vec<u8>>>,
}

/// A PIN index and the authValue that satisfies it.
type PinAuth = (u32, Zeroizing<Vec<u8>>);

/// The authValue of a card's PIN or PUK index: SHA-256 over a label, the card's id and the
/// value as it travels (8 bytes, `FF`-padded).
fn reference_auth(id: &[u8], which: Reference, value: &[u8]) -> Zeroizing<Vec<u8>> {
    let label: &[u8] = match which {
        Reference::Pin => b"tessera-agent vsc PIN\0",
        Reference::Puk => b"tessera-agent vsc PUK\0",
    };
    Zeroizing::new(
        Sha256::new()
            .chain_update(label)
            .chain_update(id)
            .chain_update(value)
            .finalize()
            .to_vec(),
    )
}

fn backend(e: impl std::fmt::Display) -> KeyError {
    KeyError::Backend(e.to_string())
}

impl TpmKeyStore {
    fn new(
        tpm: TpmClient,
        file: StateFile,
        meta: CardMeta,
        keys: BTreeMap<KeyRef, StoredKey>,
        pending: BTreeMap<KeyRef, StoredKey>,
    ) -> Self {
        Self {
            tpm,
            file,
            saved: keys.clone(),
            keys,
            pending,
            meta,
            pin_auth: None,
        }
    }

    /// Opens a card for the applet: its key store and the state to start the applet with,
    /// after [`TpmKeyStore::reconcile`]; what reconciling found is in the warnings.
    pub fn open(
        tpm: &TpmClient,
        file: StateFile,
        card: CardFile,
    ) -> anyhow::Result<(Self, CardState, Vec<String>)> {
        let mut store = Self::new(tpm.clone(), file, card.meta, card.keys, card.pending);
        let warnings = store.reconcile()?;
        if !warnings.is_empty() {
            store.persist(&card.card, Persist::Change)?;
        }
        Ok((store, card.card, warnings))
    }

    /// Brings the card file's view of the PIN and PUK indices in line with the TPM's after
    /// a cut between two of their changes (a redefinition is an undefine and a define):
    /// - the PIN index has another name than the keys are bound to (a RESET whose file
    ///   write was lost): without PIN-protected keys the TPM's name and tag are taken;
    /// - the PIN index is missing: the keys bound to it can never be used again; they are
    ///   dropped and a new index with the factory PIN and a new tag is made (the card must
    ///   be personalised again);
    /// - the PUK index is missing: a new one with a random PUK nobody knows, so that a cut
    ///   never leaves a known PUK beside live keys; the card then cannot be unblocked.
    pub fn reconcile(&mut self) -> anyhow::Result<Vec<String>> {
        let (pin, puk) = (self.meta.pin_index, self.meta.puk_index);
        let (pin_public, puk_public) = self.tpm.call(move |tpm| -> crate::tpm::Result<_> {
            Ok((tpm.index_public(pin)?, tpm.index_public(puk)?))
        })??;
        let mut warnings = Vec::new();
        let name = &self.meta.name;
        let pin_bound = |keys: &BTreeMap<KeyRef, StoredKey>| {
            keys.values().any(|k| k.info.pin_policy != PinPolicy::Never)
        };
        match pin_public {
            Some((tpm_name, tag)) if tpm_name == self.meta.pin_index_name => {
                self.meta.pin_index_tag = tag;
            }
            Some((tpm_name, tag)) if !pin_bound(&self.keys) => {
                self.meta.pin_index_name = tpm_name;
                self.meta.pin_index_tag = tag;
                warnings.push(format!(
                    "card {name}: took the TPM's PIN index as it is (the card file missed its last change)"
                ));
            }
            Some(_) => warnings.push(format!(
                "card {name}: the PIN index is not the one the card's keys are bound to; those keys cannot be used: reset the card and issue it again"
            )),
            None => {
                self.keys.retain(|_, k| k.info.pin_policy == PinPolicy::Never);
                self.pending.clear();
                self.meta.pin_index_tag = new_tag();
                let auth = reference_auth(&self.meta.id, Reference::Pin, &pad8(DEFAULT_PIN));
                let tag = self.meta.pin_index_tag.clone();
                self.meta.pin_index_name = self.tpm.call(move |tpm| {
                    tpm.define_pin_index(pin, &auth, DEFAULT_RETRIES, &tag)
                })??;
                warnings.push(format!(
                    "card {name}: its PIN index was missing (a change cut short); the keys that needed the PIN are gone and the PIN is the factory one: personalise the card again"
                ));
            }
        }
        match puk_public {
            Some((_, tag)) => self.meta.puk_index_tag = tag,
            None => {
                let mut unknown = [0u8; 8];
                rand::rngs::OsRng.fill_bytes(&mut unknown);
                let auth = reference_auth(&self.meta.id, Reference::Puk, &unknown);
                self.meta.puk_index_tag = new_tag();
                let tag = self.meta.puk_index_tag.clone();
                self.tpm
                    .call(move |tpm| tpm.define_pin_index(puk, &auth, DEFAULT_RETRIES, &tag))??;
                warnings.push(format!(
                    "card {name}: its PUK index was missing (a change cut short); it has a random PUK now, so the PIN cannot be unblocked: personalise the card again"
                ));
            }
        }
        self.saved.clone_from(&self.keys);
        Ok(warnings)
    }

    pub fn meta(&self) -> &CardMeta {
        &self.meta
    }

    pub fn meta_mut(&mut self) -> &mut CardMeta {
        &mut self.meta
    }

    /// A new key for `slot` that does not yet replace the slot's: a renewal's, kept with
    /// the card file until [`TpmKeyStore::install_pending`] (the applet never sees it).
    pub fn generate_pending(
        &mut self,
        slot: KeyRef,
        alg: Algorithm,
        pin_policy: PinPolicy,
    ) -> Result<KeyInfo, KeyError> {
        let (info, key) = self.create(alg, pin_policy, 1)?;
        self.pending.insert(slot, key);
        Ok(info)
    }

    /// The pending keys: slot, public key and blob.
    pub fn pending(&self) -> impl Iterator<Item = (KeyRef, &KeyInfo, KeyBlob)> {
        self.pending.iter().map(|(s, k)| (*s, &k.info, k.blob()))
    }

    /// Drops the pending keys (a renewal started again makes new ones).
    pub fn clear_pending(&mut self) {
        self.pending.clear();
    }

    /// Moves the key in `from` to `to` (a renewed card's old decryption key into a
    /// retired slot); written at the next persist.
    pub fn retire(&mut self, from: KeyRef, to: KeyRef) {
        if let Some(key) = self.keys.remove(&from) {
            self.keys.insert(to, key);
        }
    }

    /// The pending keys replace the slots' keys (written at the next persist).
    pub fn install_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.keys.extend(pending);
    }

    /// The wrapped key in `slot` (what the TPM loads; useless elsewhere).
    pub fn blob(&self, slot: KeyRef) -> Option<KeyBlob> {
        self.keys.get(&slot).map(StoredKey::blob)
    }

    fn index(&self, which: Reference) -> u32 {
        match which {
            Reference::Pin => self.meta.pin_index,
            Reference::Puk => self.meta.puk_index,
        }
    }

    /// The PIN index and authValue a key's use needs, per its PIN policy.
    fn authorisation(&self, key: &StoredKey) -> Result<Option<PinAuth>, KeyError> {
        if key.info.pin_policy == PinPolicy::Never {
            return Ok(None);
        }
        match &self.pin_auth {
            Some(auth) => Ok(Some((self.meta.pin_index, auth.clone()))),
            // The applet refuses before it gets here; the TPM would refuse anyway.
            None => Err(KeyError::Backend("the PIN is not verified".into())),
        }
    }
}

impl TpmKeyStore {
    /// A new key in the TPM, bound to the PIN index unless its policy is never.
    fn create(
        &mut self,
        alg: Algorithm,
        pin_policy: PinPolicy,
        touch_policy: u8,
    ) -> Result<(KeyInfo, StoredKey), KeyError> {
        if !matches!(
            alg,
            Algorithm::EccP256 | Algorithm::EccP384 | Algorithm::Rsa2048
        ) {
            return Err(KeyError::UnsupportedAlgorithm(alg));
        }
        let policy = (pin_policy != PinPolicy::Never)
            .then(|| policy_secret_digest(&self.meta.pin_index_name));
        let blob = self
            .tpm
            .call(move |tpm| tpm.create_key(alg, policy))
            .map_err(backend)?
            .map_err(backend)?;
        let public = public_key(alg, &Tpm::public_of(&blob).map_err(backend)?)?;
        let info = KeyInfo {
            alg,
            pin_policy,
            touch_policy,
            origin: Origin::Generated,
            public,
        };
        let key = StoredKey {
            info: info.clone(),
            public: blob.public,
            private: blob.private,
        };
        Ok((info, key))
    }
}

impl KeyStore for TpmKeyStore {
    fn generate(
        &mut self,
        slot: KeyRef,
        alg: Algorithm,
        pin_policy: PinPolicy,
        touch_policy: u8,
    ) -> Result<KeyInfo, KeyError> {
        let (info, key) = self.create(alg, pin_policy, touch_policy)?;
        self.keys.insert(slot, key);
        Ok(info)
    }

    fn info(&self, slot: KeyRef) -> Option<&KeyInfo> {
        self.keys.get(&slot).map(|k| &k.info)
    }

    fn sign(&mut self, slot: KeyRef, input: &[u8]) -> Result<Vec<u8>, KeyError> {
        let key = self.keys.get(&slot).ok_or(KeyError::NoKey(slot))?;
        let expected = match key.info.alg {
            Algorithm::EccP256 => 32,
            Algorithm::EccP384 => 48,
            Algorithm::Rsa2048 => 256,
            other => return Err(KeyError::UnsupportedAlgorithm(other)),
        };
        if input.len() != expected {
            return Err(KeyError::InvalidInput(
                "input of the wrong size for the key",
            ));
        }
        let auth = self.authorisation(key)?;
        let (blob, alg, input) = (key.blob(), key.info.alg, input.to_vec());
        self.tpm
            .call(move |tpm| {
                let pin = auth.as_ref().map(|(i, a)| (*i, a.as_slice()));
                tpm.sign(&blob, alg, &input, pin)
            })
            .map_err(backend)?
            .map_err(backend)
    }

    fn ecdh(&mut self, slot: KeyRef, peer_point: &[u8]) -> Result<Vec<u8>, KeyError> {
        let key = self.keys.get(&slot).ok_or(KeyError::NoKey(slot))?;
        // The point is checked here, so that a TPM error below is a TPM error.
        let on_curve = match key.info.alg {
            Algorithm::EccP256 => p256::PublicKey::from_sec1_bytes(peer_point).is_ok(),
            Algorithm::EccP384 => p384::PublicKey::from_sec1_bytes(peer_point).is_ok(),
            _ => return Err(KeyError::InvalidInput("ECDH needs an EC key")),
        };
        if !on_curve || peer_point.first() != Some(&0x04) {
            return Err(KeyError::InvalidInput("peer point not on the curve"));
        }
        let auth = self.authorisation(key)?;
        let (blob, alg, peer) = (key.blob(), key.info.alg, peer_point.to_vec());
        self.tpm
            .call(move |tpm| {
                let pin = auth.as_ref().map(|(i, a)| (*i, a.as_slice()));
                tpm.ecdh(&blob, alg, &peer, pin)
            })
            .map_err(backend)?
            .map_err(backend)
    }

    fn delete(&mut self, slot: KeyRef) {
        // The wrapped blob is all there is of the key outside the TPM: dropping it from the
        // file is deleting the key.
        self.keys.remove(&slot);
    }

    fn persist(&mut self, state: &CardState, why: Persist) -> Result<(), KeyError> {
        let file = CardFileRef {
            format: FORMAT,
            meta: &self.meta,
            card: state,
            keys: &self.keys,
            pending: &self.pending,
        };
        self.file.save(&file, why).map_err(backend)?;
        self.saved.clone_from(&self.keys);
        Ok(())
    }

    fn rollback(&mut self) {
        self.keys.clone_from(&self.saved);
    }

    fn references(&mut self) -> Option<&mut dyn References> {
        Some(self)
    }
}

impl References for TpmKeyStore {
    fn counter(&mut self, which: Reference) -> Result<(u8, u8), KeyError> {
        let index = self.index(which);
        let counter = self
            .tpm
            .call(move |tpm| tpm.pin_counter(index))
            .map_err(backend)?
            .map_err(backend)?;
        Ok((counter.left(), counter.limit_u8()))
    }

    fn check(&mut self, which: Reference, offered: &[u8]) -> Result<Checked, KeyError> {
        let index = self.index(which);
        let auth = reference_auth(&self.meta.id, which, offered);
        let offered_auth = auth.clone();
        // One TPM command for a right value; a wrong one also reads what is left.
        let (check, left) = self
            .tpm
            .call(move |tpm| -> crate::tpm::Result<_> {
                let check = tpm.check_pin(index, &offered_auth)?;
                let left = match check {
                    PinCheck::Wrong => tpm.pin_counter(index)?.left(),
                    PinCheck::Right | PinCheck::Blocked => 0,
                };
                Ok((check, left))
            })
            .map_err(backend)?
            .map_err(backend)?;
        match check {
            PinCheck::Right => {
                if which == Reference::Pin {
                    self.pin_auth = Some(auth);
                }
                Ok(Checked::Right)
            }
            PinCheck::Wrong => Ok(Checked::Wrong { left }),
            PinCheck::Blocked => Ok(Checked::Wrong { left: 0 }),
        }
    }

    fn set(&mut self, which: Reference, value: &[u8], tries: u8) -> Result<(), KeyError> {
        let index = self.index(which);
        let auth = reference_auth(&self.meta.id, which, value);
        let tag = match which {
            Reference::Pin => self.meta.pin_index_tag.clone(),
            Reference::Puk => self.meta.puk_index_tag.clone(),
        };
        let new_auth = auth.clone();
        if which == Reference::Pin {
            self.pin_auth = None;
        }
        let name = self
            .tpm
            .call(move |tpm| tpm.define_pin_index(index, &new_auth, tries, &tag))
            .map_err(backend)?
            .map_err(backend)?;
        if which == Reference::Pin {
            if name != self.meta.pin_index_name {
                return Err(KeyError::Backend(
                    "the PIN index came back with another name: the card's keys are bound to the old one".into(),
                ));
            }
            self.pin_auth = Some(auth);
        }
        Ok(())
    }

    fn reset(&mut self, pin: &[u8], puk: &[u8], tries: u8) -> Result<(), KeyError> {
        self.pin_auth = None;
        // A reset card is no longer the issuer's carrier, and a renewal's keys bound to the
        // old PIN index could never be used.
        self.pending.clear();
        self.meta.carrier = None;
        self.meta.unconfirmed.clear();
        let (pin_index, puk_index) = (self.meta.pin_index, self.meta.puk_index);
        let (pin_tag, puk_tag) = (new_tag(), new_tag());
        let pin_auth = reference_auth(&self.meta.id, Reference::Pin, pin);
        let puk_auth = reference_auth(&self.meta.id, Reference::Puk, puk);
        let (tags, tags_for_tpm) = ((pin_tag.clone(), puk_tag.clone()), (pin_tag, puk_tag));
        let name = self
            .tpm
            .call(move |tpm| -> crate::tpm::Result<Vec<u8>> {
                let name = tpm.define_pin_index(pin_index, &pin_auth, tries, &tags_for_tpm.0)?;
                tpm.define_pin_index(puk_index, &puk_auth, tries, &tags_for_tpm.1)?;
                Ok(name)
            })
            .map_err(backend)?
            .map_err(backend)?;
        // Written with the card file at the applet's next write; until then, and should
        // that write be lost, `TpmKeyStore::reconcile` adopts the TPM's name on start (the
        // card has no PIN-protected key left to mismatch).
        self.meta.pin_index_name = name;
        (self.meta.pin_index_tag, self.meta.puk_index_tag) = tags;
        Ok(())
    }

    fn forget_pin(&mut self) {
        self.pin_auth = None;
    }
}

/// The card file, borrowed, for writing.
#[derive(Serialize)]
struct CardFileRef<'a> {
    format: u32,
    meta: &'a CardMeta,
    card: &'a CardState,
    keys: &'a BTreeMap<KeyRef, StoredKey>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pending: &'a BTreeMap<KeyRef, StoredKey>,
}

/// The PIV public key of a TPM public area.
fn public_key(alg: Algorithm, public: &Public) -> Result<PublicKey, KeyError> {
    let corrupt = || KeyError::Backend("the TPM answered an unexpected public area".into());
    match public {
        Public::Ecc { unique, .. } => {
            let size = if alg == Algorithm::EccP384 { 48 } else { 32 };
            let pad = |v: &[u8]| -> Result<Vec<u8>, KeyError> {
                if v.len() > size {
                    return Err(corrupt());
                }
                let mut out = vec![0u8; size - v.len()];
                out.extend_from_slice(v);
                Ok(out)
            };
            let mut point = vec![0x04];
            point.extend(pad(unique.x().value())?);
            point.extend(pad(unique.y().value())?);
            Ok(PublicKey::Ec { alg, point })
        }
        Public::Rsa {
            unique, parameters, ..
        } => {
            let exponent = match parameters.exponent().value() {
                0 => 65_537u32,
                e => e,
            };
            let exponent = exponent.to_be_bytes();
            let start = exponent.iter().position(|b| *b != 0).unwrap_or(3);
            Ok(PublicKey::Rsa {
                modulus: unique.value().to_vec(),
                exponent: exponent[start..].to_vec(),
            })
        }
        _ => Err(corrupt()),
    }
}

/// The agent's data directory: one file per card under `cards/`.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// The loopback ports the agent gives cards: below 1024, so that only root (and the agent,
/// with `CAP_NET_BIND_SERVICE`) can listen there. Were they unprivileged, any local user
/// could bind a card's port while the agent is down (a restart) and have pcscd's vpcd
/// connect to their own fake card, which would then receive the PIN of whoever uses it.
/// 921–952 are free in IANA's registry and in Debian's /etc/services (953 is BIND's rndc).
pub const FIRST_PORT: u16 = 921;
pub const LAST_PORT: u16 = 952;

/// A card's port must be privileged (see [`FIRST_PORT`]) and leave room for its reader
/// entry's second slot.
pub fn check_port(port: u16) -> Result<()> {
    if port == 0 || port >= 1023 {
        bail!(
            "card ports are 1 to 1022 (privileged, so that no other user can listen in a card's place; the agent needs CAP_NET_BIND_SERVICE), got {port}"
        );
    }
    Ok(())
}

impl DataDir {
    /// Opens (creating it, private to the agent's user) the data directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let root = root.into();
        let cards = root.join("cards");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cards)
            .with_context(|| format!("creating {}", cards.display()))?;
        for dir in [&root, &cards] {
            let mode = std::fs::metadata(dir)?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("making {} private", dir.display()))?;
            }
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the data directory for this process alone: `serve` holds it while it runs, and
    /// `vsc create` and `delete` while they change cards, so that no card file is written
    /// by two processes and no card is deleted under a serving agent.
    pub fn lock(&self) -> Result<std::fs::File> {
        let path = self.root.join("agent.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "another tessera-agent is using {} (the service serving the cards?): stop it first",
                self.root.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }

    fn card_path(&self, name: &str) -> PathBuf {
        self.root.join("cards").join(format!("{name}.json"))
    }

    /// Every card, sorted by name.
    pub fn cards(&self) -> Result<Vec<CardFile>> {
        let mut out = Vec::new();
        let dir = self.root.join("cards");
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let card = load_card(&path)?;
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            check_name(&card.meta.name)?;
            if card.meta.name != stem {
                bail!(
                    "card file {} names card {:?}: a card file is named after its card",
                    path.display(),
                    card.meta.name
                );
            }
            check_port(card.meta.port).with_context(|| format!("card file {}", path.display()))?;
            if let Some(other) = out.iter().find(|o: &&CardFile| {
                o.meta.port == card.meta.port
                    || [o.meta.pin_index, o.meta.puk_index]
                        .iter()
                        .any(|i| *i == card.meta.pin_index || *i == card.meta.puk_index)
            }) {
                bail!(
                    "cards {:?} and {:?} share a port or a TPM index (a copied card file?)",
                    other.meta.name,
                    card.meta.name
                );
            }
            out.push(card);
        }
        out.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        Ok(out)
    }

    /// One card by name.
    pub fn card(&self, name: &str) -> Result<CardFile> {
        check_name(name)?;
        let path = self.card_path(name);
        if !path.exists() {
            bail!("no virtual card named {name:?} (see `tessera-agent vsc list`)");
        }
        load_card(&path)
    }

    /// The state file of a card, for the applet's writes.
    pub fn state_file(&self, name: &str) -> StateFile {
        StateFile::new(self.card_path(name))
    }

    /// Makes a new card: PIN and PUK indices in the TPM with the factory values (PIN 123456,
    /// PUK 12345678, 3 tries each, to be changed at personalisation), an attestation key
    /// (`F9`) in the TPM with its certificate in `5FFF01`, and the card file.
    pub fn create(
        &self,
        tpm: &TpmClient,
        name: &str,
        port: Option<u16>,
        now: SystemTime,
    ) -> Result<CardFile> {
        check_name(name)?;
        let path = self.card_path(name);
        if path.exists() {
            bail!("a virtual card named {name:?} exists already");
        }
        let existing = self.cards()?;
        let port = match port {
            Some(p) => {
                check_port(p)?;
                if let Some(other) = existing.iter().find(|c| c.meta.port == p) {
                    bail!("port {p} belongs to card {:?}", other.meta.name);
                }
                p
            }
            None => (FIRST_PORT..=LAST_PORT)
                .find(|p| existing.iter().all(|c| c.meta.port != *p))
                .with_context(|| {
                    format!("every port from {FIRST_PORT} to {LAST_PORT} has a card")
                })?,
        };
        let mut rng = rand::rngs::OsRng;
        let mut id = vec![0u8; 16];
        rng.fill_bytes(&mut id);
        let serial = 10_000_000 + rng.next_u32() % 80_000_000;
        let taken: Vec<u32> = existing
            .iter()
            .flat_map(|c| [c.meta.pin_index, c.meta.puk_index])
            .collect();
        let pin_auth = reference_auth(&id, Reference::Pin, &pad8(DEFAULT_PIN));
        let puk_auth = reference_auth(&id, Reference::Puk, &pad8(DEFAULT_PUK));
        let (pin_index_tag, puk_index_tag) = (new_tag(), new_tag());
        let tags = (pin_index_tag.clone(), puk_index_tag.clone());
        let (pin_index, puk_index, pin_index_name) = tpm
            .call(move |tpm| -> crate::tpm::Result<_> {
                let pin_index = tpm.free_nv_index(FIRST_NV_INDEX, &taken)?;
                let name = tpm.define_pin_index(pin_index, &pin_auth, DEFAULT_RETRIES, &tags.0)?;
                let mut taken = taken;
                taken.push(pin_index);
                let puk_index = tpm.free_nv_index(FIRST_NV_INDEX, &taken)?;
                tpm.define_pin_index(puk_index, &puk_auth, DEFAULT_RETRIES, &tags.1)?;
                Ok((pin_index, puk_index, name))
            })?
            .context("defining the card's PIN and PUK indices in the TPM")?;
        let meta = CardMeta {
            name: name.to_owned(),
            id,
            port,
            pin_index,
            puk_index,
            pin_index_name,
            pin_index_tag,
            puk_index_tag,
            carrier: None,
            unconfirmed: Vec::new(),
        };
        let mut card = CardState::factory(&mut rng, serial);
        let mut store = TpmKeyStore::new(
            tpm.clone(),
            self.state_file(name),
            meta,
            BTreeMap::new(),
            BTreeMap::new(),
        );
        let made = (|| -> Result<()> {
            attestation(&mut store, &mut card, serial, now)?;
            // The state as the applet keeps it over a key store that holds the PIN and
            // PUK: no value of either in the file, not even the factory ones.
            let (card, mut store) =
                tessera_piv::card::Applet::new(card, store, tessera_piv::card::Interface::Contact)
                    .into_parts();
            store.persist(&card, Persist::Change)?;
            Ok(())
        })();
        if let Err(e) = made {
            let _ = tpm.call(move |tpm| {
                let _ = tpm.undefine(pin_index);
                let _ = tpm.undefine(puk_index);
            });
            return Err(e);
        }
        self.card(name)
    }

    /// Deletes a card: its PIN and PUK indices leave the TPM (so no copy of its keys can
    /// be used again, whatever PIN is offered) and its file is removed.
    pub fn delete(&self, tpm: &TpmClient, name: &str) -> Result<()> {
        let card = self.card(name)?;
        let (pin, puk) = (card.meta.pin_index, card.meta.puk_index);
        tpm.call(move |tpm| -> crate::tpm::Result<()> {
            tpm.undefine(pin)?;
            tpm.undefine(puk)
        })?
        .context("removing the card's PIN indices from the TPM")?;
        std::fs::remove_file(self.card_path(name))
            .with_context(|| format!("removing {}", self.card_path(name).display()))
    }
}

fn load_card(path: &Path) -> Result<CardFile> {
    let file: CardFile = StateFile::new(path).load()?;
    if file.format != FORMAT {
        bail!(
            "card file {} has format {}, this agent reads format {FORMAT}",
            path.display(),
            file.format
        );
    }
    Ok(file)
}

/// Card names become file names and reader labels: letters, digits, `-` and `_`, 1 to 32.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        bail!("card names are 1 to 32 letters, digits, '-' or '_' (got {name:?})");
    }
    Ok(())
}

/// The attestation key (`F9`, generated in the TPM, PIN policy never) and its self-issued
/// certificate in `5FFF01`, so that hosts can ask the card to attest its keys as they do
/// a YubiKey. The issuer does not take this as proof that a key is in a TPM (anyone can
/// self-issue); enrolment proves that with the TPM's own attestation.
fn attestation(
    store: &mut TpmKeyStore,
    card: &mut CardState,
    serial: u32,
    now: SystemTime,
) -> Result<()> {
    let f9 = store.generate(KeyRef::ATTESTATION, Algorithm::EccP256, PinPolicy::Never, 1)?;
    let spki = f9.public.to_spki_der()?;
    let name = x509_cert::name::Name::from_str(&format!(
        "CN=Tessera TPM Virtual Card Attestation,serialNumber={serial}"
    ))?;
    let mut serial_bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut serial_bytes);
    serial_bytes[0] = (serial_bytes[0] & 0x7F) | 0x01;
    let validity = cert::validity(now, 20 * 365)?;
    let basic = der::Encode::to_der(&x509_cert::ext::pkix::BasicConstraints {
        ca: true,
        path_len_constraint: Some(0),
    })?;
    let der = cert::build(
        CertTemplate {
            serial: &serial_bytes,
            issuer: name.clone(),
            subject: name,
            validity,
            spki_der: &spki,
            extensions: vec![cert::extension(
                const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS,
                true,
                &basic,
            )?],
        },
        cert::ecdsa_with_sha256(),
        |tbs| {
            let digest = Sha256::digest(tbs);
            store
                .sign(KeyRef::ATTESTATION, &digest)
                .map_err(|e| e.to_string())
        },
    )?;
    card.set_object(object::YK_ATTESTATION_CERT, cert::object_content(&der));
    Ok(())
}

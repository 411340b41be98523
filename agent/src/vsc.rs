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
    /// The PIN index's name when the card was made: every PIN-protected key's policy is
    /// bound to it.
    #[serde(with = "hex::serde")]
    pub pin_index_name: Vec<u8>,
}

/// The card file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CardFile {
    pub format: u32,
    pub meta: CardMeta,
    pub card: CardState,
    pub keys: BTreeMap<KeyRef, StoredKey>,
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
    pub fn new(
        tpm: TpmClient,
        file: StateFile,
        meta: CardMeta,
        keys: BTreeMap<KeyRef, StoredKey>,
    ) -> Self {
        Self {
            tpm,
            file,
            saved: keys.clone(),
            keys,
            meta,
            pin_auth: None,
        }
    }

    pub fn meta(&self) -> &CardMeta {
        &self.meta
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

impl KeyStore for TpmKeyStore {
    fn generate(
        &mut self,
        slot: KeyRef,
        alg: Algorithm,
        pin_policy: PinPolicy,
        touch_policy: u8,
    ) -> Result<KeyInfo, KeyError> {
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
        self.keys.insert(
            slot,
            StoredKey {
                info: info.clone(),
                public: blob.public,
                private: blob.private,
            },
        );
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
        if !matches!(key.info.alg, Algorithm::EccP256 | Algorithm::EccP384) {
            return Err(KeyError::InvalidInput("ECDH needs an EC key"));
        }
        let auth = self.authorisation(key)?;
        let (blob, alg, peer) = (key.blob(), key.info.alg, peer_point.to_vec());
        self.tpm
            .call(move |tpm| {
                let pin = auth.as_ref().map(|(i, a)| (*i, a.as_slice()));
                tpm.ecdh(&blob, alg, &peer, pin)
            })
            .map_err(backend)?
            .map_err(|_| KeyError::InvalidInput("peer point not on the curve"))
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
        let (check, counter) = self
            .tpm
            .call(move |tpm| -> crate::tpm::Result<_> {
                let check = tpm.check_pin(index, &offered_auth)?;
                Ok((check, tpm.pin_counter(index)?))
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
            PinCheck::Wrong => Ok(Checked::Wrong {
                left: counter.left(),
            }),
            PinCheck::Blocked => Ok(Checked::Wrong { left: 0 }),
        }
    }

    fn set(&mut self, which: Reference, value: &[u8], tries: u8) -> Result<(), KeyError> {
        let index = self.index(which);
        let auth = reference_auth(&self.meta.id, which, value);
        let name = self
            .tpm
            .call(move |tpm| tpm.define_pin_index(index, &auth, tries))
            .map_err(backend)?
            .map_err(backend)?;
        if which == Reference::Pin {
            self.pin_auth = None;
            if name != self.meta.pin_index_name {
                return Err(KeyError::Backend(
                    "the PIN index came back with another name: the card's keys are bound to the old one".into(),
                ));
            }
        }
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

/// The first loopback port the agent gives a card (vpcd's own default is 35963; the agent
/// keeps clear of it so that a stock vpcd configuration and the agent do not collide).
pub const FIRST_PORT: u16 = 35_971;

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
            out.push(load_card(&path)?);
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
                if let Some(other) = existing.iter().find(|c| c.meta.port == p) {
                    bail!("port {p} belongs to card {:?}", other.meta.name);
                }
                p
            }
            None => (FIRST_PORT..u16::MAX)
                .find(|p| existing.iter().all(|c| c.meta.port != *p))
                .context("no free port")?,
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
        let (pin_index, puk_index, pin_index_name) = tpm
            .call(move |tpm| -> crate::tpm::Result<_> {
                let pin_index = tpm.free_nv_index(FIRST_NV_INDEX, &taken)?;
                let name = tpm.define_pin_index(pin_index, &pin_auth, DEFAULT_RETRIES)?;
                let mut taken = taken;
                taken.push(pin_index);
                let puk_index = tpm.free_nv_index(FIRST_NV_INDEX, &taken)?;
                tpm.define_pin_index(puk_index, &puk_auth, DEFAULT_RETRIES)?;
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
        };
        let mut card = CardState::factory(&mut rng, serial);
        let mut store = TpmKeyStore::new(
            tpm.clone(),
            self.state_file(name),
            meta.clone(),
            BTreeMap::new(),
        );
        let made = (|| -> Result<()> {
            attestation(&mut store, &mut card, serial, now)?;
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
    let mut content = Vec::new();
    tessera_piv::tlv::push(&mut content, 0x70, &der);
    tessera_piv::tlv::push(&mut content, 0x71, &[0]);
    tessera_piv::tlv::push(&mut content, 0xFE, &[]);
    card.set_object(object::YK_ATTESTATION_CERT, content);
    Ok(())
}

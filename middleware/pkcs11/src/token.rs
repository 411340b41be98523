//! A PIV card as a PKCS#11 token: what it is (label, serial from the CHUID), its objects
//! (read once, and cached by CHUID for the life of the process), its PIN state, and the
//! card operations sessions need.

use std::collections::HashMap;
use std::sync::Mutex;

use cryptoki_sys as sys;
use tessera_piv::apdu::StatusWord;
use tessera_piv::host::{Error as HostError, PinStatus, PivClient, Transport};
use tessera_piv::piv::{object, KeyRef};
use tessera_piv::tlv;
use zeroize::Zeroizing;

use crate::object::{objects_for_certificate, Object};
use crate::{Error, Result};

/// A card connection the module can use from any thread.
pub type Card = PivClient<Box<dyn Transport + Send>>;

/// The key slots whose certificates become objects.
const SLOTS: [KeyRef; 4] = [
    KeyRef::AUTHENTICATION,
    KeyRef::SIGNATURE,
    KeyRef::KEY_MANAGEMENT,
    KeyRef::CARD_AUTHENTICATION,
];

/// Certificates by card GUID (the CHUID identifies the card, SP 800-73-4 Part 1 §3.1.2):
/// a card seen before in this process is not read again. Only public data is cached —
/// never a PIN.
static CERT_CACHE: Mutex<Option<HashMap<[u8; 16], Certificates>>> = Mutex::new(None);

/// The certificates of a card, by key slot.
type Certificates = Vec<(KeyRef, Vec<u8>)>;

/// The PIN state as token flags show it (PKCS#11 §5.5 CK_TOKEN_INFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinState {
    Ok,
    CountLow,
    FinalTry,
    Locked,
    /// Verified: the card reports no counter then.
    Verified,
}

/// One card in a reader.
pub struct Token {
    pub card: Card,
    pub guid: Option<[u8; 16]>,
    pub serial: String,
    pub label: String,
    pub objects: Vec<(sys::CK_OBJECT_HANDLE, Object)>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("serial", &self.serial)
            .field("objects", &self.objects.len())
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Reads a card: SELECT, CHUID, then the certificates (from the cache when the CHUID
    /// is known). `next_handle` numbers the objects.
    pub fn load(mut card: Card, next_handle: &mut sys::CK_OBJECT_HANDLE) -> Result<Self> {
        card.select().map_err(|e| match e {
            HostError::Card(_) => Error::TokenNotPresent,
            other => other.into(),
        })?;
        let guid = match card.get_data(object::CHUID) {
            Ok(chuid) => tlv::find(&chuid, 0x34)
                .ok()
                .flatten()
                .and_then(|g| <[u8; 16]>::try_from(g).ok()),
            Err(HostError::Card(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let cached = guid.and_then(|g| {
            CERT_CACHE
                .lock()
                .ok()
                .and_then(|c| c.as_ref().and_then(|m| m.get(&g).cloned()))
        });
        let certs = match cached {
            Some(certs) => certs,
            None => {
                let mut certs = Vec::new();
                for slot in SLOTS {
                    if let Some(der) = read_certificate(&mut card, slot)? {
                        certs.push((slot, der));
                    }
                }
                if let (Some(g), Ok(mut cache)) = (guid, CERT_CACHE.lock()) {
                    cache
                        .get_or_insert_with(HashMap::new)
                        .insert(g, certs.clone());
                }
                certs
            }
        };
        let mut objects = Vec::new();
        for (slot, der) in &certs {
            // A certificate the module cannot parse hides that slot, not the whole card.
            if let Ok(objs) = objects_for_certificate(*slot, der) {
                for o in objs {
                    *next_handle += 1;
                    objects.push((*next_handle, o));
                }
            }
        }
        let serial: String = match guid {
            Some(g) => g[..8].iter().map(|b| format!("{b:02x}")).collect(),
            None => String::new(),
        };
        // The cardholder's name from the authentication certificate, so that two cards in
        // one NSS database or browser have different token names.
        let label = certs
            .iter()
            .find(|(slot, _)| *slot == KeyRef::AUTHENTICATION)
            .or_else(|| certs.first())
            .and_then(|(_, der)| crate::object::common_name(der))
            .unwrap_or_else(|| format!("PIV {serial}"));
        Ok(Self {
            card,
            guid,
            serial,
            label,
            objects,
        })
    }

    /// The PIN state: GET METADATA where the card has it (counter even while verified),
    /// else VERIFY without data.
    pub fn pin_state(&mut self) -> Result<PinState> {
        if let Ok(meta) = self.card.metadata(KeyRef::PIN) {
            if let Ok(Some([total, left])) = tlv::find(&meta, 0x06) {
                return Ok(counter_state(*left, *total));
            }
        }
        match self.card.pin_status()? {
            PinStatus::Verified => Ok(PinState::Verified),
            PinStatus::Blocked => Ok(PinState::Locked),
            PinStatus::TriesLeft(n) => Ok(counter_state(n, 3)),
        }
    }

    /// VERIFY the PIN.
    pub fn verify(&mut self, pin: &[u8]) -> Result<()> {
        if !(6..=8).contains(&pin.len()) {
            return Err(Error::PinLenRange);
        }
        let pin = Zeroizing::new(pin.to_vec());
        self.card.verify_pin(&pin).map_err(reference_error)
    }

    /// RESET RETRY COUNTER: the PUK sets a new PIN.
    pub fn unblock(&mut self, puk: &[u8], new_pin: &[u8]) -> Result<()> {
        self.card.unblock_pin(puk, new_pin).map_err(reference_error)
    }

    /// CHANGE REFERENCE DATA of the PIN or PUK.
    pub fn change_reference(&mut self, which: KeyRef, old: &[u8], new: &[u8]) -> Result<()> {
        self.card
            .change_reference(which, old, new)
            .map_err(reference_error)
    }

    /// Logs out: VERIFY P1=FF resets the PIN status (SP 800-73-4 Part 2 §3.2.1).
    pub fn logout(&mut self) -> Result<()> {
        let cmd = tessera_piv::apdu::Command::new(0, 0x20, 0xFF, 0x80);
        self.card.call(&cmd).map(drop).map_err(Into::into)
    }

    /// The object with this handle.
    pub fn object(&self, handle: sys::CK_OBJECT_HANDLE) -> Option<&Object> {
        self.objects
            .iter()
            .find(|(h, _)| *h == handle)
            .map(|(_, o)| o)
    }
}

/// Maps the card's answer to a PIN or PUK check.
fn reference_error(e: HostError) -> Error {
    match e {
        HostError::Card(sw) if sw.retries() == Some(0) => Error::PinLocked,
        HostError::Card(sw) if sw.retries().is_some() => Error::PinIncorrect,
        HostError::Card(StatusWord::AUTH_METHOD_BLOCKED) => Error::PinLocked,
        HostError::Card(StatusWord::INCORRECT_DATA) => Error::PinLenRange,
        other => other.into(),
    }
}

fn counter_state(left: u8, total: u8) -> PinState {
    match left {
        0 => PinState::Locked,
        1 => PinState::FinalTry,
        n if n < total => PinState::CountLow,
        _ => PinState::Ok,
    }
}

/// Reads the certificate of a key slot (SP 800-73-4 Part 1 Table 10: `70` certificate,
/// `71` CertInfo, `FE` error detection). Absent object: `None`. Compressed certificates
/// (CertInfo bit 0) are skipped: PIV tokens Tessera issues store them plain.
fn read_certificate(card: &mut Card, slot: KeyRef) -> Result<Option<Vec<u8>>> {
    let tag = slot
        .certificate_object()
        .ok_or(Error::General("no certificate object".into()))?;
    let content = match card.get_data(tag) {
        Ok(c) => c,
        Err(HostError::Card(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Ok(Some(cert)) = tlv::find(&content, 0x70) else {
        return Ok(None);
    };
    if matches!(tlv::find(&content, 0x71), Ok(Some([info, ..])) if info & 1 != 0) {
        return Ok(None);
    }
    Ok(Some(cert.to_vec()))
}

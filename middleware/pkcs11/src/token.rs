//! A PIV card as a PKCS#11 token: what it is (label, serial from the CHUID), its objects
//! (read when the token is loaded), its PIN state, and the card operations sessions need.
//!
//! The card is shared with every other program on the machine. Each operation runs inside
//! [`Token::exclusive`]: a PC/SC transaction, beginning with SELECT of the PIV application
//! when another program may have used the card since (it may have selected another
//! application on a multi-applet card).

use cryptoki_sys as sys;
use tessera_piv::apdu::StatusWord;
use tessera_piv::host::{Access, Error as HostError, PinStatus, PivClient, Transport};
use tessera_piv::piv::{object, Algorithm, KeyRef, PinPolicy};
use tessera_piv::tlv;
use zeroize::Zeroizing;

use crate::object::{objects_for_certificate, KeyMeta, Object};
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

/// A certificate read from a key slot, with the key's metadata where the card has it.
type SlotCertificate = (KeyRef, Vec<u8>, Option<KeyMeta>);

/// The PIN state as token flags show it (PKCS#11 §5.5 CK_TOKEN_INFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinState {
    Ok,
    CountLow,
    FinalTry,
    Locked,
    /// Verified: the card reports no counter then.
    Verified,
    /// The card does not say (over the contactless interface it refuses PIN commands).
    Unknown,
}

/// One card in a reader.
pub struct Token {
    pub card: Card,
    pub guid: Option<[u8; 16]>,
    pub serial: String,
    pub label: String,
    pub objects: Vec<(sys::CK_OBJECT_HANDLE, Object)>,
    /// Reached over the contactless interface: no PIN, only the card-authentication key.
    pub contactless: bool,
    /// The certificates read at load, by slot: with `guid`, what tells this card from
    /// another put in the same reader ([`Token::same_card`]).
    certificates: Vec<(KeyRef, Vec<u8>)>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("serial", &self.serial)
            .field("objects", &self.objects.len())
            .field("contactless", &self.contactless)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Reads a card: SELECT, CHUID, the certificates and each key's metadata. Nothing is
    /// cached across loads: a renewed certificate, or the same card moved between a contact
    /// and a contactless reader, shows what the card holds now. `next_handle` numbers the
    /// objects.
    pub fn load(card: Card, next_handle: &mut sys::CK_OBJECT_HANDLE) -> Result<Self> {
        let mut token = Self {
            card,
            guid: None,
            serial: String::new(),
            label: String::new(),
            objects: Vec::new(),
            contactless: false,
            certificates: Vec::new(),
        };
        token.contactless = token.card.transport().contactless();
        let certs = token.exclusive(false, Token::read_contents)?;
        for (slot, der, meta) in &certs {
            // A certificate the module cannot parse hides that slot, not the whole card.
            if let Ok(objs) = objects_for_certificate(*slot, der, *meta) {
                for o in objs {
                    *next_handle += 1;
                    token.objects.push((*next_handle, o));
                }
            }
        }
        token.certificates = certs.iter().map(|(k, d, _)| (*k, d.clone())).collect();
        token.serial = match token.guid {
            Some(g) => g[..8].iter().map(|b| format!("{b:02x}")).collect(),
            None => String::new(),
        };
        // The cardholder's name from the authentication certificate, so that two cards in
        // one NSS database or browser have different token names.
        token.label = certs
            .iter()
            .find(|(slot, _, _)| *slot == KeyRef::AUTHENTICATION)
            .or_else(|| certs.first())
            .and_then(|(_, der, _)| crate::object::common_name(der))
            .unwrap_or_else(|| format!("PIV {}", token.serial));
        Ok(token)
    }

    /// Whether `other` (just loaded from the same reader) is this card as it was: same
    /// GUID, same certificates in the same slots.
    pub fn same_card(&self, other: &Token) -> bool {
        self.guid == other.guid
            && self.certificates == other.certificates
            && self.contactless == other.contactless
    }

    /// The CHUID's GUID and every certificate with its key's metadata.
    fn read_contents(&mut self) -> Result<Vec<SlotCertificate>> {
        self.guid = match self.card.get_data(object::CHUID) {
            Ok(chuid) => tlv::find(&chuid, 0x34)
                .ok()
                .flatten()
                .and_then(|g| <[u8; 16]>::try_from(g).ok()),
            Err(HostError::Card(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let mut certs = Vec::new();
        for slot in SLOTS {
            if let Some(der) = read_certificate(&mut self.card, slot)? {
                let meta = self.key_meta(slot)?;
                certs.push((slot, der, meta));
            }
        }
        Ok(certs)
    }

    /// A key's algorithm and PIN policy from Yubico GET METADATA, where the card has it
    /// (the PIN policy decides `CKA_ALWAYS_AUTHENTICATE` and whether the key needs a login).
    fn key_meta(&mut self, slot: KeyRef) -> Result<Option<KeyMeta>> {
        let meta = match self.card.metadata(slot) {
            Ok(m) => m,
            // No GET METADATA (a card other than Yubico's), or refused (contactless).
            Err(HostError::Card(_) | HostError::Malformed(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let alg = tlv::find(&meta, 0x01).ok().flatten().and_then(|v| match v {
            [id] => Algorithm::from_id(*id),
            _ => None,
        });
        let pin_policy = tlv::find(&meta, 0x02)
            .ok()
            .flatten()
            .and_then(|v| v.first().copied())
            .and_then(PinPolicy::from_byte);
        Ok(alg.map(|alg| KeyMeta {
            alg,
            pin_policy: pin_policy.unwrap_or(slot.default_pin_policy()),
        }))
    }

    /// Runs `f` with the card held exclusively (a PC/SC transaction). When the hold is new
    /// — another program may have used the card since — the PIV application is selected
    /// first. With `keep`, a successful `f` leaves the hold in place for the operation that
    /// follows (a context-specific login and its signature); the caller ends it.
    pub fn exclusive<T>(
        &mut self,
        keep: bool,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        /// Ends the hold however `f` leaves, a panic included (caught at the FFI boundary):
        /// the card must never stay locked for other programs.
        struct Hold<'a> {
            token: &'a mut Token,
            keep: bool,
        }
        impl Drop for Hold<'_> {
            fn drop(&mut self) {
                if !self.keep {
                    self.token.card.transport().end();
                }
            }
        }
        let access = self.card.transport().begin()?;
        let mut hold = Hold {
            token: self,
            keep: false,
        };
        let r = match access {
            Access::Fresh => hold.token.select().and_then(|()| f(hold.token)),
            Access::Continued => f(hold.token),
        };
        hold.keep = keep && r.is_ok();
        r
    }

    /// Ends a hold kept by [`Token::exclusive`].
    pub fn release(&mut self) {
        self.card.transport().end();
    }

    fn select(&mut self) -> Result<()> {
        self.card.select().map(drop).map_err(|e| match e {
            HostError::Card(_) => Error::TokenNotPresent,
            other => other.into(),
        })
    }

    /// The PIN state: GET METADATA where the card has it (counter even while verified),
    /// else VERIFY without data. Over the contactless interface the card answers neither.
    pub fn pin_state(&mut self) -> Result<PinState> {
        if self.contactless {
            return Ok(PinState::Unknown);
        }
        match self.card.metadata(KeyRef::PIN) {
            Ok(meta) => {
                if let Ok(Some([total, left])) = tlv::find(&meta, 0x06) {
                    return Ok(counter_state(*left, *total));
                }
            }
            // A card without GET METADATA (or with a malformed answer): ask by VERIFY.
            Err(HostError::Card(_) | HostError::Malformed(_)) => {}
            // A reset, a lapsed hold, a removed card: the caller must know.
            Err(e) => return Err(e.into()),
        }
        match self.card.pin_status() {
            Ok(PinStatus::Verified) => Ok(PinState::Verified),
            Ok(PinStatus::Blocked) => Ok(PinState::Locked),
            Ok(PinStatus::TriesLeft(n)) => Ok(counter_state(n, 3)),
            Err(HostError::Card(StatusWord::SECURITY_STATUS_NOT_SATISFIED)) => {
                Ok(PinState::Unknown)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the card says its PIN is verified now (VERIFY without data; uses no try).
    pub fn pin_verified(&mut self) -> Result<bool> {
        if self.contactless {
            return Ok(false);
        }
        match self.card.pin_status() {
            Ok(PinStatus::Verified) => Ok(true),
            Ok(_) | Err(HostError::Card(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// VERIFY the PIN.
    pub fn verify(&mut self, pin: &[u8]) -> Result<()> {
        if self.contactless {
            // SP 800-73-4 Part 1 §3.5: no PIN over the contactless interface.
            return Err(Error::FunctionFailed(
                "no PIN over the contactless interface",
            ));
        }
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
/// `71` CertInfo, `FE` error detection). Absent or unreadable here (contactless) object:
/// `None`. Compressed certificates (CertInfo bit 0) are skipped: PIV tokens Tessera issues
/// store them plain.
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

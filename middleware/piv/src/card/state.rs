//! The card's persistent state besides its keys: identity, PIN/PUK and their counters,
//! the management key and the data objects. A carrier saves it after every change.

use std::collections::BTreeMap;

use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::piv::{object, Algorithm};
use crate::tlv;

/// The factory PIN, PUK and management key of PIV tokens as shipped (Yubico's documented
/// defaults, which OpenSC's and Yubico's tools assume).
pub const DEFAULT_PIN: &[u8] = b"123456";
pub const DEFAULT_PUK: &[u8] = b"12345678";
pub const DEFAULT_MANAGEMENT_KEY: [u8; 24] = [
    1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
];
/// Retry counters as shipped.
pub const DEFAULT_RETRIES: u8 = 3;

/// A PIN-like secret with its retry counter.
#[derive(Clone, Serialize, Deserialize)]
pub struct RetryCounted {
    /// The reference value, padded with `FF` to 8 bytes as it travels (SP 800-73-4 Part 2 §2.4.3).
    #[serde(with = "super::secret_hex")]
    pub(crate) value: Zeroizing<Vec<u8>>,
    #[serde(with = "fixed_width")]
    pub(crate) total: u8,
    #[serde(with = "fixed_width")]
    pub(crate) left: u8,
    pub(crate) is_default: bool,
}

/// Counters serialised at a fixed width (`"003"`, `"010"`), so that the state written after
/// a right PIN and after a wrong one has the same size whatever the counts (up to the 15
/// tries SET PIN RETRIES allows). Reads plain numbers too (older state files).
mod fixed_width {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &u8, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:03}"))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(u8),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => Ok(n),
            Either::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl std::fmt::Debug for RetryCounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryCounted")
            .field("total", &self.total)
            .field("left", &self.left)
            .field("is_default", &self.is_default)
            .finish_non_exhaustive()
    }
}

impl RetryCounted {
    fn new(plain: &[u8], tries: u8) -> Self {
        Self {
            value: pad8(plain),
            total: tries,
            left: tries,
            is_default: true,
        }
    }

    pub fn total(&self) -> u8 {
        self.total
    }

    pub fn left(&self) -> u8 {
        self.left
    }

    pub fn is_blocked(&self) -> bool {
        self.left == 0
    }

    pub fn is_default(&self) -> bool {
        self.is_default
    }
}

/// Pads a PIN or PUK with `FF` to 8 bytes.
pub fn pad8(plain: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(plain.to_vec());
    v.resize(8, 0xFF);
    v
}

/// The card application administration key (key reference `9B`).
#[derive(Clone, Serialize, Deserialize)]
pub struct ManagementKey {
    pub(crate) alg: Algorithm,
    #[serde(with = "super::secret_hex")]
    pub(crate) key: Zeroizing<Vec<u8>>,
    pub(crate) is_default: bool,
}

impl std::fmt::Debug for ManagementKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagementKey")
            .field("alg", &self.alg)
            .field("is_default", &self.is_default)
            .finish_non_exhaustive()
    }
}

impl ManagementKey {
    pub fn alg(&self) -> Algorithm {
        self.alg
    }
}

/// Everything a card keeps across power cycles except its private keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CardState {
    /// Yubico-style serial number (GET SERIAL).
    pub serial: u32,
    /// Firmware version reported by GET VERSION.
    pub version: [u8; 3],
    pub(crate) pin: RetryCounted,
    pub(crate) puk: RetryCounted,
    pub(crate) management: ManagementKey,
    /// Data objects by tag; each value is the content of the `53` template.
    #[serde(with = "objects_hex")]
    pub(crate) objects: BTreeMap<u32, Vec<u8>>,
}

/// The firmware version the reference card reports. 5.4.3 makes yubico-piv-tool use GET
/// METADATA, which the applet implements.
pub const VERSION: [u8; 3] = [5, 4, 3];

impl CardState {
    /// A blank card as a manufacturer ships it: default PIN, PUK and management key, and a
    /// fresh CHUID (random GUID) and CCC so that hosts can tell cards apart.
    pub fn factory(rng: &mut (impl RngCore + CryptoRng), serial: u32) -> Self {
        let mut state = Self {
            serial,
            version: VERSION,
            pin: RetryCounted::new(DEFAULT_PIN, DEFAULT_RETRIES),
            puk: RetryCounted::new(DEFAULT_PUK, DEFAULT_RETRIES),
            management: ManagementKey {
                alg: Algorithm::Tdes,
                key: Zeroizing::new(DEFAULT_MANAGEMENT_KEY.to_vec()),
                is_default: true,
            },
            objects: BTreeMap::new(),
        };
        state.new_identity(rng);
        state
    }

    /// Writes a new CHUID and CCC (at manufacture and after a reset).
    pub(crate) fn new_identity(&mut self, rng: &mut (impl RngCore + CryptoRng)) {
        let mut guid = [0u8; 16];
        rng.fill_bytes(&mut guid);
        self.objects.insert(object::CHUID, chuid(&guid));
        let mut card_id = [0u8; 14];
        rng.fill_bytes(&mut card_id);
        self.objects.insert(object::CCC, ccc(&card_id));
    }

    /// Restores PIN, PUK and management key to the factory values and removes every data
    /// object except the attestation certificate (Yubico RESET).
    pub(crate) fn reset(&mut self, rng: &mut (impl RngCore + CryptoRng)) {
        self.pin = RetryCounted::new(DEFAULT_PIN, DEFAULT_RETRIES);
        self.puk = RetryCounted::new(DEFAULT_PUK, DEFAULT_RETRIES);
        self.management = ManagementKey {
            alg: Algorithm::Tdes,
            key: Zeroizing::new(DEFAULT_MANAGEMENT_KEY.to_vec()),
            is_default: true,
        };
        self.objects
            .retain(|tag, _| *tag == object::YK_ATTESTATION_CERT);
        self.new_identity(rng);
    }

    pub(crate) fn set_retries(&mut self, pin_tries: u8, puk_tries: u8) {
        self.pin = RetryCounted::new(DEFAULT_PIN, pin_tries);
        self.puk = RetryCounted::new(DEFAULT_PUK, puk_tries);
    }

    /// The content of a data object.
    pub fn object(&self, tag: u32) -> Option<&[u8]> {
        self.objects.get(&tag).map(Vec::as_slice)
    }

    /// Stores a data object directly (manufacturing steps such as the attestation
    /// certificate; hosts write through PUT DATA).
    pub fn set_object(&mut self, tag: u32, content: Vec<u8>) {
        self.objects.insert(tag, content);
    }

    pub fn pin(&self) -> &RetryCounted {
        &self.pin
    }

    pub fn puk(&self) -> &RetryCounted {
        &self.puk
    }

    pub fn management(&self) -> &ManagementKey {
        &self.management
    }

    /// The GUID of the CHUID (SP 800-73-4 Part 1 §3.1.2, tag `34`).
    pub fn guid(&self) -> Option<[u8; 16]> {
        let chuid = self.object(object::CHUID)?;
        tlv::find(chuid, 0x34).ok().flatten()?.try_into().ok()
    }
}

/// A CHUID (SP 800-73-4 Part 1 §3.1.2) with the FASC-N that non-federal issuers use (agency
/// code 9999, SP 800-73-4 Part 1 §3.3), the card's GUID, an expiry date, an empty issuer
/// signature and the error detection code.
fn chuid(guid: &[u8; 16]) -> Vec<u8> {
    const FASC_N: [u8; 25] = [
        0xD4, 0xE7, 0x39, 0xDA, 0x73, 0x9C, 0xED, 0x39, 0xCE, 0x73, 0x9D, 0x83, 0x68, 0x58, 0x21,
        0x08, 0x42, 0x10, 0x84, 0x21, 0xC8, 0x42, 0x10, 0xC3, 0xEB,
    ];
    let mut out = Vec::new();
    tlv::push(&mut out, 0x30, &FASC_N);
    tlv::push(&mut out, 0x34, guid);
    tlv::push(&mut out, 0x35, b"20991231");
    tlv::push(&mut out, 0x3E, &[]);
    tlv::push(&mut out, 0xFE, &[]);
    out
}

/// A Card Capability Container (SP 800-73-4 Part 1 §3.1.1) with a random card identifier.
fn ccc(card_id: &[u8; 14]) -> Vec<u8> {
    let mut id = vec![0xA0, 0x00, 0x00, 0x01, 0x16, 0xFF, 0x02];
    id.extend_from_slice(card_id);
    let mut out = Vec::new();
    tlv::push(&mut out, 0xF0, &id);
    tlv::push(&mut out, 0xF1, &[0x21]);
    tlv::push(&mut out, 0xF2, &[0x21]);
    tlv::push(&mut out, 0xF3, &[]);
    tlv::push(&mut out, 0xF4, &[0x00]);
    tlv::push(&mut out, 0xF5, &[0x10]);
    for tag in [0xF6, 0xF7, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE] {
        tlv::push(&mut out, tag, &[]);
    }
    out
}

mod objects_hex {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        v: &BTreeMap<u32, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|(k, v)| (format!("{k:X}"), hex::encode(v)))
            .collect::<BTreeMap<_, _>>()
            .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u32, Vec<u8>>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                let tag = u32::from_str_radix(&k, 16).map_err(serde::de::Error::custom)?;
                let value = hex::decode(v).map_err(serde::de::Error::custom)?;
                Ok((tag, value))
            })
            .collect()
    }
}

//! Identifiers of the PIV card application: AID, key references, algorithms and data
//! objects (SP 800-78-4 Tables 6-1/6-2, SP 800-73-4 Part 1 §3), plus the Yubico extensions.

use std::fmt;

/// The PIV application identifier prefix (SP 800-73-4 Part 1 §2.2); cards answer SELECT of
/// this truncated AID.
pub const AID_PREFIX: [u8; 5] = [0xA0, 0x00, 0x00, 0x03, 0x08];
/// The full PIV AID, version 1.0 of the application.
pub const AID: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];
/// The PIX part of the AID (after the RID), as returned in the application property template.
pub const PIX: [u8; 6] = [0x00, 0x00, 0x10, 0x00, 0x01, 0x00];

/// Instruction bytes (SP 800-73-4 Part 2 §3; Yubico's PIV extension documentation).
pub mod ins {
    pub const SELECT: u8 = 0xA4;
    pub const GET_DATA: u8 = 0xCB;
    pub const PUT_DATA: u8 = 0xDB;
    pub const VERIFY: u8 = 0x20;
    pub const CHANGE_REFERENCE_DATA: u8 = 0x24;
    pub const RESET_RETRY_COUNTER: u8 = 0x2C;
    pub const GENERAL_AUTHENTICATE: u8 = 0x87;
    pub const GENERATE_ASYMMETRIC_KEY_PAIR: u8 = 0x47;
    pub const GET_RESPONSE: u8 = 0xC0;
    // Yubico extensions.
    pub const YK_GET_VERSION: u8 = 0xFD;
    pub const YK_GET_SERIAL: u8 = 0xF8;
    pub const YK_GET_METADATA: u8 = 0xF7;
    pub const YK_SET_PIN_RETRIES: u8 = 0xFA;
    pub const YK_RESET: u8 = 0xFB;
    pub const YK_SET_MANAGEMENT_KEY: u8 = 0xFF;
    pub const YK_ATTEST: u8 = 0xF9;
    pub const YK_IMPORT_KEY: u8 = 0xFE;
}

/// Key references of SP 800-78-4 Table 6-1 and Yubico's attestation slot.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct KeyRef(pub u8);

impl KeyRef {
    /// The PIV card application PIN.
    pub const PIN: Self = Self(0x80);
    /// The PIN unblocking key.
    pub const PUK: Self = Self(0x81);
    /// The card application administration (management) key.
    pub const MANAGEMENT: Self = Self(0x9B);
    /// PIV authentication.
    pub const AUTHENTICATION: Self = Self(0x9A);
    /// Digital signature.
    pub const SIGNATURE: Self = Self(0x9C);
    /// Key management (encryption).
    pub const KEY_MANAGEMENT: Self = Self(0x9D);
    /// Card authentication.
    pub const CARD_AUTHENTICATION: Self = Self(0x9E);
    /// Yubico's attestation key.
    pub const ATTESTATION: Self = Self(0xF9);

    /// Whether this reference names an asymmetric key slot that can hold a user key.
    pub fn is_asymmetric_slot(self) -> bool {
        matches!(self.0, 0x9A | 0x9C | 0x9D | 0x9E | 0x82..=0x95)
    }

    /// The data object holding this slot's certificate (SP 800-73-4 Part 1 Table 3 and
    /// Table 4b for the retired key-management slots 82–95).
    pub fn certificate_object(self) -> Option<u32> {
        Some(match self.0 {
            0x9A => object::CERT_AUTHENTICATION,
            0x9C => object::CERT_SIGNATURE,
            0x9D => object::CERT_KEY_MANAGEMENT,
            0x9E => object::CERT_CARD_AUTHENTICATION,
            0x82..=0x95 => 0x5FC10D + u32::from(self.0 - 0x82),
            0xF9 => object::YK_ATTESTATION_CERT,
            _ => return None,
        })
    }

    /// The PIN policy that a slot has when its key is generated without an explicit policy
    /// (SP 800-73-4 Part 1 §3.2: 9C needs the PIN for every use, 9E never needs it).
    pub fn default_pin_policy(self) -> PinPolicy {
        match self.0 {
            0x9C => PinPolicy::Always,
            0x9E => PinPolicy::Never,
            _ => PinPolicy::Once,
        }
    }
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRef({:02X})", self.0)
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}", self.0)
    }
}

/// Cryptographic mechanism identifiers (SP 800-78-4 Table 6-2, and Yubico's `05` and `16`
/// for RSA 3072 and 4096 from firmware 5.7). The reference card generates only RSA-2048 and
/// the two curves; hosts drive whatever a card's metadata names.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
pub enum Algorithm {
    Tdes,
    Aes128,
    Aes192,
    Aes256,
    Rsa1024,
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EccP256,
    EccP384,
}

impl Algorithm {
    pub fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0x03 => Self::Tdes,
            0x08 => Self::Aes128,
            0x0A => Self::Aes192,
            0x0C => Self::Aes256,
            0x06 => Self::Rsa1024,
            0x07 => Self::Rsa2048,
            0x05 => Self::Rsa3072,
            0x16 => Self::Rsa4096,
            0x11 => Self::EccP256,
            0x14 => Self::EccP384,
            _ => return None,
        })
    }

    pub fn id(self) -> u8 {
        match self {
            Self::Tdes => 0x03,
            Self::Aes128 => 0x08,
            Self::Aes192 => 0x0A,
            Self::Aes256 => 0x0C,
            Self::Rsa1024 => 0x06,
            Self::Rsa2048 => 0x07,
            Self::Rsa3072 => 0x05,
            Self::Rsa4096 => 0x16,
            Self::EccP256 => 0x11,
            Self::EccP384 => 0x14,
        }
    }

    /// Key length in bytes for symmetric algorithms, block size for the challenge.
    pub fn symmetric_key_len(self) -> Option<usize> {
        match self {
            Self::Tdes => Some(24),
            Self::Aes128 => Some(16),
            Self::Aes192 => Some(24),
            Self::Aes256 => Some(32),
            _ => None,
        }
    }

    pub fn is_asymmetric(self) -> bool {
        self.is_rsa() || matches!(self, Self::EccP256 | Self::EccP384)
    }

    pub fn is_rsa(self) -> bool {
        matches!(
            self,
            Self::Rsa1024 | Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096
        )
    }

    /// The RSA algorithm of a modulus of `len` bytes.
    pub fn rsa_of_modulus_len(len: usize) -> Option<Self> {
        Some(match len {
            128 => Self::Rsa1024,
            256 => Self::Rsa2048,
            384 => Self::Rsa3072,
            512 => Self::Rsa4096,
            _ => return None,
        })
    }
}

/// When a key needs the PIN (Yubico's PIN policy, tag `AA` of GENERATE).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
pub enum PinPolicy {
    Never,
    Once,
    Always,
}

impl PinPolicy {
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Never,
            2 => Self::Once,
            3 => Self::Always,
            _ => return None,
        })
    }

    pub fn to_byte(self) -> u8 {
        match self {
            Self::Never => 1,
            Self::Once => 2,
            Self::Always => 3,
        }
    }
}

/// Data object tags (SP 800-73-4 Part 1 Table 3; Yubico's attestation certificate).
pub mod object {
    pub const DISCOVERY: u32 = 0x7E;
    pub const BIOMETRIC_GROUP_TEMPLATE: u32 = 0x7F61;
    pub const CCC: u32 = 0x5FC107;
    pub const CHUID: u32 = 0x5FC102;
    pub const CERT_AUTHENTICATION: u32 = 0x5FC105;
    pub const CERT_SIGNATURE: u32 = 0x5FC10A;
    pub const CERT_KEY_MANAGEMENT: u32 = 0x5FC10B;
    pub const CERT_CARD_AUTHENTICATION: u32 = 0x5FC101;
    pub const FINGERPRINTS: u32 = 0x5FC103;
    pub const SECURITY_OBJECT: u32 = 0x5FC106;
    pub const FACIAL_IMAGE: u32 = 0x5FC108;
    pub const PRINTED_INFORMATION: u32 = 0x5FC109;
    pub const KEY_HISTORY: u32 = 0x5FC10C;
    pub const IRIS: u32 = 0x5FC121;
    pub const PAIRING_CODE: u32 = 0x5FC123;
    pub const YK_ATTESTATION_CERT: u32 = 0x5FFF01;

    /// Whether a tag names a PIV data object (or a Yubico vendor object) that PUT DATA may
    /// write: the Table 3 objects, the retired certificates and the vendor range `5FFFxx`.
    pub fn is_writable(tag: u32) -> bool {
        matches!(tag, 0x5FC101..=0x5FC123 | 0x5FFF00..=0x5FFFFF | BIOMETRIC_GROUP_TEMPLATE)
    }

    /// Objects whose read needs the PIN (SP 800-73-4 Part 1 Table 3, "access rule for read").
    pub fn read_needs_pin(tag: u32) -> bool {
        matches!(
            tag,
            FINGERPRINTS | FACIAL_IMAGE | PRINTED_INFORMATION | IRIS | PAIRING_CODE
        )
    }

    /// Objects readable over the contactless interface without a virtual contact interface
    /// (SP 800-73-4 Part 1 Table 3, "contactless" column).
    pub fn contactless_readable(tag: u32) -> bool {
        matches!(
            tag,
            DISCOVERY
                | CHUID
                | CERT_CARD_AUTHENTICATION
                | SECURITY_OBJECT
                | BIOMETRIC_GROUP_TEMPLATE
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retired_slots_map_to_their_objects() {
        assert_eq!(KeyRef(0x82).certificate_object(), Some(0x5FC10D));
        assert_eq!(KeyRef(0x95).certificate_object(), Some(0x5FC120));
        assert_eq!(KeyRef(0x9B).certificate_object(), None);
    }

    #[test]
    fn algorithm_ids_round_trip() {
        for id in 0..=255u8 {
            if let Some(a) = Algorithm::from_id(id) {
                assert_eq!(a.id(), id);
            }
        }
    }
}

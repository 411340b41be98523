//! Certificate serial numbers as the issuer names them: the DER INTEGER's content bytes in
//! lower-case hex (what CRLs and OCSP carry), at most 20 bytes (RFC 5280 §4.1.2.2).

use std::fmt;

/// A serial number, validated: 1–40 hex digits, stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Serial(String);

/// Why a string is not a serial.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a serial is 1 to 40 hexadecimal digits")]
pub struct BadSerial;

impl Serial {
    /// Parses a serial from hex (either case).
    pub fn parse(s: &str) -> Result<Self, BadSerial> {
        if s.is_empty() || s.len() > 40 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BadSerial);
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    /// The serial of a DER INTEGER's content bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BadSerial> {
        if bytes.is_empty() || bytes.len() > 20 {
            return Err(BadSerial);
        }
        Ok(Self(hex::encode(bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The DER INTEGER's content bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // An odd number of digits is read as if led by a zero.
        let padded = if self.0.len() % 2 == 1 {
            format!("0{}", self.0)
        } else {
            self.0.clone()
        };
        hex::decode(padded).unwrap_or_default()
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Serial {
    type Err = BadSerial;
    fn from_str(s: &str) -> Result<Self, BadSerial> {
        Self::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for Serial {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_hex_of_bounded_length_and_lower_case() {
        assert_eq!(Serial::parse("0A1b").unwrap().as_str(), "0a1b");
        for bad in ["", "xyz", "12 34", &"a".repeat(41), "-1"] {
            assert!(Serial::parse(bad).is_err(), "{bad:?}");
        }
        let s = Serial::from_bytes(&[0x01, 0xAB]).unwrap();
        assert_eq!(s.to_bytes(), [0x01, 0xAB]);
        assert_eq!(Serial::parse("abc").unwrap().to_bytes(), [0x0A, 0xBC]);
        assert!(Serial::from_bytes(&[0; 21]).is_err());
    }
}

//! ISO 7816-4 command and response APDUs (§5.1): short and extended length, the four
//! cases, and the status words PIV uses. Parsing never panics on any input.

use std::fmt;

use thiserror::Error;

/// Why bytes are not a well-formed command APDU.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ApduError {
    /// Fewer than the four header bytes.
    #[error("APDU shorter than its 4-byte header")]
    TooShort,
    /// The length fields do not match the number of bytes (ISO 7816-4 §5.1 cases 1–4).
    #[error("APDU length fields do not match its size")]
    BadLength,
    /// A response shorter than its two status bytes.
    #[error("response APDU shorter than its status word")]
    NoStatusWord,
}

/// A status word, `SW1 SW2`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusWord(pub u16);

impl StatusWord {
    pub const SUCCESS: Self = Self(0x9000);
    pub const WRONG_LENGTH: Self = Self(0x6700);
    pub const SECURE_MESSAGING_NOT_SUPPORTED: Self = Self(0x6882);
    pub const LAST_COMMAND_EXPECTED: Self = Self(0x6883);
    pub const SECURITY_STATUS_NOT_SATISFIED: Self = Self(0x6982);
    pub const AUTH_METHOD_BLOCKED: Self = Self(0x6983);
    pub const CONDITIONS_NOT_SATISFIED: Self = Self(0x6985);
    pub const COMMAND_NOT_ALLOWED: Self = Self(0x6986);
    pub const INCORRECT_DATA: Self = Self(0x6A80);
    pub const FUNCTION_NOT_SUPPORTED: Self = Self(0x6A81);
    pub const NOT_FOUND: Self = Self(0x6A82);
    pub const NOT_ENOUGH_MEMORY: Self = Self(0x6A84);
    pub const INCORRECT_P1P2: Self = Self(0x6A86);
    pub const REFERENCE_NOT_FOUND: Self = Self(0x6A88);
    pub const WRONG_P1P2: Self = Self(0x6B00);
    pub const INS_NOT_SUPPORTED: Self = Self(0x6D00);
    pub const CLA_NOT_SUPPORTED: Self = Self(0x6E00);
    pub const NO_PRECISE_DIAGNOSIS: Self = Self(0x6F00);
    pub const MEMORY_FAILURE: Self = Self(0x6581);

    /// `61xx`: `xx` more bytes wait for GET RESPONSE (`00` meaning 256 or more).
    pub fn more_data(remaining: usize) -> Self {
        Self(
            0x6100
                | if remaining > 0xFF {
                    0
                } else {
                    remaining as u16
                },
        )
    }

    /// `63Cx`: verification failed, `x` tries left (SP 800-73-4 §3.2.1).
    pub fn tries_left(n: u8) -> Self {
        Self(0x63C0 | u16::from(n.min(0x0F)))
    }

    pub fn sw1(self) -> u8 {
        (self.0 >> 8) as u8
    }

    pub fn sw2(self) -> u8 {
        self.0 as u8
    }

    pub fn is_success(self) -> bool {
        self == Self::SUCCESS
    }

    /// The tries left that a `63Cx` reports.
    pub fn retries(self) -> Option<u8> {
        (self.0 & 0xFFF0 == 0x63C0).then_some((self.0 & 0x0F) as u8)
    }
}

impl fmt::Debug for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SW {:04X}", self.0)
    }
}

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.0)
    }
}

/// A command APDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    pub data: Vec<u8>,
    /// Expected response length: `None` for cases 1 and 3; `Some(256)` or `Some(65536)` for
    /// an encoded `00`.
    pub le: Option<usize>,
    /// Whether the length fields were (or will be) encoded in extended form.
    pub extended: bool,
}

impl Command {
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8) -> Self {
        Self {
            cla,
            ins,
            p1,
            p2,
            data: Vec::new(),
            le: None,
            extended: false,
        }
    }

    pub fn with_data(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.data = data.into();
        self
    }

    pub fn with_le(mut self, le: usize) -> Self {
        self.le = Some(le);
        self
    }

    /// Bit 5 of CLA: command chaining, more commands of this chain follow (ISO 7816-4 §5.1.1.1).
    pub fn is_chained(&self) -> bool {
        self.cla & 0x10 != 0
    }

    /// Parses a command APDU (ISO 7816-4 §5.1, cases 1, 2S/E, 3S/E, 4S/E).
    pub fn parse(bytes: &[u8]) -> Result<Self, ApduError> {
        let [cla, ins, p1, p2, body @ ..] = bytes else {
            return Err(ApduError::TooShort);
        };
        let mut cmd = Self::new(*cla, *ins, *p1, *p2);
        match body {
            [] => {}
            [le] => cmd.le = Some(short_le(*le)),
            [0, rest @ ..] if rest.len() >= 2 => {
                cmd.extended = true;
                let n = usize::from(rest[0]) << 8 | usize::from(rest[1]);
                let rest = &rest[2..];
                if rest.is_empty() {
                    cmd.le = Some(if n == 0 { 65536 } else { n });
                } else {
                    if n == 0 {
                        return Err(ApduError::BadLength);
                    }
                    let (data, tail) = split_checked(rest, n)?;
                    cmd.data = data.to_vec();
                    match tail {
                        [] => {}
                        [a, b] => {
                            let le = usize::from(*a) << 8 | usize::from(*b);
                            cmd.le = Some(if le == 0 { 65536 } else { le });
                        }
                        _ => return Err(ApduError::BadLength),
                    }
                }
            }
            [lc, rest @ ..] if *lc != 0 => {
                let (data, tail) = split_checked(rest, usize::from(*lc))?;
                cmd.data = data.to_vec();
                match tail {
                    [] => {}
                    [le] => cmd.le = Some(short_le(*le)),
                    _ => return Err(ApduError::BadLength),
                }
            }
            _ => return Err(ApduError::BadLength),
        }
        Ok(cmd)
    }

    /// Encodes the command, in extended form when `extended` is set or the sizes need it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![self.cla, self.ins, self.p1, self.p2];
        let extended = self.extended || self.data.len() > 255 || self.le.is_some_and(|le| le > 256);
        if extended {
            out.push(0);
            if !self.data.is_empty() {
                out.extend_from_slice(&(self.data.len() as u16).to_be_bytes());
                out.extend_from_slice(&self.data);
            }
            if let Some(le) = self.le {
                out.extend_from_slice(&(if le >= 65536 { 0 } else { le as u16 }).to_be_bytes());
            }
        } else {
            if !self.data.is_empty() {
                out.push(self.data.len() as u8);
                out.extend_from_slice(&self.data);
            }
            if let Some(le) = self.le {
                out.push(if le >= 256 { 0 } else { le as u8 });
            }
        }
        out
    }
}

fn short_le(b: u8) -> usize {
    if b == 0 {
        256
    } else {
        usize::from(b)
    }
}

fn split_checked(buf: &[u8], n: usize) -> Result<(&[u8], &[u8]), ApduError> {
    if buf.len() < n {
        return Err(ApduError::BadLength);
    }
    Ok(buf.split_at(n))
}

/// A response APDU: data and status word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub data: Vec<u8>,
    pub sw: StatusWord,
}

impl Response {
    pub fn new(data: Vec<u8>, sw: StatusWord) -> Self {
        Self { data, sw }
    }

    pub fn ok(data: Vec<u8>) -> Self {
        Self::new(data, StatusWord::SUCCESS)
    }

    pub fn status(sw: StatusWord) -> Self {
        Self::new(Vec::new(), sw)
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, ApduError> {
        let split = bytes.len().checked_sub(2).ok_or(ApduError::NoStatusWord)?;
        let (data, sw) = bytes.split_at(split);
        Ok(Self::new(
            data.to_vec(),
            StatusWord(u16::from(sw[0]) << 8 | u16::from(sw[1])),
        ))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 2);
        out.extend_from_slice(&self.data);
        out.push(self.sw.sw1());
        out.push(self.sw.sw2());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_four_cases_short() {
        let c1 = Command::parse(&[0, 0xA4, 4, 0]).unwrap();
        assert_eq!((c1.data.len(), c1.le), (0, None));
        let c2 = Command::parse(&[0, 0xCB, 0x3F, 0xFF, 0]).unwrap();
        assert_eq!(c2.le, Some(256));
        let c3 = Command::parse(&[0, 0x20, 0, 0x80, 2, 1, 2]).unwrap();
        assert_eq!((c3.data, c3.le), (vec![1, 2], None));
        let c4 = Command::parse(&[0, 0xCB, 0x3F, 0xFF, 1, 7, 0x10]).unwrap();
        assert_eq!((c4.data, c4.le), (vec![7], Some(16)));
    }

    #[test]
    fn parses_extended_cases() {
        let c2 = Command::parse(&[0, 0xCB, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!((c2.le, c2.extended), (Some(65536), true));
        let mut raw = vec![0, 0x87, 7, 0x9A, 0, 0x01, 0x00];
        raw.extend(vec![0x55; 256]);
        let c3 = Command::parse(&raw).unwrap();
        assert_eq!(c3.data.len(), 256);
        raw.extend([0, 0]);
        let c4 = Command::parse(&raw).unwrap();
        assert_eq!(c4.le, Some(65536));
        assert_eq!(Command::parse(&c4.to_bytes()).unwrap(), c4);
    }

    #[test]
    fn rejects_inconsistent_lengths() {
        for bad in [
            &[0u8, 1, 2][..],
            &[0, 0x20, 0, 0x80, 3, 1, 2],
            &[0, 0x20, 0, 0x80, 1, 1, 2, 3],
            &[0, 0x20, 0, 0x80, 0, 0],
            &[0, 0x20, 0, 0x80, 0, 0, 0, 1],
            &[0, 0x20, 0, 0x80, 0, 0, 2, 1],
        ] {
            assert!(Command::parse(bad).is_err(), "{bad:02X?}");
        }
    }

    #[test]
    fn encodes_round_trip() {
        let cmd = Command::new(0, 0xCB, 0x3F, 0xFF)
            .with_data(vec![0x5C, 3, 0x5F, 0xC1, 0x02])
            .with_le(256);
        assert_eq!(
            cmd.to_bytes(),
            [0, 0xCB, 0x3F, 0xFF, 5, 0x5C, 3, 0x5F, 0xC1, 2, 0]
        );
        assert_eq!(Command::parse(&cmd.to_bytes()).unwrap(), cmd);
    }

    #[test]
    fn status_words() {
        assert_eq!(StatusWord::tries_left(2), StatusWord(0x63C2));
        assert_eq!(StatusWord(0x63C2).retries(), Some(2));
        assert_eq!(StatusWord::more_data(300), StatusWord(0x6100));
        assert_eq!(StatusWord::more_data(17), StatusWord(0x6111));
        assert_eq!(Response::parse(&[1, 0x90, 0]).unwrap().data, vec![1]);
        assert!(Response::parse(&[0x90]).is_err());
    }
}

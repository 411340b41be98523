//! BER-TLV as used by PIV (ISO 7816-4 §5.2, SP 800-73-4 §3): tags of one to three bytes,
//! definite lengths of at most three bytes. The reader never panics on any input.

use thiserror::Error;

/// Why a byte string is not well-formed BER-TLV.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TlvError {
    /// The input ends inside a tag, a length or a value.
    #[error("TLV truncated")]
    Truncated,
    /// A tag longer than three bytes.
    #[error("TLV tag too long")]
    TagTooLong,
    /// Indefinite length (`80`) or a length field longer than `82 xx xx`.
    #[error("unsupported TLV length encoding 0x{0:02X}")]
    BadLength(u8),
}

/// One tag-length-value element borrowed from its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The tag bytes as a big-endian number (`0x5FC105`, `0x7C`, ...).
    pub tag: u32,
    /// The value bytes.
    pub value: &'a [u8],
}

/// Iterates over consecutive TLV elements of a buffer.
#[derive(Debug, Clone)]
pub struct TlvReader<'a> {
    rest: &'a [u8],
}

impl<'a> TlvReader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }

    /// Reads the next element, or `None` at the end of the buffer.
    pub fn read(&mut self) -> Result<Option<Tlv<'a>>, TlvError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let (tag, after_tag) = read_tag(self.rest)?;
        let (len, after_len) = read_len(after_tag)?;
        if after_len.len() < len {
            return Err(TlvError::Truncated);
        }
        let (value, rest) = after_len.split_at(len);
        self.rest = rest;
        Ok(Some(Tlv { tag, value }))
    }
}

impl<'a> Iterator for TlvReader<'a> {
    type Item = Result<Tlv<'a>, TlvError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.read() {
            Ok(Some(t)) => Some(Ok(t)),
            Ok(None) => None,
            Err(e) => {
                // Stop after the first error instead of re-reporting it forever.
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

fn read_tag(buf: &[u8]) -> Result<(u32, &[u8]), TlvError> {
    let (&first, mut rest) = buf.split_first().ok_or(TlvError::Truncated)?;
    let mut tag = u32::from(first);
    // ISO 7816-4 §5.2.2.1: low five bits all set means subsequent tag bytes follow, each
    // with bit 8 set except the last.
    if first & 0x1F == 0x1F {
        let mut n = 1;
        loop {
            let (&b, r) = rest.split_first().ok_or(TlvError::Truncated)?;
            rest = r;
            tag = (tag << 8) | u32::from(b);
            n += 1;
            if b & 0x80 == 0 {
                break;
            }
            if n == 3 {
                return Err(TlvError::TagTooLong);
            }
        }
    }
    Ok((tag, rest))
}

fn read_len(buf: &[u8]) -> Result<(usize, &[u8]), TlvError> {
    let (&first, rest) = buf.split_first().ok_or(TlvError::Truncated)?;
    match first {
        0x00..=0x7F => Ok((usize::from(first), rest)),
        0x81 => {
            let (&b, rest) = rest.split_first().ok_or(TlvError::Truncated)?;
            Ok((usize::from(b), rest))
        }
        0x82 => match rest {
            [hi, lo, rest @ ..] => Ok((usize::from(*hi) << 8 | usize::from(*lo), rest)),
            _ => Err(TlvError::Truncated),
        },
        other => Err(TlvError::BadLength(other)),
    }
}

/// Parses a whole buffer into its elements; any trailing garbage is an error.
pub fn parse_all(buf: &[u8]) -> Result<Vec<Tlv<'_>>, TlvError> {
    TlvReader::new(buf).collect()
}

/// The value of the first element tagged `tag` at the top level of `buf`.
pub fn find(buf: &[u8], tag: u32) -> Result<Option<&[u8]>, TlvError> {
    for t in TlvReader::new(buf) {
        let t = t?;
        if t.tag == tag {
            return Ok(Some(t.value));
        }
    }
    Ok(None)
}

/// Appends the encoding of `tag` (1–3 bytes, as written in the spec) to `out`.
pub fn push_tag(out: &mut Vec<u8>, tag: u32) {
    if tag > 0xFFFF {
        out.push((tag >> 16) as u8);
    }
    if tag > 0xFF {
        out.push((tag >> 8) as u8);
    }
    out.push(tag as u8);
}

/// Appends a definite length in the shortest form.
pub fn push_len(out: &mut Vec<u8>, len: usize) {
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0xFF => out.extend_from_slice(&[0x81, len as u8]),
        _ => {
            debug_assert!(len <= 0xFFFF, "PIV values are below 64 KiB");
            out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
        }
    }
}

/// Appends one element.
pub fn push(out: &mut Vec<u8>, tag: u32, value: &[u8]) {
    push_tag(out, tag);
    push_len(out, value.len());
    out.extend_from_slice(value);
}

/// One element as a new buffer.
pub fn encode(tag: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 6);
    push(&mut out, tag, value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_short_and_long_forms() {
        for len in [0usize, 1, 0x7F, 0x80, 0xFF, 0x100, 0x1234] {
            let value = vec![0xA5; len];
            for tag in [0x53, 0x7F49, 0x5FC105] {
                let enc = encode(tag, &value);
                let all = parse_all(&enc).unwrap();
                assert_eq!(all, vec![Tlv { tag, value: &value }]);
            }
        }
    }

    #[test]
    fn multi_byte_tags_follow_iso_rules() {
        assert_eq!(
            parse_all(&[0x5F, 0xC1, 0x05, 0x00]).unwrap()[0].tag,
            0x5FC105
        );
        assert_eq!(parse_all(&[0x7F, 0x49, 0x00]).unwrap()[0].tag, 0x7F49);
        assert_eq!(
            parse_all(&[0x5F, 0x81, 0x81, 0x01, 0x00]),
            Err(TlvError::TagTooLong)
        );
    }

    #[test]
    fn rejects_malformed_input_without_panicking() {
        for bad in [
            &[0x53][..],
            &[0x53, 0x02, 0x01],
            &[0x53, 0x81],
            &[0x53, 0x82, 0x01],
            &[0x5F],
            &[0x5F, 0xC1],
        ] {
            assert_eq!(parse_all(bad), Err(TlvError::Truncated), "{bad:02X?}");
        }
        assert_eq!(parse_all(&[0x53, 0x80]), Err(TlvError::BadLength(0x80)));
        assert_eq!(
            parse_all(&[0x53, 0x84, 0, 0, 0, 1]),
            Err(TlvError::BadLength(0x84))
        );
    }

    #[test]
    fn find_returns_first_match() {
        let mut buf = encode(0x80, &[1]);
        buf.extend(encode(0x81, &[2]));
        buf.extend(encode(0x81, &[3]));
        assert_eq!(find(&buf, 0x81).unwrap(), Some(&[2u8][..]));
        assert_eq!(find(&buf, 0x82).unwrap(), None);
    }
}

//! Swedish personal identity numbers (personnummer, Skatteverket SKV 704) and coordination
//! numbers (samordningsnummer, SKV 707: the day plus 60), which an LoA3 application is tied
//! to (K5.7). Written by hand: the rule is a date check and a Luhn digit, and the crates
//! that do it pull in a date library for the ten-digit form, which we do not accept.
//!
//! Only the twelve-digit form (`YYYYMMDDNNNC`, optionally `YYYYMMDD-NNNC`) is accepted:
//! the ten-digit form needs today's date and the `+` sign to guess the century, and a
//! register of people must not guess.

use std::fmt;

/// A checked personal identity or coordination number, as its twelve digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityNumber(String);

/// Why a text is not a personal identity number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityNumberError {
    #[error("a personal identity number has 12 digits (YYYYMMDDNNNC or YYYYMMDD-NNNC)")]
    Shape,
    #[error("{0} is not a date (nor a coordination number's day + 60)")]
    Date(String),
    #[error("the check digit is wrong")]
    Checksum,
}

impl IdentityNumber {
    pub fn parse(text: &str) -> Result<Self, IdentityNumberError> {
        let t = text.trim();
        let digits: String = match t.len() {
            12 => t.to_owned(),
            13 if t.as_bytes()[8] == b'-' => format!("{}{}", &t[..8], &t[9..]),
            _ => return Err(IdentityNumberError::Shape),
        };
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdentityNumberError::Shape);
        }
        let n = |r: std::ops::Range<usize>| digits[r].parse::<u32>().unwrap_or(0);
        let (year, month, mut day) = (n(0..4), n(4..6), n(6..8));
        if day > 60 {
            day -= 60;
        }
        if year < 1800 || !(1..=12).contains(&month) || day == 0 || day > days_in(year, month) {
            return Err(IdentityNumberError::Date(digits[..8].to_owned()));
        }
        if !luhn(&digits.as_bytes()[2..]) {
            return Err(IdentityNumberError::Checksum);
        }
        Ok(Self(digits))
    }

    /// The twelve digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a coordination number (day + 60).
    pub fn is_coordination_number(&self) -> bool {
        self.0[6..8].parse::<u32>().unwrap_or(0) > 60
    }
}

impl fmt::Display for IdentityNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", &self.0[..8], &self.0[8..])
    }
}

fn days_in(year: u32, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The Luhn check over the ten digits YYMMDDNNNC: weights 2,1,2,1,… from the left.
fn luhn(ten: &[u8]) -> bool {
    luhn_sum(ten) % 10 == 0
}

/// The Luhn sum of ASCII digits, doubling from the first (the personnummer's weights).
fn luhn_sum(digits: &[u8]) -> u32 {
    digits
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0') * if i % 2 == 0 { 2 } else { 1 };
            d / 10 + d % 10
        })
        .sum()
}

/// The check digit that completes nine ASCII digits (YYMMDDNNN) into a valid personal
/// identity number (for test data and benchmarks that need many valid ones).
pub fn check_digit(nine: &[u8]) -> u8 {
    let d = (10 - luhn_sum(nine) % 10) % 10;
    b'0' + u8::try_from(d).unwrap_or(0)
}

/// Checks a Windows security identifier in its string form (`S-1-5-21-…`, MS-DTYP
/// §2.4.2.1): revision 1, an identifier authority below 2^48, 1 to 15 sub-authorities of
/// 32 bits. The authentication certificate carries it for strong certificate mapping
/// (KB5014754).
pub fn check_sid(sid: &str) -> Result<(), String> {
    let bad = |why: &str| format!("{sid:?} is not a SID (S-1-<authority>-<sub>…): {why}");
    let rest = sid
        .strip_prefix("S-1-")
        .ok_or_else(|| bad("it starts with S-1-"))?;
    let mut parts = rest.split('-');
    let authority = parts.next().unwrap_or_default();
    let decimal = |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
    if !decimal(authority) || authority.parse::<u64>().map_or(true, |a| a >= 1 << 48) {
        return Err(bad("the identifier authority"));
    }
    let subs: Vec<&str> = parts.collect();
    if subs.is_empty() || subs.len() > 15 {
        return Err(bad("1 to 15 sub-authorities"));
    }
    if subs
        .iter()
        .any(|p| !decimal(p) || p.parse::<u32>().is_err())
    {
        return Err(bad("a sub-authority is not a 32-bit number"));
    }
    Ok(())
}

/// A calendar date as `YYYY-MM-DD`, checked (document expiry, birth dates).
pub fn check_date(text: &str) -> Result<(), String> {
    let bad = || format!("{text:?} is not a date (YYYY-MM-DD)");
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10
        || b[4] != b'-'
        || b[7] != b'-'
        || !(digits(0..4) && digits(5..7) && digits(8..10))
    {
        return Err(bad());
    }
    let n = |r: std::ops::Range<usize>| text[r].parse::<u32>().map_err(|_| bad());
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    if y < 1800 || !(1..=12).contains(&m) || d == 0 || d > days_in(y, m) {
        return Err(bad());
    }
    Ok(())
}

/// Unix seconds at 00:00 UTC of a checked `YYYY-MM-DD` date (days-from-civil, H. Hinnant).
pub fn date_secs(text: &str) -> Result<i64, String> {
    check_date(text)?;
    let n = |r: std::ops::Range<usize>| text[r].parse::<i64>().unwrap_or(0);
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok((era * 146_097 + doe - 719_468) * 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_digit_completes_a_valid_number() {
        for nine in ["811218987", "640823323", "750505123"] {
            let d = check_digit(nine.as_bytes()) as char;
            assert!(
                IdentityNumber::parse(&format!("19{nine}{d}")).is_ok(),
                "{nine}{d}"
            );
        }
    }

    #[test]
    fn valid_numbers_are_accepted_in_both_spellings() {
        // Skatteverket's published test numbers.
        for n in [
            "198112189876",
            "19811218-9876",
            "196408233234",
            "201701102384",
        ] {
            let p = IdentityNumber::parse(n).unwrap();
            assert_eq!(p.as_str().len(), 12);
            assert!(!p.is_coordination_number());
        }
        let c = IdentityNumber::parse("197010632391").unwrap();
        assert!(c.is_coordination_number());
        assert_eq!(c.to_string(), "19701063-2391");
    }

    #[test]
    fn bad_numbers_say_what_is_wrong() {
        assert_eq!(
            IdentityNumber::parse("198112189875"),
            Err(IdentityNumberError::Checksum)
        );
        assert_eq!(
            IdentityNumber::parse("8112189876"),
            Err(IdentityNumberError::Shape)
        );
        assert_eq!(
            IdentityNumber::parse("19811318987x"),
            Err(IdentityNumberError::Shape)
        );
        assert!(matches!(
            IdentityNumber::parse("198102301234"),
            Err(IdentityNumberError::Date(_))
        ));
        assert!(matches!(
            IdentityNumber::parse("19810229-1234"),
            Err(IdentityNumberError::Date(_))
        ));
    }

    #[test]
    fn sids_are_checked() {
        assert!(check_sid("S-1-5-21-3623811015-3361044348-30300820-1013").is_ok());
        assert!(check_sid("S-1-5-32-544").is_ok());
        for bad in [
            "S-1-5",
            "S-2-5-21-1",
            "S-1-5-21-4294967296",
            "S-1-281474976710656-1",
            "S-1-5-21-x",
            "S-1-5-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16",
            "s-1-5-21-1",
        ] {
            assert!(check_sid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_are_checked_and_converted() {
        assert_eq!(date_secs("1970-01-01"), Ok(0));
        assert_eq!(date_secs("2000-03-01"), Ok(951_868_800));
        assert!(check_date("2023-02-29").is_err());
        assert!(check_date("2024-02-29").is_ok());
        assert!(check_date("24-02-29").is_err());
        assert!(check_date("2030-+1-+1").is_err());
    }
}

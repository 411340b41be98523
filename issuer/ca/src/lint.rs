//! Checks before anything is signed: the key a request names, the subject's names, and
//! the finished TBS certificate against its profile and issuer ("lint before sign",
//! Boulder `linter`). A lint failure is a bug in the issuer, never the requester's fault:
//! requests are refused earlier, by the same rules, with a precise message.

use std::time::Duration;

use der::Decode;
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::certificate::{Certificate, TbsCertificate};
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage};

use crate::profile::Profile;

/// The kind of key a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Ec,
    Rsa,
}

/// Accepts P-256, P-384 (named curves, points on the curve) and RSA 2048–4096 whose
/// AlgorithmIdentifier has NULL parameters (RFC 3279 §2.3.1) and whose exponent is odd and
/// between 2^16+1 and 2^256−1 (CA/B BR §6.1.6).
pub fn check_public_key(spki_der: &[u8]) -> Result<KeyKind, String> {
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der)
        .map_err(|_| "not a DER SubjectPublicKeyInfo".to_owned())?;
    if spki.algorithm.oid == const_oid::db::rfc5912::ID_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<const_oid::ObjectIdentifier>().ok())
            .ok_or("EC key without a named curve")?;
        let point = spki.subject_public_key.raw_bytes();
        if curve == const_oid::db::rfc5912::SECP_256_R_1 {
            p256::PublicKey::from_sec1_bytes(point).map_err(|_| "not a point on P-256")?;
        } else if curve == const_oid::db::rfc5912::SECP_384_R_1 {
            p384::PublicKey::from_sec1_bytes(point).map_err(|_| "not a point on P-384")?;
        } else {
            return Err("curve not allowed (P-256 or P-384)".into());
        }
        Ok(KeyKind::Ec)
    } else if spki.algorithm.oid == const_oid::db::rfc5912::RSA_ENCRYPTION {
        let null = der::asn1::Any::from(der::asn1::Null);
        if spki.algorithm.parameters.as_ref() != Some(&null) {
            return Err("RSA key whose algorithm parameters are not NULL (RFC 3279 §2.3.1)".into());
        }
        #[derive(der::Sequence)]
        struct RsaKey {
            n: der::asn1::Uint,
            e: der::asn1::Uint,
        }
        let key = RsaKey::from_der(spki.subject_public_key.raw_bytes())
            .map_err(|_| "malformed RSA key")?;
        let n = key.n.as_bytes();
        let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
        if !(2048..=4096).contains(&bits) {
            return Err("RSA modulus must have 2048–4096 bits".into());
        }
        let e = key.e.as_bytes();
        let odd = e.last().is_some_and(|b| b & 1 == 1);
        // 2^16+1 ≤ e ≤ 2^256−1: at least three bytes with the leading one nonzero (or 0x010001
        // and above), at most 32 bytes.
        let at_least_65537 = e.len() > 3 || (e.len() == 3 && e >= &[0x01, 0x00, 0x01][..]);
        if !odd || !at_least_65537 || e.len() > 32 {
            return Err("RSA exponent must be odd, from 65537 to 2^256−1".into());
        }
        Ok(KeyKind::Rsa)
    } else {
        Err("key algorithm not allowed (EC P-256/P-384 or RSA)".into())
    }
}

/// Longest e-mail address accepted (RFC 5321 §4.5.3.1.3: a path of 256 octets, less the
/// angle brackets).
const MAX_EMAIL: usize = 254;

/// An e-mail address as `rfc822Name` carries it: ASCII, `local@domain`, a local part of at
/// most 64 characters with no spaces, quotes or controls, and a domain name.
pub fn check_email(email: &str) -> Result<(), String> {
    let (local, domain) = split_address(email, MAX_EMAIL)?;
    tessera_issuer_types::config::check_domain(domain)?;
    let _ = local;
    Ok(())
}

/// A UPN (`user@domain`) whose domain is one of `domains` (case-insensitive).
pub fn check_upn(upn: &str, domains: &[String]) -> Result<(), String> {
    let (_, domain) = split_address(upn, 1024)?;
    tessera_issuer_types::config::check_domain(domain)?;
    if !domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
        return Err(if domains.is_empty() {
            "no UPN domain is configured (upn_domains): UPNs are not accepted".to_owned()
        } else {
            format!(
                "UPN domain {domain:?} is not one of this issuer's: {}",
                domains.join(", ")
            )
        });
    }
    Ok(())
}

fn split_address(s: &str, max: usize) -> Result<(&str, &str), String> {
    if s.is_empty() || s.len() > max || !s.is_ascii() {
        return Err(format!("{s:?}: ASCII, 1–{max} characters"));
    }
    // Controls, spaces and the characters that would need quoting are refused outright
    // (format characters are not ASCII, so already gone).
    if s.bytes()
        .any(|b| b.is_ascii_control() || b" \"(),:;<>[\\]".contains(&b))
    {
        return Err(format!(
            "{s:?}: no spaces, quotes, controls or the characters ( ) , : ; < > [ \\ ]"
        ));
    }
    let (local, domain) = s
        .rsplit_once('@')
        .filter(|(l, d)| !l.is_empty() && !d.is_empty() && !l.contains('@'))
        .ok_or_else(|| format!("{s:?}: must be local@domain"))?;
    if local.len() > 64 || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(format!(
            "{s:?}: the local part is 1–64 characters, dots not at its ends or doubled"
        ));
    }
    Ok((local, domain))
}

/// A name for the subject's common name: 1–64 characters, no control or format characters.
pub fn check_common_name(cn: &str) -> Result<(), String> {
    let bad = |c: char| c.is_control() || is_format(c);
    if cn.trim().is_empty() || cn.chars().count() > 64 || cn.chars().any(bad) {
        return Err("common_name must be 1–64 printable characters".into());
    }
    Ok(())
}

/// Unicode format characters (general category Cf) that can hide text: zero-width and
/// bidirectional controls, soft hyphen, BOM, tags.
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}'
        | '\u{E0001}' | '\u{E0020}'..='\u{E007F}')
}

/// Lint before sign: re-reads the encoded TBS certificate and checks it against its
/// profile and issuer.
pub fn lint(
    profile: &Profile,
    tbs_der: &[u8],
    issuer: &Certificate,
    days: u32,
) -> Result<(), String> {
    let tbs =
        TbsCertificate::from_der(tbs_der).map_err(|e| format!("TBS does not re-parse: {e}"))?;
    let serial = tbs.serial_number.as_bytes();
    if serial.len() < 9 || serial.len() > 20 || serial[0] & 0x80 != 0 {
        return Err(
            "serial must be positive with at least 64 random bits and at most 20 bytes".into(),
        );
    }
    if tbs.issuer != issuer.tbs_certificate.subject {
        return Err("issuer name is not the issuing CA's subject".into());
    }
    let nb = tbs.validity.not_before.to_unix_duration();
    let na = tbs.validity.not_after.to_unix_duration();
    if na <= nb
        || na - nb > Duration::from_secs(u64::from(days.min(profile.max_validity_days)) * 86_400)
    {
        return Err("validity outside the profile".into());
    }
    // RFC 5280 §6: a certificate that outlives its issuer fails path validation then.
    if na > issuer.tbs_certificate.validity.not_after.to_unix_duration() {
        return Err("notAfter is after the issuing CA's notAfter".into());
    }
    let exts = tbs.extensions.as_deref().unwrap_or_default();
    let get = |oid| exts.iter().find(|e| e.extn_id == oid);
    let ku = get(const_oid::db::rfc5280::ID_CE_KEY_USAGE).ok_or("no key usage")?;
    if !ku.critical {
        return Err("key usage must be critical".into());
    }
    let ku = KeyUsage::from_der(ku.extn_value.as_bytes()).map_err(|e| e.to_string())?;
    if ku.0 != profile.ec_key_usage.0 && ku.0 != profile.rsa_key_usage.0 {
        return Err("key usage differs from the profile".into());
    }
    let eku = get(const_oid::db::rfc5280::ID_CE_EXT_KEY_USAGE).ok_or("no extended key usage")?;
    let eku = ExtendedKeyUsage::from_der(eku.extn_value.as_bytes()).map_err(|e| e.to_string())?;
    if eku.0 != profile.extended_key_usage {
        return Err("extended key usage differs from the profile".into());
    }
    for required in [
        const_oid::db::rfc5280::ID_CE_CRL_DISTRIBUTION_POINTS,
        const_oid::db::rfc5912::ID_PE_AUTHORITY_INFO_ACCESS,
        const_oid::db::rfc5280::ID_CE_CERTIFICATE_POLICIES,
        const_oid::db::rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER,
    ] {
        if get(required).is_none() {
            return Err(format!("extension {required} missing"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_for_syntax_length_and_hidden_characters() {
        let domains = vec!["example.org".to_owned()];
        assert!(check_email("alice.smith@example.org").is_ok());
        assert!(check_upn("alice@EXAMPLE.org", &domains).is_ok());
        for bad in [
            "alice",
            "@example.org",
            "alice@",
            "al ice@example.org",
            "alice@exa mple.org",
            "alice\u{0}@example.org",
            "al\u{202E}ice@example.org",
            "a..b@example.org",
            "alice@@example.org",
            "\"a\"@example.org",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
        assert!(check_upn("alice@evil.example", &domains).is_err());
        assert!(check_upn("alice@example.org", &[]).is_err());
        assert!(check_email(&format!("{}@example.org", "a".repeat(65))).is_err());
        assert!(check_common_name("Alice Smith").is_ok());
        assert!(check_common_name("Alice\u{200B}Smith").is_err());
        assert!(check_common_name("").is_err());
    }

    /// An RSA SubjectPublicKeyInfo with `parameters` and exponent `e`, over a 2048-bit
    /// modulus (only its form matters to the check).
    fn rsa_spki(parameters: Option<der::asn1::Any>, e: &[u8]) -> Vec<u8> {
        #[derive(der::Sequence)]
        struct RsaKey {
            n: der::asn1::Uint,
            e: der::asn1::Uint,
        }
        let mut n = vec![0xC5u8; 256];
        n[255] |= 1;
        let key = RsaKey {
            n: der::asn1::Uint::new(&n).unwrap(),
            e: der::asn1::Uint::new(e).unwrap(),
        };
        der::Encode::to_der(&SubjectPublicKeyInfoOwned {
            algorithm: spki::AlgorithmIdentifierOwned {
                oid: const_oid::db::rfc5912::RSA_ENCRYPTION,
                parameters,
            },
            subject_public_key: der::asn1::BitString::from_bytes(
                &der::Encode::to_der(&key).unwrap(),
            )
            .unwrap(),
        })
        .unwrap()
    }

    #[test]
    fn rsa_keys_need_null_parameters_and_a_sane_exponent() {
        let null = Some(der::asn1::Any::from(der::asn1::Null));
        assert!(check_public_key(&rsa_spki(null.clone(), &[1, 0, 1])).is_ok());
        // Parameters absent, or anything but NULL (RFC 3279 §2.3.1).
        assert!(check_public_key(&rsa_spki(None, &[1, 0, 1])).is_err());
        let oid = der::asn1::Any::encode_from(&const_oid::db::rfc5912::SECP_256_R_1).unwrap();
        assert!(check_public_key(&rsa_spki(Some(oid), &[1, 0, 1])).is_err());
        // Exponents: 3 (too small), even, and longer than 256 bits.
        assert!(check_public_key(&rsa_spki(null.clone(), &[3])).is_err());
        assert!(check_public_key(&rsa_spki(null.clone(), &[1, 0, 2])).is_err());
        let mut huge = vec![0xFFu8; 33];
        huge[0] = 0x7F;
        assert!(check_public_key(&rsa_spki(null, &huge)).is_err());
    }
}

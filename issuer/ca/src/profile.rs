//! Certificate profiles as data (PROFILES.md): one per PIV key slot. `validate` checks the
//! table at start-up; the issuing code and the linter both read from it.

use const_oid::ObjectIdentifier;
use tessera_issuer_types::ProfileName;
use x509_cert::ext::pkix::{KeyUsage, KeyUsages};

/// Microsoft smart-card logon EKU.
pub const EKU_SMARTCARD_LOGON: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.20.2.2");
/// id-pkinit-KPClientAuth (RFC 4556 §3.2.2).
pub const EKU_PKINIT_CLIENT: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.2.3.4");
/// Microsoft document signing.
pub const EKU_DOCUMENT_SIGNING: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.10.3.12");
/// id-PIV-cardAuth (SP 800-73-4 Part 1 §3.3.6 / FIPS 201).
pub const EKU_PIV_CARD_AUTH: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.6.8");
/// Microsoft UPN otherName.
pub const OTHER_NAME_UPN: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.20.2.3");
/// szOID_NTDS_CA_SECURITY_EXT: the holder's SID, for Windows strong certificate mapping
/// (KB5014754), as a GeneralNames with one otherName of type
/// [`OTHER_NAME_NTDS_OBJECTSID`] holding the SID's string form in an OCTET STRING.
pub const EXT_NTDS_CA_SECURITY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.25.2");
pub const OTHER_NAME_NTDS_OBJECTSID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.25.2.1");

/// Which subject alternative names a profile carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SanRules {
    pub upn: bool,
    pub email: bool,
    pub card_uuid: bool,
}

/// One certificate profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The name the API uses (and, through it, the PIV slot the key lives in).
    pub name: ProfileName,
    /// Key usage for EC keys.
    pub ec_key_usage: KeyUsage,
    /// Key usage for RSA keys (encryption: keyEncipherment instead of keyAgreement).
    pub rsa_key_usage: KeyUsage,
    pub extended_key_usage: &'static [ObjectIdentifier],
    pub san: SanRules,
    /// Longest validity the profile allows (PROFILES.md: permanent cards ≤ 3 years).
    pub max_validity_days: u32,
    pub default_validity_days: u32,
}

/// The profiles of the PIV key slots (PROFILES.md, "Certificate profiles").
pub fn profiles() -> Vec<Profile> {
    use const_oid::db::rfc5280::{ID_KP_CLIENT_AUTH, ID_KP_EMAIL_PROTECTION};
    vec![
        Profile {
            name: ProfileName::Authentication,
            ec_key_usage: KeyUsage(KeyUsages::DigitalSignature.into()),
            rsa_key_usage: KeyUsage(KeyUsages::DigitalSignature.into()),
            extended_key_usage: &[ID_KP_CLIENT_AUTH, EKU_SMARTCARD_LOGON, EKU_PKINIT_CLIENT],
            san: SanRules {
                upn: true,
                email: true,
                card_uuid: false,
            },
            max_validity_days: 3 * 365,
            default_validity_days: 3 * 365,
        },
        Profile {
            name: ProfileName::Signature,
            ec_key_usage: KeyUsage(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation),
            rsa_key_usage: KeyUsage(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation),
            extended_key_usage: &[ID_KP_EMAIL_PROTECTION, EKU_DOCUMENT_SIGNING],
            san: SanRules {
                upn: false,
                email: true,
                card_uuid: false,
            },
            max_validity_days: 3 * 365,
            default_validity_days: 3 * 365,
        },
        Profile {
            name: ProfileName::Encryption,
            ec_key_usage: KeyUsage(KeyUsages::KeyAgreement.into()),
            rsa_key_usage: KeyUsage(KeyUsages::KeyEncipherment.into()),
            extended_key_usage: &[ID_KP_EMAIL_PROTECTION],
            san: SanRules {
                upn: false,
                email: true,
                card_uuid: false,
            },
            max_validity_days: 3 * 365,
            default_validity_days: 3 * 365,
        },
        Profile {
            name: ProfileName::CardAuthentication,
            ec_key_usage: KeyUsage(KeyUsages::DigitalSignature.into()),
            rsa_key_usage: KeyUsage(KeyUsages::DigitalSignature.into()),
            extended_key_usage: &[EKU_PIV_CARD_AUTH],
            san: SanRules {
                upn: false,
                email: false,
                card_uuid: true,
            },
            max_validity_days: 3 * 365,
            default_validity_days: 3 * 365,
        },
    ]
}

/// Checks the profile table (run at start-up): one profile per name (so per slot), every
/// name the API knows has one, sane validity.
pub fn validate(profiles: &[Profile]) -> Result<(), String> {
    for name in ProfileName::ALL {
        if profiles.iter().filter(|p| p.name == name).count() != 1 {
            return Err(format!("profile {name:?}: not exactly one in the table"));
        }
    }
    for p in profiles {
        // LoA3 K6.5: an eID is valid at most five years.
        if p.max_validity_days == 0 || p.max_validity_days > 5 * 365 {
            return Err(format!(
                "profile {:?}: max_validity_days must be 1..=1825",
                p.name
            ));
        }
        if p.default_validity_days > p.max_validity_days {
            return Err(format!(
                "profile {:?}: default validity above the maximum",
                p.name
            ));
        }
        if p.ec_key_usage.0.is_empty()
            || p.rsa_key_usage.0.is_empty()
            || p.extended_key_usage.is_empty()
        {
            return Err(format!(
                "profile {:?}: key usage and EKU are required",
                p.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_profiles_are_valid_and_a_bad_one_is_refused() {
        let mut p = profiles();
        assert_eq!(validate(&p), Ok(()));
        p[0].max_validity_days = 6 * 365;
        assert!(validate(&p).is_err());
        let mut p = profiles();
        p[1].name = p[0].name;
        assert!(validate(&p).is_err());
    }
}

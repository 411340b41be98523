//! The certificate profiles by name, one per PIV key slot (PROFILES.md). What each profile
//! puts into a certificate is the CA's business (`tessera-issuer-ca`); here are only the
//! names API clients use and the slots the keys live in.

use std::fmt;

/// A certificate profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileName {
    /// PIV authentication (9A): logon, TLS client authentication.
    Authentication,
    /// Digital signature (9C): documents and e-mail, PIN for every signature.
    Signature,
    /// Key management (9D): encryption.
    Encryption,
    /// Card authentication (9E): physical access and shared devices, no PIN.
    CardAuthentication,
}

/// Why a string names no profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown profile {0:?}")]
pub struct UnknownProfile(pub String);

impl ProfileName {
    pub const ALL: [Self; 4] = [
        Self::Authentication,
        Self::Signature,
        Self::Encryption,
        Self::CardAuthentication,
    ];

    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authentication => "authentication",
            Self::Signature => "signature",
            Self::Encryption => "encryption",
            Self::CardAuthentication => "card-authentication",
        }
    }

    /// The PIV key reference the profile's key lives in (SP 800-73-4 Part 1 Table 4b).
    pub fn piv_slot(self) -> u8 {
        match self {
            Self::Authentication => 0x9A,
            Self::Signature => 0x9C,
            Self::Encryption => 0x9D,
            Self::CardAuthentication => 0x9E,
        }
    }
}

impl fmt::Display for ProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ProfileName {
    type Err = UnknownProfile;
    fn from_str(s: &str) -> Result<Self, UnknownProfile> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownProfile(s.to_owned()))
    }
}

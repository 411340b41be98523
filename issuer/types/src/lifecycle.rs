//! The credential life cycle's vocabulary (`LIFECYCLE.md`): the states of a person, a
//! carrier and its suspensions and revocations, and the officers' roles. The transitions
//! between them are checked in one place, the RA's `lifecycle` module; these are only the
//! names, as the API, the database and the `tessera` CLI spell them.

use std::fmt;
use std::str::FromStr;

/// Why a string names no value of one of these enums.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownName {
    pub kind: &'static str,
    pub value: String,
}

/// An enum spelled in snake_case everywhere (API, database, CLI): `as_str`, `ALL`,
/// `Display`, `FromStr` and serde from one list, so the spellings cannot drift apart.
macro_rules! named {
    ($(#[$m:meta])* $name:ident, $kind:literal { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$v),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($s => Ok(Self::$v),)+
                    _ => Err(UnknownName { kind: $kind, value: s.to_owned() }),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

named!(
    /// A person's state: registered from HR, proofed in person (LoA3 K5.10), or ended
    /// (employment over: every carrier revoked).
    PersonState, "person state" {
        Registered = "registered",
        Proofed = "proofed",
        Ended = "ended",
    }
);

named!(
    /// A carrier's state (`LIFECYCLE.md`, the carrier table).
    CarrierState, "carrier state" {
        /// Blank, in inventory.
        Stock = "stock",
        /// Bound to a proofed person; the issuance approval pending or given.
        Assigned = "assigned",
        /// Keys generated on the carrier and certified; certificates on hold until
        /// hand-over.
        Personalised = "personalised",
        /// Handed over; certificates valid.
        Active = "active",
        /// Certificates on hold until re-verification or the deadline.
        Suspended = "suspended",
        /// Certificates revoked.
        Revoked = "revoked",
        /// Every certificate expired.
        Expired = "expired",
        /// Wiped and back in stock (pool cards), or destroyed.
        Retired = "retired",
    }
);

named!(
    /// What a carrier is.
    CarrierKind, "carrier kind" {
        /// A personal smart card.
        SmartCard = "smart_card",
        /// A TPM virtual smart card.
        TpmVirtualCard = "tpm_virtual_card",
        /// A short-lived card for a holder who forgot theirs.
        Temporary = "temporary",
        /// A pool card bound to a substitute for a bounded period.
        Substitute = "substitute",
    }
);

named!(
    /// Why a carrier is suspended; every suspension has a deadline.
    SuspendReason, "suspension reason" {
        Forgotten = "forgotten",
        TemporarilyLost = "temporarily_lost",
        AdminHold = "admin_hold",
        OnLeave = "on_leave",
    }
);

named!(
    /// Why a carrier is revoked; each maps to one RFC 5280 reason for its certificates.
    CarrierRevokeReason, "carrier revocation reason" {
        Lost = "lost",
        Stolen = "stolen",
        Compromised = "compromised",
        Damaged = "damaged",
        EmploymentEnded = "employment_ended",
        Superseded = "superseded",
        /// A suspension's deadline passed without re-verification.
        SuspensionExpired = "suspension_expired",
        /// A temporary or substitute card's period ended.
        PeriodEnded = "period_ended",
    }
);

named!(
    /// An officer's role (LoA3 K2.4). An officer may hold several.
    OfficerRole, "officer role" {
        /// Maintains people from HR (import, SCIM, employment ended).
        HrAdmin = "hr_admin",
        /// Proofs identities, requests and approves issuance, handles cards.
        RegistrationOfficer = "registration_officer",
        /// Reads and exports; never changes anything.
        Auditor = "auditor",
        /// Manages officers and their tokens, and the issuer's own certificates.
        Administrator = "administrator",
        /// A service, not a person: the identity provider, which reads who holds a
        /// certificate (to log them in) and follows the status feed (to end their sessions
        /// on a revocation). It reads nothing else and changes nothing.
        IdentityProvider = "identity_provider",
    }
);

impl OfficerRole {
    /// The roles people hold: what reading the registers (people, carriers, officers,
    /// approvals) needs. A service role is not among them.
    pub const STAFF: &'static [Self] = &[
        Self::HrAdmin,
        Self::RegistrationOfficer,
        Self::Auditor,
        Self::Administrator,
    ];
}

named!(
    /// What a four-eyes approval is for.
    ApprovalKind, "approval kind" {
        /// Binding a carrier to a person for issuance (K3.4).
        Issuance = "issuance",
        /// A temporary card for a holder who forgot theirs.
        Temporary = "temporary",
        /// A pool card bound to a substitute for a bounded period.
        Substitute = "substitute",
        /// Releasing a card's escrowed PUK to the card's own channel (PIN unblock).
        PukRelease = "puk_release",
    }
);

named!(
    /// Where an approval stands.
    ApprovalState, "approval state" {
        Pending = "pending",
        Approved = "approved",
        Refused = "refused",
    }
);

impl CarrierRevokeReason {
    /// Whether an officer may give this reason (the others are the system's: the deadline
    /// sweep, a returned temporary card, employment ended).
    pub fn by_officer(self) -> bool {
        matches!(
            self,
            Self::Lost | Self::Stolen | Self::Compromised | Self::Damaged
        )
    }

    /// The RFC 5280 reason its certificates are revoked with. A lost, stolen or compromised
    /// card may be in someone else's hands (keyCompromise, which makes relying parties
    /// doubt signatures made before it); a suspension that ran out (a forgotten card, leave,
    /// an administrative hold) is a quiet end — except a temporarily lost card's, which
    /// the sweep revokes as lost.
    pub fn certificate_reason(self) -> crate::RevocationReason {
        use crate::RevocationReason as R;
        match self {
            Self::Lost | Self::Stolen | Self::Compromised => R::KeyCompromise,
            Self::Damaged | Self::PeriodEnded | Self::SuspensionExpired => R::CessationOfOperation,
            Self::EmploymentEnded => R::AffiliationChanged,
            Self::Superseded => R::Superseded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_through_text_and_json() {
        for s in CarrierState::ALL {
            assert_eq!(s.as_str().parse::<CarrierState>().unwrap(), *s);
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(serde_json::from_str::<CarrierState>(&json).unwrap(), *s);
        }
        for r in OfficerRole::ALL {
            assert_eq!(r.as_str().parse::<OfficerRole>().unwrap(), *r);
        }
        let e = "frozen".parse::<CarrierState>().unwrap_err();
        assert_eq!(e.to_string(), "unknown carrier state \"frozen\"");
    }
}

named!(
    /// How the service desk verified the holder who asks for a PIN unblock.
    HolderVerification, "holder verification" {
        /// At the desk, with an identity document.
        InPerson = "in_person",
        /// On a video call, against the document and the proofing record.
        VideoCall = "video_call",
        /// A second factor the person already holds (another service ID, a passkey).
        SecondFactor = "second_factor",
    }
);

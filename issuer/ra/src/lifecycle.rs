//! Every transition of the person and carrier state machines (`LIFECYCLE.md`), in one
//! table each, and what each carrier transition does to the carrier's certificates. The
//! RA asks here before it changes anything; nothing else decides whether a change is
//! allowed.

use tessera_issuer_types::lifecycle::{CarrierState, PersonState};

/// A step in a carrier's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Bound to a proofed person, approval pending.
    Assign,
    /// The approval was refused, or the person's employment ended before personalisation.
    Unassign,
    /// Keys generated on the carrier and certified (on hold).
    Personalise,
    /// Handed over in person.
    Activate,
    Suspend,
    /// Re-verified after a suspension.
    Resume,
    Revoke,
    /// Every certificate expired.
    Expire,
    /// Returned and wiped, or destroyed.
    Retire,
    /// A wiped pool card back in stock.
    Restock,
}

impl Step {
    /// The verb, for errors ("cannot activate it").
    pub fn verb(self) -> &'static str {
        match self {
            Self::Assign => "assign",
            Self::Unassign => "unassign",
            Self::Personalise => "personalise",
            Self::Activate => "activate",
            Self::Suspend => "suspend",
            Self::Resume => "resume",
            Self::Revoke => "revoke",
            Self::Expire => "expire",
            Self::Retire => "retire",
            Self::Restock => "restock",
        }
    }

    /// What the step does to the carrier's certificates.
    pub fn certificates(self) -> Certificates {
        match self {
            Self::Activate | Self::Resume => Certificates::Release,
            Self::Suspend => Certificates::Hold,
            Self::Revoke => Certificates::Revoke,
            Self::Assign
            | Self::Unassign
            | Self::Personalise
            | Self::Expire
            | Self::Retire
            | Self::Restock => Certificates::Keep,
        }
    }
}

/// A carrier transition's certificate action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Certificates {
    Keep,
    /// Holds released: the certificates are good.
    Release,
    /// Good certificates put on hold.
    Hold,
    /// Every certificate not yet revoked for good is revoked, with the carrier's reason.
    Revoke,
}

/// The state after `step` from `from`, if the life cycle allows it.
pub fn next(from: CarrierState, step: Step) -> Option<CarrierState> {
    use CarrierState as S;
    Some(match (from, step) {
        (S::Stock, Step::Assign) => S::Assigned,
        (S::Assigned, Step::Unassign) => S::Stock,
        (S::Assigned, Step::Personalise) => S::Personalised,
        (S::Personalised, Step::Activate) => S::Active,
        (S::Active, Step::Suspend) => S::Suspended,
        (S::Suspended, Step::Resume) => S::Active,
        (S::Personalised | S::Active | S::Suspended, Step::Revoke) => S::Revoked,
        (S::Personalised | S::Active | S::Suspended, Step::Expire) => S::Expired,
        (S::Revoked | S::Expired, Step::Retire) => S::Retired,
        (S::Retired, Step::Restock) => S::Stock,
        _ => return None,
    })
}

/// A step in a person's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersonStep {
    /// Identity proofing recorded (again, when the old one is too old).
    Proof,
    /// Employment ended.
    End,
    /// Employed again after an end: to be proofed again.
    Rehire,
}

/// The person's state after `step`, if allowed.
pub fn person_next(from: PersonState, step: PersonStep) -> Option<PersonState> {
    use PersonState as S;
    Some(match (from, step) {
        (S::Registered | S::Proofed, PersonStep::Proof) => S::Proofed,
        (S::Registered | S::Proofed, PersonStep::End) => S::Ended,
        (S::Ended, PersonStep::Rehire) => S::Registered,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_the_design() {
        use CarrierState as S;
        // Every state reachable from STOCK, and nothing leaves RETIRED but a restock.
        assert_eq!(next(S::Stock, Step::Activate), None);
        assert_eq!(next(S::Revoked, Step::Resume), None);
        assert_eq!(next(S::Revoked, Step::Revoke), None);
        assert_eq!(next(S::Suspended, Step::Suspend), None);
        let path = [
            Step::Assign,
            Step::Personalise,
            Step::Activate,
            Step::Suspend,
            Step::Resume,
            Step::Revoke,
            Step::Retire,
            Step::Restock,
        ];
        let mut s = S::Stock;
        for step in path {
            s = next(s, step).unwrap_or_else(|| panic!("{step:?} from {s}"));
        }
        assert_eq!(s, S::Stock);
        assert_eq!(person_next(PersonState::Ended, PersonStep::Proof), None);
    }
}

//! The service ID's life in the RA: officers and their tokens, people and their identity
//! proofing, carriers through [`crate::lifecycle`], four-eyes approvals, temporary cards,
//! deadlines and reconciliation.
//!
//! Every change runs in one [`Store::write`](tessera_issuer_store::Store::write)
//! transaction, which is one writer at a time across every process on the database: a
//! change reads the record's current state inside it and checks the transition there, so
//! of two officers acting on one carrier at once the second sees the first's result and
//! gets [`RaError::InvalidTransition`] naming it. The carrier's new state, its
//! certificates' holds or revocations, their outbox entries and the audit records commit
//! together or not at all.

use sha2::Digest;
use tessera_issuer_store::audit::AuditEvent;
use tessera_issuer_store::registration::{
    ApprovalRow, CarrierRow, OfficerRow, PersonRow, ProofingRow,
};
use tessera_issuer_store::Tx;
use tessera_issuer_types::api::{
    ActivateRequest, Approval, AssignRequest, BulkRevocation, BulkRevocationRequest, Carrier,
    CarrierKey, Difference, ExtendRequest, ImportReport, ImportRequest, IssueRequest, KeysRequest,
    NewCarrier, NewOfficer, NewPerson, NewProofing, NewToken, NonResident, Officer, Person,
    ResumeRequest, RetireRequest, ReturnOutcome, ReturnRequest, RevokeCarrierRequest, RowChange,
    RowError, SubstituteRequest, SuspendRequest, TemporaryRequest, TokenInfo, TokenIssued,
};
use tessera_issuer_types::identity::{self, IdentityNumber};
use tessera_issuer_types::lifecycle::{
    ApprovalKind, ApprovalState, CarrierKind, CarrierRevokeReason, CarrierState, OfficerRole,
    PersonState, SuspendReason,
};
use tessera_issuer_types::{CertificateStatus, ProfileName, RevocationReason, Serial, Subject};

use crate::lifecycle::{self, Certificates, PersonStep, Step};
use crate::{now_secs, record_release, record_revocation, Actor, Ra, RaError};
use tessera_issuer_ca::pop::Proof;

mod feed;
mod renewal;
mod tpm;
mod unblock;
pub use feed::{FeedPage, FeedPerson, FeedRecord, MAX_FEED_PAGE};
pub use tessera_issuer_store::registration::FeedKey;

const DAY: i64 = 86_400;

/// The most people one import call takes (the CLI sends a file in batches of these).
pub const MAX_IMPORT: usize = 5_000;

/// The most carriers one bulk revocation names.
pub const MAX_BULK: usize = 10_000;

/// The registration policy's limits (LIFECYCLE.md; LoA3 K6.5, eIDAS 2015/1502 §2.2.3).
#[derive(Debug, Clone)]
pub struct RaPolicy {
    /// A temporary card's period when none is asked for.
    pub temporary_default_days: u32,
    /// A temporary card's longest period, extensions included.
    pub temporary_max_days: u32,
    /// The longest suspension before it becomes a revocation.
    pub suspension_max_days: u32,
    /// A substitute card's longest binding.
    pub substitute_max_days: u32,
    /// How old an identity proofing may be when a carrier is assigned, or renews itself.
    pub proofing_max_age_days: u32,
    /// How long before its authentication certificate expires a TPM virtual card may
    /// renew itself.
    pub renewal_window_days: u32,
    /// An officer token's validity when none is asked for, and the most it may have.
    pub token_default_days: u32,
    pub token_max_days: u32,
}

impl Default for RaPolicy {
    fn default() -> Self {
        Self {
            temporary_default_days: 1,
            temporary_max_days: 14,
            suspension_max_days: 30,
            substitute_max_days: 90,
            proofing_max_age_days: 5 * 365,
            renewal_window_days: 30,
            token_default_days: 30,
            token_max_days: 365,
        }
    }
}

/// What the deadline sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Carriers revoked because a suspension or a temporary card's period ended.
    pub revoked: Vec<String>,
}

/// A random id: a UUID v4 (RFC 9562 §5.4) from the operating system's generator.
fn new_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn invalid(field: &str, why: impl std::fmt::Display) -> RaError {
    RaError::Invalid(format!("{field}: {why}"))
}

/// A short, printable text field: trimmed, non-empty, at most `max` characters, no control
/// characters.
fn text(field: &str, value: &str, max: usize) -> Result<String, RaError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if v.chars().count() > max {
        return Err(invalid(field, format!("longer than {max} characters")));
    }
    // Control characters, and the format characters that make text read other than it is
    // (bidirectional overrides, zero-width joiners: a name that displays as another's).
    let format = |c: char| matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
    if v.chars().any(|c| c.is_control() || format(c)) {
        return Err(invalid(field, "contains control or format characters"));
    }
    Ok(v.to_owned())
}

fn country(field: &str, value: &str) -> Result<String, RaError> {
    let v = value.trim();
    if v.len() == 2 && v.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(v.to_owned())
    } else {
        Err(invalid(field, "an ISO 3166-1 alpha-2 code (SE, NO, …)"))
    }
}

fn handle(field: &str, value: &str) -> Result<String, RaError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(invalid(
            field,
            "1 to 64 of letters, digits, '.', '-' and '_'",
        ))
    }
}

/// An audit record as API clients and the portal see it (hashes in hex).
pub(crate) fn audit_view(
    r: tessera_issuer_store::audit::Record,
) -> tessera_issuer_types::audit::AuditRecord {
    tessera_issuer_types::audit::AuditRecord {
        seq: r.seq,
        at: r.at,
        actor: r.actor,
        action: r.action,
        details: r.details,
        prev_hash: hex::encode(r.prev_hash),
        hash: hex::encode(r.hash),
    }
}

pub(crate) fn person_view(p: PersonRow) -> Result<Person, RaError> {
    let state = p.person_state()?;
    let non_resident = p
        .non_resident
        .as_deref()
        .map(serde_json::from_str::<NonResident>)
        .transpose()
        .map_err(|e| RaError::Store(tessera_issuer_store::StoreError::Corrupt(e.to_string())))?;
    Ok(Person {
        id: p.id,
        employee_number: p.employee_number,
        given_name: p.given_name,
        family_name: p.family_name,
        email: p.email,
        upn: p.upn,
        identity_number: p.identity_number,
        non_resident,
        protected_identity: p.protected_identity,
        directory_sid: p.directory_sid,
        state,
        proofed_at: p.proofed_at,
        created_at: p.created_at,
    })
}

fn officer_view(o: OfficerRow) -> Officer {
    Officer {
        id: o.id,
        display_name: o.display_name,
        roles: o.roles,
        person_id: o.person_id,
        created_at: o.created_at,
        disabled_at: o.disabled_at,
        first_token: None,
    }
}

fn approval_view(a: ApprovalRow) -> Approval {
    Approval {
        subject: serde_json::from_str(&a.subject).unwrap_or_default(),
        id: a.id,
        kind: a.kind,
        carrier_id: a.carrier_id,
        person_id: a.person_id,
        requested_by: a.requested_by,
        requested_at: a.requested_at,
        state: a.state,
        decided_by: a.decided_by,
        note: None,
        release_code: None,
    }
}

/// The certificate subject a person's record gives (the card-specific parts — which
/// names go in which profile, the card UUID — are added per key at issuance).
fn subject_of(p: &PersonRow) -> Subject {
    Subject {
        common_name: format!("{} {}", p.given_name, p.family_name),
        upn: p.upn.clone(),
        email: p.email.clone(),
        card_uuid: None,
        sid: p.directory_sid.clone(),
    }
}

fn subject_json(p: &PersonRow) -> String {
    serde_json::to_string(&subject_of(p)).unwrap_or_default()
}

/// Serials whose status changed in a transaction: this process's OCSP cache hears of them
/// after the commit.
type Changed = Vec<Serial>;

impl Ra {
    /// Refuses `actor` unless they hold one of `roles`; the refusal is itself audited
    /// (K2.9), in its own transaction, since the refused change writes nothing.
    pub(crate) fn require(
        &self,
        actor: &Actor,
        action: &str,
        roles: &[OfficerRole],
    ) -> Result<(), RaError> {
        if roles.iter().any(|r| actor.has(*r)) {
            return Ok(());
        }
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        let reason = format!("{action} needs the role {}", names.join(" or "));
        self.refused(actor, action, &reason);
        Err(RaError::Forbidden(reason))
    }

    /// Audits a refused action (best effort: a failing database is reported by the
    /// refusal's own error path, not hidden behind this one).
    pub(crate) fn refused(&self, actor: &Actor, action: &str, reason: &str) {
        let at = now_secs(self.clock.as_ref());
        let r = self.store.write(|tx| {
            tx.audit(
                &actor.name,
                &AuditEvent::Refused {
                    action: action.to_owned(),
                    reason: reason.to_owned(),
                },
                at,
            )
        });
        if let Err(e) = r {
            tracing::error!(error = %e, action, "could not audit a refused action");
        }
    }

    /// Refuses an officer acting on their own person record (K3.4), audited.
    fn not_own(&self, actor: &Actor, action: &str, person_id: &str) -> Result<(), RaError> {
        if actor.person_id.as_deref() == Some(person_id) {
            let reason = "an officer cannot act on their own record".to_owned();
            self.refused(actor, action, &reason);
            return Err(RaError::FourEyes(reason));
        }
        Ok(())
    }

    fn after_commit(&self, changed: &Changed) {
        for s in changed {
            (self.on_change)(s);
        }
    }

    // ---- officers ----------------------------------------------------------------------

    /// Creates an officer. An administrator does this; the bootstrap token only for the
    /// first administrator, after which it is spent.
    pub fn create_officer(&self, actor: &Actor, req: &NewOfficer) -> Result<Officer, RaError> {
        self.create_officer_with(actor, req, true)
    }

    /// [`Ra::create_officer`], with or without the first API token: an officer who signs
    /// in to the portal with their card needs none, and a token made by the administrator
    /// is one the administrator has seen.
    pub fn create_officer_with(
        &self,
        actor: &Actor,
        req: &NewOfficer,
        first_token: bool,
    ) -> Result<Officer, RaError> {
        self.require(actor, "officer.create", &[OfficerRole::Administrator])?;
        let id = handle("id", &req.id)?;
        let display_name = text("display_name", &req.display_name, 200)?;
        if req.roles.is_empty() {
            return Err(invalid("roles", "at least one role"));
        }
        // An officer signs in with their service ID (their person record) or an API
        // token: with neither, the account could never be used.
        if req.person_id.is_none() && !first_token {
            return Err(invalid(
                "person_id",
                "an officer needs their person record (to sign in with their service ID) or an API token",
            ));
        }
        // A service account is not a person: it never signs in to the portal.
        if req.roles.contains(&OfficerRole::IdentityProvider) && req.person_id.is_some() {
            return Err(invalid(
                "person_id",
                "the identity_provider role is a service's: it has an API token, never a person record",
            ));
        }
        // Separation of duties (K2.4): every role alone (below).
        let mut roles = req.roles.clone();
        roles.sort();
        roles.dedup();
        // Every role alone: HR registers the people a registration officer proofs and
        // issues to, so one person holding both could invent someone and issue to them.
        if roles.len() > 1 {
            return Err(invalid(
                "roles",
                "one role per officer (separation of duties, K2.4)",
            ));
        }
        if actor.bootstrap && !req.roles.contains(&OfficerRole::Administrator) {
            return Err(RaError::Forbidden(
                "the bootstrap token creates the first administrator, nothing else".into(),
            ));
        }
        let at = now_secs(self.clock.as_ref());
        let row = OfficerRow {
            id,
            display_name,
            roles: req.roles.clone(),
            person_id: req.person_id.clone(),
            created_at: at,
            disabled_at: None,
        };
        let first_token = self
            .store
            .write(|tx| -> Result<Option<TokenIssued>, RaError> {
                if tx.officer(&row.id)?.is_some() {
                    return Err(RaError::Exists(format!("officer {} exists", row.id)));
                }
                if let Some(p) = &row.person_id {
                    let person = tx
                        .person(p)?
                        .ok_or_else(|| RaError::Missing(format!("no person {p}")))?;
                    // A leaver is no officer (ending the employment disables the account;
                    // an account made afterwards would outlive it).
                    if person.person_state()? == PersonState::Ended || person.removed_at.is_some() {
                        return Err(RaError::InvalidTransition {
                            what: format!("person {p}"),
                            current: person.state.clone(),
                            verb: "make an officer of",
                        });
                    }
                    // One officer per person: two accounts of one person are not four eyes.
                    if tx
                        .officers_of_person(p)?
                        .iter()
                        .any(|o| o.disabled_at.is_none())
                    {
                        return Err(RaError::Exists(format!(
                            "person {p} already has an officer account"
                        )));
                    }
                }
                if actor.bootstrap && tx.administrator_exists()? {
                    return Err(RaError::TokenRefused(
                        "the bootstrap token is spent: an administrator exists",
                    ));
                }
                tx.insert_officer(&row)?;
                let mut roles: Vec<&str> = row.roles.iter().map(|r| r.as_str()).collect();
                roles.sort_unstable();
                roles.dedup();
                tx.audit(
                    &actor.name,
                    &AuditEvent::OfficerCreated {
                        officer: row.id.clone(),
                        roles: roles.join(","),
                    },
                    at,
                )?;
                if actor.bootstrap {
                    tx.audit(
                        &actor.name,
                        &AuditEvent::BootstrapSpent {
                            administrator: row.id.clone(),
                        },
                        at,
                    )?;
                }
                // The new officer's first token, in the answer only (shown once), as
                // `create_token` would make it.
                if !first_token {
                    return Ok(None);
                }
                let days = self.policy.token_default_days;
                Ok(Some(new_token(tx, actor, &row.id, "first", days, at)?))
            })?;
        let mut view = officer_view(row);
        view.first_token = first_token;
        Ok(view)
    }

    /// A certificate the issuer made (any officer: a personalisation writes it to the
    /// card; certificates are public).
    pub fn certificate(
        &self,
        actor: &Actor,
        serial: &str,
    ) -> Result<tessera_issuer_types::api::CertificateInfo, RaError> {
        self.require(actor, "certificate.read", OfficerRole::STAFF)?;
        let serial: Serial = serial
            .parse()
            .map_err(|_| invalid("serial", "a hexadecimal serial number"))?;
        let (der, profile, hidden) = self.store.read(|tx| -> Result<_, RaError> {
            // A protected identity's certificates (names, e-mail, UPN, SID) are for those
            // who may see the person (K5.9): to others they do not exist.
            let mut hidden = false;
            if let Some(carrier) = tx.carrier_of_certificate(&serial)? {
                if let Some(person) = tx.carrier(&carrier)?.and_then(|c| c.person_id) {
                    hidden = tx.person(&person)?.is_some_and(|p| p.protected_identity)
                        && !may_see_protected(actor);
                }
            }
            Ok((tx.certificate(&serial)?, tx.profile(&serial)?, hidden))
        })?;
        let (Some(der), Some(profile), false) = (der, profile, hidden) else {
            return Err(RaError::NotFound(serial));
        };
        Ok(tessera_issuer_types::api::CertificateInfo {
            serial: serial.to_string(),
            profile,
            pem: der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &der)
                .map_err(|e| RaError::Invalid(format!("encoding the certificate: {e}")))?,
        })
    }

    /// Who holds a certificate: the person and the live carrier it is on, for the
    /// identity provider's login (its service role only). A certificate released from a
    /// restocked pool card, or on a carrier bound to nobody, has no holder.
    pub fn holder(
        &self,
        actor: &Actor,
        serial: &str,
    ) -> Result<tessera_issuer_types::api::Holder, RaError> {
        self.require(
            actor,
            "certificate.holder",
            &[OfficerRole::IdentityProvider],
        )?;
        let serial: Serial = serial
            .parse()
            .map_err(|_| invalid("serial", "a hexadecimal serial number"))?;
        // One snapshot: the carrier, the person, the certificate's status and the feed's
        // head agree with each other.
        let found = self.store.snapshot(|tx| -> Result<_, RaError> {
            let Some((carrier_id, None)) = tx.certificate_carrier(&serial)? else {
                return Ok(None);
            };
            let Some(carrier) = tx.carrier(&carrier_id)? else {
                return Ok(None);
            };
            let Some(person) = carrier.person_id.as_deref() else {
                return Ok(None);
            };
            let good = matches!(
                tx.status(&serial)?,
                Some(tessera_issuer_types::CertificateStatus::Issued)
            );
            let head = tx.outbox_head()?;
            Ok(tx.person(person)?.map(|p| (carrier, p, good, head)))
        })?;
        let Some((carrier, person, certificate_good, feed_head)) = found else {
            return Err(RaError::NotFound(serial));
        };
        let person_state = person.person_state()?;
        Ok(tessera_issuer_types::api::Holder {
            serial: serial.to_string(),
            person_id: person.id,
            employee_number: person.employee_number,
            given_name: person.given_name,
            family_name: person.family_name,
            email: person.email,
            person_state,
            carrier_id: carrier.id,
            carrier_kind: carrier.kind,
            carrier_state: carrier.state,
            certificate_good,
            feed_head,
        })
    }

    /// The status feed after `after`, at most `limit` (1 to 1,000) events, for the
    /// identity provider and for auditors and administrators; reading changes nothing.
    pub fn status_feed(
        &self,
        actor: &Actor,
        after: i64,
        limit: u32,
    ) -> Result<tessera_issuer_types::api::StatusFeed, RaError> {
        self.require(
            actor,
            "status_feed.read",
            &[
                OfficerRole::IdentityProvider,
                OfficerRole::Auditor,
                OfficerRole::Administrator,
            ],
        )?;
        let limit = i64::from(limit.clamp(1, 1000));
        // One snapshot: the head is never behind the events read with it.
        let (head, events) = self
            .store
            .snapshot(|tx| Ok::<_, RaError>((tx.outbox_head()?, tx.outbox_since(after, limit)?)))?;
        Ok(tessera_issuer_types::api::StatusFeed {
            head,
            events: events
                .into_iter()
                .map(|e| tessera_issuer_types::api::StatusEvent {
                    seq: e.seq,
                    at: e.at,
                    change: e.change.as_str().to_owned(),
                    serial: e.serial.to_string(),
                })
                .collect(),
        })
    }

    /// The audit trail, `limit` (at most 1,000) records after `after`, for auditors and
    /// administrators to read and export (K2.8, K2.9); reading changes nothing.
    pub fn audit_page(
        &self,
        actor: &Actor,
        after: i64,
        limit: u32,
    ) -> Result<Vec<tessera_issuer_types::audit::AuditRecord>, RaError> {
        self.require(
            actor,
            "audit.read",
            &[OfficerRole::Auditor, OfficerRole::Administrator],
        )?;
        let limit = i64::from(limit.clamp(1, 1000));
        Ok(self
            .store
            .read(|tx| tx.audit_page(after, limit))?
            .into_iter()
            .map(audit_view)
            .collect())
    }

    pub fn officers(&self, actor: &Actor) -> Result<Vec<Officer>, RaError> {
        self.require(actor, "officer.list", OfficerRole::STAFF)?;
        Ok(self
            .store
            .read(|tx| tx.officers())?
            .into_iter()
            .map(officer_view)
            .collect())
    }

    /// Makes a token for an officer: shown once, stored as its SHA-256. An administrator
    /// does this (the bootstrap token too, for the administrator it created).
    pub fn create_token(
        &self,
        actor: &Actor,
        officer_id: &str,
        req: &NewToken,
    ) -> Result<TokenIssued, RaError> {
        self.require(actor, "officer.token_create", &[OfficerRole::Administrator])?;
        let label = text("label", &req.label, 100)?;
        let days = req.valid_days.unwrap_or(self.policy.token_default_days);
        if days == 0 || days > self.policy.token_max_days {
            return Err(invalid(
                "valid_days",
                format!("1 to {} days", self.policy.token_max_days),
            ));
        }
        let at = now_secs(self.clock.as_ref());
        self.store.write(|tx| -> Result<TokenIssued, RaError> {
            match tx.officer(officer_id)? {
                None => return Err(RaError::Missing(format!("no officer {officer_id}"))),
                Some(o) if o.disabled_at.is_some() => {
                    return Err(RaError::InvalidTransition {
                        what: format!("officer {officer_id}"),
                        current: "disabled".into(),
                        verb: "make a token for",
                    })
                }
                Some(_) => {}
            }
            new_token(tx, actor, officer_id, &label, days, at)
        })
    }

    /// An officer's tokens (ids, labels, times; never the tokens): an administrator's or
    /// the officer's own view.
    pub fn tokens(&self, actor: &Actor, officer_id: &str) -> Result<Vec<TokenInfo>, RaError> {
        if actor.name != officer_id {
            self.require(actor, "officer.tokens", &[OfficerRole::Administrator])?;
        }
        let rows = self.store.read(|tx| -> Result<_, RaError> {
            if tx.officer(officer_id)?.is_none() {
                return Err(RaError::Missing(format!("no officer {officer_id}")));
            }
            Ok(tx.officer_tokens(officer_id)?)
        })?;
        Ok(rows
            .into_iter()
            .map(
                |(id, label, created_at, expires_at, revoked_at)| TokenInfo {
                    id,
                    label,
                    created_at,
                    expires_at,
                    revoked_at,
                },
            )
            .collect())
    }

    /// Disables an officer: every token of theirs revoked at once. An administrator does
    /// this (and ending the officer's own person record does it too).
    pub fn disable_officer(&self, actor: &Actor, officer_id: &str) -> Result<Officer, RaError> {
        self.require(actor, "officer.disable", &[OfficerRole::Administrator])?;
        if actor.name == officer_id {
            return Err(invalid(
                "id",
                "an administrator does not disable themselves",
            ));
        }
        let at = now_secs(self.clock.as_ref());
        self.store.write(|tx| -> Result<Officer, RaError> {
            let o = tx
                .officer(officer_id)?
                .ok_or_else(|| RaError::Missing(format!("no officer {officer_id}")))?;
            if o.disabled_at.is_some() {
                return Err(RaError::InvalidTransition {
                    what: format!("officer {officer_id}"),
                    current: "disabled".into(),
                    verb: "disable",
                });
            }
            if o.roles.contains(&OfficerRole::Administrator) && tx.enabled_administrators()? <= 1 {
                return Err(RaError::InvalidTransition {
                    what: format!("officer {officer_id}"),
                    current: "the last administrator".into(),
                    verb: "disable",
                });
            }
            tx.disable_officer(officer_id, at)?;
            tx.audit(
                &actor.name,
                &AuditEvent::OfficerDisabled {
                    officer: officer_id.to_owned(),
                },
                at,
            )?;
            Ok(officer_view(OfficerRow {
                disabled_at: Some(at),
                ..o
            }))
        })
    }

    /// Revokes a token: an administrator any, an officer their own.
    pub fn revoke_token(
        &self,
        actor: &Actor,
        officer_id: &str,
        token_id: &str,
    ) -> Result<(), RaError> {
        if actor.name != officer_id {
            self.require(actor, "officer.token_revoke", &[OfficerRole::Administrator])?;
        }
        let at = now_secs(self.clock.as_ref());
        self.store.write(|tx| -> Result<(), RaError> {
            if !tx.revoke_officer_token(officer_id, token_id, at)? {
                return Err(RaError::Missing(format!(
                    "officer {officer_id} has no live token {token_id}"
                )));
            }
            tx.audit(
                &actor.name,
                &AuditEvent::OfficerTokenRevoked {
                    officer: officer_id.to_owned(),
                    token_id: token_id.to_owned(),
                },
                at,
            )?;
            Ok(())
        })
    }

    // ---- people ------------------------------------------------------------------------

    /// Checks a person from HR and makes the row (not stored).
    pub fn check_person(&self, req: &NewPerson, at: i64) -> Result<PersonRow, RaError> {
        let employee_number = handle("employee_number", &req.employee_number)?;
        let given_name = text("given_name", &req.given_name, 100)?;
        let family_name = text("family_name", &req.family_name, 100)?;
        let email = req
            .email
            .as_deref()
            .map(|e| {
                let e = text("email", e, 254)?;
                match e.split_once('@') {
                    Some((l, d)) if !l.is_empty() && d.contains('.') && !e.contains(' ') => Ok(e),
                    _ => Err(invalid("email", "not an e-mail address")),
                }
            })
            .transpose()?;
        let upn = req
            .upn
            .as_deref()
            .map(|u| {
                let u = text("upn", u, 254)?;
                if u.split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
                {
                    Ok(u)
                } else {
                    Err(invalid("upn", "a logon name user@domain"))
                }
            })
            .transpose()?;
        let (identity_number, non_resident) =
            identity_data(req.identity_number.as_deref(), req.non_resident.as_ref())?;
        let directory_sid = req
            .directory_sid
            .as_deref()
            .map(|s| {
                let s = s.trim();
                identity::check_sid(s)
                    .map(|()| s.to_owned())
                    .map_err(|e| invalid("directory_sid", e))
            })
            .transpose()?;
        Ok(PersonRow {
            id: new_id(),
            employee_number,
            given_name,
            family_name,
            email,
            upn,
            identity_number,
            non_resident,
            protected_identity: req.protected_identity,
            directory_sid,
            state: PersonState::Registered.as_str().to_owned(),
            proofed_at: None,
            created_at: at,
            updated_at: at,
            external_id: None,
            removed_at: None,
        })
    }

    /// Registers a person from HR.
    pub fn create_person(&self, actor: &Actor, req: &NewPerson) -> Result<Person, RaError> {
        // People come from HR: a registration officer proofs and issues, never invents the
        // person they issue to (K3.4).
        self.require(actor, "person.create", &[OfficerRole::HrAdmin])?;
        let at = now_secs(self.clock.as_ref());
        let row = self.check_person(req, at)?;
        self.store
            .write(|tx| -> Result<(), RaError> { insert_person(tx, actor, &row, at) })?;
        person_view(row)
    }

    /// Imports a batch of people from HR: every row checked (fields, duplicates in the
    /// batch, conflicts with the register) before anything is written; with any error, or
    /// a dry run, nothing is. A registered employee number is updated or left unchanged,
    /// never duplicated; its identity number never changes silently.
    pub fn import_people(
        &self,
        actor: &Actor,
        req: &ImportRequest,
    ) -> Result<ImportReport, RaError> {
        self.require(actor, "person.import", &[OfficerRole::HrAdmin])?;
        if req.people.len() > MAX_IMPORT {
            return Err(invalid(
                "people",
                format!("at most {MAX_IMPORT} people per call"),
            ));
        }
        let at = now_secs(self.clock.as_ref());
        let mut report = ImportReport {
            dry_run: req.dry_run,
            ..ImportReport::default()
        };
        let mut rows = Vec::with_capacity(req.people.len());
        let mut seen_employee = std::collections::HashSet::new();
        let mut seen_identity = std::collections::HashSet::new();
        let mut seen_names = std::collections::HashSet::new();
        for (i, p) in req.people.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let error = |message: String| RowError {
                index,
                employee_number: p.employee_number.clone(),
                message,
            };
            match self.check_person(p, at) {
                Err(e) => report.errors.push(error(e.to_string())),
                Ok(row) => {
                    if !seen_employee.insert(row.employee_number.clone()) {
                        report.errors.push(error(format!(
                            "employee number {} appears twice",
                            row.employee_number
                        )));
                    } else if row
                        .identity_number
                        .as_ref()
                        .is_some_and(|n| !seen_identity.insert(n.clone()))
                    {
                        report.errors.push(error(
                            "the identity number appears twice in the batch".into(),
                        ));
                    } else if [row.upn.as_ref(), row.directory_sid.as_ref()]
                        .into_iter()
                        .flatten()
                        .any(|k| !seen_names.insert(k.clone()))
                    {
                        report.errors.push(error(
                            "the logon name (UPN) or SID appears twice in the batch".into(),
                        ));
                    } else {
                        rows.push((index, row));
                    }
                }
            }
        }
        let apply = |tx: &mut Tx<'_>, report: &mut ImportReport| -> Result<(), RaError> {
            // The register as it touches this batch, in four queries: the people under its
            // employee numbers, and whoever holds its identity numbers, UPNs and SIDs.
            let keys = |f: fn(&PersonRow) -> Option<&str>| -> Vec<&str> {
                rows.iter().filter_map(|(_, r)| f(r)).collect()
            };
            let employees = keys(|r| Some(r.employee_number.as_str()));
            let numbers = keys(|r| r.identity_number.as_deref());
            let upns = keys(|r| r.upn.as_deref());
            let sids = keys(|r| r.directory_sid.as_deref());
            let known = tx.people_matching(&employees, &numbers, &upns, &sids)?;
            let holders = Holders::of(&known);
            let clash = |row: &PersonRow, except: Option<&str>| holders.clash(row, except);
            let by_employee: std::collections::HashMap<String, PersonRow> = known
                .into_iter()
                .map(|p| (p.employee_number.clone(), p))
                .collect();
            // First every check against the register, then (only if all pass) the writes.
            let mut plan = Vec::with_capacity(rows.len());
            for (index, row) in &rows {
                let error = |message: &str| RowError {
                    index: *index,
                    employee_number: row.employee_number.clone(),
                    message: message.to_owned(),
                };
                match by_employee.get(&row.employee_number) {
                    Some(old) => {
                        if actor.person_id.as_deref() == Some(old.id.as_str()) {
                            report
                                .errors
                                .push(error("an officer cannot change their own record"));
                            continue;
                        }
                        // A row without identity data keeps what is registered; a row
                        // with it fills in what is missing, never changes what is there.
                        let given = row.identity_number.is_some() || row.non_resident.is_some();
                        let known = old.identity_number.is_some() || old.non_resident.is_some();
                        if given
                            && known
                            && (old.identity_number != row.identity_number
                                || old.non_resident != row.non_resident)
                        {
                            report.errors.push(error(
                                "the identity data does not match the registered person's; correct it by hand",
                            ));
                            continue;
                        }
                        if clash(row, Some(&old.id)) {
                            report.errors.push(error(CLASH));
                            continue;
                        }
                        let changed = changed_fields(old, row);
                        if changed.is_empty() {
                            report.unchanged += 1;
                        } else {
                            report.updated += 1;
                            // Which fields, not their values: the same for everyone,
                            // so the report cannot tell a protected identity (K5.9) from
                            // another (the audit record keeps the values).
                            report.changes.push(RowChange {
                                index: *index,
                                employee_number: row.employee_number.clone(),
                                kind: "update".into(),
                                fields: changed
                                    .iter()
                                    .map(|c| c.split(':').next().unwrap_or(c))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                            });
                            plan.push((Some(old.clone()), row, changed));
                        }
                    }
                    None => {
                        if clash(row, None) {
                            report.errors.push(error(CLASH));
                            continue;
                        }
                        report.created += 1;
                        report.changes.push(RowChange {
                            index: *index,
                            employee_number: row.employee_number.clone(),
                            kind: "create".into(),
                            fields: String::new(),
                        });
                        plan.push((None, row, Vec::new()));
                    }
                }
            }
            if !report.errors.is_empty() || report.dry_run {
                return Ok(());
            }
            let mut created = Vec::new();
            let mut events = Vec::with_capacity(plan.len());
            for (old, row, changed) in plan {
                match old {
                    None => {
                        created.push(row.clone());
                        events.push(AuditEvent::PersonRegistered {
                            person: row.id.clone(),
                            employee_number: row.employee_number.clone(),
                        });
                    }
                    Some(old) => {
                        let updated = PersonRow {
                            given_name: row.given_name.clone(),
                            family_name: row.family_name.clone(),
                            email: row.email.clone(),
                            upn: row.upn.clone(),
                            // A feed never lifts protection (a file without the column
                            // would unprotect everyone); a registration officer does.
                            protected_identity: old.protected_identity || row.protected_identity,
                            directory_sid: row.directory_sid.clone(),
                            identity_number: old
                                .identity_number
                                .clone()
                                .or_else(|| row.identity_number.clone()),
                            non_resident: old
                                .non_resident
                                .clone()
                                .or_else(|| row.non_resident.clone()),
                            updated_at: at,
                            ..old
                        };
                        tx.update_person_details(&updated)?;
                        tx.set_person_identity(
                            &updated.id,
                            updated.identity_number.as_deref(),
                            updated.non_resident.as_deref(),
                            at,
                        )?;
                        events.push(AuditEvent::PersonUpdated {
                            person: updated.id.clone(),
                            fields: changed.join("; "),
                        });
                    }
                }
            }
            tx.insert_people(&created)?;
            tx.audit_many(&actor.name, &events, at)?;
            report.applied = true;
            Ok(())
        };
        if req.dry_run || !report.errors.is_empty() {
            // Nothing is written but the record that the register was consulted (K2.9: an
            // import's answers say who is registered).
            // A read-only transaction (the lookups' planner setting lives and dies in it).
            self.store.snapshot(|tx| apply(tx, &mut report))?;
            report.applied = false;
            let (rows, errors) = (req.people.len(), report.errors.len());
            self.store.write(|tx| {
                tx.audit(
                    &actor.name,
                    &AuditEvent::PeopleImportChecked {
                        rows: rows as u64,
                        errors: errors as u64,
                    },
                    at,
                )
            })?;
        } else {
            let mut attempt = report.clone();
            self.store.write(|tx| apply(tx, &mut attempt))?;
            report = attempt;
        }
        report.errors.sort_by_key(|e| e.index);
        Ok(report)
    }

    /// A person's record. A protected identity (K5.9) is shown only to registration
    /// officers and administrators; to anyone else it does not exist.
    pub fn person(&self, actor: &Actor, id: &str) -> Result<Person, RaError> {
        self.require(actor, "person.read", OfficerRole::STAFF)?;
        let row = self
            .store
            .read(|tx| tx.person(id))?
            .filter(|p| !p.protected_identity || may_see_protected(actor))
            .ok_or_else(|| RaError::Missing(format!("no person {id}")))?;
        person_view(row)
    }

    /// People in employee-number order, a page at a time; protected identities only for
    /// those who may see them.
    pub fn people(&self, actor: &Actor, after: &str, limit: u32) -> Result<Vec<Person>, RaError> {
        self.require(actor, "person.list", OfficerRole::STAFF)?;
        let limit = i64::from(limit.clamp(1, 1000));
        self.store
            .read(|tx| tx.people(after, limit))?
            .into_iter()
            .filter(|p| !p.protected_identity || may_see_protected(actor))
            .map(person_view)
            .collect()
    }

    /// Records an in-person identity check (K5.10): the document, the officer, the time,
    /// the place. The document must be valid today.
    pub fn proof(
        &self,
        actor: &Actor,
        person_id: &str,
        req: &NewProofing,
    ) -> Result<Person, RaError> {
        self.require(actor, "person.proof", &[OfficerRole::RegistrationOfficer])?;
        self.not_own(actor, "person.proof", person_id)?;
        let document_type = match req.document_type.as_str() {
            t @ ("passport" | "national_id_card" | "drivers_licence" | "service_id_card") => {
                t.to_owned()
            }
            _ => {
                return Err(invalid(
                    "document_type",
                    "passport, national_id_card, drivers_licence or service_id_card",
                ))
            }
        };
        let document_number = text("document_number", &req.document_number, 40)?;
        let issuing_country = country("issuing_country", &req.issuing_country)?;
        let place = text("place", &req.place, 200)?;
        let expiry =
            identity::date_secs(&req.document_expiry).map_err(|e| invalid("document_expiry", e))?;
        let (shown_number, shown_non_resident) =
            identity_data(req.identity_number.as_deref(), req.non_resident.as_ref())?;
        let at = now_secs(self.clock.as_ref());
        if expiry + DAY <= at {
            return Err(invalid("document_expiry", "the document has expired"));
        }
        let proofing = ProofingRow {
            id: new_id(),
            person_id: person_id.to_owned(),
            document_type,
            document_number,
            issuing_country,
            document_expiry: req.document_expiry.clone(),
            officer_id: actor.name.clone(),
            at,
            place,
        };
        let row =
            self.store.write(|tx| -> Result<PersonRow, RaError> {
                let mut p = tx
                    .person(person_id)?
                    .ok_or_else(|| RaError::Missing(format!("no person {person_id}")))?;
                let next = lifecycle::person_next(p.person_state()?, PersonStep::Proof)
                    .ok_or_else(|| RaError::InvalidTransition {
                        what: format!("person {person_id}"),
                        current: p.state.clone(),
                        verb: "proof",
                    })?;
                // The document's identity data, read off it at every check (K5.7): recorded
                // when the register has none (HR did not send it), else it must be the
                // register's — what HR sent is never taken unverified.
                let registered = p.identity_number.is_some() || p.non_resident.is_some();
                let shown = shown_number.is_some() || shown_non_resident.is_some();
                if !shown {
                    return Err(invalid(
                        "identity_number",
                        "give the identity_number (or non_resident data) the document shows",
                    ));
                }
                if registered {
                    if shown_number != p.identity_number
                        || shown_non_resident.as_deref().map(non_resident_of)
                            != p.non_resident.as_deref().map(non_resident_of)
                    {
                        return Err(invalid(
                            "identity_number",
                            "the document's identity data differs from the register's; correct the record first",
                        ));
                    }
                } else {
                    let candidate = PersonRow {
                        identity_number: shown_number.clone(),
                        non_resident: shown_non_resident.clone(),
                        upn: None,
                        directory_sid: None,
                        ..p.clone()
                    };
                    if let Some(why) = conflict(tx, &candidate, Some(person_id))? {
                        return Err(RaError::Exists(why.into()));
                    }
                    tx.set_person_identity(
                        person_id,
                        shown_number.as_deref(),
                        shown_non_resident.as_deref(),
                        at,
                    )?;
                    tx.audit(
                        &actor.name,
                        &AuditEvent::PersonUpdated {
                            person: person_id.to_owned(),
                            fields: "identity data recorded from the document".into(),
                        },
                        at,
                    )?;
                    p.identity_number = shown_number.clone();
                    p.non_resident = shown_non_resident.clone();
                }
                tx.insert_proofing(&proofing)?;
                tx.set_person_state(person_id, next, Some(at), at)?;
                tx.audit(
                    &actor.name,
                    &AuditEvent::PersonProofed {
                        person: person_id.to_owned(),
                        proofing: proofing.id.clone(),
                        document_type: proofing.document_type.clone(),
                        issuing_country: proofing.issuing_country.clone(),
                        place: proofing.place.clone(),
                    },
                    at,
                )?;
                p.state = next.as_str().to_owned();
                p.proofed_at = Some(at);
                Ok(p)
            })?;
        person_view(row)
    }

    /// Employment ended (a leaver): every carrier that could still be used is revoked
    /// (`employment_ended` → affiliationChanged), pending approvals refused, and the person
    /// ENDED, in one transaction.
    pub fn end_person(&self, actor: &Actor, person_id: &str) -> Result<Person, RaError> {
        self.require(actor, "person.end", &[OfficerRole::HrAdmin])?;
        self.not_own(actor, "person.end", person_id)?;
        let at = now_secs(self.clock.as_ref());
        let (row, changed) = self.store.write(|tx| -> Result<_, RaError> {
            let mut p = tx
                .person(person_id)?
                .ok_or_else(|| RaError::Missing(format!("no person {person_id}")))?;
            let mut changed = Changed::new();
            end_in(tx, actor, &mut p, at, &mut changed)?;
            Ok((p, changed))
        })?;
        self.after_commit(&changed);
        let view = person_view(row)?;
        Ok(if view.protected_identity && !may_see_protected(actor) {
            redacted(view)
        } else {
            view
        })
    }

    // ---- carriers ----------------------------------------------------------------------

    /// Registers a blank carrier in stock.
    pub fn create_carrier(&self, actor: &Actor, req: &NewCarrier) -> Result<Carrier, RaError> {
        self.require(
            actor,
            "carrier.create",
            &[OfficerRole::RegistrationOfficer, OfficerRole::Administrator],
        )?;
        let at = now_secs(self.clock.as_ref());
        let row = self
            .store
            .write(|tx| insert_stock_carrier(tx, actor, req.kind, &req.serial_number, at))?;
        Ok(carrier_view(row, Vec::new()))
    }

    pub fn carrier(&self, actor: &Actor, id: &str) -> Result<Carrier, RaError> {
        self.require(actor, "carrier.read", OfficerRole::STAFF)?;
        self.store.read(|tx| -> Result<Carrier, RaError> {
            let c = get_carrier(tx, id)?;
            if let Some(p) = &c.person_id {
                let hidden = tx
                    .person(p)?
                    .is_some_and(|p| p.protected_identity && !may_see_protected(actor));
                if hidden {
                    return Err(RaError::Missing(format!("no carrier {id}")));
                }
            }
            let serials = tx.carrier_serials(id)?;
            Ok(carrier_view(c, serials))
        })
    }

    pub fn carriers_of(&self, actor: &Actor, person_id: &str) -> Result<Vec<Carrier>, RaError> {
        self.person(actor, person_id)?;
        self.store.read(|tx| -> Result<Vec<Carrier>, RaError> {
            tx.carriers_of(person_id)?
                .into_iter()
                .map(|c| {
                    let s = tx.carrier_serials(&c.id)?;
                    Ok(carrier_view(c, s))
                })
                .collect()
        })
    }

    /// Binds a carrier in stock to a proofed person and asks a second officer to approve
    /// its issuance (K3.4); records the terms the applicant accepted (K5.6).
    pub fn assign(
        &self,
        actor: &Actor,
        carrier_id: &str,
        req: &AssignRequest,
    ) -> Result<Approval, RaError> {
        self.assign_card(actor, Card::Id(carrier_id), req)
    }

    /// [`Ra::assign`] for a carrier named by id or by its serial in stock: a blank card
    /// the issuer does not know yet is registered in stock in the same transaction, so a
    /// refused request leaves nothing behind.
    pub fn assign_card(
        &self,
        actor: &Actor,
        card: Card<'_>,
        req: &AssignRequest,
    ) -> Result<Approval, RaError> {
        self.require(actor, "carrier.assign", &[OfficerRole::RegistrationOfficer])?;
        self.not_own(actor, "carrier.assign", &req.person_id)?;
        let terms = text("terms_version", &req.terms_version, 40)?;
        let at = now_secs(self.clock.as_ref());
        let max_age = i64::from(self.policy.proofing_max_age_days) * DAY;
        self.store.write(|tx| -> Result<Approval, RaError> {
            let person = proofed(tx, &req.person_id, at, max_age)?;
            let carrier_id = card.resolve(tx, actor, at)?;
            let mut c = get_carrier(tx, &carrier_id)?;
            if matches!(c.kind, CarrierKind::Temporary | CarrierKind::Substitute) {
                return Err(invalid(
                    "carrier",
                    format!("a {} card is issued through its own flow", c.kind),
                ));
            }
            let approval = new_approval(ApprovalKind::Issuance, &c, &person, actor, at);
            c.person_id = Some(person.id.clone());
            c.terms_version = Some(terms.clone());
            c.terms_accepted_at = Some(at);
            c.approval_id = Some(approval.id.clone());
            let mut changed = Changed::new();
            transition(
                tx,
                actor,
                &mut c,
                Step::Assign,
                Revision::None("assigned"),
                at,
                &mut changed,
            )?;
            file_approval(tx, actor, &approval, terms.clone(), at)?;
            Ok(approval_view(approval))
        })
    }

    /// A temporary card for a holder who forgot theirs: only while they hold an ACTIVE
    /// carrier (the original), which is suspended (FORGOTTEN) when a second officer
    /// approves, with the temporary card's end as its deadline.
    pub fn request_temporary(
        &self,
        actor: &Actor,
        person_id: &str,
        req: &TemporaryRequest,
    ) -> Result<Approval, RaError> {
        self.request_temporary_card(
            actor,
            person_id,
            Card::Id(&req.carrier_id),
            req.original_id.as_deref(),
            req.days,
        )
    }

    /// [`Ra::request_temporary`] for a temporary card named by id or by its serial in
    /// stock (registered there in the same transaction if new).
    pub fn request_temporary_card(
        &self,
        actor: &Actor,
        person_id: &str,
        card: Card<'_>,
        original_id: Option<&str>,
        days: Option<u32>,
    ) -> Result<Approval, RaError> {
        self.require(
            actor,
            "temporary.request",
            &[OfficerRole::RegistrationOfficer],
        )?;
        self.not_own(actor, "temporary.request", person_id)?;
        let days = days.unwrap_or(self.policy.temporary_default_days);
        if days == 0 || days > self.policy.temporary_max_days {
            return Err(invalid(
                "days",
                format!("1 to {} days", self.policy.temporary_max_days),
            ));
        }
        let at = now_secs(self.clock.as_ref());
        let max_age = i64::from(self.policy.proofing_max_age_days) * DAY;
        self.store.write(|tx| -> Result<Approval, RaError> {
            let person = proofed(tx, person_id, at, max_age)?;
            // The card it stands in for: a personal card of theirs, active.
            let personal: Vec<CarrierRow> = tx
                .carriers_of(person_id)?
                .into_iter()
                .filter(|c| {
                    c.state == CarrierState::Active
                        && matches!(c.kind, CarrierKind::SmartCard | CarrierKind::TpmVirtualCard)
                })
                .collect();
            let original = match original_id {
                Some(id) => personal.into_iter().find(|c| c.id == id).ok_or_else(|| {
                    invalid(
                        "original_id",
                        format!("{id} is not an active personal card of this person"),
                    )
                })?,
                None if personal.len() > 1 => {
                    return Err(invalid(
                        "original_id",
                        "the person has several active cards: name the one left at home",
                    ))
                }
                None => personal
                    .into_iter()
                    .next()
                    .ok_or_else(|| RaError::InvalidTransition {
                        what: format!("person {person_id}"),
                        current: "without an active card".into(),
                        verb: "give a temporary card to",
                    })?,
            };
            let carrier_id = card.resolve(tx, actor, at)?;
            let mut c = get_carrier(tx, &carrier_id)?;
            if c.kind != CarrierKind::Temporary {
                return Err(invalid(
                    "carrier_id",
                    format!("{} is a {}, not a temporary card", c.id, c.kind),
                ));
            }
            let approval = new_approval(ApprovalKind::Temporary, &c, &person, actor, at);
            c.person_id = Some(person.id.clone());
            c.original_id = Some(original.id.clone());
            c.ends_at = Some(at + i64::from(days) * DAY);
            c.approval_id = Some(approval.id.clone());
            let mut changed = Changed::new();
            transition(
                tx,
                actor,
                &mut c,
                Step::Assign,
                Revision::None("temporary card"),
                at,
                &mut changed,
            )?;
            file_approval(
                tx,
                actor,
                &approval,
                original.terms_version.unwrap_or_default(),
                at,
            )?;
            Ok(approval_view(approval))
        })
    }

    /// Binds a substitute card from the pool to a proofed person for at most the policy's
    /// 90 days; a second officer approves (two officers issue it). Authentication only; the
    /// period is enforced by revocation at its end, after which the card is wiped and
    /// restocked (`retire` with `restock`).
    pub fn request_substitute(
        &self,
        actor: &Actor,
        person_id: &str,
        req: &SubstituteRequest,
    ) -> Result<Approval, RaError> {
        self.request_substitute_card(actor, person_id, Card::Id(&req.carrier_id), req.days)
    }

    /// [`Ra::request_substitute`] for a substitute card named by id or by its serial in
    /// stock (registered there in the same transaction if new).
    pub fn request_substitute_card(
        &self,
        actor: &Actor,
        person_id: &str,
        card: Card<'_>,
        days: u32,
    ) -> Result<Approval, RaError> {
        self.require(
            actor,
            "substitute.request",
            &[OfficerRole::RegistrationOfficer],
        )?;
        self.not_own(actor, "substitute.request", person_id)?;
        if days == 0 || days > self.policy.substitute_max_days {
            return Err(invalid(
                "days",
                format!("1 to {} days", self.policy.substitute_max_days),
            ));
        }
        let at = now_secs(self.clock.as_ref());
        let max_age = i64::from(self.policy.proofing_max_age_days) * DAY;
        self.store.write(|tx| -> Result<Approval, RaError> {
            let person = proofed(tx, person_id, at, max_age)?;
            // One live substitute or temporary card at a time, and none while a personal
            // card is held by the organisation (admin hold, leave): a substitute must not
            // get around a hold (LIFECYCLE.md: the person may or may not have a card).
            for held in tx.carriers_of(person_id)? {
                let live = matches!(
                    held.state,
                    CarrierState::Assigned
                        | CarrierState::Personalised
                        | CarrierState::Active
                        | CarrierState::Suspended
                );
                let blocking = match held.kind {
                    CarrierKind::Substitute | CarrierKind::Temporary => live,
                    CarrierKind::SmartCard | CarrierKind::TpmVirtualCard => {
                        held.state == CarrierState::Suspended
                            && matches!(
                                held.suspend_reason,
                                Some(SuspendReason::AdminHold | SuspendReason::OnLeave)
                            )
                    }
                };
                if blocking {
                    return Err(RaError::InvalidTransition {
                        what: format!("person {person_id}"),
                        current: format!(
                            "holding the {} {} ({})",
                            held.kind, held.serial_number, held.state
                        ),
                        verb: "give a substitute card to",
                    });
                }
            }
            let carrier_id = card.resolve(tx, actor, at)?;
            let mut c = get_carrier(tx, &carrier_id)?;
            if c.kind != CarrierKind::Substitute {
                return Err(invalid(
                    "carrier_id",
                    format!("{} is a {}, not a substitute card", c.id, c.kind),
                ));
            }
            let approval = new_approval(ApprovalKind::Substitute, &c, &person, actor, at);
            c.person_id = Some(person.id.clone());
            c.ends_at = Some(at + i64::from(days) * DAY);
            c.approval_id = Some(approval.id.clone());
            let mut changed = Changed::new();
            transition(
                tx,
                actor,
                &mut c,
                Step::Assign,
                Revision::None("substitute card"),
                at,
                &mut changed,
            )?;
            file_approval(tx, actor, &approval, String::new(), at)?;
            Ok(approval_view(approval))
        })
    }

    /// Ends a substitute card's period early (the substitute is no longer needed): revoked
    /// as its period ended, as the sweep would at its end; then wiped and restocked with
    /// [`Ra::retire`].
    pub fn end_substitute(&self, actor: &Actor, carrier_id: &str) -> Result<Carrier, RaError> {
        self.change(
            actor,
            "substitute.end",
            carrier_id,
            |tx, actor, c, at, changed| {
                if c.kind != CarrierKind::Substitute || c.state != CarrierState::Active {
                    return Err(RaError::InvalidTransition {
                        what: format!("{} {}", c.kind, c.id),
                        current: c.state.to_string(),
                        verb: "end the substitute period of",
                    });
                }
                // The period ends now, not at the date first set.
                c.ends_at = Some(at);
                transition(
                    tx,
                    actor,
                    c,
                    Step::Revoke,
                    Revision::Revoke(CarrierRevokeReason::PeriodEnded),
                    at,
                    changed,
                )
            },
        )
    }

    /// A revoked or expired carrier handed back: destroyed (RETIRED), or, for a pool card
    /// (temporary, substitute), wiped and back in STOCK, unbound from its last holder.
    pub fn retire(
        &self,
        actor: &Actor,
        carrier_id: &str,
        req: &RetireRequest,
    ) -> Result<Carrier, RaError> {
        let restock = req.restock;
        self.change(
            actor,
            "carrier.retire",
            carrier_id,
            move |tx, actor, c, at, changed| {
                let pool = matches!(c.kind, CarrierKind::Temporary | CarrierKind::Substitute);
                if restock && !pool {
                    return Err(invalid(
                        "restock",
                        format!("a {} is personal: it is destroyed, not restocked", c.kind),
                    ));
                }
                transition(
                    tx,
                    actor,
                    c,
                    Step::Retire,
                    Revision::None(if restock { "wiped" } else { "destroyed" }),
                    at,
                    changed,
                )?;
                // A wiped or destroyed card's PUK opens nothing any more.
                tx.clear_carrier_puk(&c.id)?;
                if restock {
                    c.original_id = None;
                    c.ends_at = None;
                    c.revoke_reason = None;
                    c.terms_version = None;
                    c.terms_accepted_at = None;
                    c.receipt = None;
                    tx.release_certificates(&c.id, at)?;
                    transition(
                        tx,
                        actor,
                        c,
                        Step::Restock,
                        Revision::None("back in stock"),
                        at,
                        changed,
                    )?;
                }
                Ok(())
            },
        )
    }

    /// Pending approvals; those for a protected identity only to those who may see it.
    pub fn approvals_pending(&self, actor: &Actor) -> Result<Vec<Approval>, RaError> {
        self.require(actor, "approval.list", OfficerRole::STAFF)?;
        self.store.read(|tx| -> Result<Vec<Approval>, RaError> {
            let mut out = Vec::new();
            for a in tx.approvals_pending()? {
                let hidden = !may_see_protected(actor)
                    && tx
                        .person(&a.person_id)?
                        .is_some_and(|p| p.protected_identity);
                if !hidden {
                    let note = unblock::note(tx, &a)?;
                    let mut view = approval_view(a);
                    view.note = note;
                    out.push(view);
                }
            }
            Ok(out)
        })
    }

    /// A second officer decides: not the one who asked, nor the person concerned (K3.4;
    /// both are recorded). Refusing puts the carrier back in stock; approving a temporary
    /// card suspends the original; approving a PUK release answers the approver's release
    /// code (once).
    pub fn decide(
        &self,
        actor: &Actor,
        approval_id: &str,
        approve: bool,
    ) -> Result<Approval, RaError> {
        self.require(
            actor,
            "approval.decide",
            &[OfficerRole::RegistrationOfficer],
        )?;
        let at = now_secs(self.clock.as_ref());
        let found = self.store.read(|tx| tx.approval(approval_id))?;
        let a = found.ok_or_else(|| RaError::Missing(format!("no approval {approval_id}")))?;
        if a.requested_by == actor.name {
            let reason = format!(
                "{} asked for this; a second officer must decide",
                actor.name
            );
            self.refused(actor, "approval.decide", &reason);
            return Err(RaError::FourEyes(reason));
        }
        self.not_own(actor, "approval.decide", &a.person_id)?;
        // The officer who checked the person's identity does not also approve (K3.4: the
        // identity check and the approval are two people's).
        let proofed_by = self
            .store
            .read(|tx| tx.proofings(&a.person_id))?
            .pop()
            .map(|p| p.officer_id);
        if approve && proofed_by.as_deref() == Some(actor.name.as_str()) {
            let reason = format!(
                "{} checked this person's identity; another officer must approve",
                actor.name
            );
            self.refused(actor, "approval.decide", &reason);
            return Err(RaError::FourEyes(reason));
        }
        let (view, changed) = self.store.write(|tx| -> Result<_, RaError> {
            let mut a = tx
                .approval(approval_id)?
                .ok_or_else(|| RaError::Missing(format!("no approval {approval_id}")))?;
            if a.state != ApprovalState::Pending {
                return Err(RaError::InvalidTransition {
                    what: format!("approval {approval_id}"),
                    current: a.state.to_string(),
                    verb: "decide",
                });
            }
            if approve
                && tx
                    .officer(&a.requested_by)?
                    .is_some_and(|o| o.disabled_at.is_some())
            {
                return Err(RaError::InvalidTransition {
                    what: format!("approval {approval_id}"),
                    current: format!("asked for by {}, who is disabled", a.requested_by),
                    verb: "approve",
                });
            }
            if approve {
                // What the approver saw is what will be issued: a record changed since the
                // request (a new name, logon name, SID) needs a new request.
                let person = tx
                    .person(&a.person_id)?
                    .ok_or_else(|| RaError::Missing(format!("no person {}", a.person_id)))?;
                if subject_json(&person) != a.subject {
                    return Err(RaError::InvalidTransition {
                        what: format!("approval {approval_id}"),
                        current: "out of date (the person's record changed since the request)"
                            .into(),
                        verb: "approve",
                    });
                }
            }
            let decision = if approve {
                ApprovalState::Approved
            } else {
                ApprovalState::Refused
            };
            let release_code = if a.kind == ApprovalKind::PukRelease {
                Ra::decide_unblock(tx, &a, approve, at)?
            } else {
                None
            };
            tx.decide_approval(approval_id, decision, &actor.name, at)?;
            tx.audit(
                &actor.name,
                &AuditEvent::ApprovalDecided {
                    approval: approval_id.to_owned(),
                    decision: decision.to_string(),
                    kind: a.kind.to_string(),
                    carrier: a.carrier_id.clone(),
                    person: a.person_id.clone(),
                },
                at,
            )?;
            let mut changed = Changed::new();
            let mut c = get_carrier(tx, &a.carrier_id)?;
            if a.kind == ApprovalKind::PukRelease {
                // A PUK release changes no carrier: the card's channel takes it (or not).
            } else if !approve {
                c.person_id = None;
                c.original_id = None;
                c.ends_at = None;
                transition(
                    tx,
                    actor,
                    &mut c,
                    Step::Unassign,
                    Revision::None("approval refused"),
                    at,
                    &mut changed,
                )?;
            } else if matches!(a.kind, ApprovalKind::Temporary | ApprovalKind::Substitute) {
                // The period runs from the approval, not from the request: a late approval
                // must not start a card (and its original's suspension) already ended.
                let length = c.ends_at.unwrap_or(a.requested_at) - a.requested_at;
                c.ends_at = Some(at + length.max(DAY));
                c.updated_at = at;
                tx.update_carrier(&c)?;
            }
            if approve && a.kind == ApprovalKind::Temporary {
                let original_id = c.original_id.clone().unwrap_or_default();
                let mut original = get_carrier(tx, &original_id)?;
                let deadline = c.ends_at.unwrap_or(at);
                transition(
                    tx,
                    actor,
                    &mut original,
                    Step::Suspend,
                    Revision::Suspend(SuspendReason::Forgotten, deadline),
                    at,
                    &mut changed,
                )?;
            }
            a.state = decision;
            a.decided_by = Some(actor.name.clone());
            a.decided_at = Some(at);
            let note = unblock::note(tx, &a)?;
            let mut view = approval_view(a);
            view.note = note;
            view.release_code = release_code.map(|c| c.to_string());
            Ok((view, changed))
        })?;
        self.after_commit(&changed);
        Ok(view)
    }

    /// The carrier's keys, generated on it, certified from the person's record with proof
    /// of possession (CSR or PIV attestation), born on hold; the carrier is then
    /// PERSONALISED. Every proof is checked before anything is signed, so a bad key
    /// changes nothing.
    pub fn register_keys(
        &self,
        actor: &Actor,
        carrier_id: &str,
        req: &KeysRequest,
    ) -> Result<Carrier, RaError> {
        self.require(actor, "carrier.keys", &[OfficerRole::RegistrationOfficer])?;
        if req.keys.is_empty() || req.keys.len() > 4 {
            return Err(invalid("keys", "one to four keys"));
        }
        // The card's PUK, sealed before anything is certified: a token that cannot seal
        // it changes nothing.
        let sealed_puk = req
            .puk
            .as_deref()
            .map(|puk| -> Result<Vec<u8>, RaError> {
                unblock::check_puk(puk)?;
                // The release's proof of the card is its card-authentication key: one
                // generated on the card, shown by the card's attestation, not a CSR.
                if !req.keys.iter().any(|k| {
                    k.profile == ProfileName::CardAuthentication
                        && (k.attestation.is_some() || k.tpm.is_some())
                }) {
                    return Err(invalid(
                        "puk",
                        "a PUK is escrowed only with an attested card-authentication key (the unblock's proof of the card)",
                    ));
                }
                Ok(self
                    .ca
                    .seal_secret(&unblock::puk_aad(carrier_id), puk.as_bytes())?)
            })
            .transpose()?;
        let at = now_secs(self.clock.as_ref());
        let (carrier, person, approval) = self.store.read(|tx| -> Result<_, RaError> {
            let c = get_carrier(tx, carrier_id)?;
            let approval = match &c.approval_id {
                Some(a) => tx
                    .approval(a)?
                    .filter(|a| a.state == ApprovalState::Approved),
                None => None,
            };
            if c.state != CarrierState::Assigned || approval.is_none() {
                let current = if c.state == CarrierState::Assigned {
                    "assigned, its approval pending".to_owned()
                } else {
                    c.state.to_string()
                };
                return Err(RaError::InvalidTransition {
                    what: format!("carrier {carrier_id}"),
                    current,
                    verb: "personalise",
                });
            }
            let p = tx
                .person(c.person_id.as_deref().unwrap_or_default())?
                .ok_or_else(|| RaError::Missing(format!("carrier {carrier_id} has no person")))?;
            let approval = approval
                .ok_or_else(|| RaError::Missing(format!("carrier {carrier_id} has no approval")))?;
            Ok((c, p, approval))
        })?;
        // The subject the approver approved, not whatever the record says now.
        let approved: Subject = serde_json::from_str(&approval.subject).map_err(|e| {
            RaError::Store(tessera_issuer_store::StoreError::Corrupt(format!(
                "approval {}: {e}",
                approval.id
            )))
        })?;
        self.not_own(actor, "carrier.keys", &person.id)?;
        let allowed = profiles_for(carrier.kind);
        if req.keys.iter().any(|k| !allowed.contains(&k.profile)) {
            return Err(invalid(
                "keys",
                format!("a {} card carries authentication keys only", carrier.kind),
            ));
        }
        let mut requests = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut evidence = Vec::new();
        // The card's TPM and PIN index, recorded for its renewals.
        let mut ek: Option<tessera_issuer_store::registration::CarrierTpm> = None;
        for k in &req.keys {
            let issue = self.carrier_request(&carrier, &approved, k);
            let proof = match (&k.tpm, carrier.kind) {
                (Some(tpm), CarrierKind::TpmVirtualCard) => {
                    if k.csr.is_some() || k.attestation.is_some() {
                        return Err(RaError::BadRequest(
                            "give exactly one of csr, attestation and tpm".into(),
                        ));
                    }
                    let proven = self.tpm_key(
                        tpm::Purpose::Enrolment,
                        carrier_id,
                        &approval.id,
                        k.profile,
                        tpm,
                    )?;
                    // All the card's keys in one TPM and bound to one PIN index: those its
                    // renewals must use.
                    let recorded =
                        ek.get_or_insert_with(|| tessera_issuer_store::registration::CarrierTpm {
                            carrier_id: carrier_id.to_owned(),
                            ek_key_sha256: proven.ek_key_sha256.clone(),
                            pin_index_name: None,
                        });
                    if recorded.ek_key_sha256 != proven.ek_key_sha256 {
                        return Err(RaError::BadProof(
                            "the keys are proven in two different TPMs".into(),
                        ));
                    }
                    if let Some(name) = proven.pin_index_name.as_ref().map(hex::encode) {
                        match &recorded.pin_index_name {
                            Some(other) if *other != name => {
                                return Err(RaError::BadProof(
                                    "the keys are bound to two different PIN indices".into(),
                                ))
                            }
                            _ => recorded.pin_index_name = Some(name),
                        }
                    }
                    evidence.push(Some(proven.evidence));
                    (proven.spki, Proof::TpmAttestation)
                }
                (Some(_), kind) => {
                    return Err(invalid(
                        "keys",
                        format!("a {kind} card's keys are not in a TPM"),
                    ))
                }
                (None, CarrierKind::TpmVirtualCard) => {
                    return Err(invalid(
                        "keys",
                        "a TPM virtual card's keys are proven by TPM attestation (tpm)",
                    ))
                }
                (None, _) => {
                    evidence.push(None);
                    self.key(&issue)?
                }
            };
            // One key per slot: a PIN-less card-authentication key must not also be
            // certified as a key that needs the PIN.
            if !seen.insert(proof.0.clone()) {
                return Err(RaError::BadProof(
                    "the same key is given for two profiles".into(),
                ));
            }
            requests.push((issue, proof));
        }
        // One key, one carrier: refused before anything is signed (and checked again as
        // each certificate is linked).
        self.store.read(|tx| -> Result<(), RaError> {
            for (_, (key, _)) in &requests {
                if let Some(other) =
                    tx.other_carrier_with_key(&crate::spki_sha256(key), carrier_id)?
                {
                    return Err(crate::key_on_other_carrier(&other));
                }
            }
            Ok(())
        })?;
        let mut issued = Vec::new();
        let mut failed = None;
        for ((issue, proof), evidence) in requests.into_iter().zip(evidence) {
            match self.issue_proven(actor, &issue, proof, Some(carrier_id), evidence) {
                Ok(i) => issued.push(i.serial),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let outcome = match failed {
            Some(e) => Err(e),
            None => self.store.write(|tx| -> Result<_, RaError> {
                let mut c = get_carrier(tx, carrier_id)?;
                // Still the carrier, the person and the approval this call began with: another
                // officer may have re-assigned it, or personalised it first, meanwhile.
                if c.approval_id.as_deref() != Some(approval.id.as_str())
                    || c.person_id.as_deref() != Some(person.id.as_str())
                    || c.state != CarrierState::Assigned
                {
                    return Err(RaError::InvalidTransition {
                        what: format!("carrier {carrier_id}"),
                        current: format!("{} (changed by another officer meanwhile)", c.state),
                        verb: "personalise",
                    });
                }
                let mut changed = Changed::new();
                // Certificates of an earlier, failed attempt are replaced by these.
                for s in tx.carrier_serials(carrier_id)? {
                    if !issued.contains(&s) {
                        revoke_serial(
                            tx,
                            actor,
                            &s,
                            RevocationReason::Superseded,
                            at,
                            &mut changed,
                        )?;
                    }
                }
                transition(
                    tx,
                    actor,
                    &mut c,
                    Step::Personalise,
                    Revision::None("keys certified"),
                    at,
                    &mut changed,
                )?;
                if let Some(tpm) = &ek {
                    tx.set_carrier_tpm(tpm, at)?;
                }
                if let Some(sealed) = &sealed_puk {
                    tx.set_carrier_puk(carrier_id, sealed, at)?;
                    tx.audit(
                        &actor.name,
                        &AuditEvent::PukEscrowed {
                            carrier: carrier_id.to_owned(),
                        },
                        at,
                    )?;
                }
                let serials = tx.carrier_serials(carrier_id)?;
                Ok((carrier_view(c, serials), changed))
            }),
        };
        match outcome {
            Ok((view, changed)) => {
                self.after_commit(&changed);
                Ok(view)
            }
            Err(e) => {
                // Whatever this call certified is withdrawn (it was on hold, never good).
                self.withdraw(actor, &issued, at);
                Err(e)
            }
        }
    }

    /// Revokes (superseded) the certificates a failed call certified: born on hold, they
    /// were never good. A failure to do so is logged (they stay on hold, which
    /// reconciliation reports).
    fn withdraw(&self, actor: &Actor, issued: &[Serial], at: i64) {
        if issued.is_empty() {
            return;
        }
        let withdrawn = self.store.write(|tx| -> Result<Changed, RaError> {
            let mut changed = Changed::new();
            for s in issued {
                revoke_serial(tx, actor, s, RevocationReason::Superseded, at, &mut changed)?;
            }
            Ok(changed)
        });
        match withdrawn {
            Ok(changed) => self.after_commit(&changed),
            Err(w) => {
                tracing::error!(error = %w, serials = ?issued, "withdrawing the certificates of a failed call (they stay on hold)")
            }
        }
    }

    /// The issuance request for one of a carrier's keys: the subject from the person's
    /// record; a temporary card's certificate lives at most the policy's maximum period
    /// (its actual period is enforced by revocation, so it can be extended).
    fn carrier_request(&self, c: &CarrierRow, approved: &Subject, k: &CarrierKey) -> IssueRequest {
        let subject = Subject {
            common_name: approved.common_name.clone(),
            upn: approved
                .upn
                .clone()
                .filter(|_| k.profile == ProfileName::Authentication),
            email: approved
                .email
                .clone()
                .filter(|_| k.profile != ProfileName::CardAuthentication),
            card_uuid: (k.profile == ProfileName::CardAuthentication).then(|| c.id.clone()),
            sid: approved
                .sid
                .clone()
                .filter(|_| k.profile == ProfileName::Authentication),
        };
        let validity_days = match c.kind {
            CarrierKind::Temporary => Some(self.policy.temporary_max_days),
            CarrierKind::Substitute => Some(self.policy.substitute_max_days),
            CarrierKind::SmartCard | CarrierKind::TpmVirtualCard => None,
        };
        IssueRequest {
            profile: k.profile,
            subject,
            csr: k.csr.clone(),
            attestation: k.attestation.clone(),
            public_key: None,
            validity_days,
        }
    }

    /// The in-person hand-over against a signed receipt (K6.7): certificates good.
    pub fn activate(
        &self,
        actor: &Actor,
        carrier_id: &str,
        req: &ActivateRequest,
    ) -> Result<Carrier, RaError> {
        let receipt = text("receipt", &req.receipt, 200)?;
        // The holder's loss-report code (96 random bits, in groups of four for reading
        // off a receipt), handed over with the card; kept only as its SHA-256.
        let secret: [u8; 12] = rand::random();
        let code = zeroize::Zeroizing::new(canonical_code(&hex::encode_upper(secret)));
        let hash = loss_code_hash(&code);
        let mut view = self.change(
            actor,
            "carrier.activate",
            carrier_id,
            move |tx, actor, c, at, changed| {
                c.receipt = Some(receipt.clone());
                tx.set_loss_code(&c.id, &hash)?;
                transition(
                    tx,
                    actor,
                    c,
                    Step::Activate,
                    Revision::None(&format!("receipt {receipt}")),
                    at,
                    changed,
                )
            },
        )?;
        view.loss_report_code = Some(code.to_string());
        Ok(view)
    }

    /// The holder reports their card lost with the code from the hand-over receipt, at any
    /// hour, without an officer (LoA3 K6.8): the card is suspended (temporarily lost) at
    /// once — OCSP and the CRL follow within seconds — and revoked as lost at the deadline
    /// unless an officer re-activates it. A code names one card; reporting twice changes
    /// nothing. Nothing else is revealed to whoever holds a code.
    pub fn report_loss(
        &self,
        report: &tessera_issuer_types::api::LossReport,
    ) -> Result<tessera_issuer_types::api::LossReported, RaError> {
        let unknown = || RaError::Missing("no card has this loss-report code".into());
        // However it was typed: dashes, spaces and case do not matter.
        let digits: String = report
            .code
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(64)
            .collect();
        let hash = loss_code_hash(&canonical_code(&digits));
        let at = now_secs(self.clock.as_ref());
        let days = i64::from(self.policy.suspension_max_days);
        let holder = Actor {
            name: "holder (loss report)".into(),
            roles: Vec::new(),
            person_id: None,
            bootstrap: false,
        };
        // An unknown code costs a read, never the write lock every officer shares.
        if self
            .store
            .read(|tx| tx.carrier_by_loss_code(&hash))?
            .is_none()
        {
            tracing::debug!("loss report with an unknown code");
            return Err(unknown());
        }
        let (answer, changed) = self.store.write(|tx| -> Result<_, RaError> {
            let mut c = tx.carrier_by_loss_code(&hash)?.ok_or_else(unknown)?;
            let mut changed = Changed::new();
            // Never past a temporary or substitute card's own end.
            let mut deadline = at + days * DAY;
            if let Some(end) = c.ends_at {
                deadline = deadline.min(end.max(at));
            }
            match c.state {
                CarrierState::Active => transition(
                    tx,
                    &holder,
                    &mut c,
                    Step::Suspend,
                    Revision::Suspend(SuspendReason::TemporarilyLost, deadline),
                    at,
                    &mut changed,
                )?,
                // Already suspended (left at home while a temporary card is out, on leave):
                // now it is reported lost — recorded, revoked as lost at the deadline, and
                // never re-activated by a temporary card's return.
                CarrierState::Suspended
                    if c.suspend_reason != Some(SuspendReason::TemporarilyLost) =>
                {
                    let from = c.suspend_reason;
                    c.suspend_reason = Some(SuspendReason::TemporarilyLost);
                    c.deadline = Some(c.deadline.map_or(deadline, |d| d.min(deadline)));
                    c.updated_at = at;
                    tx.update_carrier(&c)?;
                    tx.audit(
                        &holder.name,
                        &AuditEvent::CarrierChanged {
                            carrier: c.id.clone(),
                            from: format!(
                                "suspended ({})",
                                from.map(SuspendReason::as_str).unwrap_or_default()
                            ),
                            to: "suspended (temporarily_lost)".into(),
                            why: "reported lost by the holder".into(),
                            deadline: c.deadline.unwrap_or(0),
                        },
                        at,
                    )?;
                }
                CarrierState::Suspended => {}
                _ => return Err(unknown()),
            }
            Ok((
                tessera_issuer_types::api::LossReported {
                    serial_number: c.serial_number.clone(),
                    suspended_until: c.deadline.unwrap_or(at),
                },
                changed,
            ))
        })?;
        self.after_commit(&changed);
        tracing::info!(serial_number = %answer.serial_number, "card reported lost by its holder");
        Ok(answer)
    }

    /// Suspends an active carrier with a deadline, after which the sweep revokes it.
    pub fn suspend(
        &self,
        actor: &Actor,
        carrier_id: &str,
        req: &SuspendRequest,
    ) -> Result<Carrier, RaError> {
        if req.days == 0 || req.days > self.policy.suspension_max_days {
            return Err(invalid(
                "days",
                format!("1 to {} days", self.policy.suspension_max_days),
            ));
        }
        let days = i64::from(req.days);
        let reason = req.reason;
        self.change(
            actor,
            "carrier.suspend",
            carrier_id,
            move |tx, actor, c, at, changed| {
                transition(
                    tx,
                    actor,
                    c,
                    Step::Suspend,
                    Revision::Suspend(reason, at + days * DAY),
                    at,
                    changed,
                )
            },
        )
    }

    /// Re-activates a suspended carrier after re-verification; a temporary card issued in
    /// its place is revoked as superseded.
    pub fn resume(
        &self,
        actor: &Actor,
        carrier_id: &str,
        req: &ResumeRequest,
    ) -> Result<Carrier, RaError> {
        let how = match req.verification.as_str() {
            v @ ("in_person" | "pin") => v.to_owned(),
            _ => return Err(invalid("verification", "in_person or pin")),
        };
        self.change(
            actor,
            "carrier.resume",
            carrier_id,
            move |tx, actor, c, at, changed| resume(tx, actor, c, &how, at, changed),
        )
    }

    pub fn revoke_carrier(
        &self,
        actor: &Actor,
        carrier_id: &str,
        req: &RevokeCarrierRequest,
    ) -> Result<Carrier, RaError> {
        let reason = req.reason;
        if !reason.by_officer() {
            return Err(invalid(
                "reason",
                format!("{reason} is given by the issuer itself; an officer gives lost, stolen, compromised or damaged"),
            ));
        }
        self.change(
            actor,
            "carrier.revoke",
            carrier_id,
            move |tx, actor, c, at, changed| {
                transition(
                    tx,
                    actor,
                    c,
                    Step::Revoke,
                    Revision::Revoke(reason),
                    at,
                    changed,
                )
            },
        )
    }

    /// Lengthens a temporary card's period, never past the policy's maximum from its
    /// assignment; the original's deadline follows.
    pub fn extend(
        &self,
        actor: &Actor,
        carrier_id: &str,
        req: &ExtendRequest,
    ) -> Result<Carrier, RaError> {
        let max = i64::from(self.policy.temporary_max_days) * DAY;
        let days = i64::from(req.days);
        if req.days == 0 {
            return Err(invalid("days", "at least 1"));
        }
        self.change(
            actor,
            "temporary.extend",
            carrier_id,
            move |tx, actor, c, at, changed| {
                let _ = changed;
                if c.kind != CarrierKind::Temporary || c.state != CarrierState::Active {
                    return Err(RaError::InvalidTransition {
                        what: format!("{} {}", c.kind, c.id),
                        current: c.state.to_string(),
                        verb: "extend",
                    });
                }
                let start = tx
                    .approval(c.approval_id.as_deref().unwrap_or_default())?
                    .map_or(c.created_at, |a| a.requested_at);
                let ends = c.ends_at.unwrap_or(at) + days * DAY;
                if ends - start > max {
                    return Err(invalid(
                        "days",
                        format!("a temporary card lasts at most {} days", max / DAY),
                    ));
                }
                c.ends_at = Some(ends);
                c.deadline = Some(ends);
                if let Some(o) = c.original_id.clone() {
                    let mut original = get_carrier(tx, &o)?;
                    if original.state == CarrierState::Suspended {
                        original.deadline = Some(ends);
                        original.updated_at = at;
                        tx.update_carrier(&original)?;
                    }
                }
                c.updated_at = at;
                tx.update_carrier(c)?;
                tx.audit(
                    &actor.name,
                    &AuditEvent::CarrierChanged {
                        carrier: c.id.clone(),
                        from: c.state.to_string(),
                        to: c.state.to_string(),
                        why: format!("extended by {days} days"),
                        deadline: ends,
                    },
                    at,
                )?;
                Ok(())
            },
        )
    }

    /// A temporary card comes back. "No longer needed": it is revoked (superseded) and the
    /// original re-activated (the holder shows it: re-verification in person). "Lost": the
    /// original is revoked (lost) and the temporary card stays until a replacement.
    pub fn return_temporary(
        &self,
        actor: &Actor,
        carrier_id: &str,
        req: &ReturnRequest,
    ) -> Result<Carrier, RaError> {
        let outcome = req.outcome;
        self.change(
            actor,
            "temporary.return",
            carrier_id,
            move |tx, actor, c, at, changed| {
                if c.kind != CarrierKind::Temporary || c.state != CarrierState::Active {
                    return Err(RaError::InvalidTransition {
                        what: format!("{} {}", c.kind, c.id),
                        current: c.state.to_string(),
                        verb: "return",
                    });
                }
                let original_id = c.original_id.clone().unwrap_or_default();
                let mut original = get_carrier(tx, &original_id)?;
                match outcome {
                    ReturnOutcome::NoLongerNeeded
                        if original.suspend_reason == Some(SuspendReason::TemporarilyLost) =>
                    {
                        return Err(RaError::InvalidTransition {
                            what: format!("carrier {}", original.id),
                            current: "reported lost by its holder".into(),
                            verb: "re-activate with the temporary card's return (re-verify and resume it, or return the temporary card as lost)",
                        });
                    }
                    ReturnOutcome::NoLongerNeeded => {
                        // Resuming the original revokes this card as superseded.
                        resume(tx, actor, &mut original, "in_person", at, changed)?;
                        *c = get_carrier(tx, &c.id)?;
                    }
                    ReturnOutcome::Lost => {
                        transition(
                            tx,
                            actor,
                            &mut original,
                            Step::Revoke,
                            Revision::Revoke(CarrierRevokeReason::Lost),
                            at,
                            changed,
                        )?;
                    }
                }
                Ok(())
            },
        )
    }

    /// Runs one carrier change in a transaction: reads the carrier, refuses an officer's
    /// own record, applies `f`, and tells this process's OCSP cache after the commit.
    fn change(
        &self,
        actor: &Actor,
        action: &str,
        carrier_id: &str,
        f: impl FnOnce(&mut Tx<'_>, &Actor, &mut CarrierRow, i64, &mut Changed) -> Result<(), RaError>,
    ) -> Result<Carrier, RaError> {
        self.require(actor, action, &[OfficerRole::RegistrationOfficer])?;
        if let Some(p) = self.store.read(|tx| get_carrier(tx, carrier_id))?.person_id {
            self.not_own(actor, action, &p)?;
        }
        let at = now_secs(self.clock.as_ref());
        let (view, changed) = self.store.write(|tx| -> Result<_, RaError> {
            let mut c = get_carrier(tx, carrier_id)?;
            let mut changed = Changed::new();
            f(tx, actor, &mut c, at, &mut changed)?;
            let serials = tx.carrier_serials(carrier_id)?;
            Ok((carrier_view(c, serials), changed))
        })?;
        self.after_commit(&changed);
        Ok(view)
    }

    /// Asks for many carriers to be revoked at once (a lost batch of cards, a closed office);
    /// nothing happens until a second officer approves (K6.9). Every carrier must exist
    /// and be revocable now, and the reason must be an officer's.
    pub fn request_bulk_revocation(
        &self,
        actor: &Actor,
        req: &BulkRevocationRequest,
    ) -> Result<BulkRevocation, RaError> {
        self.require(
            actor,
            "bulk_revocation.request",
            &[OfficerRole::RegistrationOfficer],
        )?;
        if req.carrier_ids.is_empty() || req.carrier_ids.len() > MAX_BULK {
            return Err(invalid("carrier_ids", format!("1 to {MAX_BULK} carriers")));
        }
        if !req.reason.by_officer() {
            return Err(invalid("reason", "lost, stolen, compromised or damaged"));
        }
        let mut ids = req.carrier_ids.clone();
        ids.sort();
        ids.dedup();
        let at = now_secs(self.clock.as_ref());
        let row = self.store.write(|tx| -> Result<_, RaError> {
            // Each carrier with its holder now: an approval revokes a card only while it
            // is still that holder's (a pool card re-issued meanwhile is left alone).
            let mut bound = Vec::with_capacity(ids.len());
            for id in &ids {
                let c = get_carrier(tx, id)?;
                if lifecycle::next(c.state, Step::Revoke).is_none() {
                    return Err(RaError::InvalidTransition {
                        what: format!("carrier {id}"),
                        current: c.state.to_string(),
                        verb: "revoke",
                    });
                }
                if c.person_id.is_some() && c.person_id == actor.person_id {
                    return Err(RaError::FourEyes(
                        "an officer does not revoke their own card in bulk".into(),
                    ));
                }
                bound.push(BulkCarrier {
                    id: c.id,
                    person: c.person_id,
                });
            }
            let carriers = serde_json::to_string(&bound).map_err(|e| invalid("carrier_ids", e))?;
            let row = tessera_issuer_store::registration::BulkRow {
                id: new_id(),
                reason: req.reason.as_str().to_owned(),
                carriers_sha256: hex::encode(sha2::Sha256::digest(carriers.as_bytes())),
                carriers,
                requested_by: actor.name.clone(),
                requested_at: at,
                state: ApprovalState::Pending.as_str().to_owned(),
                decided_by: None,
                decided_at: None,
            };
            tx.insert_bulk(&row)?;
            tx.audit(
                &actor.name,
                &AuditEvent::BulkRevocationRequested {
                    bulk: row.id.clone(),
                    reason: row.reason.clone(),
                    carriers: ids.len() as u64,
                    carriers_sha256: row.carriers_sha256.clone(),
                },
                at,
            )?;
            Ok(row)
        })?;
        bulk_view(row, None)
    }

    pub fn bulk_revocations_pending(&self, actor: &Actor) -> Result<Vec<BulkRevocation>, RaError> {
        self.require(actor, "bulk_revocation.list", OfficerRole::STAFF)?;
        self.store
            .read(|tx| tx.bulks_pending())?
            .into_iter()
            .map(|b| bulk_view(b, None))
            .collect()
    }

    /// A second officer (not the one who asked) approves or refuses a bulk revocation;
    /// approved, every carrier still revocable is revoked in one transaction.
    pub fn decide_bulk_revocation(
        &self,
        actor: &Actor,
        id: &str,
        approve: bool,
    ) -> Result<BulkRevocation, RaError> {
        self.require(
            actor,
            "bulk_revocation.decide",
            &[OfficerRole::RegistrationOfficer],
        )?;
        let found = self.store.read(|tx| tx.bulk(id))?;
        let b = found.ok_or_else(|| RaError::Missing(format!("no bulk revocation {id}")))?;
        if b.requested_by == actor.name {
            let reason = format!(
                "{} asked for this; a second officer must decide",
                actor.name
            );
            self.refused(actor, "bulk_revocation.decide", &reason);
            return Err(RaError::FourEyes(reason));
        }
        let at = now_secs(self.clock.as_ref());
        let (view, changed) = self.store.write(|tx| -> Result<_, RaError> {
            let mut b = tx
                .bulk(id)?
                .ok_or_else(|| RaError::Missing(format!("no bulk revocation {id}")))?;
            if b.state != ApprovalState::Pending.as_str() {
                return Err(RaError::InvalidTransition {
                    what: format!("bulk revocation {id}"),
                    current: b.state.clone(),
                    verb: "decide",
                });
            }
            let reason: CarrierRevokeReason =
                b.reason.parse().map_err(|_| invalid("reason", &b.reason))?;
            let bound: Vec<BulkCarrier> =
                serde_json::from_str(&b.carriers).map_err(|e| invalid("carriers", e))?;
            if tx
                .officer(&b.requested_by)?
                .is_some_and(|o| o.disabled_at.is_some())
            {
                return Err(RaError::InvalidTransition {
                    what: format!("bulk revocation {id}"),
                    current: format!("asked for by {}, who is disabled", b.requested_by),
                    verb: "approve",
                });
            }
            let decision = if approve {
                ApprovalState::Approved
            } else {
                ApprovalState::Refused
            };
            let mut changed = Changed::new();
            let mut revoked = 0u64;
            if approve {
                for wanted in &bound {
                    let mut c = get_carrier(tx, &wanted.id)?;
                    if c.person_id.is_some() && c.person_id == actor.person_id {
                        return Err(RaError::FourEyes(
                            "an officer does not approve the revocation of their own card".into(),
                        ));
                    }
                    // Revoked meanwhile, or now another holder's: left as it is.
                    if lifecycle::next(c.state, Step::Revoke).is_some()
                        && c.person_id == wanted.person
                    {
                        transition(
                            tx,
                            actor,
                            &mut c,
                            Step::Revoke,
                            Revision::Revoke(reason),
                            at,
                            &mut changed,
                        )?;
                        revoked += 1;
                    }
                }
            }
            tx.decide_bulk(id, decision, &actor.name, at)?;
            tx.audit(
                &actor.name,
                &AuditEvent::BulkRevocationDecided {
                    bulk: id.to_owned(),
                    decision: decision.to_string(),
                    revoked,
                },
                at,
            )?;
            b.state = decision.as_str().to_owned();
            b.decided_by = Some(actor.name.clone());
            b.decided_at = Some(at);
            Ok((bulk_view(b, approve.then_some(revoked))?, changed))
        })?;
        self.after_commit(&changed);
        Ok(view)
    }

    /// Revokes carriers whose suspension deadline or temporary period has passed
    /// (`suspension_expired`, `period_ended`). Run by `serve` every minute; idempotent.
    pub fn sweep_deadlines(&self) -> Result<Swept, RaError> {
        let at = now_secs(self.clock.as_ref());
        let actor = Actor {
            name: "deadline-sweep".into(),
            roles: Vec::new(),
            person_id: None,
            bootstrap: false,
        };
        let mut swept = Swept::default();
        if self.store.read(|tx| unblock::requests_lapsed(tx, at))? {
            self.store
                .write(|tx| unblock::lapse_requests(tx, &actor, at))?;
        }
        loop {
            // Most sweeps find nothing: look first, without the write lock every server
            // would otherwise take every few seconds.
            let due = self.store.read(|tx| -> Result<bool, RaError> {
                Ok(!tx.carriers_due(CarrierState::Active, at, 1)?.is_empty()
                    || !tx.carriers_due(CarrierState::Suspended, at, 1)?.is_empty())
            })?;
            if !due {
                return Ok(swept);
            }
            let (done, changed) = self.store.write(|tx| -> Result<_, RaError> {
                let mut changed = Changed::new();
                let mut done = Vec::new();
                // A temporary card's end first: its original's deadline is the same moment.
                for (state, reason) in [
                    (CarrierState::Active, CarrierRevokeReason::PeriodEnded),
                    (
                        CarrierState::Suspended,
                        CarrierRevokeReason::SuspensionExpired,
                    ),
                ] {
                    for mut c in tx.carriers_due(state, at, 100)? {
                        // A card reported temporarily lost and never found is lost.
                        let reason = match c.suspend_reason {
                            Some(SuspendReason::TemporarilyLost) => CarrierRevokeReason::Lost,
                            _ => reason,
                        };
                        transition(
                            tx,
                            &actor,
                            &mut c,
                            Step::Revoke,
                            Revision::Revoke(reason),
                            at,
                            &mut changed,
                        )?;
                        done.push(c.id);
                    }
                }
                Ok((done, changed))
            })?;
            self.after_commit(&changed);
            if done.is_empty() {
                return Ok(swept);
            }
            swept.revoked.extend(done);
        }
    }

    /// Every difference between carrier states and certificate statuses: SUSPENDED,
    /// ASSIGNED and PERSONALISED ⇔ on hold; ACTIVE ⇔ good; REVOKED ⇔ revoked with the
    /// carrier's reason. A certificate revoked as superseded (replaced) agrees with any
    /// state.
    pub fn reconcile(&self, actor: &Actor) -> Result<Vec<Difference>, RaError> {
        self.require(actor, "reconcile", OfficerRole::STAFF)?;
        self.reconcile_all()
    }

    /// [`Self::reconcile`] without an actor (the background check); the result is kept for
    /// the portal's dashboard.
    pub fn reconcile_all(&self) -> Result<Vec<Difference>, RaError> {
        let out = self.reconcile_pages()?;
        *self
            .portal
            .reconciled
            .lock()
            .unwrap_or_else(|p| p.into_inner()) =
            Some((now_secs(self.clock.as_ref()), out.clone()));
        Ok(out)
    }

    fn reconcile_pages(&self) -> Result<Vec<Difference>, RaError> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let page = self.store.read(|tx| -> Result<_, RaError> {
                let page = tx.carriers_page(&after, 500)?;
                let mut rows = Vec::new();
                for c in page {
                    let mut certs = Vec::new();
                    for s in tx.carrier_serials(&c.id)? {
                        let st = tx.status(&s)?;
                        certs.push((s, st));
                    }
                    rows.push((c, certs));
                }
                Ok(rows)
            })?;
            let Some((last, _)) = page.last() else {
                return Ok(out);
            };
            after = last.id.clone();
            for (c, certs) in page {
                for (serial, status) in certs {
                    if !agrees(&c, status) {
                        out.push(Difference {
                            carrier_id: c.id.clone(),
                            carrier_state: c.state,
                            serial,
                            certificate_status: describe(status),
                        });
                    }
                }
            }
        }
    }
}

/// Makes a token for an officer in `tx`: random, shown once, stored as its SHA-256.
fn new_token(
    tx: &mut Tx<'_>,
    actor: &Actor,
    officer_id: &str,
    label: &str,
    days: u32,
    at: i64,
) -> Result<TokenIssued, RaError> {
    let expires_at = at + i64::from(days) * DAY;
    let secret: [u8; 32] = rand::random();
    let token = zeroize::Zeroizing::new(format!("tso_{}", hex::encode(secret)));
    let token_id = new_id();
    tx.insert_officer_token(
        &token_id,
        &sha2::Sha256::digest(token.as_bytes()),
        officer_id,
        label,
        at,
        expires_at,
    )?;
    tx.audit(
        &actor.name,
        &AuditEvent::OfficerTokenCreated {
            officer: officer_id.to_owned(),
            token_id: token_id.clone(),
            expires_at,
        },
        at,
    )?;
    Ok(TokenIssued {
        id: token_id,
        token: token.to_string(),
        expires_at,
    })
}

/// The certificate profiles a carrier of `kind` carries: a temporary card authenticates
/// (and opens doors), a substitute card only authenticates.
pub fn profiles_for(kind: CarrierKind) -> &'static [ProfileName] {
    match kind {
        CarrierKind::Temporary => &[ProfileName::Authentication, ProfileName::CardAuthentication],
        CarrierKind::Substitute => &[ProfileName::Authentication],
        CarrierKind::SmartCard | CarrierKind::TpmVirtualCard => &ProfileName::ALL,
    }
}

/// Which carrier a request is for.
#[derive(Debug, Clone, Copy)]
pub enum Card<'a> {
    /// A carrier the issuer knows, by id.
    Id(&'a str),
    /// The blank card of this kind with this serial number (as printed on it): the one in
    /// stock, or registered in stock now if the issuer does not know it yet. A known card
    /// that is not in stock is refused: it is someone's.
    Stock(CarrierKind, &'a str),
}

impl Card<'_> {
    /// The carrier's id, registering a new blank card in `tx`.
    fn resolve(self, tx: &mut Tx<'_>, actor: &Actor, at: i64) -> Result<String, RaError> {
        match self {
            Card::Id(id) => Ok(id.to_owned()),
            Card::Stock(kind, serial) => {
                let serial = serial.trim();
                // A serial names one card, whatever its kind: a personal card's serial typed
                // into a substitute form is a mistake, not a new pool card.
                for other in CarrierKind::ALL.iter().filter(|k| **k != kind) {
                    if let Some(c) = tx.carrier_by_serial(*other, serial)? {
                        return Err(RaError::Exists(format!(
                            "the serial {serial} is the {} {} ({}), not a {kind}",
                            c.kind, c.id, c.state
                        )));
                    }
                }
                match tx.carrier_by_serial(kind, serial)? {
                    Some(c) if c.state == CarrierState::Stock => Ok(c.id),
                    Some(c) => Err(RaError::Exists(format!(
                        "the {kind} {serial} is {}, not in stock",
                        c.state
                    ))),
                    None => Ok(insert_stock_carrier(tx, actor, kind, serial, at)?.id),
                }
            }
        }
    }
}

/// A blank carrier registered in stock in `tx`, audited; refused if the serial is known.
pub(crate) fn insert_stock_carrier(
    tx: &mut Tx<'_>,
    actor: &Actor,
    kind: CarrierKind,
    serial_number: &str,
    at: i64,
) -> Result<CarrierRow, RaError> {
    let serial_number = text("serial_number", serial_number, 64)?;
    let row = CarrierRow {
        id: new_id(),
        kind,
        serial_number,
        state: CarrierState::Stock,
        person_id: None,
        suspend_reason: None,
        deadline: None,
        revoke_reason: None,
        original_id: None,
        ends_at: None,
        terms_version: None,
        terms_accepted_at: None,
        receipt: None,
        approval_id: None,
        created_at: at,
        updated_at: at,
    };
    if tx
        .carrier_by_serial(row.kind, &row.serial_number)?
        .is_some()
    {
        return Err(RaError::Exists(format!(
            "a {} with serial number {} exists",
            row.kind, row.serial_number
        )));
    }
    tx.insert_carrier(&row)?;
    tx.audit(
        &actor.name,
        &AuditEvent::CarrierRegistered {
            carrier: row.id.clone(),
            kind: row.kind.to_string(),
            serial_number: row.serial_number.clone(),
        },
        at,
    )?;
    Ok(row)
}

/// The HR fields of `new` that differ from `old`, each as `name: "old" → "new"` (the
/// audit record says what changed, not only that something did).
fn changed_fields(old: &PersonRow, new: &PersonRow) -> Vec<String> {
    let mut out = Vec::new();
    // A protected identity's values stay out of the trail auditors read (K5.9): which
    // fields changed, not to what.
    let protected = old.protected_identity || new.protected_identity;
    let mut field = |name: &str, a: Option<&str>, b: Option<&str>| {
        if a != b && protected {
            out.push(name.to_owned());
        } else if a != b {
            out.push(format!("{name}: {a:?} → {b:?}"));
        }
    };
    field("given_name", Some(&old.given_name), Some(&new.given_name));
    field(
        "family_name",
        Some(&old.family_name),
        Some(&new.family_name),
    );
    field("email", old.email.as_deref(), new.email.as_deref());
    field("upn", old.upn.as_deref(), new.upn.as_deref());
    field(
        "directory_sid",
        old.directory_sid.as_deref(),
        new.directory_sid.as_deref(),
    );
    // Identity data only fills in (the import refuses a change); never named in the record.
    if old.identity_number.is_none()
        && old.non_resident.is_none()
        && (new.identity_number.is_some() || new.non_resident.is_some())
    {
        out.push("identity data recorded".into());
    }
    if !old.protected_identity && new.protected_identity {
        out.push("protected_identity: false → true".into());
    }
    out
}

/// Whether `row` would share an identity number, a logon name or a SID with a person
/// other than `except` (one message for all three: the register is not an oracle for
/// who has which number).
fn conflict(
    tx: &mut Tx<'_>,
    row: &PersonRow,
    except: Option<&str>,
) -> Result<Option<&'static str>, RaError> {
    fn one(v: &Option<String>) -> Vec<&str> {
        v.as_deref().into_iter().collect()
    }
    let known = tx.people_matching(
        &[],
        &one(&row.identity_number),
        &one(&row.upn),
        &one(&row.directory_sid),
    )?;
    Ok(Holders::of(&known).clash(row, except).then_some(CLASH))
}

/// A person's identity data (K5.7), checked: the personal identity or coordination
/// number, or the non-resident data set (as stored, JSON), or neither (HR may not send it;
/// the registration officer then records it off the document at proofing). Never both.
fn identity_data(
    number: Option<&str>,
    non_resident: Option<&NonResident>,
) -> Result<(Option<String>, Option<String>), RaError> {
    match (number, non_resident) {
        (None, None) => Ok((None, None)),
        (Some(n), None) => Ok((
            Some(
                IdentityNumber::parse(n)
                    .map_err(|e| invalid("identity_number", e))?
                    .as_str()
                    .to_owned(),
            ),
            None,
        )),
        (None, Some(nr)) => {
            identity::check_date(&nr.birth_date).map_err(|e| invalid("birth_date", e))?;
            let nr = NonResident {
                birth_date: nr.birth_date.clone(),
                nationality: country("nationality", &nr.nationality)?,
            };
            Ok((
                None,
                Some(serde_json::to_string(&nr).map_err(|e| invalid("non_resident", e))?),
            ))
        }
        (Some(_), Some(_)) => Err(invalid(
            "identity_number",
            "give one of identity_number and non_resident, not both (K5.7)",
        )),
    }
}

/// A stored non-resident data set, parsed (for comparing two regardless of spelling).
fn non_resident_of(json: &str) -> Option<NonResident> {
    serde_json::from_str(json).ok()
}

/// One message for an identity number, UPN or SID held by another person: the register is
/// not an oracle for who has which.
const CLASH: &str = "the identity number, logon name (UPN) or SID is registered to another person";

/// Who holds each identity number, UPN and SID among some people (one lookup table for a
/// single registration and for an import's batch).
struct Holders(std::collections::HashMap<(u8, String), String>);

impl Holders {
    /// The keys that name one person: identity number, UPN, SID.
    fn keys(p: &PersonRow) -> impl Iterator<Item = (u8, String)> + '_ {
        [
            p.identity_number.as_ref().map(|n| (0, n.clone())),
            p.upn.as_ref().map(|u| (1, u.clone())),
            p.directory_sid.as_ref().map(|s| (2, s.clone())),
        ]
        .into_iter()
        .flatten()
    }

    fn of(people: &[PersonRow]) -> Self {
        Self(
            people
                .iter()
                .flat_map(|p| Self::keys(p).map(move |k| (k, p.id.clone())))
                .collect(),
        )
    }

    /// Whether a key of `row` is held by someone other than `except`.
    fn clash(&self, row: &PersonRow, except: Option<&str>) -> bool {
        Self::keys(row).any(|k| self.0.get(&k).is_some_and(|id| Some(id.as_str()) != except))
    }
}

/// A protected person's record as those who may not see it get it back from a change
/// they made (HR ending employment): who, not what.
fn redacted(p: Person) -> Person {
    Person {
        given_name: String::new(),
        family_name: String::new(),
        email: None,
        upn: None,
        identity_number: None,
        non_resident: None,
        directory_sid: None,
        ..p
    }
}

/// A loss-report code's canonical text: its hex digits upper case, in groups of four.
fn canonical_code(hex_digits: &str) -> String {
    hex_digits
        .to_ascii_uppercase()
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// The stored form of a loss-report code: SHA-256 of its canonical text, so the lookup is
/// by a digest that tells nothing about the code.
fn loss_code_hash(code: &str) -> Vec<u8> {
    sha2::Sha256::digest(code.trim().to_ascii_uppercase().as_bytes()).to_vec()
}

pub(crate) fn may_see_protected(actor: &Actor) -> bool {
    actor.has(OfficerRole::RegistrationOfficer) || actor.has(OfficerRole::Administrator)
}

fn insert_person(tx: &mut Tx<'_>, actor: &Actor, row: &PersonRow, at: i64) -> Result<(), RaError> {
    if tx
        .person_by_employee_number(&row.employee_number)?
        .is_some()
    {
        return Err(RaError::Exists(format!(
            "employee number {} is registered",
            row.employee_number
        )));
    }
    if let Some(why) = conflict(tx, row, None)? {
        return Err(RaError::Exists(why.into()));
    }
    tx.insert_person(row)?;
    tx.audit(
        &actor.name,
        &AuditEvent::PersonRegistered {
            person: row.id.clone(),
            employee_number: row.employee_number.clone(),
        },
        at,
    )?;
    Ok(())
}

/// Ends a person's employment inside `tx`: every carrier that could still be used revoked
/// (`employment_ended` → affiliationChanged), pending approvals refused, their officer
/// accounts disabled, the person ENDED and `p` updated.
fn end_in(
    tx: &mut Tx<'_>,
    actor: &Actor,
    p: &mut PersonRow,
    at: i64,
    changed: &mut Changed,
) -> Result<(), RaError> {
    let next = lifecycle::person_next(p.person_state()?, PersonStep::End).ok_or_else(|| {
        RaError::InvalidTransition {
            what: format!("person {}", p.id),
            current: p.state.clone(),
            verb: "end",
        }
    })?;
    for mut c in tx.carriers_of(&p.id)? {
        match c.state {
            CarrierState::Personalised | CarrierState::Active | CarrierState::Suspended => {
                transition(
                    tx,
                    actor,
                    &mut c,
                    Step::Revoke,
                    Revision::Revoke(CarrierRevokeReason::EmploymentEnded),
                    at,
                    changed,
                )?;
            }
            CarrierState::Assigned => {
                refuse_pending(tx, actor, &c, at)?;
                transition(
                    tx,
                    actor,
                    &mut c,
                    Step::Unassign,
                    Revision::None("employment ended"),
                    at,
                    changed,
                )?;
            }
            _ => {}
        }
    }
    tx.set_person_state(&p.id, next, p.proofed_at, at)?;
    // An officer whose employment ended is an officer no more — but the last
    // administrator is replaced first, or nobody could manage officers again.
    for o in tx.officers_of_person(&p.id)? {
        if o.disabled_at.is_none()
            && o.roles.contains(&OfficerRole::Administrator)
            && tx.enabled_administrators()? <= 1
        {
            return Err(RaError::InvalidTransition {
                what: format!("person {}", p.id),
                current: format!("the last administrator's ({})", o.id),
                verb: "end the employment of (appoint another administrator first)",
            });
        }
        if o.disabled_at.is_none() {
            tx.disable_officer(&o.id, at)?;
            tx.audit(
                &actor.name,
                &AuditEvent::OfficerDisabled { officer: o.id },
                at,
            )?;
        }
    }
    tx.audit(
        &actor.name,
        &AuditEvent::PersonEnded {
            person: p.id.clone(),
        },
        at,
    )?;
    p.state = next.as_str().to_owned();
    Ok(())
}

pub(crate) fn get_carrier(tx: &mut Tx<'_>, id: &str) -> Result<CarrierRow, RaError> {
    tx.carrier(id)?
        .ok_or_else(|| RaError::Missing(format!("no carrier {id}")))
}

/// The person, PROOFED within the policy's age.
fn proofed(tx: &mut Tx<'_>, id: &str, at: i64, max_age: i64) -> Result<PersonRow, RaError> {
    let p = tx
        .person(id)?
        .ok_or_else(|| RaError::Missing(format!("no person {id}")))?;
    match (p.person_state()?, p.proofed_at) {
        (PersonState::Proofed, Some(t)) if at - t <= max_age => Ok(p),
        (PersonState::Proofed, _) => Err(RaError::InvalidTransition {
            what: format!("person {id}"),
            current: "proofed too long ago (re-proofing required)".into(),
            verb: "issue to",
        }),
        (s, _) => Err(RaError::InvalidTransition {
            what: format!("person {id}"),
            current: s.to_string(),
            verb: "issue to",
        }),
    }
}

/// A pending four-eyes request for `carrier` and `person`, its subject fixed now.
fn new_approval(
    kind: ApprovalKind,
    carrier: &CarrierRow,
    person: &PersonRow,
    actor: &Actor,
    at: i64,
) -> ApprovalRow {
    ApprovalRow {
        id: new_id(),
        kind,
        carrier_id: carrier.id.clone(),
        person_id: person.id.clone(),
        requested_by: actor.name.clone(),
        requested_at: at,
        subject: subject_json(person),
        state: ApprovalState::Pending,
        decided_by: None,
        decided_at: None,
    }
}

/// Stores a request made by [`new_approval`], with its audit record (`terms_version`:
/// what the applicant accepted, K5.6).
fn file_approval(
    tx: &mut Tx<'_>,
    actor: &Actor,
    approval: &ApprovalRow,
    terms_version: String,
    at: i64,
) -> Result<(), RaError> {
    tx.insert_approval(approval)?;
    tx.audit(
        &actor.name,
        &AuditEvent::ApprovalRequested {
            approval: approval.id.clone(),
            kind: approval.kind.to_string(),
            carrier: approval.carrier_id.clone(),
            person: approval.person_id.clone(),
            terms_version,
        },
        at,
    )?;
    Ok(())
}

/// A carrier named by a bulk revocation, with its holder when it was named.
#[derive(serde::Serialize, serde::Deserialize)]
struct BulkCarrier {
    id: String,
    person: Option<String>,
}

fn bulk_view(
    b: tessera_issuer_store::registration::BulkRow,
    revoked: Option<u64>,
) -> Result<BulkRevocation, RaError> {
    let corrupt = |e: String| RaError::Store(tessera_issuer_store::StoreError::Corrupt(e));
    let bound: Vec<BulkCarrier> =
        serde_json::from_str(&b.carriers).map_err(|e| corrupt(e.to_string()))?;
    Ok(BulkRevocation {
        reason: b
            .reason
            .parse()
            .map_err(|_| corrupt(format!("reason {}", b.reason)))?,
        carrier_ids: bound.into_iter().map(|c| c.id).collect(),
        state: b
            .state
            .parse()
            .map_err(|_| corrupt(format!("state {}", b.state)))?,
        id: b.id,
        requested_by: b.requested_by,
        requested_at: b.requested_at,
        decided_by: b.decided_by,
        revoked,
    })
}

pub(crate) fn carrier_view(c: CarrierRow, certificates: Vec<Serial>) -> Carrier {
    Carrier {
        id: c.id,
        kind: c.kind,
        serial_number: c.serial_number,
        state: c.state,
        person_id: c.person_id,
        suspend_reason: c.suspend_reason,
        deadline: c.deadline,
        revoke_reason: c.revoke_reason,
        original_id: c.original_id,
        ends_at: c.ends_at,
        certificates,
        loss_report_code: None,
    }
}

/// What a transition records besides the state.
enum Revision<'a> {
    None(&'a str),
    Suspend(SuspendReason, i64),
    Revoke(CarrierRevokeReason),
}

/// The one place a carrier changes state: checks the step against the table, writes the
/// carrier, applies the step's certificate action to every certificate on it, and audits,
/// all in the caller's transaction.
fn transition(
    tx: &mut Tx<'_>,
    actor: &Actor,
    c: &mut CarrierRow,
    step: Step,
    revision: Revision<'_>,
    at: i64,
    changed: &mut Changed,
) -> Result<(), RaError> {
    let from = c.state;
    let to = lifecycle::next(from, step).ok_or_else(|| RaError::InvalidTransition {
        what: format!("carrier {}", c.id),
        current: match (from, c.suspend_reason) {
            (CarrierState::Suspended, Some(r)) => format!("suspended ({r})"),
            _ => from.to_string(),
        },
        verb: step.verb(),
    })?;
    let why = match &revision {
        Revision::None(w) => (*w).to_owned(),
        Revision::Suspend(r, _) => r.to_string(),
        Revision::Revoke(r) => r.to_string(),
    };
    c.state = to;
    c.updated_at = at;
    match revision {
        Revision::Suspend(reason, deadline) => {
            c.suspend_reason = Some(reason);
            c.deadline = Some(deadline);
        }
        Revision::Revoke(reason) => {
            c.revoke_reason = Some(reason);
            c.suspend_reason = None;
            c.deadline = None;
        }
        Revision::None(_) => {}
    }
    match to {
        CarrierState::Active => {
            c.suspend_reason = None;
            // A temporary or substitute card's period is its deadline while active.
            c.deadline = if matches!(c.kind, CarrierKind::Temporary | CarrierKind::Substitute) {
                c.ends_at
            } else {
                None
            };
        }
        CarrierState::Stock => {
            c.approval_id = None;
            c.person_id = None;
            c.deadline = None;
        }
        _ => {}
    }
    if to == CarrierState::Stock {
        // A wiped pool card's next holder gets a code of their own.
        tx.clear_loss_code(&c.id)?;
    }
    if to != CarrierState::Active {
        // A PIN unblock is for an ACTIVE card and its holder: one that leaves ACTIVE closes
        // every release not yet taken (pending approvals refused).
        unblock::close_releases(tx, actor, &c.id, at)?;
    }
    tx.update_carrier(c)?;
    tx.audit(
        &actor.name,
        &AuditEvent::CarrierChanged {
            carrier: c.id.clone(),
            from: from.to_string(),
            to: to.to_string(),
            why,
            deadline: c.deadline.unwrap_or(0),
        },
        at,
    )?;
    for serial in tx.carrier_serials(&c.id)? {
        let status = tx.status(&serial)?;
        let held = status.is_some_and(CertificateStatus::is_on_hold);
        let good = matches!(
            status,
            Some(CertificateStatus::Issued | CertificateStatus::Intent)
        );
        match step.certificates() {
            Certificates::Keep => {}
            Certificates::Release if held => {
                record_release(tx, actor, &serial, at)?;
                changed.push(serial);
            }
            Certificates::Hold if good => {
                revoke_serial(
                    tx,
                    actor,
                    &serial,
                    RevocationReason::CertificateHold,
                    at,
                    changed,
                )?;
            }
            Certificates::Revoke if good || held => {
                let reason = c.revoke_reason.map_or(
                    RevocationReason::Unspecified,
                    CarrierRevokeReason::certificate_reason,
                );
                revoke_serial(tx, actor, &serial, reason, at, changed)?;
            }
            Certificates::Release | Certificates::Hold | Certificates::Revoke => {}
        }
    }
    Ok(())
}

fn revoke_serial(
    tx: &mut Tx<'_>,
    actor: &Actor,
    serial: &Serial,
    reason: RevocationReason,
    at: i64,
    changed: &mut Changed,
) -> Result<(), RaError> {
    let status = tx.status(serial)?;
    let final_ = matches!(status, Some(s @ CertificateStatus::Revoked { .. }) if !s.is_on_hold());
    if final_ || status.is_none() {
        return Ok(());
    }
    record_revocation(tx, actor, serial, reason, at)?;
    changed.push(serial.clone());
    Ok(())
}

/// Resumes a suspended carrier and revokes (superseded) any live temporary card issued
/// in its place.
fn resume(
    tx: &mut Tx<'_>,
    actor: &Actor,
    c: &mut CarrierRow,
    how: &str,
    at: i64,
    changed: &mut Changed,
) -> Result<(), RaError> {
    transition(
        tx,
        actor,
        c,
        Step::Resume,
        Revision::None(&format!("re-verified ({how})")),
        at,
        changed,
    )?;
    for mut t in tx.temporaries_of(&c.id)? {
        match t.state {
            CarrierState::Personalised | CarrierState::Active | CarrierState::Suspended => {
                transition(
                    tx,
                    actor,
                    &mut t,
                    Step::Revoke,
                    Revision::Revoke(CarrierRevokeReason::Superseded),
                    at,
                    changed,
                )?;
            }
            CarrierState::Assigned => {
                refuse_pending(tx, actor, &t, at)?;
                transition(
                    tx,
                    actor,
                    &mut t,
                    Step::Unassign,
                    Revision::None("original resumed"),
                    at,
                    changed,
                )?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Refuses the carrier's pending approval, if any (its reason went away).
fn refuse_pending(tx: &mut Tx<'_>, actor: &Actor, c: &CarrierRow, at: i64) -> Result<(), RaError> {
    if let Some(id) = &c.approval_id {
        if tx
            .approval(id)?
            .is_some_and(|a| a.state == ApprovalState::Pending)
        {
            tx.decide_approval(id, ApprovalState::Refused, &actor.name, at)?;
            tx.audit(
                &actor.name,
                &AuditEvent::ApprovalDecided {
                    approval: id.clone(),
                    decision: ApprovalState::Refused.to_string(),
                    kind: String::new(),
                    carrier: c.id.clone(),
                    person: c.person_id.clone().unwrap_or_default(),
                },
                at,
            )?;
        }
    }
    Ok(())
}

fn agrees(c: &CarrierRow, status: Option<CertificateStatus>) -> bool {
    let Some(status) = status else {
        return false;
    };
    let (held, good) = (
        status.is_on_hold(),
        matches!(
            status,
            CertificateStatus::Issued | CertificateStatus::Intent
        ),
    );
    if let CertificateStatus::Revoked {
        reason: RevocationReason::Superseded,
        ..
    } = status
    {
        return true;
    }
    match c.state {
        CarrierState::Assigned | CarrierState::Personalised | CarrierState::Suspended => held,
        CarrierState::Active => good,
        CarrierState::Revoked => match status {
            CertificateStatus::Revoked { reason, .. } => {
                Some(reason) == c.revoke_reason.map(CarrierRevokeReason::certificate_reason)
            }
            _ => false,
        },
        CarrierState::Expired => true,
        CarrierState::Retired | CarrierState::Stock => !good && !held,
    }
}

fn describe(status: Option<CertificateStatus>) -> String {
    match status {
        None => "missing".into(),
        Some(s) if s.is_on_hold() => "on_hold".into(),
        Some(CertificateStatus::Revoked { reason, .. }) => format!("revoked:{reason}"),
        Some(_) => "good".into(),
    }
}

#[cfg(test)]
#[path = "registration_tests.rs"]
mod tests;

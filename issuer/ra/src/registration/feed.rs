//! The HR feed: people as a provisioning client keeps them (the SCIM 2.0 `/Users`
//! endpoint in `tessera-issuer-web` speaks the protocol; this is what it may do). A feed
//! record is the part of a person HR owns: the employee number (the key, never changed),
//! the client's own identifier, names, e-mail, and whether the person is employed. Identity
//! data, proofing, carriers and protection are the registration officer's.
//!
//! Employment follows `active`: false ends the person (every carrier revoked, as a leaver
//! from the API), true again re-hires them (REGISTERED, to be proofed again; old carriers
//! stay revoked). Removing a person from the feed ends them and hides them from the feed;
//! the record stays for the audit trail, and the same employee number sent again later
//! brings it back.

use tessera_issuer_store::audit::AuditEvent;
use tessera_issuer_store::registration::{FeedKey, PersonRow};
use tessera_issuer_store::Tx;
use tessera_issuer_types::api::NewPerson;
use tessera_issuer_types::lifecycle::{OfficerRole, PersonState};

use super::{
    changed_fields, end_in, insert_person, invalid, may_see_protected, Changed, PersonStep,
};
use crate::{lifecycle, now_secs, Actor, Ra, RaError};

/// The most people one feed page holds.
pub const MAX_FEED_PAGE: u64 = 200;

/// What HR keeps of a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRecord {
    /// The key: unique, never changed.
    pub employee_number: String,
    /// The provisioning client's own identifier.
    pub external_id: Option<String>,
    pub given_name: String,
    pub family_name: String,
    pub email: Option<String>,
    /// Employed.
    pub active: bool,
}

/// A person as the feed shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPerson {
    pub id: String,
    pub record: FeedRecord,
    /// A protected identity (K5.9) shown to someone who may not read it: the record's
    /// names and e-mail are withheld (blank), the rest is shown so the client can match it.
    pub withheld: bool,
    pub protected_identity: bool,
    pub state: PersonState,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A page of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPage {
    /// How many people match, on every page.
    pub total: u64,
    /// The first one's position, from 1.
    pub start_index: u64,
    pub people: Vec<FeedPerson>,
}

/// The roles that read the feed, and the one that writes it.
const READERS: &[OfficerRole] = &[OfficerRole::HrAdmin, OfficerRole::Administrator];
const WRITERS: &[OfficerRole] = &[OfficerRole::HrAdmin];

impl Ra {
    /// One person of the feed.
    pub fn feed_person(&self, actor: &Actor, id: &str) -> Result<FeedPerson, RaError> {
        self.require(actor, "feed.read", READERS)?;
        let row = self
            .store
            .read(|tx| tx.person(id))?
            .filter(|p| p.removed_at.is_none())
            .ok_or_else(|| missing(id))?;
        feed_view(actor, &row)
    }

    /// A page of the feed, in employee-number order: everyone, or the one person with a
    /// key. `start_index` counts from 1; at most [`MAX_FEED_PAGE`] people per page.
    pub fn feed_list(
        &self,
        actor: &Actor,
        key: Option<&FeedKey>,
        start_index: u64,
        count: u64,
    ) -> Result<FeedPage, RaError> {
        self.require(actor, "feed.read", READERS)?;
        let start_index = start_index.max(1);
        let offset = i64::try_from(start_index - 1).unwrap_or(i64::MAX);
        let limit = i64::try_from(count.min(MAX_FEED_PAGE)).unwrap_or(0);
        let (total, rows) = self.store.read(|tx| tx.feed_people(key, offset, limit))?;
        Ok(FeedPage {
            total: u64::try_from(total).unwrap_or(0),
            start_index,
            people: rows
                .iter()
                .map(|r| feed_view(actor, r))
                .collect::<Result<_, _>>()?,
        })
    }

    /// A new person from the feed. An employee number the feed removed earlier comes back
    /// (the same record, updated); one the feed shows is [`RaError::Exists`].
    pub fn feed_create(&self, actor: &Actor, rec: &FeedRecord) -> Result<FeedPerson, RaError> {
        self.require(actor, "feed.create", WRITERS)?;
        let at = now_secs(self.clock.as_ref());
        let mut row = self.check_person(&new_person(rec), at)?;
        row.external_id = external_id(rec.external_id.as_deref())?;
        // An officer never brings back their own record. Checked (and a refusal audited)
        // before the write: an audited refusal is a write of its own.
        if let Some(old) = self
            .store
            .read(|tx| tx.person_by_employee_number(&row.employee_number))?
        {
            self.not_own(actor, "feed.create", &old.id)?;
        }
        let (row, changed) = self.store.write(|tx| -> Result<_, RaError> {
            let mut changed = Changed::new();
            unique_external_id(tx, row.external_id.as_deref(), None)?;
            let row = match tx.person_by_employee_number(&row.employee_number)? {
                Some(old) if old.removed_at.is_none() => {
                    return Err(RaError::Exists(format!(
                        "employee number {} is registered",
                        row.employee_number
                    )))
                }
                Some(old) => {
                    if actor.person_id.as_deref() == Some(old.id.as_str()) {
                        return Err(RaError::FourEyes(
                            "an officer cannot act on their own record".into(),
                        ));
                    }
                    // Back in the feed after removal: the logon name and SID come again
                    // from the directory (an employee number HR re-used must not hand a
                    // new person the old holder's names in a certificate), and the person
                    // is proofed again before any carrier.
                    let mut p = PersonRow {
                        removed_at: None,
                        upn: None,
                        directory_sid: None,
                        ..old.clone()
                    };
                    apply(tx, actor, &mut p, &old, &row, rec.active, at, &mut changed)?;
                    p
                }
                None => {
                    insert_person(tx, actor, &row, at)?;
                    let mut p = row;
                    if !rec.active {
                        end_in(tx, actor, &mut p, at, &mut changed)?;
                    }
                    p
                }
            };
            Ok((row, changed))
        })?;
        self.after_commit(&changed);
        feed_view(actor, &row)
    }

    /// Changes a person of the feed: `f` gets the record as it is and returns it as it
    /// should be, inside the transaction that writes it (so two changes at once cannot
    /// lose one another's). The employee number never changes.
    pub fn feed_update<E: From<RaError> + From<tessera_issuer_store::StoreError>>(
        &self,
        actor: &Actor,
        id: &str,
        f: impl FnOnce(FeedRecord) -> Result<FeedRecord, E>,
    ) -> Result<FeedPerson, E> {
        self.require(actor, "feed.update", WRITERS)?;
        self.not_own(actor, "feed.update", id)?;
        let at = now_secs(self.clock.as_ref());
        let (row, changed) = self.store.write(|tx| -> Result<_, E> {
            let old = tx
                .person(id)
                .map_err(RaError::from)?
                .filter(|p| p.removed_at.is_none())
                .ok_or_else(|| missing(id))?;
            // A protected identity HR may not read: the client sees (and edits) the
            // withheld view, and only employment follows its answer — the names and
            // e-mail stay as registered, so a change cannot test a guess at them.
            let withheld = old.protected_identity && !may_see_protected(actor);
            let registered = record_of(&old)?;
            let wanted = if withheld {
                let answer = f(withheld_view(registered.clone()))?;
                FeedRecord {
                    active: answer.active,
                    employee_number: answer.employee_number,
                    ..registered
                }
            } else {
                f(registered)?
            };
            if wanted.employee_number != old.employee_number {
                return Err(invalid(
                    "userName",
                    "the employee number is the key and never changes",
                )
                .into());
            }
            let mut checked = self.check_person(&new_person(&wanted), at)?;
            checked.external_id = external_id(wanted.external_id.as_deref())?;
            unique_external_id(tx, checked.external_id.as_deref(), Some(&old.id))?;
            let mut p = old.clone();
            let mut changed = Changed::new();
            apply(
                tx,
                actor,
                &mut p,
                &old,
                &checked,
                wanted.active,
                at,
                &mut changed,
            )?;
            Ok((p, changed))
        })?;
        self.after_commit(&changed);
        Ok(feed_view(actor, &row)?)
    }

    /// Removes a person from the feed: their employment ends (if it has not) and the feed
    /// no longer shows them; the record stays.
    pub fn feed_remove(&self, actor: &Actor, id: &str) -> Result<(), RaError> {
        self.require(actor, "feed.remove", WRITERS)?;
        self.not_own(actor, "feed.remove", id)?;
        let at = now_secs(self.clock.as_ref());
        let changed = self.store.write(|tx| -> Result<_, RaError> {
            let mut p = tx
                .person(id)?
                .filter(|p| p.removed_at.is_none())
                .ok_or_else(|| missing(id))?;
            let mut changed = Changed::new();
            if p.person_state()? != PersonState::Ended {
                end_in(tx, actor, &mut p, at, &mut changed)?;
            }
            p.removed_at = Some(at);
            p.updated_at = at;
            tx.update_person_details(&p)?;
            tx.audit(
                &actor.name,
                &AuditEvent::PersonRemovedFromFeed {
                    person: p.id.clone(),
                },
                at,
            )?;
            Ok(changed)
        })?;
        self.after_commit(&changed);
        Ok(())
    }
}

/// Writes what the feed changed of `p` (registered as `old`; `new` checked): names,
/// e-mail, the client's identifier, then employment (`active`), each audited.
#[allow(clippy::too_many_arguments)]
fn apply(
    tx: &mut Tx<'_>,
    actor: &Actor,
    p: &mut PersonRow,
    old: &PersonRow,
    new: &PersonRow,
    active: bool,
    at: i64,
    changed: &mut Changed,
) -> Result<(), RaError> {
    p.given_name.clone_from(&new.given_name);
    p.family_name.clone_from(&new.family_name);
    p.email.clone_from(&new.email);
    p.external_id.clone_from(&new.external_id);
    let mut fields = changed_fields(old, p);
    if old.external_id != p.external_id {
        fields.push("external_id".into());
    }
    if old.removed_at.is_some() && p.removed_at.is_none() {
        fields.push("back in the HR feed".into());
    }
    if !fields.is_empty() {
        p.updated_at = at;
        tx.update_person_details(p)?;
        tx.audit(
            &actor.name,
            &AuditEvent::PersonUpdated {
                person: p.id.clone(),
                fields: fields.join("; "),
            },
            at,
        )?;
    }
    let ended = p.person_state()? == PersonState::Ended;
    if active && ended {
        let next =
            lifecycle::person_next(PersonState::Ended, PersonStep::Rehire).ok_or_else(|| {
                RaError::InvalidTransition {
                    what: format!("person {}", p.id),
                    current: p.state.clone(),
                    verb: "re-hire",
                }
            })?;
        // Proofed again before any new carrier: the old proofing is not carried over.
        tx.set_person_state(&p.id, next, None, at)?;
        tx.audit(
            &actor.name,
            &AuditEvent::PersonRehired {
                person: p.id.clone(),
            },
            at,
        )?;
        p.state = next.as_str().to_owned();
        p.proofed_at = None;
    } else if !active && !ended {
        end_in(tx, actor, p, at, changed)?;
    }
    Ok(())
}

fn missing(id: &str) -> RaError {
    RaError::Missing(format!("no person {id} in the HR feed"))
}

/// The feed's part of a new or changed person, as the RA's person check takes it.
fn new_person(rec: &FeedRecord) -> NewPerson {
    NewPerson {
        employee_number: rec.employee_number.clone(),
        given_name: rec.given_name.clone(),
        family_name: rec.family_name.clone(),
        email: rec.email.clone(),
        upn: None,
        identity_number: None,
        non_resident: None,
        protected_identity: false,
        directory_sid: None,
    }
}

/// The provisioning client's identifier: any text up to 256 characters, no controls.
fn external_id(v: Option<&str>) -> Result<Option<String>, RaError> {
    v.map(|v| {
        if v.is_empty() || v.chars().count() > 256 || v.chars().any(char::is_control) {
            Err(invalid(
                "externalId",
                "1 to 256 characters, no control characters",
            ))
        } else {
            Ok(v.to_owned())
        }
    })
    .transpose()
}

fn record_of(p: &PersonRow) -> Result<FeedRecord, RaError> {
    Ok(FeedRecord {
        employee_number: p.employee_number.clone(),
        external_id: p.external_id.clone(),
        given_name: p.given_name.clone(),
        family_name: p.family_name.clone(),
        email: p.email.clone(),
        active: p.person_state()? != PersonState::Ended,
    })
}

/// The record with what a protected identity withholds blanked.
fn withheld_view(mut record: FeedRecord) -> FeedRecord {
    record.given_name.clear();
    record.family_name.clear();
    record.email = None;
    record
}

/// The client's identifier names one person the feed shows (its `externalId eq` lookups
/// must find one).
fn unique_external_id(
    tx: &mut Tx<'_>,
    id: Option<&str>,
    except: Option<&str>,
) -> Result<(), RaError> {
    let Some(id) = id else {
        return Ok(());
    };
    let (_, holders) = tx.feed_people(Some(&FeedKey::ExternalId(id.to_owned())), 0, 2)?;
    if holders.iter().any(|h| Some(h.id.as_str()) != except) {
        return Err(RaError::Exists(format!(
            "externalId {id:?} is another person's"
        )));
    }
    Ok(())
}

fn feed_view(actor: &Actor, p: &PersonRow) -> Result<FeedPerson, RaError> {
    let withheld = p.protected_identity && !may_see_protected(actor);
    let mut record = record_of(p)?;
    if withheld {
        record = withheld_view(record);
    }
    Ok(FeedPerson {
        id: p.id.clone(),
        record,
        withheld,
        protected_identity: p.protected_identity,
        state: p.person_state()?,
        created_at: p.created_at,
        updated_at: p.updated_at,
    })
}

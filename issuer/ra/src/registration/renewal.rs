//! A TPM virtual card renews its own certificates before they expire, with only its
//! holder's PIN: the identity rests on the holder's valid LoA3 service ID (LoA3 K5.12),
//! whose authentication key the card uses only after the PIN.
//!
//! 1. `renewal_challenge`: as an enrolment's challenge (see `tpm.rs`), for an ACTIVE TPM
//!    virtual card whose renewal is due, sealed for renewals only;
//! 2. `renew`: new keys proven in the TPM the card was enrolled in, one per profile the
//!    card has a good certificate for; the request signed by the card's authentication
//!    key (a good, unexpired certificate of this carrier). The certificates are made from
//!    the subject an officer approved for this card — only while the person's record still
//!    says the same and their identity proofing is within the policy's age — and are good
//!    at once (the card is in its holder's hands). Asked again with the same keys (the
//!    agent was cut short), it answers the same certificates;
//! 3. `confirm_renewal`: the card, with its new authentication key, says it carries the
//!    new certificates; the carrier's others are revoked as superseded. Until then (or
//!    until they expire) the old ones stay good, so a renewal cut short never leaves the
//!    holder without a working card.
//!
//! The challenge and renewal endpoints take no officer token. A refused signature is
//! logged, not audited: anyone can send one, and the audit trail is no place to fill.

use std::collections::BTreeSet;

use der::Decode;
use tessera_issuer_ca::pop::Proof;
use tessera_issuer_store::audit::AuditEvent;
use tessera_issuer_store::registration::{CarrierRow, CarrierTpm, PersonRow};
use tessera_issuer_store::Tx;
use tessera_issuer_types::api::{
    renewal_confirmation_message, renewal_message, Carrier, CertificateInfo, RenewalConfirmation,
    RenewalRequest, Renewed, TpmChallenge, TpmChallengeRequest,
};
use tessera_issuer_types::lifecycle::{ApprovalState, CarrierKind, CarrierState};
use tessera_issuer_types::{CertificateStatus, ProfileName, RevocationReason, Serial, Subject};

use super::tpm::Purpose;
use super::unblock::verify_card;
use super::{carrier_view, get_carrier, invalid, proofed, revoke_serial, subject_of, Changed};
use crate::{now_secs, record_release, Actor, Ra, RaError};

/// Who the audit trail names for the card's own renewal.
const HOLDER: &str = "holder's card (renewal)";

fn holder() -> Actor {
    Actor {
        name: HOLDER.into(),
        roles: Vec::new(),
        person_id: None,
        bootstrap: false,
    }
}

/// One good, unexpired certificate the carrier carries.
struct Good {
    serial: Serial,
    profile: ProfileName,
    der: Vec<u8>,
    not_before: i64,
    not_after: i64,
}

/// A TPM virtual card and the good, unexpired certificates it carries.
struct Held {
    carrier: CarrierRow,
    good: Vec<Good>,
}

impl Held {
    fn authentication(&self) -> impl Iterator<Item = &Good> {
        self.good
            .iter()
            .filter(|g| g.profile == ProfileName::Authentication)
    }

    fn profiles(&self) -> BTreeSet<&'static str> {
        self.good.iter().map(|g| g.profile.as_str()).collect()
    }
}

/// What a renewal rests on, read in one transaction.
struct Renewable {
    held: Held,
    approval_id: String,
    /// The subject an officer approved for this card.
    approved: Subject,
    person: PersonRow,
    /// The TPM and PIN index the card was enrolled with.
    tpm: CarrierTpm,
}

impl std::ops::Deref for Renewable {
    type Target = Held;

    fn deref(&self) -> &Held {
        &self.held
    }
}

fn cannot(carrier_id: &str, current: impl Into<String>) -> RaError {
    RaError::InvalidTransition {
        what: format!("carrier {carrier_id}"),
        current: current.into(),
        verb: "renew",
    }
}

/// A stored certificate's validity, in seconds since the epoch.
fn validity(der: &[u8]) -> Result<(i64, i64), RaError> {
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| {
        RaError::Store(tessera_issuer_store::StoreError::Corrupt(format!(
            "a stored certificate: {e}"
        )))
    })?;
    let v = &cert.tbs_certificate.validity;
    let secs = |t: &x509_cert::time::Time| {
        i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
    };
    Ok((secs(&v.not_before), secs(&v.not_after)))
}

fn date(secs: i64) -> String {
    u64::try_from(secs)
        .ok()
        .and_then(|s| der::DateTime::from_unix_duration(std::time::Duration::from_secs(s)).ok())
        .map(|t| t.to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// An ACTIVE TPM virtual card with a good authentication certificate.
fn held(tx: &mut Tx<'_>, carrier_id: &str, at: i64) -> Result<Held, RaError> {
    let carrier = get_carrier(tx, carrier_id)?;
    if carrier.kind != CarrierKind::TpmVirtualCard {
        return Err(invalid(
            "carrier",
            format!(
                "only a TPM virtual card renews itself; a {} card gets new certificates from an officer",
                carrier.kind
            ),
        ));
    }
    if carrier.state != CarrierState::Active {
        return Err(cannot(carrier_id, carrier.state.to_string()));
    }
    let mut good = Vec::new();
    for serial in tx.carrier_serials(carrier_id)? {
        if !matches!(tx.status(&serial)?, Some(CertificateStatus::Issued)) {
            continue;
        }
        let Some(profile) = tx.profile(&serial)?.and_then(|p| p.parse().ok()) else {
            continue;
        };
        let Some(der) = tx.certificate(&serial)? else {
            continue;
        };
        let (not_before, not_after) = validity(&der)?;
        if not_after > at {
            good.push(Good {
                serial,
                profile,
                der,
                not_before,
                not_after,
            });
        }
    }
    let held = Held { carrier, good };
    if held.authentication().next().is_none() {
        return Err(cannot(
            carrier_id,
            "without a good authentication certificate (an officer issues the card anew)",
        ));
    }
    Ok(held)
}

/// The carrier as a renewal needs it: [`held`], enrolled in a recorded TPM, its holder's
/// identity proofed recently enough and their record what the officer approved.
fn renewable(
    tx: &mut Tx<'_>,
    carrier_id: &str,
    at: i64,
    proofing_max_age: i64,
) -> Result<Renewable, RaError> {
    let held = held(tx, carrier_id, at)?;
    let approval = match &held.carrier.approval_id {
        Some(a) => tx.approval(a)?,
        None => None,
    }
    .filter(|a| a.state == ApprovalState::Approved)
    .ok_or_else(|| cannot(carrier_id, "active without an approved assignment"))?;
    let approved: Subject = serde_json::from_str(&approval.subject).map_err(|e| {
        RaError::Store(tessera_issuer_store::StoreError::Corrupt(format!(
            "approval {}: {e}",
            approval.id
        )))
    })?;
    let person_id = held.carrier.person_id.clone().unwrap_or_default();
    let person = proofed(tx, &person_id, at, proofing_max_age)?;
    if subject_of(&person) != approved {
        return Err(RaError::InvalidTransition {
            what: format!("person {person_id}"),
            current: "recorded otherwise than when the card was approved (an officer issues the card anew)".into(),
            verb: "renew for",
        });
    }
    let tpm = tx.carrier_tpm(carrier_id)?.ok_or_else(|| {
        cannot(
            carrier_id,
            "enrolled without a recorded TPM (enrol it again)",
        )
    })?;
    Ok(Renewable {
        held,
        approval_id: approval.id,
        approved,
        person,
        tpm,
    })
}

impl Ra {
    fn proofing_max_age(&self) -> i64 {
        i64::from(self.policy.proofing_max_age_days) * 86_400
    }

    /// Refuses a renewal that is not due: the authentication certificate it renews (the
    /// one the card signs with) expires later than the policy's window from now.
    fn due(&self, carrier_id: &str, not_after: i64, at: i64) -> Result<(), RaError> {
        let opens = not_after - i64::from(self.policy.renewal_window_days) * 86_400;
        if at < opens {
            return Err(cannot(
                carrier_id,
                format!("not due for renewal before {}", date(opens)),
            ));
        }
        Ok(())
    }

    /// How many days a renewed certificate may live: until the identity proofing's age
    /// runs out. A renewal that would end within the renewal window is refused (it would
    /// be due again at once): the holder's identity is proofed again first.
    fn days_left(&self, r: &Renewable, at: i64) -> Result<u32, RaError> {
        let proofed_at = r.person.proofed_at.unwrap_or(at);
        let left = (proofed_at + self.proofing_max_age() - at) / 86_400;
        if left <= i64::from(self.policy.renewal_window_days) {
            return Err(RaError::InvalidTransition {
                what: format!("person {}", r.person.id),
                current: "proofed too long ago for a renewal (re-proofing required)".into(),
                verb: "renew for",
            });
        }
        Ok(u32::try_from(left).unwrap_or(u32::MAX))
    }

    /// Step 1 (see the module comment).
    pub fn renewal_challenge(
        &self,
        carrier_id: &str,
        req: &TpmChallengeRequest,
    ) -> Result<TpmChallenge, RaError> {
        let at = now_secs(self.clock.as_ref());
        let max_age = self.proofing_max_age();
        let r = self
            .store
            .read(|tx| renewable(tx, carrier_id, at, max_age))?;
        // The card signs with its oldest good authentication certificate while a renewal
        // is unfinished (its new certificates not yet on the card or not confirmed).
        let oldest = r.authentication().map(|g| g.not_after).min().unwrap_or(0);
        self.due(carrier_id, oldest, at)?;
        self.days_left(&r, at)?;
        self.make_challenge(Purpose::Renewal, carrier_id, &r.approval_id, req)
    }

    /// The card's signature over `message` by one of the good certificates `among`: the
    /// one that verifies.
    fn signed_by<'a>(
        carrier_id: &str,
        among: impl Iterator<Item = &'a Good>,
        algorithm: &str,
        signature: &str,
        message: &[u8],
    ) -> Result<&'a Good, RaError> {
        let mut why = String::from("no authentication certificate");
        for g in among {
            match verify_card(&g.der, algorithm, signature, message) {
                Ok(()) => return Ok(g),
                Err(e) => why = format!("{e:#}"),
            }
        }
        tracing::info!(carrier = carrier_id, why, "card-signed renewal refused");
        Err(RaError::Forbidden(
            "the request is not signed by this card's authentication key".into(),
        ))
    }

    /// Step 2 (see the module comment).
    pub fn renew(&self, carrier_id: &str, req: &RenewalRequest) -> Result<Renewed, RaError> {
        if req.keys.is_empty() || req.keys.len() > 4 {
            return Err(invalid("keys", "one to four keys"));
        }
        let mut profiles = BTreeSet::new();
        for k in &req.keys {
            if k.csr.is_some() || k.attestation.is_some() || k.tpm.is_none() {
                return Err(invalid(
                    "keys",
                    "a renewal's keys are proven by TPM attestation (tpm) only",
                ));
            }
            if !profiles.insert(k.profile.as_str()) {
                return Err(invalid("keys", format!("{} given twice", k.profile)));
            }
        }
        let at = now_secs(self.clock.as_ref());
        let max_age = self.proofing_max_age();
        let r = self
            .store
            .read(|tx| renewable(tx, carrier_id, at, max_age))?;
        let signed_by = Self::signed_by(
            carrier_id,
            r.authentication(),
            &req.algorithm,
            &req.signature,
            &renewal_message(carrier_id, &req.keys),
        )?;
        let signer = (signed_by.serial.clone(), signed_by.not_after);
        // From here the card has proven itself: a refusal is evidence (an eID moved to
        // another TPM, a key bound to another PIN index, a changed record) and is audited.
        let outcome = self.renew_signed(carrier_id, req, &r, signer.clone(), profiles, at);
        if let Err(e) = &outcome {
            if matches!(
                e,
                RaError::BadProof(_) | RaError::Invalid(_) | RaError::InvalidTransition { .. }
            ) {
                let audited = self.store.write(|tx| {
                    tx.audit(
                        HOLDER,
                        &AuditEvent::Refused {
                            action: "carrier.renewal".into(),
                            reason: format!("carrier {carrier_id}, signed by {}: {e}", signer.0),
                        },
                        at,
                    )
                });
                if let Err(w) = audited {
                    tracing::error!(error = %w, carrier = carrier_id, "auditing a refused renewal");
                }
            }
        }
        outcome
    }

    fn renew_signed(
        &self,
        carrier_id: &str,
        req: &RenewalRequest,
        r: &Renewable,
        (signed_by, signed_until): (Serial, i64),
        profiles: BTreeSet<&'static str>,
        at: i64,
    ) -> Result<Renewed, RaError> {
        if profiles != r.profiles() {
            let names: Vec<&str> = r.profiles().into_iter().collect();
            return Err(invalid(
                "keys",
                format!(
                    "a renewal renews every certificate the card has: {}",
                    names.join(", ")
                ),
            ));
        }
        // Each key proven in the card's own TPM and bound to its own PIN index; certified
        // already by an earlier attempt of this renewal, or to be certified now.
        let mut serials = Vec::new();
        let mut to_issue = Vec::new();
        let mut seen = BTreeSet::new();
        for k in &req.keys {
            let proof = k.tpm.as_ref().ok_or_else(|| invalid("keys", "no tpm"))?;
            let proven = self.tpm_key(
                Purpose::Renewal,
                carrier_id,
                &r.approval_id,
                k.profile,
                proof,
            )?;
            if proven.ek_key_sha256 != r.tpm.ek_key_sha256 {
                return Err(RaError::BadProof(
                    "the new keys are not in the TPM this card was enrolled in".into(),
                ));
            }
            if let Some(name) = &proven.pin_index_name {
                if r.tpm.pin_index_name.as_deref() != Some(hex::encode(name).as_str()) {
                    return Err(RaError::BadProof(
                        "the new keys are not bound to this card's PIN index".into(),
                    ));
                }
            }
            let spki = crate::spki_sha256(&proven.spki);
            // One key per slot, as at enrolment: a logon key is not also a signing key.
            if !seen.insert(spki.clone()) {
                return Err(RaError::BadProof(
                    "the same key is given for two profiles".into(),
                ));
            }
            let earlier = self.store.read(|tx| -> Result<_, RaError> {
                if let Some(other) = tx.other_carrier_with_key(&spki, carrier_id)? {
                    return Err(crate::key_on_other_carrier(&other));
                }
                let certified = tx.carrier_serials_for_key(carrier_id, &spki)?;
                for serial in &certified {
                    let status = tx.status(serial)?;
                    let live = matches!(status, Some(CertificateStatus::Issued))
                        || status.is_some_and(|s| s.is_on_hold());
                    let unexpired = match tx.certificate(serial)? {
                        Some(der) => validity(&der)?.1 > at,
                        None => false,
                    };
                    if live
                        && unexpired
                        && tx.profile(serial)?.as_deref() == Some(k.profile.as_str())
                    {
                        return Ok(Some(serial.clone()));
                    }
                }
                if certified.is_empty() {
                    Ok(None)
                } else {
                    Err(RaError::BadProof(format!(
                        "this {} key was certified before and is no longer usable: renew with new keys (tessera-agent vsc renew --new-keys)",
                        k.profile
                    )))
                }
            })?;
            match earlier {
                Some(serial) => serials.push(serial),
                None => to_issue.push((k, proven)),
            }
        }
        // A renewal cut short is finished whenever asked; a new one only when due, and
        // only if it gives certificates that are not due again at once.
        let mut days_left = 0;
        if !to_issue.is_empty() {
            self.due(carrier_id, signed_until, at)?;
            days_left = self.days_left(r, at)?;
        }
        let actor = holder();
        let mut issued = Vec::new();
        for (k, proven) in to_issue {
            let mut issue = self.carrier_request(&r.held.carrier, &r.approved, k);
            let days = self.ca.default_validity_days(k.profile)?;
            issue.validity_days = Some(days.min(days_left));
            match self.issue_proven(
                &actor,
                &issue,
                (proven.spki, Proof::TpmAttestation),
                Some(carrier_id),
                Some(proven.evidence),
            ) {
                Ok(i) => issued.push(i.serial),
                Err(e) => {
                    self.withdraw(&actor, &issued, at);
                    return Err(e);
                }
            }
        }
        serials.extend(issued.iter().cloned());
        let fresh = !issued.is_empty();
        let max_age = self.proofing_max_age();
        let outcome = self.store.write(|tx| -> Result<_, RaError> {
            let c = get_carrier(tx, carrier_id)?;
            if c.state != CarrierState::Active
                || c.approval_id.as_deref() != Some(r.approval_id.as_str())
            {
                return Err(cannot(
                    carrier_id,
                    format!("{} (changed meanwhile)", c.state),
                ));
            }
            // The person's record and proofing as read before issuing, still.
            let person = proofed(tx, &r.person.id, at, max_age)?;
            if subject_of(&person) != r.approved {
                return Err(RaError::InvalidTransition {
                    what: format!("person {}", r.person.id),
                    current: "recorded otherwise meanwhile".into(),
                    verb: "renew for",
                });
            }
            if !matches!(tx.status(&signed_by)?, Some(CertificateStatus::Issued)) {
                return Err(cannot(
                    carrier_id,
                    format!("renewed meanwhile (certificate {signed_by} is no longer good)"),
                ));
            }
            let mut changed = Changed::new();
            for s in &serials {
                match tx.status(s)? {
                    Some(st) if st.is_on_hold() => {
                        record_release(tx, &actor, s, at)?;
                        changed.push(s.clone());
                    }
                    Some(CertificateStatus::Issued) => {}
                    _ => {
                        return Err(cannot(
                            carrier_id,
                            format!("renewed meanwhile (certificate {s} was revoked)"),
                        ))
                    }
                }
            }
            // A new renewal replaces an unfinished one: what an earlier renewal signed by
            // the same certificate issued never reached the card (or it would sign with
            // its new authentication key). Nothing else is touched: the card's current
            // certificates stay good until the new ones are confirmed.
            if fresh {
                for s in tx.renewal_serials(carrier_id, &signed_by)? {
                    if !serials.contains(&s) {
                        revoke_serial(
                            tx,
                            &actor,
                            &s,
                            RevocationReason::Superseded,
                            at,
                            &mut changed,
                        )?;
                    }
                }
                for s in &issued {
                    tx.mark_renewal(s, &signed_by)?;
                }
            }
            if !changed.is_empty() {
                tx.audit(
                    HOLDER,
                    &AuditEvent::CarrierRenewed {
                        carrier: carrier_id.to_owned(),
                        signed_by: signed_by.to_string(),
                        serials: serials.iter().map(Serial::to_string).collect(),
                    },
                    at,
                )?;
            }
            let mut certificates = Vec::new();
            for s in &serials {
                let der = tx
                    .certificate(s)?
                    .ok_or_else(|| RaError::Missing(format!("certificate {s} not stored")))?;
                certificates.push(CertificateInfo {
                    serial: s.to_string(),
                    profile: tx.profile(s)?.unwrap_or_default(),
                    pem: der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &der)
                        .map_err(|e| RaError::BadRequest(e.to_string()))?,
                });
            }
            let view = carrier_view(c, tx.carrier_serials(carrier_id)?);
            Ok((
                Renewed {
                    carrier: view,
                    certificates,
                },
                changed,
            ))
        });
        match outcome {
            Ok((renewed, changed)) => {
                self.after_commit(&changed);
                Ok(renewed)
            }
            Err(e) => {
                self.withdraw(&actor, &issued, at);
                Err(e)
            }
        }
    }

    /// Step 3 (see the module comment).
    pub fn confirm_renewal(
        &self,
        carrier_id: &str,
        req: &RenewalConfirmation,
    ) -> Result<Carrier, RaError> {
        if req.serials.is_empty() || req.serials.len() > 4 {
            return Err(invalid("serials", "one to four serials"));
        }
        let kept = req
            .serials
            .iter()
            .map(|s| Serial::parse(s).map_err(|_| invalid("serials", format!("{s:?}"))))
            .collect::<Result<BTreeSet<Serial>, _>>()?;
        let at = now_secs(self.clock.as_ref());
        // A confirmation only takes certificates away, so it needs no more than the card
        // and its newest authentication key: not the record or proofing a renewal needs
        // (a record changed after the renewal must not keep the old certificates alive).
        let r = self.store.read(|tx| held(tx, carrier_id, at))?;
        // The card's newest certificate of each profile it has, and nothing else: an old
        // confirmation replayed, or one keeping the old set, revokes nothing newer.
        let newest: BTreeSet<Serial> = r
            .profiles()
            .into_iter()
            .filter_map(|p| {
                r.good
                    .iter()
                    .filter(|g| g.profile.as_str() == p)
                    .max_by_key(|g| g.not_before)
                    .map(|g| g.serial.clone())
            })
            .collect();
        if kept != newest {
            return Err(invalid(
                "serials",
                "the card's newest certificate of each profile it has, and only those",
            ));
        }
        Self::signed_by(
            carrier_id,
            r.authentication().filter(|g| kept.contains(&g.serial)),
            &req.algorithm,
            &req.signature,
            &renewal_confirmation_message(carrier_id, &req.serials),
        )?;
        let actor = holder();
        let (view, changed) = self.store.write(|tx| -> Result<_, RaError> {
            let c = get_carrier(tx, carrier_id)?;
            if c.state != CarrierState::Active {
                return Err(cannot(
                    carrier_id,
                    format!("{} (changed meanwhile)", c.state),
                ));
            }
            for s in &kept {
                if !matches!(tx.status(s)?, Some(CertificateStatus::Issued)) {
                    return Err(cannot(
                        carrier_id,
                        format!("changed meanwhile (certificate {s} is no longer good)"),
                    ));
                }
            }
            let mut changed = Changed::new();
            for s in tx.carrier_serials(carrier_id)? {
                if !kept.contains(&s) {
                    revoke_serial(
                        tx,
                        &actor,
                        &s,
                        RevocationReason::Superseded,
                        at,
                        &mut changed,
                    )?;
                }
            }
            if !changed.is_empty() {
                tx.audit(
                    HOLDER,
                    &AuditEvent::RenewalConfirmed {
                        carrier: carrier_id.to_owned(),
                        kept: kept.iter().map(Serial::to_string).collect(),
                        superseded: changed.iter().map(Serial::to_string).collect(),
                    },
                    at,
                )?;
            }
            Ok((carrier_view(c, tx.carrier_serials(carrier_id)?), changed))
        })?;
        self.after_commit(&changed);
        Ok(view)
    }
}

//! The registration officer's forms: identity proofing, a card's issuance request, a
//! temporary card, and on a card's page its keys, hand-over, suspension, resumption,
//! revocation, and a temporary card's extension and return. Each form is one RA operation
//! (which checks the role, four eyes, the state machine and audits); the page then shows
//! the card or person as they are now (post/redirect/get), or the refusal and why.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use tessera_issuer_ra::registration::{profiles_for, Card};
use tessera_issuer_ra::{Actor, Ra, RaError};
use tessera_issuer_types::api::{
    ActivateRequest, AssignRequest, Attestation, Carrier, CarrierKey, ExtendRequest, KeysRequest,
    NewProofing, NonResident, Person, ResumeRequest, RetireRequest, ReturnOutcome, ReturnRequest,
    RevokeCarrierRequest, SuspendRequest, UnblockRequest,
};
use tessera_issuer_types::lifecycle::{
    CarrierKind, CarrierRevokeReason, CarrierState, HolderVerification, OfficerRole, SuspendReason,
};

use crate::pages::{
    blocking, forged, page, refusal, shown_once, signed_in, submit, time_of, to_sign_in, Ctx, Frame,
};
use crate::Portal;

type St = State<Arc<Portal>>;
type Fields = Form<HashMap<String, String>>;

/// A form field's value, trimmed ("" when absent).
fn field<'a>(form: &'a HashMap<String, String>, name: &str) -> &'a str {
    form.get(name).map_or("", |v| v.trim())
}

/// A form field naming one of a fixed set of values.
fn choice<T: FromStr>(form: &HashMap<String, String>, name: &str) -> Result<T, RaError> {
    let v = field(form, name);
    v.parse()
        .map_err(|_| RaError::Invalid(format!("{name}: {v:?} is not one of the choices")))
}

/// A form field holding a whole number of days.
fn days(form: &HashMap<String, String>, name: &str) -> Result<u32, RaError> {
    let v = field(form, name);
    v.parse()
        .map_err(|_| RaError::Invalid(format!("{name}: {v:?} is not a number of days")))
}

// ---- On a person ----

pub(crate) async fn proof(
    State(portal): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Fields,
) -> Response {
    let req = NewProofing {
        document_type: field(&form, "document_type").to_owned(),
        document_number: field(&form, "document_number").to_owned(),
        issuing_country: field(&form, "issuing_country").to_ascii_uppercase(),
        document_expiry: field(&form, "document_expiry").to_owned(),
        place: field(&form, "place").to_owned(),
        identity_number: Some(field(&form, "identity_number"))
            .filter(|v| !v.is_empty())
            .map(str::to_owned),
        // A document without a Swedish identity number: the non-resident data set (K5.7).
        non_resident: match (field(&form, "birth_date"), field(&form, "nationality")) {
            ("", "") => None,
            (birth_date, nationality) => Some(NonResident {
                birth_date: birth_date.to_owned(),
                nationality: nationality.to_ascii_uppercase(),
            }),
        },
    };
    let back = format!("/admin/people/{}", crate::pages::urlencode(&id));
    submit(
        &portal,
        &ctx,
        field(&form, "csrf"),
        |_| back,
        move |ra, actor| ra.proof(actor, &id, &req),
    )
    .await
}

/// A card for a proofed person: the blank card with the number the officer typed (taken
/// from stock, registered there if new), bound to the person; a second officer approves.
pub(crate) async fn request_issuance(
    State(portal): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Fields,
) -> Response {
    let kind = match choice::<CarrierKind>(&form, "kind") {
        Ok(k @ (CarrierKind::SmartCard | CarrierKind::TpmVirtualCard)) => k,
        Ok(other) => {
            return refusal(
                &ctx,
                RaError::Invalid(format!("a {other} is issued through its own form")),
            )
        }
        Err(e) => return refusal(&ctx, e),
    };
    let serial = field(&form, "serial_number").to_owned();
    let terms = field(&form, "terms_version").to_owned();
    submit(
        &portal,
        &ctx,
        field(&form, "csrf"),
        |a: &tessera_issuer_types::api::Approval| {
            format!("/admin/carriers/{}", crate::pages::urlencode(&a.carrier_id))
        },
        move |ra, actor| {
            ra.assign_card(
                actor,
                Card::Stock(kind, &serial),
                &AssignRequest {
                    person_id: id,
                    terms_version: terms,
                },
            )
        },
    )
    .await
}

/// A temporary card for a holder who left theirs at home.
pub(crate) async fn request_temporary(
    State(portal): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Fields,
) -> Response {
    let days = match days(&form, "days") {
        Ok(d) => d,
        Err(e) => return refusal(&ctx, e),
    };
    let serial = field(&form, "serial_number").to_owned();
    // Which of the holder's cards was left at home (asked when they have several).
    let original = Some(field(&form, "original_id"))
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    submit(
        &portal,
        &ctx,
        field(&form, "csrf"),
        |a: &tessera_issuer_types::api::Approval| {
            format!("/admin/carriers/{}", crate::pages::urlencode(&a.carrier_id))
        },
        move |ra, actor| {
            ra.request_temporary_card(
                actor,
                &id,
                Card::Stock(CarrierKind::Temporary, &serial),
                original.as_deref(),
                Some(days),
            )
        },
    )
    .await
}

// ---- A card's page ----

/// What the card page offers this officer, by the card's state.
pub(crate) struct Offers {
    pub keys: bool,
    pub activate: bool,
    pub suspend: bool,
    pub resume: bool,
    pub revoke: bool,
    pub extend: bool,
    pub give_back: bool,
    /// Ask for the release of the card's escrowed PUK (PIN unblock).
    pub unblock: bool,
    /// End a substitute card's period early.
    pub end_substitute: bool,
    /// Hand back a revoked or expired card: wiped and restocked (pool cards) or destroyed.
    pub retire: bool,
    /// A pool card (temporary, substitute): it may be wiped and restocked.
    pub pool: bool,
}

impl Offers {
    /// `approved`: the card's issuance approval has been given (its keys may be
    /// registered).
    fn for_card(actor: &Actor, c: &Carrier, approved: bool) -> Self {
        // Never on the officer's own card (the RA refuses it too).
        let own = actor.person_id.is_some() && actor.person_id == c.person_id;
        let officer = actor.has(OfficerRole::RegistrationOfficer) && !own;
        let state = |s: CarrierState| officer && c.state == s;
        let temporary = c.kind == CarrierKind::Temporary;
        Self {
            // A TPM virtual card's keys come only with the TPM's attestation, which its
            // agent sends (`tessera-agent vsc enrol`), not an officer's form.
            keys: state(CarrierState::Assigned)
                && approved
                && c.kind != CarrierKind::TpmVirtualCard,
            activate: state(CarrierState::Personalised),
            suspend: state(CarrierState::Active) && !temporary,
            resume: state(CarrierState::Suspended),
            revoke: officer
                && matches!(
                    c.state,
                    CarrierState::Assigned
                        | CarrierState::Personalised
                        | CarrierState::Active
                        | CarrierState::Suspended
                ),
            extend: state(CarrierState::Active) && temporary,
            give_back: state(CarrierState::Active) && temporary,
            unblock: state(CarrierState::Active) && c.kind != CarrierKind::Substitute,
            end_substitute: state(CarrierState::Active) && c.kind == CarrierKind::Substitute,
            retire: officer && matches!(c.state, CarrierState::Revoked | CarrierState::Expired),
            pool: matches!(c.kind, CarrierKind::Temporary | CarrierKind::Substitute),
        }
    }
}

#[derive(Template)]
#[template(path = "carrier.html")]
struct CarrierPage {
    f: Frame,
    c: Carrier,
    holder: Option<Person>,
    deadline: Option<String>,
    ends: Option<String>,
    offers: Offers,
    /// Waiting for a second officer's approval.
    awaiting_approval: bool,
    profiles: Vec<&'static str>,
    suspend_reasons: Vec<&'static str>,
    revoke_reasons: Vec<&'static str>,
    /// Shown once, after the hand-over: the holder's loss-report code.
    loss_code: Option<String>,
    /// Shown once, after a PIN unblock request: the release code for the holder's agent.
    release_code: Option<String>,
}

/// A card as its page shows it: the card, its holder if this officer may see them, and
/// whether its request still waits for approval.
struct CardView {
    c: Carrier,
    holder: Option<Person>,
    awaiting_approval: bool,
}

fn carrier_page(ctx: &Ctx, actor: &Actor, view: CardView) -> Response {
    carrier_page_with(ctx, actor, view, None)
}

fn carrier_page_with(
    ctx: &Ctx,
    actor: &Actor,
    view: CardView,
    release_code: Option<String>,
) -> Response {
    let CardView {
        c,
        holder,
        awaiting_approval,
    } = view;
    let loss_code = c.loss_report_code.clone();
    let title = format!("{} {}", ctx.tr().carrier, c.serial_number);
    page(
        ctx,
        StatusCode::OK,
        CarrierPage {
            f: ctx.frame(&title),
            offers: Offers::for_card(
                actor,
                &c,
                c.state == CarrierState::Assigned && !awaiting_approval,
            ),
            awaiting_approval,
            deadline: c.deadline.map(time_of),
            ends: c.ends_at.map(time_of),
            profiles: profiles_for(c.kind).iter().map(|p| p.as_str()).collect(),
            suspend_reasons: [
                SuspendReason::Forgotten,
                SuspendReason::TemporarilyLost,
                SuspendReason::AdminHold,
                SuspendReason::OnLeave,
            ]
            .iter()
            .map(|r| r.as_str())
            .collect(),
            // What an officer revokes for (the RA's `by_officer`; the others follow from
            // other steps: employment ended, superseded, a deadline or period passed).
            revoke_reasons: [
                CarrierRevokeReason::Lost,
                CarrierRevokeReason::Stolen,
                CarrierRevokeReason::Compromised,
                CarrierRevokeReason::Damaged,
            ]
            .iter()
            .map(|r| r.as_str())
            .collect(),
            holder,
            loss_code,
            release_code,
            c,
        },
    )
}

/// The card as its page shows it. The holder is left out if reading them fails (the card
/// page still answers: after a hand-over it carries the only copy of the loss-report
/// code).
fn card_view(ra: &Ra, actor: &Actor, c: Carrier) -> CardView {
    let holder = c
        .person_id
        .as_deref()
        .and_then(|p| ra.person(actor, p).ok());
    let awaiting_approval = c.state == CarrierState::Assigned
        && ra
            .approvals_pending(actor)
            .map(|list| list.iter().any(|a| a.carrier_id == c.id))
            .unwrap_or(true);
    CardView {
        c,
        holder,
        awaiting_approval,
    }
}

pub(crate) async fn carrier(State(portal): St, ctx: Ctx, Path(id): Path<String>) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    let (ra, actor) = (Arc::clone(&portal.ra), session.actor.clone());
    match blocking(move || Ok(card_view(&ra, &actor, ra.carrier(&actor, &id)?))).await {
        Ok(view) => carrier_page(&ctx, &session.actor, view),
        Err(e) => refusal(&ctx, e),
    }
}

fn card_url(id: &str) -> String {
    format!("/admin/carriers/{}", crate::pages::urlencode(id))
}

/// The keys generated on the card: per profile a CSR, or a PIV attestation (the
/// attestation certificate and the card's attestation intermediate), and the PUK the
/// personalisation set (escrowed for PIN unblock).
pub(crate) async fn keys(
    State(portal): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Fields,
) -> Response {
    let mut keys = Vec::new();
    for p in tessera_issuer_types::ProfileName::ALL {
        let csr = field(&form, &format!("csr_{p}"));
        let att = field(&form, &format!("attestation_{p}"));
        let int = field(&form, &format!("intermediate_{p}"));
        match (csr.is_empty(), att.is_empty() && int.is_empty()) {
            (true, true) => {}
            (false, true) => keys.push(CarrierKey {
                profile: p,
                csr: Some(csr.to_owned()),
                attestation: None,
                tpm: None,
            }),
            (true, false) => keys.push(CarrierKey {
                profile: p,
                csr: None,
                attestation: Some(Attestation {
                    certificate: att.to_owned(),
                    intermediate: int.to_owned(),
                }),
                tpm: None,
            }),
            (false, false) => {
                return refusal(
                    &ctx,
                    RaError::Invalid(format!("{p}: give a CSR or an attestation, not both")),
                )
            }
        }
    }
    let puk = Some(field(&form, "puk").to_owned()).filter(|v| !v.is_empty());
    let req = KeysRequest { keys, puk };
    let back = card_url(&id);
    submit(
        &portal,
        &ctx,
        field(&form, "csrf"),
        |_| back,
        move |ra, actor| ra.register_keys(actor, &id, &req),
    )
    .await
}

/// The hand-over: the certificates become good, and the page shows the holder's
/// loss-report code once (it is stored only as a hash).
pub(crate) async fn activate(
    State(portal): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Fields,
) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    if let Some(r) = forged(&ctx, &session.csrf, field(&form, "csrf")) {
        return r;
    }
    let req = ActivateRequest {
        receipt: field(&form, "receipt").to_owned(),
    };
    let (ra, actor) = (Arc::clone(&portal.ra), session.actor.clone());
    let done = blocking(move || {
        let c = ra.activate(&actor, &id, &req)?;
        Ok(card_view(&ra, &actor, c))
    })
    .await;
    match done {
        Ok(view) => carrier_page(&ctx, &session.actor, view),
        Err(e) => refusal(&ctx, e),
    }
}

pub(crate) async fn suspend(
    State(portal): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Fields,
) -> Response {
    let req = match (
        choice::<SuspendReason>(&form, "reason"),
        days(&form, "days"),
    ) {
        (Ok(reason), Ok(days)) => SuspendRequest { reason, days },
        (Err(e), _) | (_, Err(e)) => return refusal(&ctx, e),
    };
    let back = card_url(&id);
    submit(
        &portal,
        &ctx,
        field(&form, "csrf"),
        |_| back,
        move |ra, actor| ra.suspend(actor, &id, &req),
    )
    .await
}

pub(crate) async fn resume(
    State(portal): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Fields,
) -> Response {
    let req = ResumeRequest {
        verification: field(&form, "verification").to_owned(),
    };
    let back = card_url(&id);
    submit(
        &portal,
        &ctx,
        field(&form, "csrf"),
        |_| back,
        move |ra, actor| ra.resume(actor, &id, &req),
    )
    .await
}

pub(crate) async fn revoke(
    State(portal): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Fields,
) -> Response {
    let req = match choice::<CarrierRevokeReason>(&form, "reason") {
        Ok(reason) => RevokeCarrierRequest { reason },
        Err(e) => return refusal(&ctx, e),
    };
    // A revocation cannot be undone: the form asks to confirm it.
    if field(&form, "confirm") != "yes" {
        return refusal(
            &ctx,
            RaError::Invalid(ctx.tr().revoke_confirm_missing.to_owned()),
        );
    }
    let back = card_url(&id);
    submit(
        &portal,
        &ctx,
        field(&form, "csrf"),
        |_| back,
        move |ra, actor| ra.revoke_carrier(actor, &id, &req),
    )
    .await
}

pub(crate) async fn extend(
    State(portal): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Fields,
) -> Response {
    let req = match days(&form, "days") {
        Ok(days) => ExtendRequest { days },
        Err(e) => return refusal(&ctx, e),
    };
    let back = card_url(&id);
    submit(
        &portal,
        &ctx,
        field(&form, "csrf"),
        |_| back,
        move |ra, actor| ra.extend(actor, &id, &req),
    )
    .await
}

/// A temporary card handed back: "no longer needed" re-activates the original (its
/// holder shows it), "lost" revokes the original.
pub(crate) async fn give_back(
    State(portal): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Fields,
) -> Response {
    let outcome = match field(&form, "outcome") {
        "no_longer_needed" => ReturnOutcome::NoLongerNeeded,
        "lost" => ReturnOutcome::Lost,
        other => {
            return refusal(
                &ctx,
                RaError::Invalid(format!(
                    "outcome: {other:?} is not no_longer_needed or lost"
                )),
            )
        }
    };
    let back = card_url(&id);
    submit(
        &portal,
        &ctx,
        field(&form, "csrf"),
        |_| back,
        move |ra, actor| ra.return_temporary(actor, &id, &ReturnRequest { outcome }),
    )
    .await
}

/// A PIN unblock: the desk asks for the release of the card's escrowed PUK, saying how it
/// verified the holder; a second officer approves. The page shows the release code for
/// the holder's agent once (with the approver's code and the card itself it releases the
/// PUK to the card's own channel).
pub(crate) async fn unblock(
    State(portal): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Fields,
) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    if let Some(r) = forged(&ctx, &session.csrf, field(&form, "csrf")) {
        return r;
    }
    let verification = match choice::<HolderVerification>(&form, "verification") {
        Ok(v) => v,
        Err(e) => return refusal(&ctx, e),
    };
    let (ra, actor) = (Arc::clone(&portal.ra), session.actor.clone());
    let done = blocking(move || {
        let asked = ra.request_unblock(&actor, &id, &UnblockRequest { verification })?;
        // The code is shown once: a failed re-read of the card must not lose it.
        let view = ra
            .carrier(&actor, &id)
            .ok()
            .map(|c| card_view(&ra, &actor, c));
        Ok((asked.release_code, view))
    })
    .await;
    match done {
        Ok((code, Some(view))) => carrier_page_with(&ctx, &session.actor, view, Some(code)),
        Ok((code, None)) => shown_once(&ctx, ctx.tr().unblock_requested, code),
        Err(e) => refusal(&ctx, e),
    }
}

/// A substitute card for a proofed person (a pool card, authentication only) for at most
/// the policy's days; a second officer approves.
pub(crate) async fn request_substitute(
    State(portal): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Fields,
) -> Response {
    let days = match days(&form, "days") {
        Ok(d) => d,
        Err(e) => return refusal(&ctx, e),
    };
    let serial = field(&form, "serial_number").to_owned();
    submit(
        &portal,
        &ctx,
        field(&form, "csrf"),
        |a: &tessera_issuer_types::api::Approval| card_url(&a.carrier_id),
        move |ra, actor| {
            ra.request_substitute_card(
                actor,
                &id,
                Card::Stock(CarrierKind::Substitute, &serial),
                days,
            )
        },
    )
    .await
}

/// Ends a substitute card's period early (confirmed: its certificates are revoked).
pub(crate) async fn end_substitute(
    State(portal): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Fields,
) -> Response {
    if field(&form, "confirm") != "yes" {
        return refusal(
            &ctx,
            RaError::Invalid(ctx.tr().end_substitute_confirm_missing.to_owned()),
        );
    }
    let back = card_url(&id);
    submit(
        &portal,
        &ctx,
        field(&form, "csrf"),
        |_| back,
        move |ra, actor| ra.end_substitute(actor, &id),
    )
    .await
}

/// A revoked or expired card handed back: wiped and restocked, or destroyed.
pub(crate) async fn retire(
    State(portal): St,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Fields,
) -> Response {
    let restock = match field(&form, "outcome") {
        "restock" => true,
        "destroyed" => false,
        other => {
            return refusal(
                &ctx,
                RaError::Invalid(format!("outcome: {other:?} is not restock or destroyed")),
            )
        }
    };
    let back = card_url(&id);
    submit(
        &portal,
        &ctx,
        field(&form, "csrf"),
        |_| back,
        move |ra, actor| ra.retire(actor, &id, &RetireRequest { restock }),
    )
    .await
}

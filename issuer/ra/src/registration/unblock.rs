//! PIN unblock (LIFECYCLE.md, PIN and PUK). The PUK the personalisation set on a card is
//! sealed by the token at once (AES-256-GCM under a key that never leaves it, bound to the
//! carrier) and never shown to an officer. To unblock, the service desk records the
//! holder's request — how the holder was verified — and gets one release code for the
//! holder; a second registration officer approves (not the requester, not the holder, not
//! the identity checker) and gets the other. Neither officer alone can release: the PUK
//! goes once, within a day of the approval, only to a caller with both codes and the card
//! itself, proved by a signature of its card-authentication key (9E, usable without the
//! blocked PIN — which also means a hostile reader near the card can make it sign, so the
//! codes, not the signature, carry the four eyes). That channel resets the PIN, sets a new
//! PUK on the card and escrows it (`rotate_puk`), so the released PUK opens nothing after.
//! A release is bound to the holder and the card-authentication certificate of the
//! request, and closed the moment the card leaves ACTIVE. Every step is audited.

use sha2::Digest;
use subtle::ConstantTimeEq;
use tessera_issuer_store::audit::AuditEvent;
use tessera_issuer_store::registration::{ApprovalRow, CarrierRow, PukReleaseRow};
use tessera_issuer_store::Tx;
use tessera_issuer_types::api::{
    puk_release_message, puk_rotation_message, PukReleaseRequest, PukReleased, PukRotation,
    UnblockRequest, UnblockRequested,
};
use tessera_issuer_types::lifecycle::{ApprovalKind, ApprovalState, CarrierState, OfficerRole};
use tessera_issuer_types::{CertificateStatus, ProfileName, Serial};

use super::{
    approval_view, canonical_code, file_approval, get_carrier, invalid, new_approval, DAY,
};
use crate::{now_secs, Actor, Ra, RaError};

/// How long a request waits for its approval.
const REQUEST_WINDOW: i64 = 4 * 3600;
/// How long an approved release waits for the card's channel.
const RELEASE_WINDOW: i64 = DAY;
/// How long after the release the channel has to escrow the new PUK.
const ROTATION_WINDOW: i64 = 3600;
/// PIV's factory PUK: never escrowed (anyone knows it).
const DEFAULT_PUK: &str = "12345678";

/// Checks a PUK as the personalisation set it: 6 to 8 printable ASCII characters (PIV
/// pads it to 8 bytes; SP 800-73-4 §3.2), never the factory default.
pub(super) fn check_puk(puk: &str) -> Result<(), RaError> {
    if !(6..=8).contains(&puk.len()) || !puk.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("puk", "6 to 8 printable ASCII characters"));
    }
    if puk == DEFAULT_PUK {
        return Err(invalid(
            "puk",
            "the factory default PUK: set the card's own first",
        ));
    }
    Ok(())
}

/// The sealed PUK's binding: it opens only as this carrier's.
pub(super) fn puk_aad(carrier_id: &str) -> Vec<u8> {
    format!("tessera puk v1\n{carrier_id}").into_bytes()
}

fn code_hash(code: &str) -> Vec<u8> {
    sha2::Sha256::digest(format!("tessera puk release code\n{code}").as_bytes()).to_vec()
}

/// A release code: 96 random bits, in groups of four; and its hash.
fn new_code() -> (zeroize::Zeroizing<String>, Vec<u8>) {
    let secret: [u8; 12] = rand::random();
    let code = zeroize::Zeroizing::new(canonical_code(&hex::encode_upper(secret)));
    let hash = code_hash(&code);
    (code, hash)
}

/// A code as typed (dashes, spaces, case do not matter), hashed.
fn typed_code_hash(typed: &str) -> Vec<u8> {
    let digits: String = typed
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(64)
        .collect();
    code_hash(&canonical_code(&digits))
}

/// Closes a carrier's releases not yet taken (it left ACTIVE): their pending approvals are
/// refused by the issuer, audited.
pub(super) fn close_releases(
    tx: &mut Tx<'_>,
    actor: &Actor,
    carrier_id: &str,
    at: i64,
) -> Result<(), RaError> {
    for approval_id in tx.close_puk_releases(carrier_id, at)? {
        if let Some(a) = tx.approval(&approval_id)? {
            if a.state == ApprovalState::Pending {
                tx.decide_approval(&approval_id, ApprovalState::Refused, &actor.name, at)?;
                tx.audit(
                    &actor.name,
                    &AuditEvent::ApprovalDecided {
                        approval: approval_id.clone(),
                        decision: "refused (the card left active)".into(),
                        kind: a.kind.to_string(),
                        carrier: a.carrier_id.clone(),
                        person: a.person_id.clone(),
                    },
                    at,
                )?;
            }
        }
    }
    Ok(())
}

/// Whether a release is still what it was asked for: open, its request or approval
/// within its window, the card ACTIVE with the same holder and the same good
/// card-authentication certificate. Returns that certificate.
fn still_valid(
    tx: &mut Tx<'_>,
    r: &PukReleaseRow,
    a: &ApprovalRow,
    at: i64,
) -> Result<Result<(Serial, Vec<u8>), &'static str>, RaError> {
    if r.closed_at.is_some() {
        return Ok(Err("closed"));
    }
    let lapsed = match (a.state, r.released_at) {
        (ApprovalState::Refused, _) => true,
        // Taken: the channel's hour to escrow the new PUK.
        (_, Some(taken)) => taken + ROTATION_WINDOW <= at,
        (ApprovalState::Pending, None) => a.requested_at + REQUEST_WINDOW <= at,
        (ApprovalState::Approved, None) => a.decided_at.unwrap_or(0) + RELEASE_WINDOW <= at,
    };
    if lapsed {
        return Ok(Err("refused or lapsed"));
    }
    let c = get_carrier(tx, &r.carrier_id)?;
    if c.state != CarrierState::Active || c.person_id.as_deref() != Some(r.person_id.as_str()) {
        return Ok(Err("the card is no longer the holder's active card"));
    }
    match card_authentication(tx, &c)? {
        Some((serial, der)) if serial.to_string() == r.certificate => Ok(Ok((serial, der))),
        _ => Ok(Err("the card-authentication certificate changed")),
    }
}

impl Ra {
    /// The service desk asks, for the holder, to release the card's PUK: the card is
    /// ACTIVE, its PUK escrowed, it has a good card-authentication certificate (the
    /// release's proof of the card), and no other release of it is open. Answers the
    /// approval a second officer decides and the requester's release code for the holder
    /// (shown once).
    pub fn request_unblock(
        &self,
        actor: &Actor,
        carrier_id: &str,
        req: &UnblockRequest,
    ) -> Result<UnblockRequested, RaError> {
        self.require(
            actor,
            "carrier.unblock",
            &[OfficerRole::RegistrationOfficer],
        )?;
        if let Some(p) = self.store.read(|tx| get_carrier(tx, carrier_id))?.person_id {
            self.not_own(actor, "carrier.unblock", &p)?;
        }
        let at = now_secs(self.clock.as_ref());
        let (code, hash) = new_code();
        let approval = self.store.write(|tx| -> Result<_, RaError> {
            let c = get_carrier(tx, carrier_id)?;
            let refuse = |current: String| RaError::InvalidTransition {
                what: format!("carrier {carrier_id}"),
                current,
                verb: "unblock the PIN of",
            };
            if c.state != CarrierState::Active {
                return Err(refuse(c.state.to_string()));
            }
            // One look at the escrow: whether there is a PUK, and since when.
            let Some(since) = tx.carrier_puk_since(carrier_id)? else {
                return Err(refuse("without an escrowed PUK".into()));
            };
            let Some((serial, _)) = card_authentication(tx, &c)? else {
                return Err(refuse(
                    "without a good card-authentication certificate".into(),
                ));
            };
            // A PUK released and never replaced is known outside the card: no second
            // release of it; the card is personalised again first.
            if !tx.unrotated_puk_releases(carrier_id, since)?.is_empty() {
                return Err(refuse(
                    "with a released PUK the channel never replaced (personalise it again)".into(),
                ));
            }
            for open in tx.open_puk_releases(carrier_id)? {
                if let Some(a) = tx.approval(&open.approval_id)? {
                    if still_valid(tx, &open, &a, at)?.is_ok() {
                        return Err(RaError::Exists(format!(
                            "an unblock of carrier {carrier_id} is open: approval {}",
                            a.id
                        )));
                    }
                }
            }
            let person_id = c
                .person_id
                .clone()
                .ok_or_else(|| refuse("bound to nobody".into()))?;
            let person = tx
                .person(&person_id)?
                .ok_or_else(|| RaError::Missing(format!("no person {person_id}")))?;
            let approval = new_approval(ApprovalKind::PukRelease, &c, &person, actor, at);
            file_approval(tx, actor, &approval, "-".into(), at)?;
            tx.insert_puk_release(&PukReleaseRow {
                approval_id: approval.id.clone(),
                carrier_id: carrier_id.to_owned(),
                person_id,
                certificate: serial.to_string(),
                code_sha256: hash.clone(),
                approver_code_sha256: None,
                verification: req.verification.as_str().to_owned(),
                released_at: None,
                rotated_at: None,
                closed_at: None,
            })?;
            tx.audit(
                &actor.name,
                &AuditEvent::PukReleaseRequested {
                    approval: approval.id.clone(),
                    carrier: carrier_id.to_owned(),
                    verification: req.verification.as_str().to_owned(),
                },
                at,
            )?;
            Ok(approval)
        })?;
        let mut view = approval_view(approval);
        view.note = Some(format!("holder verified: {}", req.verification));
        Ok(UnblockRequested {
            approval: view,
            release_code: code.to_string(),
        })
    }

    /// Releases a card's PUK to the card's own channel: both release codes, an approved
    /// release still valid (see [`still_valid`]), and the card's signature over
    /// [`puk_release_message`]. A wrong code costs a read and changes nothing; right codes
    /// with a wrong signature are audited (only the two officers hold the codes). Taken
    /// once.
    pub fn release_puk(
        &self,
        carrier_id: &str,
        req: &PukReleaseRequest,
    ) -> Result<PukReleased, RaError> {
        let at = now_secs(self.clock.as_ref());
        let (sealed, serial) = self.check_release(
            carrier_id,
            &req.approval_id,
            &req.release_code,
            &req.approval_code,
            at,
            |r| r.released_at.is_none(),
            &req.algorithm,
            &req.signature,
            &puk_release_message(&req.approval_id, carrier_id),
        )?;
        let puk = self.ca.open_secret(&puk_aad(carrier_id), &sealed)?;
        let puk = String::from_utf8(puk.to_vec())
            .map_err(|_| RaError::Invalid("the escrowed PUK is not text".into()))?;
        self.store.write(|tx| -> Result<(), RaError> {
            if get_carrier(tx, carrier_id)?.state != CarrierState::Active
                || !tx.take_puk_release(&req.approval_id, at)?
            {
                return Err(refused(
                    carrier_id,
                    &req.approval_id,
                    "taken or changed meanwhile",
                ));
            }
            tx.audit(
                CARD,
                &AuditEvent::PukReleased {
                    approval: req.approval_id.clone(),
                    carrier: carrier_id.to_owned(),
                    certificate: serial.to_string(),
                },
                at,
            )?;
            Ok(())
        })?;
        Ok(PukReleased { puk })
    }

    /// Escrows the new PUK the card's channel set on the card after the reset (within an
    /// hour of the release, once): the same codes, and the card's signature over
    /// [`puk_rotation_message`], which binds the new PUK.
    pub fn rotate_puk(&self, carrier_id: &str, req: &PukRotation) -> Result<(), RaError> {
        let at = now_secs(self.clock.as_ref());
        check_puk(&req.new_puk)?;
        self.check_release(
            carrier_id,
            &req.approval_id,
            &req.release_code,
            &req.approval_code,
            at,
            |r| r.released_at.is_some_and(|t| t + ROTATION_WINDOW > at) && r.rotated_at.is_none(),
            &req.algorithm,
            &req.signature,
            &puk_rotation_message(&req.approval_id, carrier_id, &req.new_puk),
        )?;
        let sealed = self
            .ca
            .seal_secret(&puk_aad(carrier_id), req.new_puk.as_bytes())?;
        self.store.write(|tx| -> Result<(), RaError> {
            if get_carrier(tx, carrier_id)?.state != CarrierState::Active
                || !tx.rotate_puk_release(&req.approval_id, at)?
            {
                return Err(refused(
                    carrier_id,
                    &req.approval_id,
                    "rotated or changed meanwhile",
                ));
            }
            tx.set_carrier_puk(carrier_id, &sealed, at)?;
            tx.audit(
                CARD,
                &AuditEvent::PukEscrowed {
                    carrier: carrier_id.to_owned(),
                },
                at,
            )?;
            Ok(())
        })
    }

    /// The checks a release and a rotation share; answers the sealed PUK and the
    /// card-authentication certificate's serial.
    #[allow(clippy::too_many_arguments)]
    fn check_release(
        &self,
        carrier_id: &str,
        approval_id: &str,
        release_code: &str,
        approval_code: &str,
        at: i64,
        stage: impl Fn(&PukReleaseRow) -> bool,
        algorithm: &str,
        signature: &str,
        message: &[u8],
    ) -> Result<(Vec<u8>, Serial), RaError> {
        let refuse = |why: &str| refused(carrier_id, approval_id, why);
        let (requester, approver) = (
            typed_code_hash(release_code),
            typed_code_hash(approval_code),
        );
        let (sealed, serial, der) = self.store.read(|tx| -> Result<_, RaError> {
            let r = tx
                .puk_release(approval_id)?
                .filter(|r| r.carrier_id == carrier_id && stage(r))
                .ok_or_else(|| refuse("no such release at this stage"))?;
            let approver_ok = r
                .approver_code_sha256
                .as_ref()
                .is_some_and(|h| bool::from(h.ct_eq(&approver)));
            if !(bool::from(r.code_sha256.ct_eq(&requester)) & approver_ok) {
                return Err(refuse("wrong release codes"));
            }
            let a = tx
                .approval(approval_id)?
                .filter(|a| {
                    a.kind == ApprovalKind::PukRelease && a.state == ApprovalState::Approved
                })
                .ok_or_else(|| refuse("not approved"))?;
            let (serial, der) = still_valid(tx, &r, &a, at)?.map_err(refuse)?;
            let sealed = tx
                .carrier_puk(carrier_id)?
                .ok_or_else(|| refuse("no escrowed PUK"))?;
            Ok((sealed, serial, der))
        })?;
        if let Err(e) = verify_card(&der, algorithm, signature, message) {
            // Both codes were right: one of two officers, or the holder, is behind this.
            let why = format!("{e:#}");
            self.store.write(|tx| {
                tx.audit(
                    CARD,
                    &AuditEvent::Refused {
                        action: "carrier.puk_release".into(),
                        reason: format!(
                            "approval {approval_id}: right codes, but not the card's signature ({why})"
                        ),
                    },
                    at,
                )
            })?;
            return Err(refuse("the card's signature"));
        }
        Ok((sealed, serial))
    }

    /// The approver's side of a PUK release, inside [`Ra::decide`]'s transaction: the
    /// release still valid, and (approving) the approver's release code, answered once.
    pub(super) fn decide_unblock(
        tx: &mut Tx<'_>,
        a: &ApprovalRow,
        approve: bool,
        at: i64,
    ) -> Result<Option<zeroize::Zeroizing<String>>, RaError> {
        let r = tx
            .puk_release(&a.id)?
            .ok_or_else(|| RaError::Missing(format!("no PUK release {}", a.id)))?;
        // Refusing is always possible (a lapsed request must leave the list).
        if !approve {
            tx.close_puk_releases(&r.carrier_id, at)?;
            return Ok(None);
        }
        if let Err(why) = still_valid(tx, &r, a, at)? {
            return Err(RaError::InvalidTransition {
                what: format!("PUK release {}", a.id),
                current: why.to_owned(),
                verb: "decide",
            });
        }
        let (code, hash) = new_code();
        tx.set_puk_approver_code(&a.id, &hash)?;
        Ok(Some(code))
    }
}

/// Refuses the PUK releases that waited for an approval longer than they may (the
/// deadline sweep): they leave every officer's list, audited. Returns how many.
pub(super) fn lapse_requests(tx: &mut Tx<'_>, actor: &Actor, at: i64) -> Result<usize, RaError> {
    let lapsed = tx.pending_approvals_before(ApprovalKind::PukRelease, at - REQUEST_WINDOW)?;
    for a in &lapsed {
        tx.decide_approval(&a.id, ApprovalState::Refused, &actor.name, at)?;
        tx.close_puk_releases(&a.carrier_id, at)?;
        tx.audit(
            &actor.name,
            &AuditEvent::ApprovalDecided {
                approval: a.id.clone(),
                decision: "refused (lapsed: no approval within four hours)".into(),
                kind: a.kind.to_string(),
                carrier: a.carrier_id.clone(),
                person: a.person_id.clone(),
            },
            at,
        )?;
    }
    Ok(lapsed.len())
}

/// Whether PUK releases wait past their time (a read, before the sweep's write).
pub(super) fn requests_lapsed(tx: &mut Tx<'_>, at: i64) -> Result<bool, RaError> {
    Ok(!tx
        .pending_approvals_before(ApprovalKind::PukRelease, at - REQUEST_WINDOW)?
        .is_empty())
}

/// Who the audit trail names for the card's channel.
const CARD: &str = "holder's card (PUK release)";

/// One answer for every refusal of the card's channel (no officer is behind it; it is no
/// oracle for which part was wrong). The log says which.
fn refused(carrier_id: &str, approval_id: &str, why: &str) -> RaError {
    tracing::info!(carrier = ?carrier_id, approval = ?approval_id, why, "PUK release refused");
    RaError::Forbidden("no release of this card's PUK is open to this request".into())
}

/// The carrier's note for approvers.
pub(super) fn note(tx: &mut Tx<'_>, a: &ApprovalRow) -> Result<Option<String>, RaError> {
    Ok(tx
        .puk_release(&a.id)?
        .map(|r| format!("holder verified: {}", r.verification)))
}

/// The carrier's card-authentication certificate that is good now, if any.
fn card_authentication(
    tx: &mut Tx<'_>,
    c: &CarrierRow,
) -> Result<Option<(Serial, Vec<u8>)>, RaError> {
    for serial in tx.carrier_serials(&c.id)? {
        if tx.profile(&serial)?.as_deref() != Some(ProfileName::CardAuthentication.as_str()) {
            continue;
        }
        if !matches!(tx.status(&serial)?, Some(CertificateStatus::Issued)) {
            continue;
        }
        if let Some(der) = tx.certificate(&serial)? {
            return Ok(Some((serial, der)));
        }
    }
    Ok(None)
}

/// The card's signature over `message`, with its card-authentication certificate's key.
pub(super) fn verify_card(
    der: &[u8],
    algorithm: &str,
    signature: &str,
    message: &[u8],
) -> anyhow::Result<()> {
    use base64ct::Encoding;
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(der)?;
    let oid = match algorithm {
        "ecdsa-with-SHA256" => const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
        "ecdsa-with-SHA384" => const_oid::db::rfc5912::ECDSA_WITH_SHA_384,
        "sha256WithRSAEncryption" => const_oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
        other => anyhow::bail!("algorithm {other:?} is not one of ecdsa-with-SHA256, ecdsa-with-SHA384, sha256WithRSAEncryption"),
    };
    let signature = base64ct::Base64::decode_vec(signature.trim())
        .map_err(|e| anyhow::anyhow!("the signature is not base64: {e}"))?;
    tessera_issuer_ca::x509::verify_signature(
        &cert.tbs_certificate.subject_public_key_info,
        &spki::AlgorithmIdentifierOwned {
            oid,
            parameters: None,
        },
        message,
        &signature,
    )
}

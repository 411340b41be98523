//! PIN unblock (LIFECYCLE.md, PIN and PUK). The PUK the personalisation set on a card is
//! sealed by the token at once (AES-256-GCM under a key that never leaves it, bound to the
//! carrier) and never shown to anyone. To unblock, the service desk records the holder's
//! request — how the holder was verified — and gets a release code for the holder; a
//! second registration officer approves (not the requester, not the holder, not the
//! identity checker). The PUK is then released once, within a day, only to the channel
//! that writes it to the card: a caller that has the release code and the card itself,
//! proved by a signature of the card's card-authentication key (9E, usable without the
//! blocked PIN) over the approval and the carrier. Every step is audited.

use sha2::Digest;
use subtle::ConstantTimeEq;
use tessera_issuer_store::audit::AuditEvent;
use tessera_issuer_store::registration::{CarrierRow, PukReleaseRow};
use tessera_issuer_store::Tx;
use tessera_issuer_types::api::{
    puk_release_message, PukReleaseRequest, PukReleased, UnblockRequest, UnblockRequested,
};
use tessera_issuer_types::lifecycle::{ApprovalKind, ApprovalState, CarrierState, OfficerRole};
use tessera_issuer_types::{CertificateStatus, ProfileName, Serial};

use super::{
    approval_view, canonical_code, file_approval, get_carrier, invalid, new_approval, DAY,
};
use crate::{now_secs, Actor, Ra, RaError};

/// How long an approved release waits for the card's channel.
const RELEASE_WINDOW: i64 = DAY;

/// Checks a PUK as the personalisation set it: 6 to 8 printable ASCII characters (PIV
/// pads it to 8 bytes; SP 800-73-4 §3.2).
pub(super) fn check_puk(puk: &str) -> Result<(), RaError> {
    if (6..=8).contains(&puk.len()) && puk.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(invalid("puk", "6 to 8 printable ASCII characters"))
    }
}

/// The sealed PUK's binding: it opens only as this carrier's.
pub(super) fn puk_aad(carrier_id: &str) -> Vec<u8> {
    format!("tessera puk v1\n{carrier_id}").into_bytes()
}

fn code_hash(code: &str) -> Vec<u8> {
    sha2::Sha256::digest(format!("tessera puk release code\n{code}").as_bytes()).to_vec()
}

impl Ra {
    /// The service desk asks, for the holder, to release the card's PUK: the card is
    /// ACTIVE, its PUK escrowed, it has a card-authentication certificate (the release's
    /// proof of the card), and no other release of it is open. Answers the approval a
    /// second officer decides, and the holder's release code (shown once).
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
        let secret: [u8; 12] = rand::random();
        let code = zeroize::Zeroizing::new(canonical_code(&hex::encode_upper(secret)));
        let hash = code_hash(&code);
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
            if tx.carrier_puk(carrier_id)?.is_none() {
                return Err(refuse("without an escrowed PUK".into()));
            }
            if card_authentication(tx, &c)?.is_none() {
                return Err(refuse(
                    "without a good card-authentication certificate".into(),
                ));
            }
            for open in tx.open_puk_releases(carrier_id)? {
                if let Some(a) = tx.approval(&open.approval_id)? {
                    let live = a.state == ApprovalState::Pending
                        || (a.state == ApprovalState::Approved
                            && a.decided_at.unwrap_or(0) + RELEASE_WINDOW > at);
                    if live {
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
                code_sha256: hash.clone(),
                verification: req.verification.as_str().to_owned(),
                released_at: None,
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
        Ok(UnblockRequested {
            approval: approval_view(approval),
            release_code: code.to_string(),
        })
    }

    /// Releases a card's PUK to the card's own channel: an approved, unexpired, untaken
    /// release of this carrier, its release code, and a signature of the card's
    /// card-authentication key over [`puk_release_message`]. Anything wrong costs a read
    /// and changes nothing; the release is taken once.
    pub fn release_puk(
        &self,
        carrier_id: &str,
        req: &PukReleaseRequest,
    ) -> Result<PukReleased, RaError> {
        let at = now_secs(self.clock.as_ref());
        // One answer for every refusal: the endpoint has no officer behind it and is no
        // oracle for which part was wrong (the log says).
        let refused = |why: &str| {
            tracing::info!(carrier = carrier_id, approval = %req.approval_id, why, "PUK release refused");
            RaError::Forbidden("no release of this card's PUK is open to this request".into())
        };
        let digits: String = req
            .release_code
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(64)
            .collect();
        let hash = code_hash(&canonical_code(&digits));
        let (sealed, certificate) = self.store.read(|tx| -> Result<_, RaError> {
            let release = tx
                .puk_release(&req.approval_id)?
                .filter(|r| r.carrier_id == carrier_id && r.released_at.is_none())
                .ok_or_else(|| refused("no open release"))?;
            if !bool::from(release.code_sha256.ct_eq(&hash)) {
                return Err(refused("wrong release code"));
            }
            let approval = tx
                .approval(&req.approval_id)?
                .ok_or_else(|| refused("no approval"))?;
            if approval.kind != ApprovalKind::PukRelease
                || approval.state != ApprovalState::Approved
                || approval.decided_at.unwrap_or(0) + RELEASE_WINDOW <= at
            {
                return Err(refused("not approved, or expired"));
            }
            let c = get_carrier(tx, carrier_id)?;
            if c.state != CarrierState::Active {
                return Err(refused("the carrier is not active"));
            }
            let sealed = tx
                .carrier_puk(carrier_id)?
                .ok_or_else(|| refused("no escrowed PUK"))?;
            let certificate = card_authentication(tx, &c)?
                .ok_or_else(|| refused("no card-authentication certificate"))?;
            Ok((sealed, certificate))
        })?;
        let (serial, der) = certificate;
        verify_card(&der, &req.approval_id, carrier_id, req)
            .map_err(|e| refused(&format!("the card's signature: {e:#}")))?;
        let puk = self.ca.open_secret(&puk_aad(carrier_id), &sealed)?;
        let puk = String::from_utf8(puk.to_vec())
            .map_err(|_| RaError::Invalid("the escrowed PUK is not text".into()))?;
        let holder = "holder's card (PUK release)";
        self.store.write(|tx| -> Result<(), RaError> {
            if get_carrier(tx, carrier_id)?.state != CarrierState::Active
                || !tx.take_puk_release(&req.approval_id, at)?
            {
                return Err(refused("taken or changed meanwhile"));
            }
            tx.audit(
                holder,
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

/// The card's signature over the release message, with its card-authentication
/// certificate's key.
fn verify_card(
    der: &[u8],
    approval_id: &str,
    carrier_id: &str,
    req: &PukReleaseRequest,
) -> anyhow::Result<()> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(der)?;
    let oid = match req.algorithm.as_str() {
        "ecdsa-with-SHA256" => const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
        "ecdsa-with-SHA384" => const_oid::db::rfc5912::ECDSA_WITH_SHA_384,
        "sha256WithRSAEncryption" => const_oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
        other => anyhow::bail!("algorithm {other:?} is not one of ecdsa-with-SHA256, ecdsa-with-SHA384, sha256WithRSAEncryption"),
    };
    use base64ct::Encoding;
    let signature = base64ct::Base64::decode_vec(req.signature.trim())
        .map_err(|e| anyhow::anyhow!("the signature is not base64: {e}"))?;
    tessera_issuer_ca::x509::verify_signature(
        &cert.tbs_certificate.subject_public_key_info,
        &spki::AlgorithmIdentifierOwned {
            oid,
            parameters: None,
        },
        &puk_release_message(approval_id, carrier_id),
        &signature,
    )
}

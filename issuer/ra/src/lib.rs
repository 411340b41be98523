//! The registration authority: the only code that instructs the CA. It holds the issuer's
//! operations on certificates — issuance (after checking the proof that the requester
//! holds the key), revocation, holds and their release — and, in [`registration`], the
//! service ID's life: officers and their roles, people and their identity proofing,
//! carriers through the state machines of [`lifecycle`], four-eyes approvals, temporary
//! cards, deadlines and reconciliation. Each change is one database transaction together
//! with its audit records and its entries in the status outbox.
#![forbid(unsafe_code)]

pub mod lifecycle;
pub mod portal;
pub mod registration;

use std::sync::Arc;

use sha2::Digest;
use tessera_issuer_ca::pop::{self, Proof};
use tessera_issuer_ca::{CaError, IssuingCa, Request};
use tessera_issuer_store::audit::AuditEvent;
use tessera_issuer_store::outbox::Change;
pub use tessera_issuer_store::StoreError;
use tessera_issuer_store::{NewCertificate, Store};
use tessera_issuer_types::api::IssueRequest;
use tessera_issuer_types::lifecycle::OfficerRole;
use tessera_issuer_types::{
    CertificateStatus, Clock, ErrorCode, ProfileName, RevocationReason, Serial,
};
use x509_cert::Certificate;

/// Why the RA refused or failed; each maps to a stable [`ErrorCode`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RaError {
    #[error("a valid Bearer token is required")]
    Unauthorized,
    #[error("{0}")]
    TokenRefused(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Missing(String),
    #[error("{what} is {current}: cannot {verb} it")]
    InvalidTransition {
        what: String,
        current: String,
        verb: &'static str,
    },
    #[error("{0}")]
    FourEyes(String),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    BadRequest(String),
    #[error("public key not acceptable: {0}")]
    BadPublicKey(String),
    #[error("proof of possession not accepted: {0}")]
    BadProof(String),
    #[error("no certificate with serial {0}")]
    NotFound(Serial),
    #[error("certificate {0} is already revoked")]
    AlreadyRevoked(Serial),
    #[error("certificate {0} is not on hold")]
    NotOnHold(Serial),
    #[error("{0}")]
    Forbidden(String),
    /// A portal session that is missing, ended, or no longer backed by a good credential.
    #[error("{0}")]
    SessionEnded(String),
}

impl RaError {
    /// The stable code API clients see.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthorized | Self::TokenRefused(_) | Self::SessionEnded(_) => {
                ErrorCode::Unauthorized
            }
            Self::Invalid(_) => ErrorCode::InvalidField,
            Self::Exists(_) => ErrorCode::AlreadyExists,
            Self::Missing(_) => ErrorCode::NotFound,
            Self::InvalidTransition { .. } => ErrorCode::InvalidTransition,
            Self::FourEyes(_) => ErrorCode::FourEyesRequired,
            Self::Ca(e) => e.code(),
            Self::Store(StoreError::Unavailable(_)) => ErrorCode::Unavailable,
            Self::Store(_) => ErrorCode::Internal,
            Self::BadRequest(_) => ErrorCode::MalformedJson,
            Self::BadPublicKey(_) => ErrorCode::BadPublicKey,
            Self::BadProof(_) => ErrorCode::BadProof,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::AlreadyRevoked(_) => ErrorCode::AlreadyRevoked,
            Self::NotOnHold(_) => ErrorCode::NotOnHold,
            Self::Forbidden(_) => ErrorCode::Forbidden,
        }
    }
}

/// Who asks: an officer behind a token (or the bootstrap token, until the first
/// administrator exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The officer's id (`bootstrap-admin` for the bootstrap token), as the audit trail
    /// names them.
    pub name: String,
    pub roles: Vec<OfficerRole>,
    /// The officer's own person record: they never act on it (K3.4).
    pub person_id: Option<String>,
    /// The bootstrap token: creates the first administrator; until then it also does what
    /// an administrator and a registration officer do (`init`'s tests and scripts).
    pub bootstrap: bool,
}

impl Actor {
    /// An officer with `roles`.
    pub fn officer(name: &str, roles: &[OfficerRole]) -> Self {
        Self {
            name: name.to_owned(),
            roles: roles.to_vec(),
            person_id: None,
            bootstrap: false,
        }
    }

    /// Whether the actor holds `role` (the bootstrap token holds every role but auditor).
    pub fn has(&self, role: OfficerRole) -> bool {
        self.roles.contains(&role) || (self.bootstrap && role != OfficerRole::Auditor)
    }
}

/// The profiles of the issuer's own certificates: only an admin revokes those.
const OWN_PROFILES: [&str; 3] = ["ocsp-responder", "audit-signer", "tls-server"];

/// The hex SHA-256 of a SubjectPublicKeyInfo: how a key is looked up across carriers.
pub(crate) fn spki_sha256(spki_der: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(spki_der))
}

/// One key, one carrier: a key certified on another carrier would outlive that carrier's
/// revocation (a lost card's key still good under the second), and would bind one holder's
/// signatures to two identities.
pub(crate) fn key_on_other_carrier(other: &str) -> RaError {
    RaError::BadProof(format!(
        "this key is certified on carrier {other} already: one key belongs to one carrier"
    ))
}

/// A certificate just issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub serial: Serial,
    pub der: Vec<u8>,
}

/// What the RA accepts as proof of possession.
#[derive(Debug, Clone, Default)]
pub struct PopPolicy {
    /// Manufacturer CAs trusted for PIV attestations.
    pub attestation_roots: Vec<Certificate>,
    /// Profiles that take a bare public key (no proof), audited as such.
    pub bare_key_profiles: Vec<ProfileName>,
    /// TPM manufacturer CAs trusted to sign endorsement-key certificates (TPM virtual
    /// cards' enrolment).
    pub tpm_roots: Vec<Certificate>,
}

/// Called after each committed status change made here (the OCSP cache of this process is
/// invalidated at once; other processes learn it from the outbox).
pub type OnChange = Arc<dyn Fn(&Serial) + Send + Sync>;

/// Whether `actor` may change the status of `serial`: only an admin changes the issuer's
/// own certificates (OCSP responder, audit signer, HTTPS).
fn may_change(
    tx: &mut tessera_issuer_store::Tx<'_>,
    actor: &Actor,
    serial: &Serial,
) -> Result<(), RaError> {
    if let Some(carrier) = tx.carrier_of_serial(serial)? {
        // A carrier's certificates change with the carrier (one transition, one place):
        // changed here, they would disagree with it.
        return Err(RaError::InvalidTransition {
            what: format!("certificate {serial}"),
            current: format!("on carrier {carrier}"),
            verb: "change the status of (change the carrier instead)",
        });
    }
    let own = tx
        .profile(serial)?
        .is_some_and(|p| OWN_PROFILES.contains(&p.as_str()));
    if own && !actor.has(OfficerRole::Administrator) {
        return Err(RaError::Forbidden(
            "only an admin token changes the status of the issuer's own certificates".into(),
        ));
    }
    Ok(())
}

/// Revokes (or holds) a certificate in `tx`: the status, its audit record and its outbox
/// entry — the one place a certificate's status is written, for direct revocation,
/// a carrier's transitions and a carrier certificate born on hold.
pub(crate) fn record_revocation(
    tx: &mut tessera_issuer_store::Tx<'_>,
    actor: &Actor,
    serial: &Serial,
    reason: RevocationReason,
    at: i64,
) -> Result<(), RaError> {
    tx.set_revoked(serial, at, reason)?;
    tx.audit(
        &actor.name,
        &AuditEvent::CertificateRevoked {
            serial: serial.to_string(),
            reason: reason.to_string(),
        },
        at,
    )?;
    let change = if reason == RevocationReason::CertificateHold {
        Change::Held
    } else {
        Change::Revoked
    };
    tx.outbox(change, serial, at)?;
    Ok(())
}

/// Releases a hold in `tx`, with its audit record and outbox entry.
pub(crate) fn record_release(
    tx: &mut tessera_issuer_store::Tx<'_>,
    actor: &Actor,
    serial: &Serial,
    at: i64,
) -> Result<(), RaError> {
    tx.clear_revocation(serial)?;
    tx.audit(
        &actor.name,
        &AuditEvent::HoldReleased {
            serial: serial.to_string(),
        },
        at,
    )?;
    tx.outbox(Change::Released, serial, at)?;
    Ok(())
}

/// The registration authority.
pub struct Ra {
    ca: Arc<IssuingCa>,
    store: Store,
    clock: Arc<dyn Clock>,
    pop: PopPolicy,
    on_change: OnChange,
    policy: registration::RaPolicy,
    sessions: portal::SessionPolicy,
    portal: portal::PortalState,
}

impl std::fmt::Debug for Ra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ra").finish_non_exhaustive()
    }
}

fn now_secs(clock: &dyn Clock) -> i64 {
    tessera_issuer_store::secs(clock.now())
}

impl Ra {
    pub fn new(
        ca: Arc<IssuingCa>,
        store: Store,
        clock: Arc<dyn Clock>,
        pop: PopPolicy,
        on_change: OnChange,
    ) -> Self {
        Self {
            ca,
            store,
            clock,
            pop,
            on_change,
            policy: registration::RaPolicy::default(),
            sessions: portal::SessionPolicy::default(),
            portal: portal::PortalState::default(),
        }
    }

    /// The portal's session limits, other than the defaults.
    pub fn with_sessions(mut self, sessions: portal::SessionPolicy) -> Self {
        self.sessions = sessions;
        self
    }

    /// The registration policy's limits, other than the defaults.
    pub fn with_policy(mut self, policy: registration::RaPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The caller behind a Bearer token: an officer's live token (not expired, not
    /// revoked), or the bootstrap token while no administrator exists. Only tokens'
    /// SHA-256 digests are stored; the lookup is by digest, which tells nothing about the
    /// token.
    pub fn authenticate(&self, token: &str) -> Result<Actor, RaError> {
        let hash = sha2::Sha256::digest(token.trim().as_bytes());
        let now = now_secs(self.clock.as_ref());
        self.store.read(|tx| -> Result<Actor, RaError> {
            if let Some(owner) = tx.token_owner(&hash)? {
                if owner.revoked_at.is_some() || owner.officer.disabled_at.is_some() {
                    return Err(RaError::TokenRefused("this token was revoked"));
                }
                if owner.expires_at <= now {
                    return Err(RaError::TokenRefused("this token has expired"));
                }
                return Ok(Actor {
                    name: owner.officer.id,
                    roles: owner.officer.roles,
                    person_id: owner.officer.person_id,
                    bootstrap: false,
                });
            }
            // The table `init` writes the bootstrap token into (role `admin`); a row with
            // role `officer` is an unnamed registration officer (tests, older scripts).
            match tx.api_token(&hash)? {
                Some((_, role)) if role == "admin" && tx.administrator_exists()? => Err(
                    RaError::TokenRefused("the bootstrap token is spent: an administrator exists"),
                ),
                Some((name, role)) if role == "admin" => Ok(Actor {
                    name,
                    roles: Vec::new(),
                    person_id: None,
                    bootstrap: true,
                }),
                Some((name, role)) if role == "officer" => {
                    Ok(Actor::officer(&name, &[OfficerRole::RegistrationOfficer]))
                }
                _ => Err(RaError::Unauthorized),
            }
        })
    }

    /// The key a request asks to certify, with its proof.
    fn key(&self, req: &IssueRequest) -> Result<(Vec<u8>, Proof), RaError> {
        match (&req.csr, &req.attestation, &req.public_key) {
            (Some(csr), None, None) => match pop::csr_key(csr) {
                Ok(k) => Ok((k, Proof::Csr)),
                Err(pop::CsrError::Key(e)) => Err(RaError::BadPublicKey(e)),
                Err(pop::CsrError::Proof(e)) => Err(RaError::BadProof(e)),
            },
            (None, Some(a), None) => pop::attested_key(
                &a.certificate,
                &a.intermediate,
                &self.pop.attestation_roots,
                req.profile.piv_slot(),
                self.clock.now(),
            )
            .map(|k| (k, Proof::Attestation))
            .map_err(RaError::BadProof),
            (None, None, Some(key)) => {
                if !self.pop.bare_key_profiles.contains(&req.profile) {
                    return Err(RaError::BadProof(format!(
                        "profile {} needs a CSR or a PIV attestation, not a bare public key",
                        req.profile
                    )));
                }
                pop::bare_key(key)
                    .map(|k| (k, Proof::None))
                    .map_err(RaError::BadPublicKey)
            }
            _ => Err(RaError::BadRequest(
                "give exactly one of csr, attestation and public_key".into(),
            )),
        }
    }

    /// Issues a certificate: proof of possession checked, intent and its audit record
    /// committed, the token signs, the certificate and its audit record and outbox entry
    /// committed. If the last step fails, the intent stays: the serial is revocable.
    ///
    /// This is issuance outside the registration flow — no person, no approval, no carrier
    /// — so only the bootstrap token does it, before the first administrator exists
    /// (setting up, scripts and tests); afterwards every certificate for a person comes
    /// from a carrier (`registration`), so no single officer issues an eID in someone
    /// else's name (K3.4).
    pub fn issue(&self, actor: &Actor, req: &IssueRequest) -> Result<Issued, RaError> {
        if !actor.bootstrap {
            let reason = "certificates are issued through carriers (assignment, a second officer's approval, keys); direct issuance is for the bootstrap token while setting up";
            self.refused(actor, "certificate.issue", reason);
            return Err(RaError::Forbidden(reason.into()));
        }
        let proof = self.key(req)?;
        self.issue_proven(actor, req, proof, None, None)
    }

    /// [`Self::issue`] after the proof is checked. With `carrier`, the certificate is
    /// linked to that carrier and born on hold, in the intent's transaction: no moment
    /// exists in which it is good but not yet the carrier's.
    fn issue_proven(
        &self,
        actor: &Actor,
        req: &IssueRequest,
        (key, proof): (Vec<u8>, Proof),
        carrier: Option<&str>,
        evidence: Option<String>,
    ) -> Result<Issued, RaError> {
        let now = self.clock.now();
        let at = tessera_issuer_store::secs(now);
        let request = Request {
            profile: req.profile,
            subject: &req.subject,
            public_key: &key,
            validity_days: req.validity_days,
        };
        let token = self.ca.prepare(&request, now, |intent| {
            self.store.write(|tx| -> Result<(), RaError> {
                tx.insert_intent(&NewCertificate {
                    serial: &intent.serial,
                    authority: "issuing",
                    profile: intent.profile.as_str(),
                    tbs: &intent.tbs_der,
                    not_after: intent.not_after,
                    created_at: at,
                })?;
                tx.audit(
                    &actor.name,
                    &AuditEvent::CertificateIntent {
                        serial: intent.serial.to_string(),
                        profile: intent.profile.to_string(),
                        subject: intent.subject.clone(),
                        tbs_sha256: intent.tbs_sha256.clone(),
                        proof: proof.as_str().to_owned(),
                        evidence: evidence.clone(),
                    },
                    at,
                )?;
                if let Some(carrier) = carrier {
                    // Checked again in this transaction: two registrations of one key on
                    // two carriers at once cannot both pass.
                    let spki = spki_sha256(&key);
                    if let Some(other) = tx.other_carrier_with_key(&spki, carrier)? {
                        return Err(key_on_other_carrier(&other));
                    }
                    tx.link_certificate(&intent.serial, carrier, &spki)?;
                    record_revocation(
                        tx,
                        actor,
                        &intent.serial,
                        RevocationReason::CertificateHold,
                        at,
                    )?;
                }
                Ok(())
            })
        })?;
        let issued = self.ca.issue(token)?;
        self.store.write(|tx| -> Result<(), RaError> {
            tx.mark_issued(&issued.serial, &issued.der)?;
            tx.audit(
                &actor.name,
                &AuditEvent::CertificateIssued {
                    serial: issued.serial.to_string(),
                    subject: issued.subject.clone(),
                    tbs_sha256: issued.tbs_sha256.clone(),
                },
                now_secs(self.clock.as_ref()),
            )?;
            tx.outbox(Change::Issued, &issued.serial, at)?;
            Ok(())
        })?;
        tracing::info!(serial = %issued.serial, profile = %req.profile, proof = proof.as_str(), actor = %actor.name, "certificate issued");
        Ok(Issued {
            serial: issued.serial,
            der: issued.der,
        })
    }

    /// Revokes (or, with `CertificateHold`, suspends) a certificate. A held certificate may
    /// be revoked for good; anything else revoked stays as it is.
    pub fn revoke(
        &self,
        actor: &Actor,
        serial: &Serial,
        reason: RevocationReason,
    ) -> Result<(), RaError> {
        self.require(
            actor,
            "certificate.revoke",
            &[OfficerRole::RegistrationOfficer, OfficerRole::Administrator],
        )?;
        let at = now_secs(self.clock.as_ref());
        self.store.write(|tx| -> Result<(), RaError> {
            may_change(tx, actor, serial)?;
            match tx.status(serial)? {
                None => return Err(RaError::NotFound(serial.clone())),
                Some(s @ CertificateStatus::Revoked { .. })
                    if !(s.is_on_hold() && reason != RevocationReason::CertificateHold) =>
                {
                    return Err(RaError::AlreadyRevoked(serial.clone()))
                }
                Some(_) => {}
            }
            record_revocation(tx, actor, serial, reason, at)
        })?;
        (self.on_change)(serial);
        tracing::info!(serial = %serial, reason = %reason, actor = %actor.name, "certificate revoked");
        Ok(())
    }

    /// Releases a hold (RFC 5280 §5.3.1): the certificate is good again.
    pub fn release_hold(&self, actor: &Actor, serial: &Serial) -> Result<(), RaError> {
        self.require(
            actor,
            "certificate.release_hold",
            &[OfficerRole::RegistrationOfficer, OfficerRole::Administrator],
        )?;
        let at = now_secs(self.clock.as_ref());
        self.store.write(|tx| -> Result<(), RaError> {
            may_change(tx, actor, serial)?;
            match tx.status(serial)? {
                None => return Err(RaError::NotFound(serial.clone())),
                Some(s) if s.is_on_hold() => {}
                Some(_) => return Err(RaError::NotOnHold(serial.clone())),
            }
            record_release(tx, actor, serial, at)
        })?;
        (self.on_change)(serial);
        tracing::info!(serial = %serial, actor = %actor.name, "hold released");
        Ok(())
    }
}

#[cfg(test)]
mod testing;

/// The RA over a [`tessera_issuer_ca::signer::MemorySigner`] and a fresh SQLite database:
/// each test runs in milliseconds, without a token.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fixture;
    use std::sync::atomic::Ordering;
    use tessera_issuer_types::Subject;

    fn bare(profile: ProfileName) -> IssueRequest {
        let key = p256::SecretKey::random(&mut rand_core());
        let pem =
            pkcs8::EncodePublicKey::to_public_key_pem(&key.public_key(), pkcs8::LineEnding::LF)
                .unwrap();
        IssueRequest {
            profile,
            subject: Subject {
                common_name: "Unit Test".into(),
                ..Subject::default()
            },
            csr: None,
            attestation: None,
            public_key: Some(pem),
            validity_days: None,
        }
    }

    fn rand_core() -> p256::elliptic_curve::rand_core::OsRng {
        p256::elliptic_curve::rand_core::OsRng
    }

    fn counts(store: &Store) -> (usize, i64) {
        store
            .read(|tx| -> Result<_, StoreError> {
                Ok((tx.audit_records()?.len(), tx.outbox_head()?))
            })
            .unwrap()
    }

    #[test]
    fn issue_and_revoke_commit_status_audit_and_outbox_together() {
        let f = fixture(vec![ProfileName::Authentication]);
        let actor = Actor {
            name: "bootstrap-admin".into(),
            roles: Vec::new(),
            person_id: None,
            bootstrap: true,
        };
        let issued =
            f.ra.issue(&actor, &bare(ProfileName::Authentication))
                .unwrap();
        let status = |s: &Serial| f.store.read(|tx| tx.status(s)).unwrap().unwrap();
        assert_eq!(status(&issued.serial), CertificateStatus::Issued);
        // Intent and issuance audited; one outbox entry (issued).
        assert_eq!(counts(&f.store), (2, 1));
        f.ra.revoke(&actor, &issued.serial, RevocationReason::KeyCompromise)
            .unwrap();
        assert!(matches!(
            status(&issued.serial),
            CertificateStatus::Revoked {
                reason: RevocationReason::KeyCompromise,
                ..
            }
        ));
        assert_eq!(counts(&f.store), (3, 2));
        // This process's OCSP cache hears of the revocation at once (an issuance needs no
        // invalidation: unknown serials are never cached).
        assert_eq!(f.changes.load(Ordering::SeqCst), 1);
        assert!(matches!(
            f.ra.revoke(&actor, &issued.serial, RevocationReason::Superseded),
            Err(RaError::AlreadyRevoked(_))
        ));
        assert!(f.store.read(|tx| tx.verify_audit()).unwrap().is_ok());
    }

    #[test]
    fn a_bare_key_is_refused_where_the_profile_does_not_allow_it_and_nothing_is_written() {
        let f = fixture(Vec::new());
        let actor = Actor {
            name: "bootstrap-admin".into(),
            roles: Vec::new(),
            person_id: None,
            bootstrap: true,
        };
        let err =
            f.ra.issue(&actor, &bare(ProfileName::Authentication))
                .unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadProof);
        assert_eq!(counts(&f.store), (0, 0));
        assert_eq!(f.changes.load(Ordering::SeqCst), 0);
    }
}

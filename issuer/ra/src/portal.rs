//! Officers signing in to the admin portal, and their sessions. No passwords: an officer
//! signs in with their own service ID — the authentication certificate of an ACTIVE
//! carrier of the person the officer is — presented as a TLS client certificate. The TLS
//! layer has chained it to the issuing CA; here it must be exactly a certificate this
//! issuer stored, good now (issued, not on hold, not revoked, not expired), of the
//! authentication profile, under the LoA3 policy, on an ACTIVE carrier of the officer's own
//! person, the officer not disabled. Fail closed: anything unknown refuses.
//!
//! A session is a random 256-bit cookie whose SHA-256 is stored, shared by every server on
//! the database. Every use checks the credential again (a suspended or revoked service ID
//! ends its sessions at the next click), the idle limit and the hard limit; an ended
//! session stays ended. Sign-ins, refusals and ends are audited.

use base64ct::Encoding;
use der::Decode;
use sha2::{Digest, Sha256};
use tessera_issuer_store::audit::AuditEvent;
use tessera_issuer_store::portal::SessionRow;
use tessera_issuer_store::Tx;
use tessera_issuer_types::lifecycle::CarrierState;
use tessera_issuer_types::{CertificateStatus, ProfileName, Serial};

use crate::{now_secs, Actor, Ra, RaError};

/// How long a portal session lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Seconds without a request after which a session ends.
    pub idle_secs: i64,
    /// Seconds after sign-in after which a session ends, however busy.
    pub max_secs: i64,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle_secs: 15 * 60,
            max_secs: 8 * 3600,
        }
    }
}

/// A live session, as a request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub actor: Actor,
    /// The officer's display name.
    pub display_name: String,
    /// What the officer signed in with: `certificate:SERIAL` (or `passkey:ID`).
    pub credential: String,
    /// The token every form of this session must carry (see [`csrf_token`]).
    pub csrf: String,
    /// When the hard limit ends it (seconds since the epoch).
    pub ends_at: i64,
}

/// The anti-forgery token of the session whose cookie is `token`: derived from the secret
/// cookie, so a page of another origin, which cannot read the cookie, cannot know it.
pub fn csrf_token(token: &str) -> String {
    hex::encode(Sha256::digest(
        format!("tessera portal csrf v1\n{token}").as_bytes(),
    ))
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A short, non-secret name for a session in the audit trail.
fn session_name(hash: &[u8]) -> String {
    hex::encode(&hash[..6])
}

/// Who signs in, and with what.
struct Officer {
    actor: Actor,
    display_name: String,
}

fn refused(why: impl Into<String>) -> RaError {
    RaError::Forbidden(why.into())
}

impl Ra {
    /// The officer behind certificate `serial`, if it is a good service ID of theirs now.
    fn officer_by_serial(
        &self,
        tx: &mut Tx<'_>,
        serial: &Serial,
        at: i64,
    ) -> Result<Officer, RaError> {
        let Some(der) = tx.certificate(serial)? else {
            return Err(refused("this certificate was not issued by this issuer"));
        };
        match tx.status(serial)? {
            Some(CertificateStatus::Issued) => {}
            Some(s) if s.is_on_hold() => {
                return Err(refused("this service ID is suspended"));
            }
            Some(_) => return Err(refused("this service ID is revoked")),
            None => return Err(refused("this certificate was not issued by this issuer")),
        }
        if tx.profile(serial)?.as_deref() != Some(ProfileName::Authentication.as_str()) {
            return Err(refused(
                "this is not an authentication certificate (use the card's PIV authentication certificate)",
            ));
        }
        let cert = x509_cert::Certificate::from_der(&der).map_err(|e| {
            RaError::Store(tessera_issuer_store::StoreError::Corrupt(format!(
                "certificate {serial}: {e}"
            )))
        })?;
        let validity = &cert.tbs_certificate.validity;
        let secs = |t: &x509_cert::time::Time| {
            i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
        };
        if at < secs(&validity.not_before) || at >= secs(&validity.not_after) {
            return Err(refused("this service ID has expired or is not yet valid"));
        }
        if !has_policy(&cert, self.ca.urls().policy) {
            return Err(refused(
                "this certificate does not carry the service ID's LoA3 policy",
            ));
        }
        let Some(carrier_id) = tx.carrier_of_certificate(serial)? else {
            return Err(refused("this certificate is on no card of this issuer"));
        };
        let carrier = crate::registration::get_carrier(tx, &carrier_id)?;
        if carrier.state != CarrierState::Active {
            return Err(refused(format!("this card is {}", carrier.state)));
        }
        let Some(person_id) = carrier.person_id else {
            return Err(refused("this card has no holder"));
        };
        let officer = tx
            .officers_of_person(&person_id)?
            .into_iter()
            .find(|o| o.disabled_at.is_none())
            .ok_or_else(|| refused("the holder of this service ID is not an officer"))?;
        Ok(Officer {
            actor: Actor {
                name: officer.id,
                roles: officer.roles,
                person_id: officer.person_id,
                bootstrap: false,
            },
            display_name: officer.display_name,
        })
    }

    /// Signs in the officer whose service ID `der` is (a TLS client certificate the TLS
    /// layer chained to the issuing CA). Returns the new session's cookie and the session.
    /// Checked in a read first: a refusal takes no write lock, and is audited at most once
    /// a minute per certificate (any employee's card gets through TLS).
    pub fn sign_in_with_certificate(&self, der: &[u8]) -> Result<(String, Session), RaError> {
        let at = now_secs(self.clock.as_ref());
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| refused(format!("the client certificate cannot be read: {e}")))?;
        let serial = Serial::from_bytes(cert.tbs_certificate.serial_number.as_bytes())
            .map_err(|_| refused("the client certificate's serial number is not ours"))?;
        let check = |tx: &mut Tx<'_>| -> Result<Officer, RaError> {
            // Exactly the certificate stored, not merely one with its serial.
            if tx.certificate(&serial)?.as_deref() != Some(der) {
                return Err(refused("this certificate was not issued by this issuer"));
            }
            self.officer_by_serial(tx, &serial, at)
        };
        if let Err(e) = self.store.read(check) {
            if let RaError::Forbidden(why) = &e {
                self.refused_sign_in(&serial, why, at);
            }
            return Err(e);
        }
        let token = base64ct::Base64UrlUnpadded::encode_string(&rand::random::<[u8; 32]>());
        let hash = token_hash(&token);
        let credential = format!("certificate:{serial}");
        let officer = self.store.write(|tx| -> Result<_, RaError> {
            let officer = check(tx)?;
            tx.insert_session(&SessionRow {
                token_sha256: hash.clone(),
                officer_id: officer.actor.name.clone(),
                credential: credential.clone(),
                created_at: at,
                last_seen: at,
                ended_at: None,
            })?;
            tx.audit(
                &officer.actor.name,
                &AuditEvent::PortalSignedIn {
                    officer: officer.actor.name.clone(),
                    credential: credential.clone(),
                    session: session_name(&hash),
                },
                at,
            )?;
            Ok(officer)
        })?;
        Ok((
            token.clone(),
            Session {
                actor: officer.actor,
                display_name: officer.display_name,
                credential,
                csrf: csrf_token(&token),
                ends_at: at + self.sessions.max_secs,
            },
        ))
    }

    /// Audits a refused sign-in, at most once a minute per certificate (the rest logged).
    fn refused_sign_in(&self, serial: &Serial, why: &str, at: i64) {
        {
            let mut last = self
                .portal
                .refusals
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.len() > 10_000 {
                last.retain(|_, t| at - *t < 60);
            }
            match last.get(serial) {
                Some(t) if at - *t < 60 => {
                    tracing::info!(%serial, why, "portal sign-in refused (audited within the minute)");
                    return;
                }
                _ => {
                    last.insert(serial.clone(), at);
                }
            }
        }
        let audited = self.store.write(|tx| {
            tx.audit(
                "portal sign-in",
                &AuditEvent::Refused {
                    action: "portal.sign_in".into(),
                    reason: format!("certificate {serial}: {why}"),
                },
                at,
            )
        });
        if let Err(e) = audited {
            tracing::error!(error = %e, "auditing a refused sign-in");
        }
    }

    /// The live session behind cookie `token`, on a connection that presented `peer` (the
    /// TLS client certificate, DER): a session begun with a card is good only where that
    /// card's certificate is presented again, so its cookie alone is nothing (a passkey
    /// session's cookie is not bound so, and lasts at most [`PASSKEY_MAX_SECS`]). Its
    /// credential still good, neither limit passed; a session found past either, or its
    /// credential no longer good, is ended for good (and audited). Read first: an unknown
    /// cookie or a session used within the minute costs no write.
    pub fn session(&self, token: &str, peer: Option<&[u8]>) -> Result<Session, RaError> {
        let at = now_secs(self.clock.as_ref());
        let hash = token_hash(token);
        let policy = self.sessions;
        enum Found {
            Live(Session, bool),
            End(SessionRow, String),
        }
        let found = self.store.read(|tx| -> Result<Found, RaError> {
            let Some(row) = tx.session(&hash)? else {
                return Err(RaError::SessionEnded("no such session".into()));
            };
            if row.ended_at.is_some() {
                return Err(RaError::SessionEnded("the session has ended".into()));
            }
            let serial = match credential_of(&row.credential) {
                Some(Credential::Certificate(serial)) => {
                    // The card this session began with, presented on this connection.
                    let presented = peer
                        .and_then(|der| x509_cert::Certificate::from_der(der).ok())
                        .and_then(|c| {
                            Serial::from_bytes(c.tbs_certificate.serial_number.as_bytes()).ok()
                        });
                    if presented.as_ref() != Some(&serial)
                        || tx.certificate(&serial)?.as_deref() != peer
                    {
                        return Err(RaError::SessionEnded(
                            "this session's card is not presented: sign in with your card".into(),
                        ));
                    }
                    serial
                }
                // A passkey session: the passkey not removed, and the card certificate it
                // is bound to still a good service ID of this officer (checked below).
                Some(Credential::Passkey(id)) => match tx.passkey(&id)? {
                    Some(p) if p.removed_at.is_none() => match Serial::parse(&p.certificate_serial)
                    {
                        Ok(serial) => serial,
                        Err(_) => return Ok(Found::End(row, "unknown credential".into())),
                    },
                    _ => return Ok(Found::End(row, "the passkey was removed".into())),
                },
                None => return Ok(Found::End(row, "unknown credential".into())),
            };
            // A passkey session's cookie is not bound to a card on the connection: it lasts
            // at most PASSKEY_MAX_SECS however busy.
            let max_secs = if row.credential.starts_with("passkey:") {
                policy.max_secs.min(PASSKEY_MAX_SECS)
            } else {
                policy.max_secs
            };
            if at >= row.created_at + max_secs {
                return Ok(Found::End(row, "the session reached its time limit".into()));
            }
            if at >= row.last_seen + policy.idle_secs {
                return Ok(Found::End(row, "the session was idle too long".into()));
            }
            match self.officer_by_serial(tx, &serial, at) {
                Ok(officer) if officer.actor.name == row.officer_id => Ok(Found::Live(
                    Session {
                        actor: officer.actor,
                        display_name: officer.display_name,
                        credential: row.credential.clone(),
                        csrf: csrf_token(token),
                        ends_at: row.created_at + max_secs,
                    },
                    at - row.last_seen >= TOUCH_EVERY,
                )),
                Ok(_) => Ok(Found::End(
                    row,
                    "the credential belongs to another officer now".into(),
                )),
                Err(RaError::Forbidden(why)) => Ok(Found::End(row, why)),
                Err(e) => Err(e),
            }
        })?;
        match found {
            Found::Live(session, touch) => {
                if touch {
                    self.store.write(|tx| tx.touch_session(&hash, at))?;
                }
                Ok(session)
            }
            Found::End(row, why) => {
                self.store.write(|tx| -> Result<(), RaError> {
                    if tx.end_session(&hash, at)? {
                        tx.audit(
                            &row.officer_id,
                            &AuditEvent::PortalSessionEnded {
                                officer: row.officer_id.clone(),
                                session: session_name(&hash),
                                reason: why.clone(),
                            },
                            at,
                        )?;
                    }
                    Ok(())
                })?;
                Err(RaError::SessionEnded(why))
            }
        }
    }

    /// Ends the session behind cookie `token` (signing out); nothing if it had ended.
    pub fn sign_out(&self, token: &str) -> Result<(), RaError> {
        let at = now_secs(self.clock.as_ref());
        let hash = token_hash(token);
        self.store.write(|tx| -> Result<(), RaError> {
            let Some(row) = tx.session(&hash)? else {
                return Ok(());
            };
            if tx.end_session(&hash, at)? {
                tx.audit(
                    &row.officer_id,
                    &AuditEvent::PortalSessionEnded {
                        officer: row.officer_id.clone(),
                        session: session_name(&hash),
                        reason: "signed out".into(),
                    },
                    at,
                )?;
            }
            Ok(())
        })
    }

    /// Deletes sessions ended or past their hard limit more than `keep_days` ago (their
    /// sign-in and end stay in the audit trail); how many.
    pub fn purge_sessions(&self, keep_days: i64) -> Result<usize, RaError> {
        let at = now_secs(self.clock.as_ref());
        let before = at - keep_days * 86_400;
        let max = self.sessions.max_secs;
        Ok(self.store.write(|tx| tx.purge_sessions(before, max))?)
    }
}

/// The hard limit of a session begun with a passkey (its cookie is not bound to a card
/// presented on the connection, as a card session's is).
pub const PASSKEY_MAX_SECS: i64 = 2 * 3600;

/// How often a session's last use is written (the idle limit is this precise).
const TOUCH_EVERY: i64 = 60;

/// What the portal side of the RA keeps in memory.
#[derive(Debug, Default)]
pub(crate) struct PortalState {
    /// When a refused sign-in was last audited, per certificate.
    refusals: std::sync::Mutex<std::collections::HashMap<Serial, i64>>,
    /// The audit chain verified so far (records, head): each view checks only what came
    /// after it.
    verified: std::sync::Mutex<Option<tessera_issuer_store::audit::Verified>>,
    /// When a refused passkey was last audited, per officer.
    passkey_refusals: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// The last reconciliation this process ran: when, and what differed.
    pub(crate) reconciled:
        std::sync::Mutex<Option<(i64, Vec<tessera_issuer_types::api::Difference>)>>,
}

/// What a session was begun with.
enum Credential {
    Certificate(Serial),
    Passkey(String),
}

fn credential_of(credential: &str) -> Option<Credential> {
    if let Some(serial) = credential.strip_prefix("certificate:") {
        return Serial::parse(serial).ok().map(Credential::Certificate);
    }
    credential
        .strip_prefix("passkey:")
        .map(|id| Credential::Passkey(id.to_owned()))
}

/// An officer's passkey, as the portal lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyInfo {
    pub id: String,
    pub label: String,
    /// The card certificate it is bound to.
    pub certificate: String,
    pub created_at: i64,
    pub last_used: Option<i64>,
}

/// A passkey the portal's WebAuthn ceremony has verified, to be kept for an officer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPasskey {
    /// The credential id, base64url.
    pub id: String,
    pub label: String,
    /// The WebAuthn library's serialisation of it (opaque to the RA).
    pub credential: String,
    /// The authenticator model its attestation proved.
    pub aaguid: String,
}

impl Ra {
    /// Keeps a passkey for the officer of session `token` — only a session begun with the
    /// officer's card (a passkey cannot beget passkeys), on a connection presenting that
    /// card — bound to that card's certificate.
    pub fn register_passkey(
        &self,
        token: &str,
        peer: Option<&[u8]>,
        passkey: &NewPasskey,
    ) -> Result<PasskeyInfo, RaError> {
        let session = self.session(token, peer)?;
        let Some(Credential::Certificate(serial)) = credential_of(&session.credential) else {
            self.refused(
                &session.actor,
                "portal.passkey_register",
                "a passkey is registered only in a session begun with the officer's card",
            );
            return Err(RaError::Forbidden(
                "a passkey is registered only in a session begun with your card: sign in with your card".into(),
            ));
        };
        let label = passkey.label.trim();
        if label.is_empty() || label.chars().count() > 100 || label.chars().any(char::is_control) {
            return Err(RaError::Invalid(
                "label: 1 to 100 characters, no control characters".into(),
            ));
        }
        if passkey.id.is_empty() || passkey.id.len() > 1400 || passkey.credential.len() > 64 * 1024
        {
            return Err(RaError::Invalid("the passkey is not acceptable".into()));
        }
        let at = now_secs(self.clock.as_ref());
        let row = tessera_issuer_store::portal::PasskeyRow {
            id: passkey.id.clone(),
            officer_id: session.actor.name.clone(),
            certificate_serial: serial.to_string(),
            label: label.to_owned(),
            credential: passkey.credential.clone(),
            created_at: at,
            last_used: None,
            removed_at: None,
        };
        self.store.write(|tx| -> Result<(), RaError> {
            if tx.passkey(&row.id)?.is_some() {
                return Err(RaError::Exists("this passkey is registered already".into()));
            }
            tx.insert_passkey(&row)?;
            tx.audit(
                &row.officer_id,
                &AuditEvent::PasskeyRegistered {
                    officer: row.officer_id.clone(),
                    passkey: row.id.clone(),
                    label: row.label.clone(),
                    certificate: row.certificate_serial.clone(),
                    aaguid: passkey.aaguid.clone(),
                },
                at,
            )?;
            Ok(())
        })?;
        Ok(passkey_info(row))
    }

    /// The officer's own passkeys.
    pub fn passkeys(&self, actor: &Actor) -> Result<Vec<PasskeyInfo>, RaError> {
        self.passkeys_of(actor, &actor.name)
    }

    /// An officer's passkeys: their own, or anyone's for an administrator.
    pub fn passkeys_of(&self, actor: &Actor, officer: &str) -> Result<Vec<PasskeyInfo>, RaError> {
        if actor.name != officer {
            self.require(
                actor,
                "officer.passkeys",
                &[tessera_issuer_types::lifecycle::OfficerRole::Administrator],
            )?;
        }
        Ok(self
            .store
            .read(|tx| tx.passkeys_of(officer))?
            .into_iter()
            .map(passkey_info)
            .collect())
    }

    /// The serialised credentials of `officer`'s passkeys, for a sign-in's challenge
    /// (empty for an unknown or disabled officer: the answer does not say which).
    pub fn passkey_credentials(&self, officer: &str) -> Result<Vec<String>, RaError> {
        self.store.read(|tx| -> Result<Vec<String>, RaError> {
            let enabled = tx
                .officer(officer)?
                .is_some_and(|o| o.disabled_at.is_none());
            if !enabled {
                return Ok(Vec::new());
            }
            let at = now_secs(self.clock.as_ref());
            let mut live = Vec::new();
            for p in tx.passkeys_of(officer)? {
                // Only passkeys whose card is still a good service ID of this officer: a
                // dead one is not offered (the officer would give their PIN for nothing).
                let good = Serial::parse(&p.certificate_serial)
                    .ok()
                    .map(|serial| self.officer_by_serial(tx, &serial, at));
                match good {
                    Some(Ok(o)) if o.actor.name == p.officer_id => live.push(p.credential),
                    Some(Err(e @ RaError::Store(_))) => return Err(e),
                    _ => {}
                }
            }
            Ok(live)
        })
    }

    /// Audits a refused passkey sign-in or registration (the ceremony's own checks:
    /// signature, user verification, counter, unknown credential), at most once a minute
    /// per officer; with `compromised`, the passkey is removed as well (a counter that did
    /// not move on: a cloned authenticator).
    pub fn passkey_refused(
        &self,
        officer: &str,
        passkey: Option<&str>,
        why: &str,
        compromised: bool,
    ) {
        let at = now_secs(self.clock.as_ref());
        if !compromised {
            let key = format!("passkey:{officer}");
            let mut last = self
                .portal
                .passkey_refusals
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.len() > 10_000 {
                last.retain(|_, t| at - *t < 60);
            }
            if last.get(&key).is_some_and(|t| at - *t < 60) {
                tracing::info!(officer, why, "passkey refused (audited within the minute)");
                return;
            }
            last.insert(key, at);
        }
        let audited = self.store.write(|tx| -> Result<(), RaError> {
            if compromised {
                if let Some(id) = passkey {
                    if tx.remove_passkey(id, at)? {
                        tx.audit(
                            "portal sign-in",
                            &AuditEvent::PasskeyRemoved {
                                officer: officer.to_owned(),
                                passkey: id.to_owned(),
                            },
                            at,
                        )?;
                    }
                }
            }
            tx.audit(
                "portal sign-in",
                &AuditEvent::Refused {
                    action: "portal.sign_in".into(),
                    reason: format!(
                        "passkey{} of {officer}: {why}",
                        passkey.map(|p| format!(" {p}")).unwrap_or_default()
                    ),
                },
                at,
            )?;
            Ok(())
        });
        if let Err(e) = audited {
            tracing::error!(error = %e, "auditing a refused passkey");
        }
    }

    /// Audits an action refused to an officer in the portal before it reached an RA
    /// operation (e.g. a passkey asked for in a passkey session).
    pub fn audit_refusal(&self, actor: &Actor, action: &str, reason: &str) {
        self.refused(actor, action, reason);
    }

    /// Removes one of the officer's own passkeys (an administrator: anyone's). Sessions
    /// begun with it end at their next request.
    pub fn remove_passkey(&self, actor: &Actor, id: &str) -> Result<(), RaError> {
        let at = now_secs(self.clock.as_ref());
        self.store.write(|tx| -> Result<(), RaError> {
            let row = tx
                .passkey(id)?
                .filter(|p| {
                    p.officer_id == actor.name
                        || actor.has(tessera_issuer_types::lifecycle::OfficerRole::Administrator)
                })
                .ok_or_else(|| RaError::Missing("no such passkey".into()))?;
            if tx.remove_passkey(id, at)? {
                tx.audit(
                    &actor.name,
                    &AuditEvent::PasskeyRemoved {
                        officer: row.officer_id,
                        passkey: row.id,
                    },
                    at,
                )?;
            }
            Ok(())
        })
    }

    /// Signs in with passkey `id`, which the portal's WebAuthn ceremony verified (user
    /// verification included); `credential` is its serialisation as the ceremony updated
    /// it (the signature counter). Refused unless the passkey is live and the card
    /// certificate it is bound to is a good service ID of the same officer now — a
    /// suspended or revoked card takes its passkeys with it.
    pub fn sign_in_with_passkey(
        &self,
        id: &str,
        before: &str,
        credential: &str,
    ) -> Result<(String, Session), RaError> {
        let at = now_secs(self.clock.as_ref());
        let check = |tx: &mut Tx<'_>| -> Result<(Officer, Serial), RaError> {
            let Some(row) = tx.passkey(id)?.filter(|p| p.removed_at.is_none()) else {
                return Err(refused("this passkey is not registered here"));
            };
            let serial = Serial::parse(&row.certificate_serial)
                .map_err(|_| refused("this passkey is not registered here"))?;
            let officer = self.officer_by_serial(tx, &serial, at)?;
            if officer.actor.name != row.officer_id {
                return Err(refused(
                    "this passkey's card belongs to another officer now",
                ));
            }
            Ok((officer, serial))
        };
        if let Err(e) = self.store.read(check) {
            if let RaError::Forbidden(why) = &e {
                let serial = self
                    .store
                    .read(|tx| tx.passkey(id))
                    .ok()
                    .flatten()
                    .and_then(|p| Serial::parse(&p.certificate_serial).ok());
                match serial {
                    Some(serial) => self.refused_sign_in(&serial, &format!("passkey: {why}"), at),
                    None => tracing::info!(why, "portal passkey sign-in refused"),
                }
            }
            return Err(e);
        }
        let token = base64ct::Base64UrlUnpadded::encode_string(&rand::random::<[u8; 32]>());
        let hash = token_hash(&token);
        let session_credential = format!("passkey:{id}");
        let officer = self.store.write(|tx| -> Result<_, RaError> {
            let (officer, _) = check(tx)?;
            if !tx.passkey_used(id, before, credential, at)? {
                return Err(refused(
                    "this passkey was used or changed meanwhile: sign in again",
                ));
            }
            tx.insert_session(&SessionRow {
                token_sha256: hash.clone(),
                officer_id: officer.actor.name.clone(),
                credential: session_credential.clone(),
                created_at: at,
                last_seen: at,
                ended_at: None,
            })?;
            tx.audit(
                &officer.actor.name,
                &AuditEvent::PortalSignedIn {
                    officer: officer.actor.name.clone(),
                    credential: session_credential.clone(),
                    session: session_name(&hash),
                },
                at,
            )?;
            Ok(officer)
        })?;
        Ok((
            token.clone(),
            Session {
                actor: officer.actor,
                display_name: officer.display_name,
                credential: session_credential,
                csrf: csrf_token(&token),
                ends_at: at + self.sessions.max_secs.min(PASSKEY_MAX_SECS),
            },
        ))
    }
}

fn passkey_info(p: tessera_issuer_store::portal::PasskeyRow) -> PasskeyInfo {
    PasskeyInfo {
        id: p.id,
        label: p.label,
        certificate: p.certificate_serial,
        created_at: p.created_at,
        last_used: p.last_used,
    }
}

/// Whether `cert` names `policy` among its certificate policies.
fn has_policy(cert: &x509_cert::Certificate, policy: const_oid::ObjectIdentifier) -> bool {
    use x509_cert::ext::pkix::CertificatePolicies;
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_CERTIFICATE_POLICIES)
        .filter_map(|e| CertificatePolicies::from_der(e.extn_value.as_bytes()).ok())
        .any(|p| p.0.iter().any(|i| i.policy_identifier == policy))
}

/// What the audit-chain check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chain {
    /// Every record linked to the one before it.
    Verified { records: u64 },
    /// The first thing found wrong.
    Broken(String),
}

impl Ra {
    /// People whose employee number, e-mail or a name starts with `text`; protected
    /// identities only for those who may see them.
    pub fn search_people(
        &self,
        actor: &Actor,
        text: &str,
        limit: u32,
    ) -> Result<Vec<tessera_issuer_types::api::Person>, RaError> {
        self.require(
            actor,
            "person.list",
            tessera_issuer_types::lifecycle::OfficerRole::STAFF,
        )?;
        let limit = i64::from(limit.clamp(1, 200));
        let text = text.trim();
        let protected = crate::registration::may_see_protected(actor);
        self.store
            .snapshot(|tx| tx.search_people(text, limit, protected))?
            .into_iter()
            .map(crate::registration::person_view)
            .collect()
    }

    /// The newest audit records before `before`, filtered by action prefix and actor, for
    /// auditors and administrators (K2.8, K2.9).
    pub fn audit_recent(
        &self,
        actor: &Actor,
        before: Option<i64>,
        limit: u32,
        action: Option<&str>,
        by: Option<&str>,
    ) -> Result<Vec<tessera_issuer_types::audit::AuditRecord>, RaError> {
        use tessera_issuer_types::lifecycle::OfficerRole;
        self.require(
            actor,
            "audit.read",
            &[OfficerRole::Auditor, OfficerRole::Administrator],
        )?;
        let limit = i64::from(limit.clamp(1, 500));
        Ok(self
            .store
            .snapshot(|tx| tx.audit_recent(before, limit, action, by))?
            .into_iter()
            .map(crate::registration::audit_view)
            .collect())
    }

    /// Records that `actor` exports the audit trail from record `after` on (K2.9: access
    /// to the evidence is logged, before any of it is read); auditors and administrators.
    pub fn audit_export_started(&self, actor: &Actor, after: i64) -> Result<(), RaError> {
        use tessera_issuer_types::lifecycle::OfficerRole;
        self.require(
            actor,
            "audit.export",
            &[OfficerRole::Auditor, OfficerRole::Administrator],
        )?;
        let at = now_secs(self.clock.as_ref());
        self.store.write(|tx| {
            tx.audit(&actor.name, &AuditEvent::AuditExported { after }, at)
                .map(drop)
        })?;
        Ok(())
    }

    /// Checks the whole audit chain (auditors and administrators).
    pub fn audit_chain(&self, actor: &Actor) -> Result<Chain, RaError> {
        use tessera_issuer_types::lifecycle::OfficerRole;
        self.require(
            actor,
            "audit.read",
            &[OfficerRole::Auditor, OfficerRole::Administrator],
        )?;
        // The part verified before is not read again: an edit there is what the signed
        // checkpoints and `tessera-issuer audit verify` find; a break after it is found
        // here, and then every view checks the whole chain again.
        let mut verified = self
            .portal
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let from = verified
            .clone()
            .unwrap_or(tessera_issuer_store::audit::Verified {
                records: 0,
                head: tessera_issuer_store::audit::GENESIS.to_vec(),
            });
        Ok(match self.store.read(|tx| tx.verify_audit_after(&from))? {
            Ok(v) => {
                let records = v.records;
                *verified = Some(v);
                Chain::Verified { records }
            }
            Err(t) => {
                *verified = None;
                Chain::Broken(t.to_string())
            }
        })
    }
}

/// What needs an officer's attention soon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attention {
    /// Suspended cards whose deadline (when the suspension becomes a revocation) is near.
    pub suspensions: Vec<tessera_issuer_types::api::Carrier>,
    /// Temporary and substitute cards due back (their end) soon.
    pub due_back: Vec<tessera_issuer_types::api::Carrier>,
    /// This server's last reconciliation of carriers with their certificates (hourly and
    /// at start); none before the first.
    pub reconciled: Option<Reconciled>,
    /// Certificates issued and revoked per week, the last [`CHART_WEEKS`], oldest first.
    pub weeks: Vec<Week>,
}

/// The last reconciliation as one officer may see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// When it ran (seconds since the epoch).
    pub at: i64,
    /// How many differences it found in all, whether or not this officer may see them:
    /// "agrees" is shown only when this is 0.
    pub total: usize,
    /// The first [`RECONCILED_SHOWN`] differences this officer may see (cards of protected
    /// identities only for those who may see them).
    pub shown: Vec<tessera_issuer_types::api::Difference>,
    /// How many of the differences looked at were withheld from this officer.
    pub withheld: usize,
}

/// Differences the dashboard lists at most.
pub const RECONCILED_SHOWN: usize = 50;

/// Weeks the dashboard's chart covers.
pub const CHART_WEEKS: usize = 12;

/// One week of the chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Week {
    /// Its first second (since the epoch).
    pub start: i64,
    pub issued: u64,
    pub revoked: u64,
}

impl Ra {
    /// Suspensions and temporary or substitute cards whose deadline falls within
    /// `within_days` (or has passed and awaits the sweep), soonest first, at most 50 each;
    /// cards of protected identities only for those who may see them.
    pub fn attention(&self, actor: &Actor, within_days: u32) -> Result<Attention, RaError> {
        use tessera_issuer_types::lifecycle::OfficerRole;
        self.require(actor, "carrier.list", OfficerRole::STAFF)?;
        let until = now_secs(self.clock.as_ref()) + i64::from(within_days) * 86_400;
        let see_protected = crate::registration::may_see_protected(actor);
        self.store.read(|tx| -> Result<Attention, RaError> {
            let mut lists = [Vec::new(), Vec::new()];
            for (state, list) in [CarrierState::Suspended, CarrierState::Active]
                .into_iter()
                .zip(lists.iter_mut())
            {
                for c in tx.carriers_due(state, until, 50)? {
                    let hidden = match (&c.person_id, see_protected) {
                        (Some(p), false) => tx.person(p)?.is_some_and(|p| p.protected_identity),
                        _ => false,
                    };
                    if !hidden {
                        let serials = tx.carrier_serials(&c.id)?;
                        list.push(crate::registration::carrier_view(c, serials));
                    }
                }
            }
            let [suspensions, due_back] = lists;
            // Whole weeks from Monday (the epoch was a Thursday), the current one last.
            const WEEK: i64 = 7 * 86_400;
            const MONDAY: i64 = 4 * 86_400;
            let now = now_secs(self.clock.as_ref());
            let from = ((now - MONDAY).div_euclid(WEEK) - (CHART_WEEKS as i64 - 1)) * WEEK + MONDAY;
            let counts = tx.certificates_per_period(from, WEEK, CHART_WEEKS)?;
            let weeks = (0..CHART_WEEKS)
                .map(|i| Week {
                    start: from + i as i64 * WEEK,
                    issued: counts.issued[i],
                    revoked: counts.revoked[i],
                })
                .collect();
            let last = self
                .portal
                .reconciled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            // Protected identities' cards only for those who may see them; at most 50
            // listed, and at most 500 looked up (two queries each) to find them. The total
            // is always told, so that a hidden difference never reads as "agrees".
            let reconciled = match last {
                Some((at, differences)) => {
                    let total = differences.len();
                    let mut shown = Vec::new();
                    let mut withheld = 0;
                    for d in differences.into_iter().take(10 * RECONCILED_SHOWN) {
                        if shown.len() == RECONCILED_SHOWN {
                            break;
                        }
                        let hidden = !see_protected
                            && tx
                                .carrier(&d.carrier_id)?
                                .and_then(|c| c.person_id)
                                .map(|p| tx.person(&p))
                                .transpose()?
                                .flatten()
                                .is_some_and(|p| p.protected_identity);
                        if hidden {
                            withheld += 1;
                        } else {
                            shown.push(d);
                        }
                    }
                    Some(Reconciled {
                        at,
                        total,
                        shown,
                        withheld,
                    })
                }
                None => None,
            };
            Ok(Attention {
                suspensions,
                due_back,
                reconciled,
                weeks,
            })
        })
    }
}

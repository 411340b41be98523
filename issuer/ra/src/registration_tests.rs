//! The registration authority's life cycle, end to end over a memory CA and SQLite: the
//! scenario of the RA issue (officers, a person, proofing, four-eyes issuance, activation,
//! a temporary card and its return, a suspension that runs out, a leaver), the guards
//! (roles, four-eyes, own record, tokens), concurrent officers, and random operation
//! sequences that must never break an invariant.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use tessera_issuer_types::api::*;
use tessera_issuer_types::lifecycle::*;
use tessera_issuer_types::{CertificateStatus, ErrorCode, ProfileName, RevocationReason, Serial};

use crate::testing::{csr, fixture, Fixture};
use crate::{Actor, RaError};

const DAY: u64 = 86_400;

struct Desk {
    f: Fixture,
    admin: Actor,
    anna: Actor,
    bo: Actor,
    hr: Actor,
    auditor: Actor,
}

fn actor(f: &Fixture, token: &str) -> Actor {
    f.ra.authenticate(token).unwrap()
}

/// The bootstrap token creates the first administrator, who creates the others; each
/// officer then works with their own token.
fn desk() -> Desk {
    desk_on(fixture(Vec::new()))
}

fn desk_on(f: Fixture) -> Desk {
    f.store
        .write(|tx| tx.insert_api_token(&sha2_of("tsr_boot"), "bootstrap-admin", "admin", 0))
        .unwrap();
    let boot = actor(&f, "tsr_boot");
    assert!(boot.bootstrap);
    let token = |who: &Actor, id: &str, roles: &[OfficerRole]| -> Actor {
        f.ra.create_officer(
            who,
            &NewOfficer {
                id: id.into(),
                display_name: id.into(),
                roles: roles.to_vec(),
                person_id: None,
            },
        )
        .unwrap();
        let t =
            f.ra.create_token(
                who,
                id,
                &NewToken {
                    label: "test".into(),
                    valid_days: None,
                },
            )
            .unwrap();
        actor(&f, &t.token)
    };
    let first =
        f.ra.create_officer(
            &boot,
            &NewOfficer {
                id: "admin".into(),
                display_name: "Admin".into(),
                roles: vec![OfficerRole::Administrator],
                person_id: None,
            },
        )
        .unwrap();
    let admin = actor(&f, &first.first_token.unwrap().token);
    // Spent: the bootstrap token makes nothing else.
    assert!(f.ra.authenticate("tsr_boot").is_err());
    let anna = token(&admin, "anna", &[OfficerRole::RegistrationOfficer]);
    let bo = token(&admin, "bo", &[OfficerRole::RegistrationOfficer]);
    let hr = token(&admin, "hr", &[OfficerRole::HrAdmin]);
    let auditor = token(&admin, "audit", &[OfficerRole::Auditor]);
    Desk {
        f,
        admin,
        anna,
        bo,
        hr,
        auditor,
    }
}

fn sha2_of(s: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).to_vec()
}

fn new_person(n: u32, pnr: &str) -> NewPerson {
    NewPerson {
        employee_number: format!("E{n:05}"),
        given_name: "Eva".into(),
        family_name: format!("Person{n}"),
        email: Some(format!("eva{n}@example.org")),
        upn: Some(format!("eva{n}@example.org")),
        identity_number: Some(pnr.into()),
        non_resident: None,
        protected_identity: false,
        directory_sid: None,
    }
}

/// An identity check of `p` with the document showing the registered identity data.
fn proofing_of(p: &Person) -> NewProofing {
    NewProofing {
        identity_number: p.identity_number.clone(),
        non_resident: p.non_resident.clone(),
        ..proofing()
    }
}

fn proofing() -> NewProofing {
    NewProofing {
        document_type: "passport".into(),
        document_number: "AA1234567".into(),
        issuing_country: "SE".into(),
        document_expiry: "2099-12-31".into(),
        place: "Service desk, Sundsvall".into(),
        identity_number: None,
        non_resident: None,
    }
}

fn keys(profiles: &[ProfileName]) -> KeysRequest {
    KeysRequest {
        keys: profiles
            .iter()
            .map(|p| CarrierKey {
                profile: *p,
                csr: Some(csr()),
                attestation: None,
                tpm: None,
            })
            .collect(),
        puk: None,
    }
}

fn status(f: &Fixture, s: &Serial) -> CertificateStatus {
    f.store.read(|tx| tx.status(s)).unwrap().unwrap()
}

fn code(e: RaError) -> ErrorCode {
    e.code()
}

/// A smart card `serial` bound to `person` by anna and approved by bo (ASSIGNED).
fn assigned_card(d: &Desk, person: &Person, serial: &str) -> Carrier {
    let c =
        d.f.ra
            .create_carrier(
                &d.anna,
                &NewCarrier {
                    kind: CarrierKind::SmartCard,
                    serial_number: serial.into(),
                },
            )
            .unwrap();
    let a =
        d.f.ra
            .assign(
                &d.anna,
                &c.id,
                &AssignRequest {
                    person_id: person.id.clone(),
                    terms_version: "2026-1".into(),
                },
            )
            .unwrap();
    d.f.ra.decide(&d.bo, &a.id, true).unwrap();
    c
}

/// A proofed person `n` with an ACTIVE smart card personalised with `req`, issued by anna
/// and approved by bo.
fn active_card_with(d: &Desk, n: u32, pnr: &str, req: &KeysRequest) -> (Person, Carrier) {
    let p = d.f.ra.create_person(&d.hr, &new_person(n, pnr)).unwrap();
    d.f.ra.proof(&d.anna, &p.id, &proofing_of(&p)).unwrap();
    let c = assigned_card(d, &p, &format!("SC{n}"));
    d.f.ra.register_keys(&d.anna, &c.id, req).unwrap();
    let c =
        d.f.ra
            .activate(
                &d.anna,
                &c.id,
                &ActivateRequest {
                    receipt: "R-1".into(),
                },
            )
            .unwrap();
    (p, c)
}

/// A proofed person with an ACTIVE smart card (authentication and signature keys), issued
/// by anna and approved by bo.
fn active_card(d: &Desk, n: u32, pnr: &str) -> (Person, Carrier) {
    active_card_with(
        d,
        n,
        pnr,
        &keys(&[ProfileName::Authentication, ProfileName::Signature]),
    )
}

/// One key, one carrier: the same key offered for a second carrier is refused before
/// anything is signed, and that carrier is left as it was.
#[test]
fn a_key_certified_on_one_carrier_is_refused_on_another() {
    let d = desk();
    let key = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let same = KeysRequest {
        keys: vec![CarrierKey {
            profile: ProfileName::Authentication,
            csr: Some(crate::testing::csr_for(&key)),
            attestation: None,
            tpm: None,
        }],
        puk: None,
    };
    let (_, first) = active_card_with(&d, 1, "19811218-9876", &same);
    let p =
        d.f.ra
            .create_person(&d.hr, &new_person(2, "19640823-3234"))
            .unwrap();
    d.f.ra.proof(&d.anna, &p.id, &proofing_of(&p)).unwrap();
    let second = assigned_card(&d, &p, "SC2");
    let e =
        d.f.ra
            .register_keys(&d.anna, &second.id, &same)
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadProof, "{e}");
    assert!(e.to_string().contains(&first.id), "{e}");
    let after = d.f.ra.carrier(&d.anna, &second.id).unwrap();
    assert_eq!(after.state, CarrierState::Assigned);
    assert!(after.certificates.is_empty());
}

#[test]
fn the_whole_life_of_a_service_id() {
    let d = desk();
    let f = &d.f;
    // A bad personal identity number is refused, naming the field; nothing is stored.
    let bad =
        f.ra.create_person(&d.hr, &new_person(1, "198112189875"))
            .unwrap_err();
    assert_eq!(bad.code(), ErrorCode::InvalidField);
    assert!(bad.to_string().contains("identity_number"), "{bad}");

    let p =
        f.ra.create_person(&d.hr, &new_person(1, "19811218-9876"))
            .unwrap();
    assert_eq!(p.state, PersonState::Registered);
    let c =
        f.ra.create_carrier(
            &d.anna,
            &NewCarrier {
                kind: CarrierKind::SmartCard,
                serial_number: "SC1".into(),
            },
        )
        .unwrap();
    // Not proofed yet: no assignment.
    let e =
        f.ra.assign(
            &d.anna,
            &c.id,
            &AssignRequest {
                person_id: p.id.clone(),
                terms_version: "2026-1".into(),
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidTransition);
    assert!(e.to_string().contains("registered"), "{e}");
    let p = f.ra.proof(&d.anna, &p.id, &proofing_of(&p)).unwrap();
    assert_eq!(p.state, PersonState::Proofed);
    let a =
        f.ra.assign(
            &d.anna,
            &c.id,
            &AssignRequest {
                person_id: p.id.clone(),
                terms_version: "2026-1".into(),
            },
        )
        .unwrap();
    // Keys before approval, and the requester approving, are both refused.
    let e =
        f.ra.register_keys(&d.anna, &c.id, &keys(&[ProfileName::Authentication]))
            .unwrap_err();
    assert!(e.to_string().contains("approval pending"), "{e}");
    assert_eq!(
        code(f.ra.decide(&d.anna, &a.id, true).unwrap_err()),
        ErrorCode::FourEyesRequired
    );
    // An auditor changes nothing.
    assert_eq!(
        code(f.ra.decide(&d.auditor, &a.id, true).unwrap_err()),
        ErrorCode::Forbidden
    );
    let a = f.ra.decide(&d.bo, &a.id, true).unwrap();
    assert_eq!(a.decided_by.as_deref(), Some("bo"));
    let c =
        f.ra.register_keys(
            &d.anna,
            &c.id,
            &keys(&[ProfileName::Authentication, ProfileName::Signature]),
        )
        .unwrap();
    assert_eq!(c.state, CarrierState::Personalised);
    assert_eq!(c.certificates.len(), 2);
    for s in &c.certificates {
        assert!(status(f, s).is_on_hold(), "born on hold until hand-over");
    }
    let c =
        f.ra.activate(
            &d.anna,
            &c.id,
            &ActivateRequest {
                receipt: "R-1".into(),
            },
        )
        .unwrap();
    assert_eq!(c.state, CarrierState::Active);
    for s in &c.certificates {
        assert_eq!(status(f, s), CertificateStatus::Issued);
    }

    // A forgotten card: a temporary card, approved by a second officer, suspends it.
    let t =
        f.ra.create_carrier(
            &d.anna,
            &NewCarrier {
                kind: CarrierKind::Temporary,
                serial_number: "T1".into(),
            },
        )
        .unwrap();
    let ta =
        f.ra.request_temporary(
            &d.anna,
            &p.id,
            &TemporaryRequest {
                original_id: None,
                carrier_id: t.id.clone(),
                days: None,
            },
        )
        .unwrap();
    f.ra.decide(&d.bo, &ta.id, true).unwrap();
    let original = f.ra.carrier(&d.anna, &c.id).unwrap();
    assert_eq!(original.state, CarrierState::Suspended);
    assert_eq!(original.suspend_reason, Some(SuspendReason::Forgotten));
    for s in &original.certificates {
        assert!(status(f, s).is_on_hold());
    }
    // Authentication only on a temporary card.
    assert_eq!(
        code(
            f.ra.register_keys(&d.anna, &t.id, &keys(&[ProfileName::Signature]))
                .unwrap_err()
        ),
        ErrorCode::InvalidField
    );
    f.ra.register_keys(&d.anna, &t.id, &keys(&[ProfileName::Authentication]))
        .unwrap();
    let t =
        f.ra.activate(
            &d.anna,
            &t.id,
            &ActivateRequest {
                receipt: "R-T1".into(),
            },
        )
        .unwrap();
    assert_eq!(t.deadline, t.ends_at, "a temporary card ends by itself");
    // Extended to 14 days at most.
    f.ra.extend(&d.anna, &t.id, &ExtendRequest { days: 2 })
        .unwrap();
    assert_eq!(
        code(
            f.ra.extend(&d.anna, &t.id, &ExtendRequest { days: 12 })
                .unwrap_err()
        ),
        ErrorCode::InvalidField
    );
    // Returned: no longer needed. Original active again, temporary revoked (superseded).
    f.ra.return_temporary(
        &d.anna,
        &t.id,
        &ReturnRequest {
            outcome: ReturnOutcome::NoLongerNeeded,
        },
    )
    .unwrap();
    let original = f.ra.carrier(&d.anna, &c.id).unwrap();
    assert_eq!(original.state, CarrierState::Active);
    for s in &original.certificates {
        assert_eq!(status(f, s), CertificateStatus::Issued);
    }
    let t = f.ra.carrier(&d.anna, &t.id).unwrap();
    assert_eq!(t.state, CarrierState::Revoked);
    assert!(matches!(
        status(f, &t.certificates[0]),
        CertificateStatus::Revoked {
            reason: RevocationReason::Superseded,
            ..
        }
    ));

    // A suspension whose deadline passes is a revocation.
    f.ra.suspend(
        &d.anna,
        &c.id,
        &SuspendRequest {
            reason: SuspendReason::TemporarilyLost,
            days: 3,
        },
    )
    .unwrap();
    f.clock.advance(2 * DAY);
    assert!(f.ra.sweep_deadlines().unwrap().revoked.is_empty());
    f.clock.advance(DAY);
    assert_eq!(f.ra.sweep_deadlines().unwrap().revoked, vec![c.id.clone()]);
    let c = f.ra.carrier(&d.anna, &c.id).unwrap();
    assert_eq!(c.state, CarrierState::Revoked);
    // Temporarily lost and never found: lost (keyCompromise).
    assert_eq!(c.revoke_reason, Some(CarrierRevokeReason::Lost));
    for s in &c.certificates {
        assert!(matches!(
            status(f, s),
            CertificateStatus::Revoked {
                reason: RevocationReason::KeyCompromise,
                ..
            }
        ));
    }

    // A leaver: every carrier revoked (affiliationChanged).
    let (p2, c2) = active_card(&d, 2, "196408233234");
    let ended = f.ra.end_person(&d.hr, &p2.id).unwrap();
    assert_eq!(ended.state, PersonState::Ended);
    let c2 = f.ra.carrier(&d.anna, &c2.id).unwrap();
    assert_eq!(c2.revoke_reason, Some(CarrierRevokeReason::EmploymentEnded));
    for s in &c2.certificates {
        assert!(matches!(
            status(f, s),
            CertificateStatus::Revoked {
                reason: RevocationReason::AffiliationChanged,
                ..
            }
        ));
    }

    assert_eq!(f.ra.reconcile(&d.auditor).unwrap(), Vec::new());
    assert!(f.store.read(|tx| tx.verify_audit()).unwrap().is_ok());
}

#[test]
fn a_returned_temporary_card_reported_lost_revokes_the_original_and_stays() {
    let d = desk();
    let f = &d.f;
    let (p, c) = active_card(&d, 1, "198112189876");
    let t =
        f.ra.create_carrier(
            &d.anna,
            &NewCarrier {
                kind: CarrierKind::Temporary,
                serial_number: "T1".into(),
            },
        )
        .unwrap();
    let ta =
        f.ra.request_temporary(
            &d.anna,
            &p.id,
            &TemporaryRequest {
                original_id: None,
                carrier_id: t.id.clone(),
                days: Some(3),
            },
        )
        .unwrap();
    f.ra.decide(&d.bo, &ta.id, true).unwrap();
    f.ra.register_keys(&d.anna, &t.id, &keys(&[ProfileName::Authentication]))
        .unwrap();
    f.ra.activate(
        &d.anna,
        &t.id,
        &ActivateRequest {
            receipt: "R".into(),
        },
    )
    .unwrap();
    let t =
        f.ra.return_temporary(
            &d.anna,
            &t.id,
            &ReturnRequest {
                outcome: ReturnOutcome::Lost,
            },
        )
        .unwrap();
    assert_eq!(t.state, CarrierState::Active);
    let c = f.ra.carrier(&d.anna, &c.id).unwrap();
    assert_eq!(c.revoke_reason, Some(CarrierRevokeReason::Lost));
    // The temporary card's period still ends it.
    f.clock.advance(3 * DAY);
    assert_eq!(f.ra.sweep_deadlines().unwrap().revoked, vec![t.id.clone()]);
    assert_eq!(f.ra.reconcile(&d.admin).unwrap(), Vec::new());
}

#[test]
fn guards_roles_own_records_and_tokens() {
    let d = desk();
    let f = &d.f;
    // The bootstrap token is spent once an administrator exists.
    let e = f.ra.authenticate("tsr_boot").unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthorized);
    assert!(e.to_string().contains("spent"), "{e}");
    // An auditor's attempt is refused and audited.
    let before = f.store.read(|tx| tx.audit_records()).unwrap().len();
    let e =
        f.ra.create_person(&d.auditor, &new_person(9, "198112189876"))
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Forbidden);
    let records = f.store.read(|tx| tx.audit_records()).unwrap();
    assert_eq!(records.len(), before + 1);
    assert_eq!(records.last().unwrap().action, "refused");
    assert_eq!(records.last().unwrap().actor, "audit");
    // An officer never acts on their own record.
    let me =
        f.ra.create_person(&d.hr, &new_person(3, "198112189876"))
            .unwrap();
    f.ra.create_officer(
        &d.admin,
        &NewOfficer {
            id: "cecilia".into(),
            display_name: "Cecilia".into(),
            roles: vec![OfficerRole::RegistrationOfficer],
            person_id: Some(me.id.clone()),
        },
    )
    .unwrap();
    let t =
        f.ra.create_token(
            &d.admin,
            "cecilia",
            &NewToken {
                label: "laptop".into(),
                valid_days: Some(1),
            },
        )
        .unwrap();
    let cecilia = actor(f, &t.token);
    assert_eq!(
        code(f.ra.proof(&cecilia, &me.id, &proofing()).unwrap_err()),
        ErrorCode::FourEyesRequired
    );
    // Nor approves an issuance to themselves.
    f.ra.proof(&d.anna, &me.id, &proofing_of(&me)).unwrap();
    let c =
        f.ra.create_carrier(
            &d.anna,
            &NewCarrier {
                kind: CarrierKind::SmartCard,
                serial_number: "SC-C".into(),
            },
        )
        .unwrap();
    let a =
        f.ra.assign(
            &d.anna,
            &c.id,
            &AssignRequest {
                person_id: me.id.clone(),
                terms_version: "2026-1".into(),
            },
        )
        .unwrap();
    assert_eq!(
        code(f.ra.decide(&cecilia, &a.id, true).unwrap_err()),
        ErrorCode::FourEyesRequired
    );
    // A token expires, and a revoked one is refused.
    f.clock.advance(DAY);
    assert!(f
        .ra
        .authenticate(&t.token)
        .unwrap_err()
        .to_string()
        .contains("expired"));
    let t2 =
        f.ra.create_token(
            &d.admin,
            "cecilia",
            &NewToken {
                label: "phone".into(),
                valid_days: None,
            },
        )
        .unwrap();
    f.ra.revoke_token(&d.admin, "cecilia", &t2.id).unwrap();
    assert!(f
        .ra
        .authenticate(&t2.token)
        .unwrap_err()
        .to_string()
        .contains("revoked"));
    // A protected identity is invisible to HR and auditors.
    let mut secret = new_person(4, "196408233234");
    secret.protected_identity = true;
    let s = f.ra.create_person(&d.hr, &secret).unwrap();
    assert_eq!(
        code(f.ra.person(&d.auditor, &s.id).unwrap_err()),
        ErrorCode::NotFound
    );
    assert!(f.ra.person(&d.anna, &s.id).is_ok());
    assert!(!f
        .ra
        .people(&d.hr, "", 100)
        .unwrap()
        .iter()
        .any(|p| p.id == s.id));
    assert!(f.store.read(|tx| tx.verify_audit()).unwrap().is_ok());
}

#[test]
fn two_officers_at_once_one_wins_the_other_is_told_the_state() {
    let d = desk();
    let (_, c) = active_card(&d, 1, "198112189876");
    let ra = Arc::new(d.f.ra);
    let results: Vec<_> = [d.anna.clone(), d.bo.clone()]
        .into_iter()
        .map(|officer| {
            let ra = Arc::clone(&ra);
            let id = c.id.clone();
            std::thread::spawn(move || {
                ra.suspend(
                    &officer,
                    &id,
                    &SuspendRequest {
                        reason: SuspendReason::AdminHold,
                        days: 5,
                    },
                )
            })
        })
        .map(|h| h.join().unwrap())
        .collect();
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{results:?}");
    let lost = results.into_iter().find_map(Result::err).unwrap();
    assert_eq!(lost.code(), ErrorCode::InvalidTransition);
    assert!(
        lost.to_string().contains("suspended (admin_hold)"),
        "{lost}"
    );
    // Applied once: one hold per certificate in the audit trail.
    let holds =
        d.f.store
            .read(|tx| tx.audit_records())
            .unwrap()
            .iter()
            .filter(|r| r.action == "carrier.changed" && r.details.contains("\"to\":\"suspended\""))
            .count();
    assert_eq!(holds, 1);
}

/// Random sequences of 1,000 operations on a few people and carriers by two officers:
/// an operation either applies or fails with a clear error and changes nothing; after
/// each, every suspension has a deadline and reconciliation finds no difference; at the
/// end the audit chain verifies. The seed is printed for a failure to be replayed
/// (`TESSERA_SEED`).
#[test]
fn random_operation_sequences_keep_every_invariant() {
    let seed: u64 = std::env::var("TESSERA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let d = desk();
    let f = &d.f;
    let pnrs = ["198112189876", "196408233234", "201701102384"];
    // A third officer checks the identities, so either of the two at the desk may approve
    // the other's requests (the identity checker never approves).
    f.ra.create_officer(
        &d.admin,
        &NewOfficer {
            id: "cara".into(),
            display_name: "Cara".into(),
            roles: vec![OfficerRole::RegistrationOfficer],
            person_id: None,
        },
    )
    .unwrap();
    let cara_token =
        f.ra.create_token(
            &d.admin,
            "cara",
            &NewToken {
                label: "l".into(),
                valid_days: None,
            },
        )
        .unwrap();
    let cara = f.ra.authenticate(&cara_token.token).unwrap();
    let people: Vec<Person> = pnrs
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let p = f.ra.create_person(&d.hr, &new_person(i as u32, n)).unwrap();
            f.ra.proof(&cara, &p.id, &proofing_of(&p)).unwrap()
        })
        .collect();
    let mut carriers = Vec::new();
    for i in 0..6 {
        let kind = if i < 4 {
            CarrierKind::SmartCard
        } else {
            CarrierKind::Temporary
        };
        carriers.push(
            f.ra.create_carrier(
                &d.anna,
                &NewCarrier {
                    kind,
                    serial_number: format!("R{i}"),
                },
            )
            .unwrap()
            .id,
        );
    }
    let officers = [&d.anna, &d.bo];
    let mut applied = 0;
    let mut activated = 0;
    let mut seen = std::collections::BTreeSet::new();
    for step in 0..1000 {
        let who = officers[rng.gen_range(0..2)];
        let c = &carriers[rng.gen_range(0..carriers.len())].clone();
        let p = &people[rng.gen_range(0..people.len())];
        let before = f.ra.carrier(&d.admin, c).unwrap();
        let r: Result<(), RaError> = match rng.gen_range(0..12) {
            0 => {
                f.ra.assign(
                    who,
                    c,
                    &AssignRequest {
                        person_id: p.id.clone(),
                        terms_version: "1".into(),
                    },
                )
                .map(drop)
            }
            1 => match f.ra.approvals_pending(&d.admin).unwrap().first() {
                Some(a) => f.ra.decide(who, &a.id, rng.gen_bool(0.8)).map(drop),
                None => Ok(()),
            },
            2 => {
                f.ra.register_keys(who, c, &keys(&[ProfileName::Authentication]))
                    .map(drop)
            }
            3 => {
                f.ra.activate(
                    who,
                    c,
                    &ActivateRequest {
                        receipt: "r".into(),
                    },
                )
                .map(drop)
            }
            4 => {
                f.ra.suspend(
                    who,
                    c,
                    &SuspendRequest {
                        reason: SuspendReason::OnLeave,
                        days: rng.gen_range(1..5),
                    },
                )
                .map(drop)
            }
            5 => {
                f.ra.resume(
                    who,
                    c,
                    &ResumeRequest {
                        verification: "pin".into(),
                    },
                )
                .map(drop)
            }
            6 => {
                f.ra.revoke_carrier(
                    who,
                    c,
                    &RevokeCarrierRequest {
                        reason: CarrierRevokeReason::ALL
                            [rng.gen_range(0..CarrierRevokeReason::ALL.len())],
                    },
                )
                .map(drop)
            }
            7 => {
                f.ra.request_temporary(
                    who,
                    &p.id,
                    &TemporaryRequest {
                        original_id: None,
                        carrier_id: c.clone(),
                        days: Some(rng.gen_range(1..4)),
                    },
                )
                .map(drop)
            }
            8 => {
                f.ra.return_temporary(
                    who,
                    c,
                    &ReturnRequest {
                        outcome: if rng.gen_bool(0.5) {
                            ReturnOutcome::Lost
                        } else {
                            ReturnOutcome::NoLongerNeeded
                        },
                    },
                )
                .map(drop)
            }
            9 => {
                f.clock.advance(rng.gen_range(0..2 * DAY));
                f.ra.sweep_deadlines().map(drop)
            }
            10 => f.ra.extend(who, c, &ExtendRequest { days: 1 }).map(drop),
            _ if before.kind == CarrierKind::Temporary => {
                // A pool card handed back: wiped and restocked (only once revoked).
                f.ra.retire(who, c, &RetireRequest { restock: true })
                    .map(drop)
            }
            _ => {
                // A personal card that was revoked is destroyed; a new blank replaces it.
                let r = f.ra.retire(who, c, &RetireRequest { restock: false });
                if r.is_ok() {
                    let fresh =
                        f.ra.create_carrier(
                            who,
                            &NewCarrier {
                                kind: CarrierKind::SmartCard,
                                serial_number: format!("N{step}"),
                            },
                        )
                        .unwrap();
                    let i = carriers.iter().position(|x| x == c).unwrap();
                    carriers[i] = fresh.id;
                }
                r.map(drop)
            }
        };
        let now = f.ra.carrier(&d.admin, c).unwrap().state;
        seen.insert(now);
        if r.is_ok() && now == CarrierState::Active {
            activated += usize::from(before.state != CarrierState::Active);
        }
        match r {
            Ok(()) => applied += 1,
            Err(e) => {
                // A clear, client-side error (never internal), and no change to the
                // carrier it was about.
                assert!(
                    !matches!(e.code(), ErrorCode::Internal | ErrorCode::Unavailable),
                    "step {step}: {e}"
                );
                if !matches!(e, RaError::FourEyes(_)) {
                    assert_eq!(
                        f.ra.carrier(&d.admin, c).unwrap(),
                        before,
                        "step {step}: a failed operation changed the carrier ({e})"
                    );
                }
            }
        }
        let mut after = String::new();
        loop {
            let page = f.store.read(|tx| tx.carriers_page(&after, 100)).unwrap();
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            for c in &page {
                if c.state == CarrierState::Suspended {
                    assert!(
                        c.deadline.is_some(),
                        "step {step}: suspension without deadline"
                    );
                }
            }
        }
        assert_eq!(
            f.ra.reconcile_all().unwrap(),
            Vec::new(),
            "step {step} (seed {seed})"
        );
    }
    eprintln!("{applied} applied, {activated} activations");
    assert!(applied > 50, "only {applied} operations applied");
    // The sequences reach deep states, not only the refusals at the door.
    assert!(activated >= 1, "no activation");
    for s in [
        CarrierState::Personalised,
        CarrierState::Active,
        CarrierState::Suspended,
        CarrierState::Revoked,
    ] {
        assert!(seen.contains(&s), "never reached {s}: {seen:?}");
    }
    assert!(f.store.read(|tx| tx.verify_audit()).unwrap().is_ok());
}

#[test]
fn a_substitute_card_is_bound_approved_ends_by_itself_and_goes_back_to_stock() {
    let d = desk();
    let f = &d.f;
    // A substitute: proofed, without a card of their own.
    let p =
        f.ra.create_person(&d.hr, &new_person(7, "201701102384"))
            .unwrap();
    f.ra.proof(&d.anna, &p.id, &proofing_of(&p)).unwrap();
    let pool =
        f.ra.create_carrier(
            &d.anna,
            &NewCarrier {
                kind: CarrierKind::Substitute,
                serial_number: "V-01".into(),
            },
        )
        .unwrap();
    let too_long =
        f.ra.request_substitute(
            &d.anna,
            &p.id,
            &SubstituteRequest {
                carrier_id: pool.id.clone(),
                days: 91,
            },
        )
        .unwrap_err();
    assert_eq!(too_long.code(), ErrorCode::InvalidField);
    let a =
        f.ra.request_substitute(
            &d.anna,
            &p.id,
            &SubstituteRequest {
                carrier_id: pool.id.clone(),
                days: 30,
            },
        )
        .unwrap();
    assert_eq!(a.kind, ApprovalKind::Substitute);
    // Two officers: not the requester.
    assert_eq!(
        code(f.ra.decide(&d.anna, &a.id, true).unwrap_err()),
        ErrorCode::FourEyesRequired
    );
    f.ra.decide(&d.bo, &a.id, true).unwrap();
    // Authentication only.
    for profile in [ProfileName::Signature, ProfileName::CardAuthentication] {
        assert_eq!(
            code(
                f.ra.register_keys(&d.anna, &pool.id, &keys(&[profile]))
                    .unwrap_err()
            ),
            ErrorCode::InvalidField
        );
    }
    f.ra.register_keys(&d.anna, &pool.id, &keys(&[ProfileName::Authentication]))
        .unwrap();
    let c =
        f.ra.activate(
            &d.anna,
            &pool.id,
            &ActivateRequest {
                receipt: "R-V".into(),
            },
        )
        .unwrap();
    assert_eq!(c.deadline, c.ends_at);
    let serial = c.certificates[0].clone();
    // A personal card cannot be restocked; a pool card still in use cannot be retired.
    assert_eq!(
        code(
            f.ra.retire(&d.anna, &pool.id, &RetireRequest { restock: true })
                .unwrap_err()
        ),
        ErrorCode::InvalidTransition
    );
    // The period ends: revoked by the sweep, with cessationOfOperation.
    f.clock.advance(30 * DAY);
    assert_eq!(
        f.ra.sweep_deadlines().unwrap().revoked,
        vec![pool.id.clone()]
    );
    assert!(matches!(
        status(f, &serial),
        CertificateStatus::Revoked {
            reason: RevocationReason::CessationOfOperation,
            ..
        }
    ));
    // Wiped and back in stock, unbound; it can be bound to someone else.
    let c =
        f.ra.retire(&d.anna, &pool.id, &RetireRequest { restock: true })
            .unwrap();
    assert_eq!(c.state, CarrierState::Stock);
    assert_eq!(c.person_id, None);
    let (p2, sc) = active_card(&d, 8, "198112189876");
    assert_eq!(
        code(
            f.ra.retire(&d.anna, &sc.id, &RetireRequest { restock: false })
                .unwrap_err()
        ),
        ErrorCode::InvalidTransition,
        "an active card is not retired"
    );
    assert_eq!(
        code(
            f.ra.retire(&d.anna, &sc.id, &RetireRequest { restock: true })
                .unwrap_err()
        ),
        ErrorCode::InvalidField,
        "a personal card is never restocked"
    );
    let again =
        f.ra.request_substitute(
            &d.bo,
            &p2.id,
            &SubstituteRequest {
                carrier_id: pool.id.clone(),
                days: 5,
            },
        )
        .unwrap();
    assert_eq!(again.person_id, p2.id);
    assert_eq!(f.ra.reconcile(&d.auditor).unwrap(), Vec::new());
    assert!(f.store.read(|tx| tx.verify_audit()).unwrap().is_ok());
}

#[test]
fn a_substitute_card_never_gets_around_a_hold_or_doubles_and_a_serial_names_one_card() {
    let d = desk();
    let f = &d.f;
    let pool = |serial: &str| {
        f.ra.create_carrier(
            &d.anna,
            &NewCarrier {
                kind: CarrierKind::Substitute,
                serial_number: serial.into(),
            },
        )
        .unwrap()
    };
    let substitute = |person: &Person, carrier: &Carrier| {
        f.ra.request_substitute(
            &d.anna,
            &person.id,
            &SubstituteRequest {
                carrier_id: carrier.id.clone(),
                days: 30,
            },
        )
    };
    // A card held by the organisation: no substitute around the hold.
    let (p, card) = active_card(&d, 9, "198112189876");
    f.ra.suspend(
        &d.anna,
        &card.id,
        &SuspendRequest {
            reason: SuspendReason::AdminHold,
            days: 5,
        },
    )
    .unwrap();
    let (v1, v2) = (pool("V-11"), pool("V-12"));
    let before = f.store.read(|tx| tx.audit_records()).unwrap().len();
    assert_eq!(
        code(substitute(&p, &v1).unwrap_err()),
        ErrorCode::InvalidTransition
    );
    assert_eq!(
        f.store.read(|tx| tx.audit_records()).unwrap().len(),
        before,
        "a refusal changes nothing"
    );
    assert_eq!(
        f.ra.carrier(&d.anna, &v1.id).unwrap().state,
        CarrierState::Stock
    );
    // Resumed: one substitute, never two at once.
    f.ra.resume(
        &d.anna,
        &card.id,
        &ResumeRequest {
            verification: "in_person".into(),
        },
    )
    .unwrap();
    let a = substitute(&p, &v1).unwrap();
    assert_eq!(
        code(substitute(&p, &v2).unwrap_err()),
        ErrorCode::InvalidTransition
    );
    // Ended early: its end is now, and another may be bound.
    f.ra.decide(&d.bo, &a.id, true).unwrap();
    f.ra.register_keys(&d.anna, &v1.id, &keys(&[ProfileName::Authentication]))
        .unwrap();
    f.ra.activate(
        &d.anna,
        &v1.id,
        &ActivateRequest {
            receipt: "R-V1".into(),
        },
    )
    .unwrap();
    f.clock.advance(DAY);
    let ended = f.ra.end_substitute(&d.bo, &v1.id).unwrap();
    assert_eq!(ended.state, CarrierState::Revoked);
    let now =
        i64::try_from(tessera_issuer_types::clock::Clock::now(f.clock.as_ref()).as_secs()).unwrap();
    assert_eq!(ended.ends_at, Some(now));
    substitute(&p, &v2).unwrap();
    // A serial names one card whatever its kind: a personal card's serial typed into the
    // substitute form is refused, not registered as a new pool card.
    let other =
        f.ra.create_person(&d.hr, &new_person(10, "201701102384"))
            .unwrap();
    f.ra.proof(&d.anna, &other.id, &proofing_of(&other))
        .unwrap();
    let by_serial = f.ra.request_substitute_card(
        &d.anna,
        &other.id,
        crate::registration::Card::Stock(CarrierKind::Substitute, &card.serial_number),
        30,
    );
    assert_eq!(code(by_serial.unwrap_err()), ErrorCode::AlreadyExists);
    assert!(f.store.read(|tx| tx.verify_audit()).unwrap().is_ok());
}

#[test]
fn a_difference_hidden_from_an_officer_is_still_counted_on_the_dashboard() {
    let d = desk();
    let f = &d.f;
    let (p, card) = active_card(&d, 11, "198112189876");
    // A protected identity's card whose row says revoked while its certificates are good:
    // a difference the auditor may not see, but must not read as "agrees".
    f.store
        .write(|tx| -> Result<(), tessera_issuer_store::StoreError> {
            let mut person = tx.person(&p.id)?.unwrap();
            person.protected_identity = true;
            tx.update_person_details(&person)?;
            let mut c = tx.carrier(&card.id)?.unwrap();
            c.state = CarrierState::Revoked;
            tx.update_carrier(&c)
        })
        .unwrap();
    assert!(!f.ra.reconcile_all().unwrap().is_empty());
    let seen = |actor: &Actor| f.ra.attention(actor, 7).unwrap().reconciled.unwrap();
    let auditor = seen(&d.auditor);
    assert!(auditor.total > 0);
    assert_eq!(auditor.shown, Vec::new());
    assert_eq!(auditor.withheld, auditor.total);
    let officer = seen(&d.anna);
    assert_eq!(officer.total, auditor.total);
    assert_eq!(officer.shown.len(), officer.total);
    assert_eq!(officer.withheld, 0);
    // The audit filter: a whole action name exactly, any other text as a prefix.
    let actions = |filter: &str| {
        f.ra.audit_recent(&d.auditor, None, 500, Some(filter), None)
            .unwrap()
            .into_iter()
            .map(|r| r.action)
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        actions("person.proofed").into_iter().collect::<Vec<_>>(),
        ["person.proofed"]
    );
    assert_eq!(
        actions("person.pro").into_iter().collect::<Vec<_>>(),
        ["person.proofed"],
        "a partial name is a prefix"
    );
    assert!(actions("carrier.").len() > 1);
    assert!(actions("carrier.nothing_like_this").is_empty());
}

#[test]
fn an_import_with_any_bad_row_imports_nothing_and_a_second_import_changes_nothing() {
    let d = desk();
    let f = &d.f;
    let good = |n: u32, pnr: &str| new_person(n, pnr);
    let mut bad_date = good(3, "201701102384");
    bad_date.identity_number = None;
    bad_date.non_resident = Some(NonResident {
        birth_date: "1990-02-30".into(),
        nationality: "NO".into(),
    });
    let batch = vec![
        good(1, "198112189876"),
        good(2, "19811218-9875"), // bad check digit
        bad_date,
        good(1, "196408233234"), // employee number twice
    ];
    let report =
        f.ra.import_people(
            &d.hr,
            &ImportRequest {
                people: batch,
                dry_run: false,
            },
        )
        .unwrap();
    assert!(!report.applied);
    let rows: Vec<u32> = report.errors.iter().map(|e| e.index).collect();
    assert_eq!(rows, vec![1, 2, 3], "{report:?}");
    assert!(report.errors[0].message.contains("identity_number"));
    assert!(report.errors[1].message.contains("birth_date"));
    assert!(report.errors[2].message.contains("twice"));
    assert!(f.ra.people(&d.admin, "", 100).unwrap().is_empty());

    // Fixed: a dry run says what would happen and changes nothing; then it is applied.
    let fixed = ImportRequest {
        people: vec![good(1, "198112189876"), good(2, "196408233234")],
        dry_run: true,
    };
    let dry = f.ra.import_people(&d.hr, &fixed).unwrap();
    assert_eq!((dry.created, dry.applied), (2, false));
    assert!(f.ra.people(&d.admin, "", 100).unwrap().is_empty());
    let real = ImportRequest {
        dry_run: false,
        ..fixed.clone()
    };
    let done = f.ra.import_people(&d.hr, &real).unwrap();
    assert_eq!((done.created, done.applied), (2, true));
    let audit = f.store.read(|tx| tx.audit_records()).unwrap().len();
    // Again: nothing changes, not even the audit trail.
    let again = f.ra.import_people(&d.hr, &real).unwrap();
    assert_eq!((again.created, again.updated, again.unchanged), (0, 0, 2));
    assert_eq!(f.store.read(|tx| tx.audit_records()).unwrap().len(), audit);
    // A changed name is an update; a changed identity number is refused, naming the row.
    let mut renamed = good(1, "198112189876");
    renamed.family_name = "Married".into();
    let mut moved = good(2, "201701102384");
    moved.given_name = "Other".into();
    let r =
        f.ra.import_people(
            &d.hr,
            &ImportRequest {
                people: vec![renamed.clone(), moved],
                dry_run: false,
            },
        )
        .unwrap();
    assert_eq!(r.errors.len(), 1, "{r:?}");
    assert_eq!(r.errors[0].index, 1);
    assert!(!r.applied);
    let r =
        f.ra.import_people(
            &d.hr,
            &ImportRequest {
                people: vec![renamed],
                dry_run: false,
            },
        )
        .unwrap();
    assert_eq!((r.updated, r.applied), (1, true));
    let people = f.ra.people(&d.admin, "", 100).unwrap();
    assert_eq!(people[0].family_name, "Married");
    // Only HR imports.
    assert_eq!(
        code(f.ra.import_people(&d.anna, &real).unwrap_err()),
        ErrorCode::Forbidden
    );
    assert!(f.store.read(|tx| tx.verify_audit()).unwrap().is_ok());
}

/// The first review's findings, each as a test.
mod review {
    use super::*;

    #[test]
    fn a_carriers_certificates_change_only_with_the_carrier_and_officers_do_not_issue_directly() {
        let d = desk();
        let f = &d.f;
        let (_, c) = active_card(&d, 1, "198112189876");
        f.ra.suspend(
            &d.anna,
            &c.id,
            &SuspendRequest {
                reason: SuspendReason::AdminHold,
                days: 5,
            },
        )
        .unwrap();
        let serial = &c.certificates[0];
        let e = f.ra.release_hold(&d.bo, serial).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidTransition, "{e}");
        assert!(status(f, serial).is_on_hold());
        let e =
            f.ra.revoke(&d.admin, serial, RevocationReason::KeyCompromise)
                .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidTransition, "{e}");
        // Direct issuance (no person, no approval) is not an officer's.
        let req = IssueRequest {
            profile: ProfileName::Authentication,
            subject: tessera_issuer_types::Subject {
                common_name: "Someone Else".into(),
                ..Default::default()
            },
            csr: Some(csr()),
            attestation: None,
            public_key: None,
            validity_days: None,
        };
        for officer in [&d.anna, &d.admin] {
            assert_eq!(
                code(f.ra.issue(officer, &req).unwrap_err()),
                ErrorCode::Forbidden
            );
        }
        assert_eq!(f.ra.reconcile(&d.auditor).unwrap(), Vec::new());
    }

    #[test]
    fn what_the_approver_approved_is_what_is_issued() {
        let d = desk();
        let f = &d.f;
        let p =
            f.ra.create_person(&d.hr, &new_person(1, "198112189876"))
                .unwrap();
        f.ra.proof(&d.anna, &p.id, &proofing_of(&p)).unwrap();
        let c =
            f.ra.create_carrier(
                &d.anna,
                &NewCarrier {
                    kind: CarrierKind::SmartCard,
                    serial_number: "SC1".into(),
                },
            )
            .unwrap();
        let assign = || {
            f.ra.assign(
                &d.anna,
                &c.id,
                &AssignRequest {
                    person_id: p.id.clone(),
                    terms_version: "1".into(),
                },
            )
            .unwrap()
        };
        let a = assign();
        assert_eq!(a.subject.upn.as_deref(), Some("eva1@example.org"));
        // HR changes the logon name between the request and the approval: the approval
        // is out of date.
        let mut changed = new_person(1, "198112189876");
        changed.upn = Some("ceo@example.org".into());
        let imported =
            f.ra.import_people(
                &d.hr,
                &ImportRequest {
                    people: vec![changed.clone()],
                    dry_run: false,
                },
            )
            .unwrap();
        assert!(imported.applied, "{imported:?}");
        let e = f.ra.decide(&d.bo, &a.id, true).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidTransition, "{e}");
        f.ra.decide(&d.bo, &a.id, false).unwrap();
        // Asked again and approved; a change after the approval does not reach the
        // certificate.
        let a = assign();
        assert_eq!(a.subject.upn.as_deref(), Some("ceo@example.org"));
        f.ra.decide(&d.bo, &a.id, true).unwrap();
        changed.upn = Some("someone@example.org".into());
        f.ra.import_people(
            &d.hr,
            &ImportRequest {
                people: vec![changed],
                dry_run: false,
            },
        )
        .unwrap();
        let k =
            f.ra.register_keys(&d.anna, &c.id, &keys(&[ProfileName::Authentication]))
                .unwrap();
        let der = f
            .store
            .read(|tx| tx.certificate(&k.certificates[0]))
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&der);
        assert!(text.contains("ceo@example.org") && !text.contains("someone@"));
        // A logon name names one person.
        let mut thief = new_person(2, "196408233234");
        thief.upn = Some("someone@example.org".into());
        assert_eq!(
            code(f.ra.create_person(&d.hr, &thief).unwrap_err()),
            ErrorCode::AlreadyExists
        );
    }

    #[test]
    fn protected_identities_stay_protected() {
        let d = desk();
        let f = &d.f;
        let mut secret = new_person(1, "198112189876");
        secret.protected_identity = true;
        let s = f.ra.create_person(&d.hr, &secret).unwrap();
        // A routine HR file without the protection column does not lift it.
        let mut routine = new_person(1, "198112189876");
        routine.family_name = "Renamed".into();
        let r =
            f.ra.import_people(
                &d.hr,
                &ImportRequest {
                    people: vec![routine],
                    dry_run: false,
                },
            )
            .unwrap();
        assert!(r.applied);
        assert!(f.ra.person(&d.anna, &s.id).unwrap().protected_identity);
        // Approvals for the protected person are not listed to HR or auditors.
        f.ra.proof(&d.anna, &s.id, &proofing_of(&s)).unwrap();
        let c =
            f.ra.create_carrier(
                &d.anna,
                &NewCarrier {
                    kind: CarrierKind::SmartCard,
                    serial_number: "SC9".into(),
                },
            )
            .unwrap();
        f.ra.assign(
            &d.anna,
            &c.id,
            &AssignRequest {
                person_id: s.id.clone(),
                terms_version: "1".into(),
            },
        )
        .unwrap();
        assert_eq!(f.ra.approvals_pending(&d.bo).unwrap().len(), 1);
        assert!(f.ra.approvals_pending(&d.auditor).unwrap().is_empty());
        assert!(f.ra.approvals_pending(&d.hr).unwrap().is_empty());
        // HR ends the employment and gets back who, not what.
        let ended = f.ra.end_person(&d.hr, &s.id).unwrap();
        assert_eq!(ended.state, PersonState::Ended);
        assert_eq!(ended.identity_number, None);
        assert!(ended.family_name.is_empty());
        // Dry runs are on the record (K2.9).
        f.ra.import_people(
            &d.hr,
            &ImportRequest {
                people: vec![new_person(5, "196408233234")],
                dry_run: true,
            },
        )
        .unwrap();
        let last = f.store.read(|tx| tx.audit_records()).unwrap();
        assert_eq!(last.last().unwrap().action, "person.import_checked");
    }

    #[test]
    fn racing_personalisations_leave_one_set_of_certificates() {
        let d = desk();
        let p =
            d.f.ra
                .create_person(&d.hr, &new_person(1, "198112189876"))
                .unwrap();
        d.f.ra.proof(&d.anna, &p.id, &proofing_of(&p)).unwrap();
        let c =
            d.f.ra
                .create_carrier(
                    &d.anna,
                    &NewCarrier {
                        kind: CarrierKind::SmartCard,
                        serial_number: "SC1".into(),
                    },
                )
                .unwrap();
        let a =
            d.f.ra
                .assign(
                    &d.anna,
                    &c.id,
                    &AssignRequest {
                        person_id: p.id.clone(),
                        terms_version: "1".into(),
                    },
                )
                .unwrap();
        d.f.ra.decide(&d.bo, &a.id, true).unwrap();
        let ra = Arc::new(d.f.ra);
        let results: Vec<_> = (0..2)
            .map(|_| {
                let (ra, id, who) = (Arc::clone(&ra), c.id.clone(), d.anna.clone());
                std::thread::spawn(move || {
                    ra.register_keys(&who, &id, &keys(&[ProfileName::Authentication]))
                })
            })
            .map(|h| h.join().unwrap())
            .collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        let c = ra
            .activate(
                &d.anna,
                &c.id,
                &ActivateRequest {
                    receipt: "R".into(),
                },
            )
            .unwrap();
        let good = c
            .certificates
            .iter()
            .filter(|s| {
                d.f.store.read(|tx| tx.status(s)).unwrap() == Some(CertificateStatus::Issued)
            })
            .count();
        assert_eq!(good, 1, "one key set is good, the loser's is withdrawn");
        assert_eq!(ra.reconcile(&d.auditor).unwrap(), Vec::new());
    }

    #[test]
    fn a_late_approval_starts_the_temporary_period_then_and_officers_give_only_their_reasons() {
        let d = desk();
        let f = &d.f;
        let (p, c) = active_card(&d, 1, "198112189876");
        let t =
            f.ra.create_carrier(
                &d.anna,
                &NewCarrier {
                    kind: CarrierKind::Temporary,
                    serial_number: "T1".into(),
                },
            )
            .unwrap();
        let a =
            f.ra.request_temporary(
                &d.anna,
                &p.id,
                &TemporaryRequest {
                    carrier_id: t.id.clone(),
                    original_id: None,
                    days: Some(1),
                },
            )
            .unwrap();
        f.clock.advance(3 * DAY);
        f.ra.decide(&d.bo, &a.id, true).unwrap();
        assert!(f.ra.sweep_deadlines().unwrap().revoked.is_empty());
        let original = f.ra.carrier(&d.anna, &c.id).unwrap();
        assert_eq!(original.state, CarrierState::Suspended);
        let now = tessera_issuer_types::Clock::now(f.clock.as_ref()).as_secs() as i64;
        assert!(original.deadline.unwrap() > now);
        for reason in [
            CarrierRevokeReason::Superseded,
            CarrierRevokeReason::PeriodEnded,
            CarrierRevokeReason::SuspensionExpired,
            CarrierRevokeReason::EmploymentEnded,
        ] {
            assert_eq!(
                code(
                    f.ra.revoke_carrier(&d.anna, &c.id, &RevokeCarrierRequest { reason })
                        .unwrap_err()
                ),
                ErrorCode::InvalidField
            );
        }
    }

    #[test]
    fn people_come_from_hr_and_the_identity_checker_does_not_approve() {
        let d = desk();
        let f = &d.f;
        assert_eq!(
            code(
                f.ra.create_person(&d.anna, &new_person(1, "198112189876"))
                    .unwrap_err()
            ),
            ErrorCode::Forbidden
        );
        let p =
            f.ra.create_person(&d.hr, &new_person(1, "198112189876"))
                .unwrap();
        // bo checks the identity and asks; anna may approve, bo may not (he asked), and
        // anna asking with bo approving is refused too (bo checked the identity).
        f.ra.proof(&d.bo, &p.id, &proofing_of(&p)).unwrap();
        let c =
            f.ra.create_carrier(
                &d.anna,
                &NewCarrier {
                    kind: CarrierKind::SmartCard,
                    serial_number: "SC1".into(),
                },
            )
            .unwrap();
        let a =
            f.ra.assign(
                &d.anna,
                &c.id,
                &AssignRequest {
                    person_id: p.id.clone(),
                    terms_version: "1".into(),
                },
            )
            .unwrap();
        let e = f.ra.decide(&d.bo, &a.id, true).unwrap_err();
        assert_eq!(e.code(), ErrorCode::FourEyesRequired, "{e}");
        assert!(e.to_string().contains("identity"), "{e}");
    }

    #[test]
    fn administrators_and_auditors_hold_their_role_alone_and_officers_can_be_disabled() {
        let d = desk();
        let f = &d.f;
        for roles in [
            vec![OfficerRole::Administrator, OfficerRole::RegistrationOfficer],
            vec![OfficerRole::Auditor, OfficerRole::HrAdmin],
        ] {
            let e =
                f.ra.create_officer(
                    &d.admin,
                    &NewOfficer {
                        id: "both".into(),
                        display_name: "Both".into(),
                        roles,
                        person_id: None,
                    },
                )
                .unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidField, "{e}");
        }
        // Disabled: every token refused at once; listed tokens say so.
        let anna_token =
            f.ra.create_token(
                &d.admin,
                "anna",
                &NewToken {
                    label: "second".into(),
                    valid_days: None,
                },
            )
            .unwrap();
        // Her first token (from her creation), the desk's, and this one.
        assert_eq!(f.ra.tokens(&d.admin, "anna").unwrap().len(), 3);
        f.ra.disable_officer(&d.admin, "anna").unwrap();
        assert!(f
            .ra
            .tokens(&d.admin, "anna")
            .unwrap()
            .iter()
            .all(|t| t.revoked_at.is_some()));
        assert!(f.ra.authenticate(&anna_token.token).is_err());
        // An officer whose employment ends is disabled with it.
        let me =
            f.ra.create_person(&d.hr, &new_person(2, "196408233234"))
                .unwrap();
        f.ra.create_officer(
            &d.admin,
            &NewOfficer {
                id: "carl".into(),
                display_name: "Carl".into(),
                roles: vec![OfficerRole::RegistrationOfficer],
                person_id: Some(me.id.clone()),
            },
        )
        .unwrap();
        let t =
            f.ra.create_token(
                &d.admin,
                "carl",
                &NewToken {
                    label: "l".into(),
                    valid_days: None,
                },
            )
            .unwrap();
        assert!(f.ra.authenticate(&t.token).is_ok());
        f.ra.end_person(&d.hr, &me.id).unwrap();
        assert!(f.ra.authenticate(&t.token).is_err());
        // Only administrators list others' tokens.
        assert_eq!(
            code(f.ra.tokens(&d.bo, "carl").unwrap_err()),
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn the_holder_reports_the_card_lost_with_the_code_from_the_receipt() {
        let d = desk();
        let f = &d.f;
        let p =
            f.ra.create_person(&d.hr, &new_person(1, "198112189876"))
                .unwrap();
        f.ra.proof(&d.anna, &p.id, &proofing_of(&p)).unwrap();
        let c =
            f.ra.create_carrier(
                &d.anna,
                &NewCarrier {
                    kind: CarrierKind::SmartCard,
                    serial_number: "SC1".into(),
                },
            )
            .unwrap();
        let a =
            f.ra.assign(
                &d.anna,
                &c.id,
                &AssignRequest {
                    person_id: p.id.clone(),
                    terms_version: "1".into(),
                },
            )
            .unwrap();
        f.ra.decide(&d.bo, &a.id, true).unwrap();
        f.ra.register_keys(&d.anna, &c.id, &keys(&[ProfileName::Authentication]))
            .unwrap();
        let active =
            f.ra.activate(
                &d.anna,
                &c.id,
                &ActivateRequest {
                    receipt: "R".into(),
                },
            )
            .unwrap();
        let code = active.loss_report_code.clone().unwrap();
        assert_eq!(code.len(), 29, "{code}");
        // Shown once: reading the carrier again does not show it.
        assert_eq!(f.ra.carrier(&d.anna, &c.id).unwrap().loss_report_code, None);
        let wrong = LossReport {
            code: "0000-0000-0000-0000-0000-0000".into(),
        };
        assert_eq!(
            code_of(f.ra.report_loss(&wrong).unwrap_err()),
            ErrorCode::NotFound
        );
        let report = LossReport {
            code: code.to_lowercase(),
        };
        let r = f.ra.report_loss(&report).unwrap();
        assert_eq!(r.serial_number, "SC1");
        let held = f.ra.carrier(&d.anna, &c.id).unwrap();
        assert_eq!(held.suspend_reason, Some(SuspendReason::TemporarilyLost));
        assert!(status(f, &held.certificates[0]).is_on_hold());
        // Again: nothing changes.
        assert_eq!(f.ra.report_loss(&report).unwrap(), r);
        // Never found: revoked as lost at the deadline.
        f.clock.advance(31 * DAY);
        assert_eq!(f.ra.sweep_deadlines().unwrap().revoked, vec![c.id.clone()]);
        assert_eq!(
            f.ra.carrier(&d.anna, &c.id).unwrap().revoke_reason,
            Some(CarrierRevokeReason::Lost)
        );
        assert_eq!(
            code_of(f.ra.report_loss(&report).unwrap_err()),
            ErrorCode::NotFound
        );
        assert!(f.store.read(|tx| tx.verify_audit()).unwrap().is_ok());
    }

    fn code_of(e: RaError) -> ErrorCode {
        e.code()
    }

    #[test]
    fn a_bulk_revocation_waits_for_a_second_officer() {
        let d = desk();
        let f = &d.f;
        let (_, a) = active_card(&d, 1, "198112189876");
        let (_, b) = active_card(&d, 2, "196408233234");
        let stock =
            f.ra.create_carrier(
                &d.anna,
                &NewCarrier {
                    kind: CarrierKind::SmartCard,
                    serial_number: "S".into(),
                },
            )
            .unwrap();
        let ask = |ids: Vec<String>| {
            f.ra.request_bulk_revocation(
                &d.anna,
                &BulkRevocationRequest {
                    carrier_ids: ids,
                    reason: CarrierRevokeReason::Lost,
                },
            )
        };
        // A carrier that cannot be revoked spoils the request, naming it.
        let e = ask(vec![a.id.clone(), stock.id.clone()]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidTransition);
        assert!(e.to_string().contains(&stock.id), "{e}");
        let bulk = ask(vec![a.id.clone(), b.id.clone()]).unwrap();
        assert_eq!(bulk.state, ApprovalState::Pending);
        // Nothing happens until a second officer approves.
        assert_eq!(
            f.ra.carrier(&d.anna, &a.id).unwrap().state,
            CarrierState::Active
        );
        assert_eq!(
            code(
                f.ra.decide_bulk_revocation(&d.anna, &bulk.id, true)
                    .unwrap_err()
            ),
            ErrorCode::FourEyesRequired
        );
        assert_eq!(
            code(
                f.ra.decide_bulk_revocation(&d.auditor, &bulk.id, true)
                    .unwrap_err()
            ),
            ErrorCode::Forbidden
        );
        let done = f.ra.decide_bulk_revocation(&d.bo, &bulk.id, true).unwrap();
        assert_eq!(done.revoked, Some(2));
        for c in [&a, &b] {
            let c = f.ra.carrier(&d.anna, &c.id).unwrap();
            assert_eq!(c.revoke_reason, Some(CarrierRevokeReason::Lost));
            assert!(matches!(
                status(f, &c.certificates[0]),
                CertificateStatus::Revoked {
                    reason: RevocationReason::KeyCompromise,
                    ..
                }
            ));
        }
        assert_eq!(
            code(
                f.ra.decide_bulk_revocation(&d.bo, &bulk.id, true)
                    .unwrap_err()
            ),
            ErrorCode::InvalidTransition
        );
        assert_eq!(f.ra.reconcile(&d.auditor).unwrap(), Vec::new());
        assert!(f
            .ra
            .bulk_revocations_pending(&d.auditor)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn second_review_findings() {
        let d = desk();
        let f = &d.f;
        // HR and registration are two people's.
        let e =
            f.ra.create_officer(
                &d.admin,
                &NewOfficer {
                    id: "both".into(),
                    display_name: "Both".into(),
                    roles: vec![OfficerRole::HrAdmin, OfficerRole::RegistrationOfficer],
                    person_id: None,
                },
            )
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidField);
        // The last administrator's employment is not ended (nobody could manage officers
        // again): a second administrator, linked to a person, takes over; the first is
        // disabled; then HR cannot end the second's person.
        let x =
            f.ra.create_person(&d.hr, &new_person(9, "201701102384"))
                .unwrap();
        f.ra.create_officer(
            &d.admin,
            &NewOfficer {
                id: "admin2".into(),
                display_name: "Admin Two".into(),
                roles: vec![OfficerRole::Administrator],
                person_id: Some(x.id.clone()),
            },
        )
        .unwrap();
        let t2 =
            f.ra.create_token(
                &d.admin,
                "admin2",
                &NewToken {
                    label: "l".into(),
                    valid_days: None,
                },
            )
            .unwrap();
        let admin2 = f.ra.authenticate(&t2.token).unwrap();
        assert_eq!(
            code(f.ra.disable_officer(&admin2, "admin2").unwrap_err()),
            ErrorCode::InvalidField,
            "not oneself"
        );
        f.ra.disable_officer(&admin2, "admin").unwrap();
        let e = f.ra.end_person(&d.hr, &x.id).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidTransition, "{e}");
        assert!(e.to_string().contains("last administrator"), "{e}");
        let admin = admin2;
        // A card left at home while a temporary card is out, then reported lost by its
        // holder: recorded as lost, and the temporary card's return does not revive it.
        let p =
            f.ra.create_person(&d.hr, &new_person(1, "198112189876"))
                .unwrap();
        f.ra.proof(&d.anna, &p.id, &proofing_of(&p)).unwrap();
        let c =
            f.ra.create_carrier(
                &d.anna,
                &NewCarrier {
                    kind: CarrierKind::SmartCard,
                    serial_number: "SC1".into(),
                },
            )
            .unwrap();
        let a =
            f.ra.assign(
                &d.anna,
                &c.id,
                &AssignRequest {
                    person_id: p.id.clone(),
                    terms_version: "1".into(),
                },
            )
            .unwrap();
        f.ra.decide(&d.bo, &a.id, true).unwrap();
        f.ra.register_keys(&d.anna, &c.id, &keys(&[ProfileName::Authentication]))
            .unwrap();
        let code =
            f.ra.activate(
                &d.anna,
                &c.id,
                &ActivateRequest {
                    receipt: "R".into(),
                },
            )
            .unwrap()
            .loss_report_code
            .unwrap();
        let t =
            f.ra.create_carrier(
                &d.anna,
                &NewCarrier {
                    kind: CarrierKind::Temporary,
                    serial_number: "T1".into(),
                },
            )
            .unwrap();
        let ta =
            f.ra.request_temporary(
                &d.anna,
                &p.id,
                &TemporaryRequest {
                    carrier_id: t.id.clone(),
                    original_id: None,
                    days: Some(2),
                },
            )
            .unwrap();
        f.ra.decide(&d.bo, &ta.id, true).unwrap();
        f.ra.register_keys(&d.anna, &t.id, &keys(&[ProfileName::Authentication]))
            .unwrap();
        f.ra.activate(
            &d.anna,
            &t.id,
            &ActivateRequest {
                receipt: "RT".into(),
            },
        )
        .unwrap();
        // Typed without dashes, in lower case.
        let typed = LossReport {
            code: code.replace('-', " ").to_lowercase(),
        };
        f.ra.report_loss(&typed).unwrap();
        let original = f.ra.carrier(&d.anna, &c.id).unwrap();
        assert_eq!(
            original.suspend_reason,
            Some(SuspendReason::TemporarilyLost)
        );
        let e =
            f.ra.return_temporary(
                &d.anna,
                &t.id,
                &ReturnRequest {
                    outcome: ReturnOutcome::NoLongerNeeded,
                },
            )
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidTransition, "{e}");
        let audit = f.store.read(|tx| tx.audit_records()).unwrap();
        assert!(audit
            .iter()
            .any(|r| r.details.contains("reported lost by the holder")));
        // One officer account per person.
        let e =
            f.ra.create_officer(
                &d.admin,
                &NewOfficer {
                    id: "second".into(),
                    display_name: "Second".into(),
                    roles: vec![OfficerRole::RegistrationOfficer],
                    person_id: Some(p.id.clone()),
                },
            )
            .and_then(|_| {
                f.ra.create_officer(
                    &admin,
                    &NewOfficer {
                        id: "third".into(),
                        display_name: "Third".into(),
                        roles: vec![OfficerRole::Auditor],
                        person_id: Some(p.id.clone()),
                    },
                )
            })
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::AlreadyExists);
    }

    #[test]
    fn a_bulk_revocation_leaves_a_card_that_changed_holder_alone() {
        let d = desk();
        let f = &d.f;
        let proofed = |n: u32, pnr: &str| {
            let p = f.ra.create_person(&d.hr, &new_person(n, pnr)).unwrap();
            f.ra.proof(&d.anna, &p.id, &proofing_of(&p)).unwrap()
        };
        let (p1, p2) = (proofed(1, "198112189876"), proofed(2, "196408233234"));
        let v =
            f.ra.create_carrier(
                &d.anna,
                &NewCarrier {
                    kind: CarrierKind::Substitute,
                    serial_number: "V1".into(),
                },
            )
            .unwrap();
        let bind = |p: &Person| {
            let a =
                f.ra.request_substitute(
                    &d.anna,
                    &p.id,
                    &SubstituteRequest {
                        carrier_id: v.id.clone(),
                        days: 30,
                    },
                )
                .unwrap();
            f.ra.decide(&d.bo, &a.id, true).unwrap();
            f.ra.register_keys(&d.anna, &v.id, &keys(&[ProfileName::Authentication]))
                .unwrap();
            f.ra.activate(
                &d.anna,
                &v.id,
                &ActivateRequest {
                    receipt: "R".into(),
                },
            )
            .unwrap();
        };
        bind(&p1);
        let bulk =
            f.ra.request_bulk_revocation(
                &d.anna,
                &BulkRevocationRequest {
                    carrier_ids: vec![v.id.clone()],
                    reason: CarrierRevokeReason::Lost,
                },
            )
            .unwrap();
        // Meanwhile the card is revoked, wiped, restocked and given to someone else.
        f.ra.revoke_carrier(
            &d.anna,
            &v.id,
            &RevokeCarrierRequest {
                reason: CarrierRevokeReason::Lost,
            },
        )
        .unwrap();
        f.ra.retire(&d.anna, &v.id, &RetireRequest { restock: true })
            .unwrap();
        bind(&p2);
        let done = f.ra.decide_bulk_revocation(&d.bo, &bulk.id, true).unwrap();
        assert_eq!(done.revoked, Some(0));
        let now = f.ra.carrier(&d.anna, &v.id).unwrap();
        assert_eq!(
            (now.state, now.person_id.as_deref()),
            (CarrierState::Active, Some(p2.id.as_str()))
        );
    }
}

/// The HR feed (what SCIM drives): people without identity data until proofing, leavers,
/// re-hires, removal, protected identities, and who may write it.
mod hr_feed {
    use super::*;
    use crate::registration::{FeedKey, FeedRecord};

    fn record(n: &str) -> FeedRecord {
        FeedRecord {
            employee_number: n.into(),
            external_id: Some(format!("ext-{n}")),
            given_name: "Fia".into(),
            family_name: "Feed".into(),
            email: Some(format!("{}@example.org", n.to_lowercase())),
            active: true,
        }
    }

    #[test]
    fn identity_data_comes_from_the_document_when_hr_sends_none() {
        let d = desk();
        let p = d.f.ra.feed_create(&d.hr, &record("F1")).unwrap();
        assert_eq!(p.state, PersonState::Registered);
        // Proofing without the document's number is refused and changes nothing.
        let e = d.f.ra.proof(&d.anna, &p.id, &proofing()).unwrap_err();
        assert_eq!(code(e), ErrorCode::InvalidField);
        assert_eq!(
            d.f.ra.person(&d.anna, &p.id).unwrap().state,
            PersonState::Registered
        );
        let with = |n: &str| NewProofing {
            identity_number: Some(n.into()),
            ..proofing()
        };
        // A bad checksum is refused; a number another person holds is refused.
        assert_eq!(
            code(
                d.f.ra
                    .proof(&d.anna, &p.id, &with("19811218-9875"))
                    .unwrap_err()
            ),
            ErrorCode::InvalidField
        );
        d.f.ra
            .create_person(&d.hr, &new_person(1, "19640823-3234"))
            .unwrap();
        assert_eq!(
            code(
                d.f.ra
                    .proof(&d.anna, &p.id, &with("19640823-3234"))
                    .unwrap_err()
            ),
            ErrorCode::AlreadyExists
        );
        let proofed =
            d.f.ra
                .proof(&d.anna, &p.id, &with("19811218-9876"))
                .unwrap();
        assert_eq!(proofed.state, PersonState::Proofed);
        assert_eq!(proofed.identity_number.as_deref(), Some("198112189876"));
        // From then on the document must show the registered number.
        assert_eq!(
            code(
                d.f.ra
                    .proof(&d.bo, &p.id, &with("197505051230"))
                    .unwrap_err()
            ),
            ErrorCode::InvalidField
        );
        d.f.ra.proof(&d.bo, &p.id, &with("198112189876")).unwrap();
        // The document's number is read at every check: none given is refused even now.
        assert_eq!(
            code(d.f.ra.proof(&d.bo, &p.id, &proofing()).unwrap_err()),
            ErrorCode::InvalidField
        );
        // An import row without identity data leaves it; one with another number is refused.
        let row = NewPerson {
            employee_number: "F1".into(),
            identity_number: None,
            upn: None,
            ..new_person(9, "197505051230")
        };
        let r =
            d.f.ra
                .import_people(
                    &d.hr,
                    &ImportRequest {
                        people: vec![row.clone()],
                        dry_run: false,
                    },
                )
                .unwrap();
        assert!(r.applied && r.errors.is_empty(), "{r:?}");
        let other = NewPerson {
            identity_number: Some("197505051230".into()),
            ..row
        };
        let r =
            d.f.ra
                .import_people(
                    &d.hr,
                    &ImportRequest {
                        people: vec![other],
                        dry_run: false,
                    },
                )
                .unwrap();
        assert!(!r.applied && r.errors.len() == 1, "{r:?}");
        assert!(d.f.store.read(|tx| tx.verify_audit()).unwrap().is_ok());
    }

    #[test]
    fn inactive_ends_active_rehires_and_removal_hides() {
        let d = desk();
        let (p, c) = active_card(&d, 2, "19811218-9876");
        let serial = c.certificates[0].clone();
        let leaver =
            d.f.ra
                .feed_update(&d.hr, &p.id, |mut r| -> Result<_, RaError> {
                    r.active = false;
                    Ok(r)
                })
                .unwrap();
        assert_eq!(
            (leaver.state, leaver.record.active),
            (PersonState::Ended, false)
        );
        let now = d.f.ra.carrier(&d.anna, &c.id).unwrap();
        assert_eq!(now.state, CarrierState::Revoked);
        assert_eq!(
            now.revoke_reason,
            Some(CarrierRevokeReason::EmploymentEnded)
        );
        assert!(matches!(
            status(&d.f, &serial),
            CertificateStatus::Revoked {
                reason: RevocationReason::AffiliationChanged,
                ..
            }
        ));
        // Re-hired: REGISTERED, to be proofed again; the old card stays revoked.
        let back =
            d.f.ra
                .feed_update(&d.hr, &p.id, |mut r| -> Result<_, RaError> {
                    r.active = true;
                    r.given_name = "Evelina".into();
                    Ok(r)
                })
                .unwrap();
        assert_eq!(back.state, PersonState::Registered);
        assert_eq!(back.record.given_name, "Evelina");
        assert_eq!(d.f.ra.person(&d.anna, &p.id).unwrap().proofed_at, None);
        assert_eq!(
            d.f.ra.carrier(&d.anna, &c.id).unwrap().state,
            CarrierState::Revoked
        );
        // The key never changes; a failed change changes nothing.
        let e =
            d.f.ra
                .feed_update(&d.hr, &p.id, |mut r| -> Result<_, RaError> {
                    r.employee_number = "OTHER".into();
                    r.given_name = "Changed".into();
                    Ok(r)
                })
                .unwrap_err();
        assert_eq!(code(e), ErrorCode::InvalidField);
        assert_eq!(
            d.f.ra.feed_person(&d.hr, &p.id).unwrap().record.given_name,
            "Evelina"
        );
        // Removed: ended, gone from the feed, still in the register; sent again, back.
        d.f.ra.feed_remove(&d.hr, &p.id).unwrap();
        assert_eq!(
            code(d.f.ra.feed_person(&d.hr, &p.id).unwrap_err()),
            ErrorCode::NotFound
        );
        let key = FeedKey::EmployeeNumber(p.employee_number.clone());
        assert_eq!(d.f.ra.feed_list(&d.hr, Some(&key), 1, 10).unwrap().total, 0);
        assert_eq!(
            d.f.ra.person(&d.anna, &p.id).unwrap().state,
            PersonState::Ended
        );
        assert_eq!(
            code(d.f.ra.feed_remove(&d.hr, &p.id).unwrap_err()),
            ErrorCode::NotFound
        );
        let again =
            d.f.ra
                .feed_create(
                    &d.hr,
                    &FeedRecord {
                        employee_number: p.employee_number.clone(),
                        ..record("x")
                    },
                )
                .unwrap();
        assert_eq!(
            (again.id.as_str(), again.state),
            (p.id.as_str(), PersonState::Registered)
        );
        assert_eq!(
            code(
                d.f.ra
                    .feed_create(
                        &d.hr,
                        &FeedRecord {
                            employee_number: p.employee_number.clone(),
                            ..record("x")
                        }
                    )
                    .unwrap_err()
            ),
            ErrorCode::AlreadyExists
        );
        // Back after removal: the logon name and SID come again from the directory.
        let back = d.f.ra.person(&d.anna, &p.id).unwrap();
        assert_eq!((back.upn, back.directory_sid), (None, None));
        // A leaver is made no officer.
        let leaver_id =
            d.f.ra
                .feed_create(
                    &d.hr,
                    &FeedRecord {
                        active: false,
                        ..record("F5")
                    },
                )
                .unwrap()
                .id;
        let e =
            d.f.ra
                .create_officer(
                    &d.admin,
                    &NewOfficer {
                        id: "late".into(),
                        display_name: "Late".into(),
                        roles: vec![OfficerRole::HrAdmin],
                        person_id: Some(leaver_id.clone()),
                    },
                )
                .unwrap_err();
        assert_eq!(code(e), ErrorCode::InvalidTransition);
        // One externalId names one person.
        d.f.ra.feed_create(&d.hr, &record("F7")).unwrap();
        let dup = d.f.ra.feed_create(
            &d.hr,
            &FeedRecord {
                external_id: Some("ext-F7".into()),
                ..record("F6")
            },
        );
        assert_eq!(code(dup.unwrap_err()), ErrorCode::AlreadyExists);
        // Created inactive: registered and ended at once.
        let gone =
            d.f.ra
                .feed_create(
                    &d.hr,
                    &FeedRecord {
                        active: false,
                        ..record("F9")
                    },
                )
                .unwrap();
        assert_eq!(gone.state, PersonState::Ended);
        assert!(d.f.store.read(|tx| tx.verify_audit()).unwrap().is_ok());
    }

    #[test]
    fn only_hr_writes_the_feed_and_protected_identities_are_withheld() {
        let d = desk();
        let p = d.f.ra.feed_create(&d.hr, &record("F3")).unwrap();
        for who in [&d.auditor, &d.anna, &d.admin] {
            let e =
                d.f.ra
                    .feed_update(who, &p.id, |mut r| -> Result<_, RaError> {
                        r.active = false;
                        Ok(r)
                    })
                    .unwrap_err();
            assert_eq!(code(e), ErrorCode::Forbidden);
            assert_eq!(
                code(d.f.ra.feed_remove(who, &p.id).unwrap_err()),
                ErrorCode::Forbidden
            );
        }
        assert_eq!(
            code(d.f.ra.feed_person(&d.auditor, &p.id).unwrap_err()),
            ErrorCode::Forbidden
        );
        // A protected identity: HR still ends the employment, but reads no names.
        let prot = NewPerson {
            protected_identity: true,
            ..new_person(4, "197505051230")
        };
        let q = d.f.ra.create_person(&d.hr, &prot).unwrap();
        let shown = d.f.ra.feed_person(&d.hr, &q.id).unwrap();
        assert!(shown.withheld);
        assert_eq!(
            (
                shown.record.given_name.as_str(),
                shown.record.email.as_deref()
            ),
            ("", None)
        );
        let page = d.f.ra.feed_list(&d.hr, None, 1, 200).unwrap();
        assert_eq!(page.total, 2);
        assert!(page.people.iter().all(|x| x.id != q.id || x.withheld));
        let ended =
            d.f.ra
                .feed_update(&d.hr, &q.id, |mut r| -> Result<_, RaError> {
                    // HR's client sees and echoes the withheld view: the blanks must not
                    // erase the names…
                    assert_eq!(r.given_name, "");
                    r.active = false;
                    Ok(r)
                })
                .unwrap();
        assert_eq!(ended.state, PersonState::Ended);
        assert_eq!(d.f.ra.person(&d.anna, &q.id).unwrap().given_name, "Eva");
        // HR's change to a protected identity edits the withheld view: a guessed e-mail
        // or name is neither confirmed nor written; employment still follows.
        let q2 =
            d.f.ra
                .create_person(
                    &d.hr,
                    &NewPerson {
                        protected_identity: true,
                        ..new_person(5, "196408233234")
                    },
                )
                .unwrap();
        for guess in ["eva5@example.org", "wrong@example.org"] {
            let r =
                d.f.ra
                    .feed_update(&d.hr, &q2.id, |mut r| -> Result<_, RaError> {
                        assert_eq!((r.given_name.as_str(), r.email.as_deref()), ("", None));
                        r.email = Some(guess.into());
                        r.given_name = "Guess".into();
                        Ok(r)
                    })
                    .unwrap();
            assert!(r.withheld && r.record.email.is_none());
        }
        let kept = d.f.ra.person(&d.anna, &q2.id).unwrap();
        assert_eq!(
            (kept.given_name.as_str(), kept.email.as_deref()),
            ("Eva", Some("eva5@example.org"))
        );
        d.f.ra.feed_remove(&d.hr, &q2.id).unwrap();
        // Paging: startIndex from 1, count bounded.
        let second = d.f.ra.feed_list(&d.hr, None, 2, 1).unwrap();
        // (q2 was removed: two people in the feed.)
        assert_eq!(
            (second.total, second.start_index, second.people.len()),
            (2, 2, 1)
        );
        assert_eq!(
            d.f.ra.feed_list(&d.hr, None, 3, 10).unwrap().people.len(),
            0
        );
        assert_eq!(d.f.ra.feed_list(&d.hr, None, 1, 0).unwrap().people.len(), 0);
    }
}

/// PIN unblock: the PUK sealed at personalisation, released once to the card itself after
/// two officers, then replaced.
mod pin_unblock {
    use super::*;
    use tessera_piv::card::{Applet, Interface, SoftKeyStore, DEFAULT_MANAGEMENT_KEY};
    use tessera_piv::host::PivClient;
    use tessera_piv::piv::{object, Algorithm, KeyRef, PinPolicy};

    type Card = PivClient<Applet<SoftKeyStore>>;

    const PUK: &str = "87654321";

    /// A desk whose RA trusts the reference card's manufacturer, and such a card.
    fn desk_and_card() -> (Desk, Card) {
        let now = std::time::SystemTime::UNIX_EPOCH
            + tessera_issuer_types::Clock::now(&tessera_issuer_types::SystemClock);
        let new = tessera_firmware_tests::manufacture::blank_card(now).unwrap();
        let root = der::pem::decode_vec(new.manufacturer_ca_pem.as_bytes())
            .unwrap()
            .1;
        let root = <x509_cert::Certificate as der::Decode>::from_der(&root).unwrap();
        let mut card = PivClient::new(Applet::new(new.card, new.keys, Interface::Contact));
        card.authenticate_management(Algorithm::Tdes, &DEFAULT_MANAGEMENT_KEY)
            .unwrap();
        let f = crate::testing::fixture_trusting(Vec::new(), vec![root]);
        (desk_on(f), card)
    }

    fn pem(label: &str, der: &[u8]) -> String {
        der::pem::encode_string(label, der::pem::LineEnding::LF, der).unwrap()
    }

    /// The card's 9E key, generated and attested on the card.
    fn attested_card_authentication(card: &mut Card) -> CarrierKey {
        card.generate(
            KeyRef::CARD_AUTHENTICATION,
            Algorithm::EccP256,
            Some(PinPolicy::Never),
        )
        .unwrap();
        let attestation = card.attest(KeyRef::CARD_AUTHENTICATION).unwrap();
        let f9 = card.get_data(object::YK_ATTESTATION_CERT).unwrap();
        let f9 = tessera_piv::tlv::find(&f9, 0x70)
            .ok()
            .flatten()
            .unwrap_or(&f9)
            .to_vec();
        CarrierKey {
            profile: ProfileName::CardAuthentication,
            csr: None,
            attestation: Some(Attestation {
                certificate: pem("CERTIFICATE", &attestation),
                intermediate: pem("CERTIFICATE", &f9),
            }),
            tpm: None,
        }
    }

    /// A proofed person's ACTIVE card with an authentication key (CSR) and the card's
    /// attested card-authentication key, its PUK escrowed.
    fn personalise(d: &Desk, card: &mut Card, n: u32, pnr: &str) -> Carrier {
        let mut req = keys(&[ProfileName::Authentication]);
        req.keys.push(attested_card_authentication(card));
        req.puk = Some(PUK.into());
        active_card_with(d, n, pnr, &req).1
    }

    fn signed(card: &mut Card, message: &[u8]) -> String {
        use base64ct::Encoding;
        use sha2::Digest;
        let digest = sha2::Sha256::digest(message);
        let sig = card
            .sign(KeyRef::CARD_AUTHENTICATION, Algorithm::EccP256, &digest)
            .unwrap();
        base64ct::Base64::encode_string(&sig)
    }

    struct Codes {
        approval: String,
        requester: String,
        approver: String,
    }

    fn release(d: &Desk, c: &Carrier, card: &mut Card, k: &Codes) -> Result<PukReleased, RaError> {
        let signature = signed(card, &puk_release_message(&k.approval, &c.id));
        d.f.ra.release_puk(
            &c.id,
            &PukReleaseRequest {
                approval_id: k.approval.clone(),
                release_code: k.requester.clone(),
                approval_code: k.approver.clone(),
                algorithm: "ecdsa-with-SHA256".into(),
                signature,
            },
        )
    }

    fn ask(d: &Desk, who: &Actor, c: &Carrier) -> Result<UnblockRequested, RaError> {
        d.f.ra.request_unblock(
            who,
            &c.id,
            &UnblockRequest {
                verification: HolderVerification::VideoCall,
            },
        )
    }

    /// Asked by anna, approved by bo: the two codes.
    fn approved(d: &Desk, c: &Carrier) -> Codes {
        let r = ask(d, &d.anna, c).unwrap();
        let a = d.f.ra.decide(&d.bo, &r.approval.id, true).unwrap();
        assert_eq!(a.note.as_deref(), Some("holder verified: video_call"));
        Codes {
            approval: r.approval.id,
            requester: r.release_code,
            approver: a.release_code.unwrap(),
        }
    }

    #[test]
    fn the_puk_goes_once_to_the_card_with_both_officers_codes_and_is_then_replaced() {
        let (d, mut card) = desk_and_card();
        let c = personalise(&d, &mut card, 1, "198112189876");
        // Sealed: the database holds no PUK in the clear.
        let sealed = d.f.store.read(|tx| tx.carrier_puk(&c.id)).unwrap().unwrap();
        assert!(!sealed.windows(PUK.len()).any(|w| w == PUK.as_bytes()));
        // Only a registration officer asks; the approver sees how the holder was verified.
        for who in [&d.hr, &d.auditor, &d.admin] {
            assert_eq!(code(ask(&d, who, &c).unwrap_err()), ErrorCode::Forbidden);
        }
        let r = ask(&d, &d.anna, &c).unwrap();
        assert_eq!(r.approval.kind, ApprovalKind::PukRelease);
        let listed = d.f.ra.approvals_pending(&d.bo).unwrap();
        assert_eq!(
            listed[0].note.as_deref(),
            Some("holder verified: video_call")
        );
        assert_eq!(
            code(ask(&d, &d.bo, &c).unwrap_err()),
            ErrorCode::AlreadyExists
        );
        assert_eq!(
            code(d.f.ra.decide(&d.anna, &r.approval.id, true).unwrap_err()),
            ErrorCode::FourEyesRequired
        );
        // Not before the approval, and never with the requester's code alone.
        let mut k = Codes {
            approval: r.approval.id.clone(),
            requester: r.release_code.clone(),
            approver: r.release_code.clone(),
        };
        let refused = ErrorCode::Forbidden;
        assert_eq!(code(release(&d, &c, &mut card, &k).unwrap_err()), refused);
        let a = d.f.ra.decide(&d.bo, &r.approval.id, true).unwrap();
        assert_eq!(code(release(&d, &c, &mut card, &k).unwrap_err()), refused);
        k.approver = a.release_code.clone().unwrap();
        // Another key's signature, another approval's message, garbage: refused.
        let other = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let forged = {
            use base64ct::Encoding;
            use p256::ecdsa::signature::Signer as _;
            let sig: p256::ecdsa::DerSignature =
                other.sign(&puk_release_message(&k.approval, &c.id));
            base64ct::Base64::encode_string(sig.as_bytes())
        };
        for (algorithm, signature) in [
            ("ecdsa-with-SHA256", forged),
            (
                "ecdsa-with-SHA256",
                signed(&mut card, &puk_release_message("x", &c.id)),
            ),
            ("ecdsa-with-SHA256", "not base64!".to_owned()),
            (
                "md5",
                signed(&mut card, &puk_release_message(&k.approval, &c.id)),
            ),
        ] {
            let e =
                d.f.ra
                    .release_puk(
                        &c.id,
                        &PukReleaseRequest {
                            approval_id: k.approval.clone(),
                            release_code: k.requester.clone(),
                            approval_code: k.approver.clone(),
                            algorithm: algorithm.into(),
                            signature,
                        },
                    )
                    .unwrap_err();
            assert_eq!(code(e), refused);
        }
        // Both codes and the card: the PUK, once.
        let got = release(&d, &c, &mut card, &k).unwrap();
        assert_eq!(got.puk, PUK);
        assert_eq!(code(release(&d, &c, &mut card, &k).unwrap_err()), refused);
        // The channel sets a new PUK on the card and escrows it; a signature over another
        // PUK does not escrow this one.
        let rotate = |new_puk: &str, signed_for: &str, card: &mut Card| {
            let signature = signed(card, &puk_rotation_message(&k.approval, &c.id, signed_for));
            d.f.ra.rotate_puk(
                &c.id,
                &PukRotation {
                    approval_id: k.approval.clone(),
                    release_code: k.requester.clone(),
                    approval_code: k.approver.clone(),
                    new_puk: new_puk.into(),
                    algorithm: "ecdsa-with-SHA256".into(),
                    signature,
                },
            )
        };
        assert_eq!(
            code(rotate("11223344", "55667788", &mut card).unwrap_err()),
            refused
        );
        assert_eq!(
            code(rotate("12345678", "12345678", &mut card).unwrap_err()),
            ErrorCode::InvalidField
        );
        rotate("11223344", "11223344", &mut card).unwrap();
        assert_eq!(
            code(rotate("99887766", "99887766", &mut card).unwrap_err()),
            refused
        );
        // The next unblock releases the new PUK; if the channel never replaces that one,
        // no further unblock is possible until the card is personalised again.
        let k2 = approved(&d, &c);
        assert_eq!(release(&d, &c, &mut card, &k2).unwrap().puk, "11223344");
        d.f.clock.advance(2 * 3600);
        assert_eq!(
            code(ask(&d, &d.anna, &c).unwrap_err()),
            ErrorCode::InvalidTransition
        );
        assert!(d.f.store.read(|tx| tx.verify_audit()).unwrap().is_ok());
    }

    #[test]
    fn a_release_is_the_holders_active_card_within_its_windows_or_nothing() {
        let (d, mut card) = desk_and_card();
        let c = personalise(&d, &mut card, 2, "196408233234");
        // A refusal changes no carrier (it is no issuance refused) and closes the release.
        let r = ask(&d, &d.anna, &c).unwrap();
        d.f.ra.decide(&d.bo, &r.approval.id, false).unwrap();
        assert_eq!(
            d.f.ra.carrier(&d.anna, &c.id).unwrap().state,
            CarrierState::Active
        );
        // A request waits four hours for its approval; then the sweep refuses it (and
        // an officer can still refuse one the sweep has not reached).
        let r = ask(&d, &d.anna, &c).unwrap();
        d.f.clock.advance(5 * 3600);
        assert_eq!(
            code(d.f.ra.decide(&d.bo, &r.approval.id, true).unwrap_err()),
            ErrorCode::InvalidTransition
        );
        d.f.ra.sweep_deadlines().unwrap();
        assert!(d
            .f
            .ra
            .approvals_pending(&d.bo)
            .unwrap()
            .iter()
            .all(|a| a.id != r.approval.id));
        let r = ask(&d, &d.anna, &c).unwrap();
        d.f.clock.advance(5 * 3600);
        d.f.ra.decide(&d.bo, &r.approval.id, false).unwrap();
        // Approved, but not taken within a day.
        let k = approved(&d, &c);
        d.f.clock.advance(DAY + 1);
        assert_eq!(
            code(release(&d, &c, &mut card, &k).unwrap_err()),
            ErrorCode::Forbidden
        );
        // A pending request dies with the card's activity: suspended, it is refused by the
        // issuer and a later approval finds nothing.
        let r = ask(&d, &d.anna, &c).unwrap();
        d.f.ra
            .suspend(
                &d.anna,
                &c.id,
                &SuspendRequest {
                    reason: SuspendReason::OnLeave,
                    days: 5,
                },
            )
            .unwrap();
        assert_eq!(
            code(d.f.ra.decide(&d.bo, &r.approval.id, true).unwrap_err()),
            ErrorCode::InvalidTransition
        );
        assert_eq!(
            code(ask(&d, &d.anna, &c).unwrap_err()),
            ErrorCode::InvalidTransition
        );
        // Resumed: an approved release, then the holder's employment ends: nothing.
        d.f.ra
            .resume(
                &d.anna,
                &c.id,
                &ResumeRequest {
                    verification: "in_person".into(),
                },
            )
            .unwrap();
        let k = approved(&d, &c);
        let holder = d.f.ra.carrier(&d.anna, &c.id).unwrap().person_id.unwrap();
        d.f.ra.end_person(&d.hr, &holder).unwrap();
        assert_eq!(
            code(release(&d, &c, &mut card, &k).unwrap_err()),
            ErrorCode::Forbidden
        );
        // A card without an escrowed PUK cannot be unblocked remotely.
        let (_, plain) = active_card(&d, 3, "197505051230");
        assert_eq!(
            code(ask(&d, &d.anna, &plain).unwrap_err()),
            ErrorCode::InvalidTransition
        );
    }

    #[test]
    fn a_protected_identitys_certificates_and_changes_stay_with_those_who_may_see_them() {
        let d = desk();
        let p =
            d.f.ra
                .create_person(
                    &d.hr,
                    &NewPerson {
                        protected_identity: true,
                        ..new_person(7, "198112189876")
                    },
                )
                .unwrap();
        let (_, c) = active_card(&d, 8, "196408233234");
        let open =
            d.f.ra
                .certificate(&d.auditor, &c.certificates[0].to_string())
                .unwrap();
        assert!(open.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        // A protected person's card: HR and auditors find no certificate.
        d.f.ra
            .proof(
                &d.anna,
                &p.id,
                &proofing_of(&d.f.ra.person(&d.anna, &p.id).unwrap()),
            )
            .unwrap();
        let k = assigned_card(&d, &d.f.ra.person(&d.anna, &p.id).unwrap(), "SC-P");
        let k =
            d.f.ra
                .register_keys(&d.anna, &k.id, &keys(&[ProfileName::Authentication]))
                .unwrap();
        let serial = k.certificates[0].to_string();
        for who in [&d.hr, &d.auditor] {
            assert_eq!(
                code(d.f.ra.certificate(who, &serial).unwrap_err()),
                ErrorCode::NotFound
            );
        }
        assert!(d.f.ra.certificate(&d.anna, &serial).is_ok());
        assert_eq!(
            code(d.f.ra.certificate(&d.anna, "zz").unwrap_err()),
            ErrorCode::InvalidField
        );
        // HR renames the protected person: the trail says which field, not to what.
        let renamed = NewPerson {
            given_name: "Secret".into(),
            protected_identity: true,
            ..new_person(7, "198112189876")
        };
        d.f.ra
            .import_people(
                &d.hr,
                &ImportRequest {
                    people: vec![renamed],
                    dry_run: false,
                },
            )
            .unwrap();
        let trail = d.f.ra.audit_page(&d.auditor, 0, 1000).unwrap();
        let update = trail
            .iter()
            .rfind(|r| r.action == "person.updated")
            .unwrap();
        assert!(
            update.details.contains("given_name") && !update.details.contains("Secret"),
            "{update:?}"
        );
        assert!(trail.iter().all(|r| r.hash_matches()));
        assert_eq!(
            code(d.f.ra.audit_page(&d.hr, 0, 10).unwrap_err()),
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn a_puk_is_escrowed_only_with_the_cards_own_attested_key() {
        let (d, mut card) = desk_and_card();
        let p =
            d.f.ra
                .create_person(&d.hr, &new_person(4, "198112189876"))
                .unwrap();
        d.f.ra.proof(&d.anna, &p.id, &proofing_of(&p)).unwrap();
        let c = assigned_card(&d, &p, "SC4");
        let attempt = |req: &KeysRequest| d.f.ra.register_keys(&d.anna, &c.id, req).map(|_| ());
        // A 9E key from a CSR is no proof of the card; the default PUK and a non-PUK are
        // refused; each changes nothing.
        let mut req = keys(&[ProfileName::Authentication, ProfileName::CardAuthentication]);
        req.puk = Some(PUK.into());
        assert_eq!(code(attempt(&req).unwrap_err()), ErrorCode::InvalidField);
        let attested = attested_card_authentication(&mut card);
        for bad in ["12345678", "12 34", "123"] {
            let mut req = keys(&[ProfileName::Authentication]);
            req.keys.push(attested.clone());
            req.puk = Some(bad.into());
            assert_eq!(code(attempt(&req).unwrap_err()), ErrorCode::InvalidField);
        }
        // One key for two profiles is refused.
        let mut same = attested.clone();
        same.profile = ProfileName::Authentication;
        let req = KeysRequest {
            keys: vec![attested.clone(), same],
            puk: None,
        };
        assert!(attempt(&req).is_err());
        assert_eq!(
            d.f.ra.carrier(&d.anna, &c.id).unwrap().state,
            CarrierState::Assigned
        );
        assert!(d
            .f
            .store
            .read(|tx| tx.carrier_puk(&c.id))
            .unwrap()
            .is_none());
    }
}

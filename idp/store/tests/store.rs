//! The IdP's store on SQLite and on PostgreSQL, as two servers share it: replay, waiting
//! requests, one-time tickets, sessions ended by certificate, consents, and the audit chain
//! kept whole when both servers write.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

// The issuer's private PostgreSQL server for tests, shared rather than written twice.
#[path = "../../../issuer/tests/pg/mod.rs"]
mod pg;

use tessera_idp_store::{Consent, EndedBy, Location, Pending, Session, Store, StoreError};
use tessera_issuer_types::audit::ChainCheck;

fn session(id: &str, serial: &str, now: i64) -> Session {
    Session {
        id: id.into(),
        cookie_hash: None,
        person_id: "p-1".into(),
        serial: serial.into(),
        loa: "http://id.swedenconnect.se/loa/1.0/uncertified-loa3".into(),
        holder: "{}".into(),
        address: "127.0.0.1".into(),
        authn_instant: now,
        expires_at: now + 3600,
        ended_at: None,
        end_reason: None,
    }
}

#[test]
fn two_servers_share_one_sqlite_database() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("idp.sqlite");
    let a = Store::open(Location::Sqlite(&path)).unwrap();
    let b = Store::open(Location::Sqlite(&path)).unwrap();
    scenario(&a, &b);
}

#[test]
fn two_servers_share_one_postgresql_database() {
    let Some(server) = pg::Postgres::start() else {
        return;
    };
    let a = Store::open(Location::Postgres(&server.url)).unwrap();
    let b = Store::open(Location::Postgres(&server.url)).unwrap();
    scenario(&a, &b);
}

fn scenario(a: &Store, b: &Store) {
    let now = 1_800_000_000;

    // A request ID is taken once per relying party, across servers; another relying
    // party's same ID is its own; an expired row is swept and the ID taken again.
    let remember = |s: &Store, rp: &str, id: &str, exp: i64, now: i64| {
        s.write(|tx| tx.remember_request(rp, id, exp, now)).unwrap()
    };
    assert!(remember(a, "https://sp1", "_r1", now + 360, now));
    assert!(
        !remember(b, "https://sp1", "_r1", now + 360, now),
        "replayed"
    );
    assert!(remember(b, "https://sp2", "_r1", now + 360, now));
    assert!(
        remember(a, "https://sp1", "_r1", now + 1000, now + 361),
        "expired"
    );

    // A waiting request, answered once.
    let p = Pending {
        id: "pend-1".into(),
        browser_hash: "h".into(),
        relying_party: "https://sp1".into(),
        request: "{}".into(),
        created_at: now,
        expires_at: now + 600,
    };
    a.write(|tx| tx.put_pending(&p, now)).unwrap();
    assert_eq!(
        b.read(|tx| tx.pending("pend-1", now)).unwrap(),
        Some(p.clone())
    );
    assert_eq!(b.read(|tx| tx.pending("pend-1", now + 601)).unwrap(), None);
    assert!(b.write(|tx| tx.take_pending("pend-1")).unwrap());
    assert!(
        !a.write(|tx| tx.take_pending("pend-1")).unwrap(),
        "answered once"
    );

    // Sessions and the one-time ticket that hands one over.
    a.write(|tx| {
        tx.create_session(&session("s-1", "0a0b", now))?;
        tx.create_session(&session("s-2", "0a0b", now))?;
        tx.create_session(&session("s-3", "0c0d", now))?;
        tx.put_ticket("t-1", "s-1", "pend-2", now + 60)
    })
    .unwrap();
    assert_eq!(
        b.write(|tx| tx.take_ticket("t-1", now)).unwrap(),
        Some(("s-1".into(), "pend-2".into()))
    );
    assert_eq!(
        a.write(|tx| tx.take_ticket("t-1", now)).unwrap(),
        None,
        "spent"
    );
    a.write(|tx| tx.put_ticket("t-2", "s-1", "pend-2", now + 60))
        .unwrap();
    assert_eq!(
        a.write(|tx| tx.take_ticket("t-2", now + 61)).unwrap(),
        None,
        "late"
    );

    // A revoked certificate ends its sessions, and only its own.
    let ended = b
        .write(|tx| tx.end_sessions_of("0a0b", "revoked", now + 5))
        .unwrap();
    assert_eq!(ended.len(), 2);
    let s1 = a.read(|tx| tx.session("s-1")).unwrap().unwrap();
    assert!(!s1.live(now + 6));
    assert_eq!(s1.end_reason.as_deref(), Some("revoked"));
    let s3 = a.read(|tx| tx.session("s-3")).unwrap().unwrap();
    assert!(
        s3.live(now + 6) && !s3.live(now + 3600),
        "ends at its hour too"
    );
    let live = a.read(|tx| tx.live_sessions(now + 6, 100)).unwrap();
    assert_eq!(
        live.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["s-3"]
    );
    assert!(!a
        .write(|tx| tx.end_session("s-1", "again", EndedBy::Admin, now + 7))
        .unwrap());

    // Uses of a session, latest index per relying party.
    a.write(|tx| {
        tx.used("s-3", "https://sp1", "_i1", now)?;
        tx.used("s-3", "https://sp1", "_i2", now + 1)?;
        tx.used("s-3", "https://sp2", "_i3", now + 2)
    })
    .unwrap();
    assert_eq!(
        b.read(|tx| tx.uses("s-3")).unwrap(),
        [
            ("https://sp1".to_owned(), "_i2".to_owned()),
            ("https://sp2".to_owned(), "_i3".to_owned())
        ]
    );

    // Ending s-3 queues a logout notice for each relying party it answered, with the
    // latest SessionIndex; one server leases them, another sees none meanwhile.
    assert!(a
        .write(|tx| tx.end_session("s-3", "logged out", EndedBy::User, now + 10))
        .unwrap());
    assert!(!b.read(|tx| tx.logout_notice_due(now + 9)).unwrap());
    assert!(b.read(|tx| tx.logout_notice_due(now + 10)).unwrap());
    let leased = a
        .write(|tx| tx.lease_logout_notices(now + 10, now + 70, 10))
        .unwrap();
    assert_eq!(
        leased
            .iter()
            .map(|n| (
                n.relying_party.as_str(),
                n.session_index.as_str(),
                n.reason.as_str(),
                n.attempts
            ))
            .collect::<Vec<_>>(),
        [
            ("https://sp1", "_i2", "user", 0),
            ("https://sp2", "_i3", "user", 0)
        ]
    );
    assert!(b
        .write(|tx| tx.lease_logout_notices(now + 11, now + 71, 10))
        .unwrap()
        .is_empty());
    // The lease's holder records outcomes (leased = attempts after the lease).
    assert!(b
        .write(|tx| tx.logout_notice_outcome(
            "s-3",
            "https://sp1",
            1,
            "answered: Success",
            true,
            0,
            now + 12
        ))
        .unwrap());
    assert!(b
        .write(|tx| tx.logout_notice_outcome(
            "s-3",
            "https://sp2",
            1,
            "unreachable",
            false,
            now + 20,
            now + 12
        ))
        .unwrap());
    let again = a
        .write(|tx| tx.lease_logout_notices(now + 20, now + 80, 10))
        .unwrap();
    assert_eq!(again.len(), 1, "only the one not answered");
    assert!(
        !b.read(|tx| tx.logout_notice_due(now + 21)).unwrap(),
        "leased, so not due"
    );
    assert_eq!(again[0].attempts, 1);
    // A sender whose lease ran out (another took the notice since) changes nothing.
    assert!(!b
        .write(|tx| tx.logout_notice_outcome("s-3", "https://sp2", 1, "late", true, 0, now + 21))
        .unwrap());
    assert!(
        !b.write(|tx| tx.logout_notice_outcome(
            "s-3",
            "https://sp1",
            1,
            "twice",
            true,
            0,
            now + 21
        ))
        .unwrap(),
        "a done notice stays as it was"
    );
    let notices = b.read(|tx| tx.logout_notices_of("s-3")).unwrap();
    assert_eq!(notices[0].outcome.as_deref(), Some("answered: Success"));
    assert!(notices[0].done_at.is_some() && notices[1].done_at.is_none());
    assert_eq!(notices[1].outcome.as_deref(), Some("unreachable"));
    assert!(
        !a.write(|tx| tx.end_session("s-3", "again", EndedBy::Admin, now + 30))
            .unwrap(),
        "ended once, so queued once"
    );
    assert_eq!(b.read(|tx| tx.logout_notices_of("s-3")).unwrap().len(), 2);

    // Consents remembered, replaced, withdrawn.
    let c = Consent {
        person_id: "p-1".into(),
        relying_party: "https://sp1".into(),
        attributes: "displayName,o".into(),
        given_at: now,
    };
    a.write(|tx| tx.give_consent(&c)).unwrap();
    a.write(|tx| tx.give_consent(&c)).unwrap();
    assert_eq!(
        b.read(|tx| tx.consents_of("p-1")).unwrap(),
        std::slice::from_ref(&c)
    );
    assert!(b
        .write(|tx| tx.withdraw_consent("p-1", "https://sp1"))
        .unwrap());
    assert_eq!(a.read(|tx| tx.consent("p-1", "https://sp1")).unwrap(), None);

    // The feed cursor.
    assert_eq!(a.read(|tx| tx.feed_cursor()).unwrap(), 0);
    b.write(|tx| tx.set_feed_cursor(42)).unwrap();
    assert_eq!(a.read(|tx| tx.feed_cursor()).unwrap(), 42);
    // What the feed said of a certificate: ended at a position, until a hold is lifted.
    assert_eq!(a.read(|tx| tx.ended_at_seq("0a0b")).unwrap(), None);
    b.write(|tx| tx.serial_ended("0a0b", 40)).unwrap();
    b.write(|tx| tx.serial_ended("0a0b", 41)).unwrap();
    assert_eq!(a.read(|tx| tx.ended_at_seq("0a0b")).unwrap(), Some(41));
    a.write(|tx| tx.serial_released("0a0b")).unwrap();
    assert_eq!(b.read(|tx| tx.ended_at_seq("0a0b")).unwrap(), None);

    // Both servers append to one chain from threads at once; the chain holds, and a
    // failed write leaves no record.
    std::thread::scope(|scope| {
        for (n, s) in [a, b].into_iter().enumerate() {
            scope.spawn(move || {
                for i in 0..25 {
                    s.write(|tx| {
                        tx.audit(
                            &format!("server-{n}"),
                            "test.write",
                            &format!("{{\"i\":{i}}}"),
                            now,
                        )
                    })
                    .unwrap();
                }
            });
        }
    });
    let r: Result<(), StoreError> = a.write(|tx| {
        tx.audit("server-0", "test.lost", "{}", now)?;
        Err(StoreError::Unavailable("the change failed".into()))
    });
    assert!(r.is_err());
    let records = b.read(|tx| tx.audit_page(0, 1000)).unwrap();
    assert_eq!(records.len(), 50);
    let mut check = ChainCheck::after(0);
    for r in &records {
        check.next(r).unwrap();
    }
    assert!(records.iter().all(|r| r.action == "test.write"));
}

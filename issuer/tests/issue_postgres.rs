//! Issuance, revocation, CRLs and a failed final store on a real PostgreSQL that the test
//! starts itself (see `issue_scenario`). Its own test binary: one SoftHSM2 per process.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;
mod issue_scenario;
mod pg;

#[test]
fn issue_revoke_hold_and_a_failed_store_on_postgresql() {
    if !issue_scenario::peers() {
        return;
    }
    let Some(pg) = pg::Postgres::start() else {
        return;
    };
    issue_scenario::run(
        Some(&pg.url),
        &[
            "CREATE FUNCTION tessera_fail_store() RETURNS trigger AS $$ \
             BEGIN RAISE EXCEPTION 'injected failure of the final store'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER fail_final_store BEFORE UPDATE OF certificate ON certificates \
             FOR EACH ROW EXECUTE FUNCTION tessera_fail_store()",
        ],
    );
}

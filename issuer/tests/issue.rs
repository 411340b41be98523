//! Issuance, revocation, CRLs and a failed final store on SQLite (see `issue_scenario`).
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;
mod issue_scenario;

#[test]
fn issue_revoke_hold_and_a_failed_store_on_sqlite() {
    if !issue_scenario::peers() {
        return;
    }
    issue_scenario::run(
        None,
        &[
            "CREATE TRIGGER fail_final_store BEFORE UPDATE OF certificate ON certificates \
           BEGIN SELECT RAISE(ABORT, 'injected failure of the final store'); END",
        ],
    );
}

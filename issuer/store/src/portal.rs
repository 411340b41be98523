//! Officers' sessions in the admin portal. Only the cookie's SHA-256 is stored; the RA
//! decides who may sign in and when a session has run out.

use diesel::prelude::*;

use crate::schema::portal_sessions;
use crate::{StoreError, Tx};

/// One session as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Insertable)]
#[diesel(table_name = portal_sessions)]
pub struct SessionRow {
    pub token_sha256: Vec<u8>,
    pub officer_id: String,
    /// What the officer signed in with: `certificate:SERIAL` or `passkey:ID`.
    pub credential: String,
    pub created_at: i64,
    pub last_seen: i64,
    pub ended_at: Option<i64>,
}

impl Tx<'_> {
    pub fn insert_session(&mut self, row: &SessionRow) -> Result<(), StoreError> {
        diesel::insert_into(portal_sessions::table)
            .values(row)
            .execute(self.conn)?;
        Ok(())
    }

    pub fn session(&mut self, token_sha256: &[u8]) -> Result<Option<SessionRow>, StoreError> {
        Ok(portal_sessions::table
            .filter(portal_sessions::token_sha256.eq(token_sha256))
            .first(self.conn)
            .optional()?)
    }

    /// Moves a live session's last use to `at`.
    pub fn touch_session(&mut self, token_sha256: &[u8], at: i64) -> Result<(), StoreError> {
        diesel::update(
            portal_sessions::table
                .filter(portal_sessions::token_sha256.eq(token_sha256))
                .filter(portal_sessions::ended_at.is_null()),
        )
        .set(portal_sessions::last_seen.eq(at))
        .execute(self.conn)?;
        Ok(())
    }

    /// Ends a session; false if it had ended already.
    pub fn end_session(&mut self, token_sha256: &[u8], at: i64) -> Result<bool, StoreError> {
        let n = diesel::update(
            portal_sessions::table
                .filter(portal_sessions::token_sha256.eq(token_sha256))
                .filter(portal_sessions::ended_at.is_null()),
        )
        .set(portal_sessions::ended_at.eq(at))
        .execute(self.conn)?;
        Ok(n == 1)
    }

    /// Deletes sessions that ended, or started more than `max_secs` before, `before`.
    pub fn purge_sessions(&mut self, before: i64, max_secs: i64) -> Result<usize, StoreError> {
        Ok(diesel::delete(
            portal_sessions::table.filter(
                portal_sessions::ended_at
                    .lt(before)
                    .or(portal_sessions::created_at.lt(before - max_secs)),
            ),
        )
        .execute(self.conn)?)
    }
}

/// An officer's passkey as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Insertable)]
#[diesel(table_name = crate::schema::portal_passkeys)]
pub struct PasskeyRow {
    /// The WebAuthn credential id, base64url.
    pub id: String,
    pub officer_id: String,
    /// The card certificate of the session it was registered in: it signs in only while
    /// that is a good service ID.
    pub certificate_serial: String,
    pub label: String,
    /// The portal's serialisation of the credential (opaque here).
    pub credential: String,
    pub created_at: i64,
    pub last_used: Option<i64>,
    pub removed_at: Option<i64>,
}

impl Tx<'_> {
    pub fn insert_passkey(&mut self, row: &PasskeyRow) -> Result<(), StoreError> {
        use crate::schema::portal_passkeys;
        diesel::insert_into(portal_passkeys::table)
            .values(row)
            .execute(self.conn)?;
        Ok(())
    }

    pub fn passkey(&mut self, id: &str) -> Result<Option<PasskeyRow>, StoreError> {
        use crate::schema::portal_passkeys;
        Ok(portal_passkeys::table
            .filter(portal_passkeys::id.eq(id))
            .first(self.conn)
            .optional()?)
    }

    /// An officer's passkeys not removed, oldest first.
    pub fn passkeys_of(&mut self, officer_id: &str) -> Result<Vec<PasskeyRow>, StoreError> {
        use crate::schema::portal_passkeys;
        Ok(portal_passkeys::table
            .filter(portal_passkeys::officer_id.eq(officer_id))
            .filter(portal_passkeys::removed_at.is_null())
            .order(portal_passkeys::created_at.asc())
            .load(self.conn)?)
    }

    /// A sign-in's result: the credential as the library updated it (its counter), and
    /// the time — only over `before`, the credential the sign-in was checked against
    /// (compare and swap: of two sign-ins racing, one wins, and a counter never goes
    /// back). Whether it was.
    pub fn passkey_used(
        &mut self,
        id: &str,
        before: &str,
        credential: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        use crate::schema::portal_passkeys;
        let n = diesel::update(
            portal_passkeys::table
                .filter(portal_passkeys::id.eq(id))
                .filter(portal_passkeys::credential.eq(before))
                .filter(portal_passkeys::removed_at.is_null()),
        )
        .set((
            portal_passkeys::credential.eq(credential),
            portal_passkeys::last_used.eq(at),
        ))
        .execute(self.conn)?;
        Ok(n == 1)
    }

    /// Removes a passkey (kept, marked); false if it was removed already.
    pub fn remove_passkey(&mut self, id: &str, at: i64) -> Result<bool, StoreError> {
        use crate::schema::portal_passkeys;
        let n = diesel::update(
            portal_passkeys::table
                .filter(portal_passkeys::id.eq(id))
                .filter(portal_passkeys::removed_at.is_null()),
        )
        .set(portal_passkeys::removed_at.eq(at))
        .execute(self.conn)?;
        Ok(n == 1)
    }
}

//! The CRLs issued, numbered per authority (RFC 5280 §5.2.3); the newest few are kept.

use diesel::prelude::*;

use crate::schema::{crl_numbers, crls};
use crate::{StoreError, Tx};

impl Tx<'_> {
    /// The highest CRL number stored for `authority`.
    pub fn latest_crl_number(&mut self, authority: &str) -> Result<Option<i64>, StoreError> {
        Ok(crls::table
            .filter(crls::authority.eq(authority))
            .select(diesel::dsl::max(crls::number))
            .first::<Option<i64>>(self.conn)?)
    }

    /// The newest CRL of `authority`, with its number.
    pub fn latest_crl(&mut self, authority: &str) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        let Some(number) = self.latest_crl_number(authority)? else {
            return Ok(None);
        };
        let der: Option<Vec<u8>> = crls::table
            .filter(crls::authority.eq(authority))
            .filter(crls::number.eq(number))
            .select(crls::crl)
            .first(self.conn)
            .optional()?;
        Ok(der.map(|d| (number, d)))
    }

    /// Stores a CRL and drops all but the `keep` newest of its authority.
    pub fn insert_crl(
        &mut self,
        authority: &str,
        number: i64,
        this_update: i64,
        der: &[u8],
        keep: i64,
    ) -> Result<(), StoreError> {
        diesel::insert_into(crls::table)
            .values((
                crls::authority.eq(authority),
                crls::number.eq(number),
                crls::this_update.eq(this_update),
                crls::crl.eq(der),
            ))
            .execute(self.conn)?;
        diesel::delete(
            crls::table
                .filter(crls::authority.eq(authority))
                .filter(crls::number.le(number - keep)),
        )
        .execute(self.conn)?;
        Ok(())
    }

    /// Reserves the next CRL number of `authority` for a CRL of the state up to outbox
    /// position `upto`. `None` when a number was already reserved for a newer state: this
    /// CRL would be stale, and a higher number must never describe an older state.
    pub fn reserve_crl_number(
        &mut self,
        authority: &str,
        upto: i64,
        at: i64,
    ) -> Result<Option<i64>, StoreError> {
        let (number, newest): (Option<i64>, Option<i64>) = crl_numbers::table
            .filter(crl_numbers::authority.eq(authority))
            .select((
                diesel::dsl::max(crl_numbers::number),
                diesel::dsl::max(crl_numbers::upto),
            ))
            .first(self.conn)?;
        if newest.is_some_and(|n| n > upto) {
            return Ok(None);
        }
        // Numbers stored before reservations existed count too.
        let stored = self.latest_crl_number(authority)?.unwrap_or(0);
        let next = number.unwrap_or(0).max(stored) + 1;
        diesel::insert_into(crl_numbers::table)
            .values((
                crl_numbers::authority.eq(authority),
                crl_numbers::number.eq(next),
                crl_numbers::upto.eq(upto),
                crl_numbers::reserved_at.eq(at),
            ))
            .execute(self.conn)?;
        Ok(Some(next))
    }

    /// The outbox position the newest stored CRL of `authority` covers (0: none yet).
    pub fn latest_crl_upto(&mut self, authority: &str) -> Result<i64, StoreError> {
        let Some(number) = self.latest_crl_number(authority)? else {
            return Ok(0);
        };
        Ok(crl_numbers::table
            .filter(crl_numbers::authority.eq(authority))
            .filter(crl_numbers::number.eq(number))
            .select(crl_numbers::upto)
            .first::<i64>(self.conn)
            .optional()?
            .unwrap_or(0))
    }

    /// When the newest CRL of `authority` was issued (thisUpdate, Unix seconds).
    pub fn latest_crl_this_update(&mut self, authority: &str) -> Result<Option<i64>, StoreError> {
        let Some(number) = self.latest_crl_number(authority)? else {
            return Ok(None);
        };
        Ok(crls::table
            .filter(crls::authority.eq(authority))
            .filter(crls::number.eq(number))
            .select(crls::this_update)
            .first::<i64>(self.conn)
            .optional()?)
    }
}

//! Certificates: an intent (the TBS certificate, serial unique by constraint) committed
//! before the token signs, the signed certificate stored afterwards; revocation and holds
//! on the row, so a certificate whose final store failed is still revocable (Boulder's
//! order: intent, sign, store).

use diesel::prelude::*;
use tessera_issuer_types::{CertificateStatus, RevocationReason, Serial};

use crate::schema::certificates;
use crate::{StoreError, Tx};

/// The intent to issue.
#[derive(Debug, Clone)]
pub struct NewCertificate<'a> {
    pub serial: &'a Serial,
    /// The authority that issues it (`issuing`).
    pub authority: &'a str,
    pub profile: &'a str,
    /// The DER TBS certificate the token will sign.
    pub tbs: &'a [u8],
    pub not_after: i64,
    pub created_at: i64,
}

/// The issuing CA: the authority whose CRL the issuer publishes.
const ISSUING: &str = "issuing";

/// One of the issuer's own certificates, for [`Tx::record_own_certificate`].
#[derive(Debug, Clone)]
pub struct OwnCertificate<'a> {
    pub serial: &'a Serial,
    /// The authority that issued it (`issuing`, `tls-ca`).
    pub authority: &'a str,
    /// `ocsp-responder`, `audit-signer` or `tls-server`.
    pub profile: &'a str,
    pub tbs: &'a [u8],
    pub der: &'a [u8],
    pub not_after: i64,
    pub fingerprint: &'a str,
}

/// One entry of a CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedRow {
    pub serial: String,
    pub at: i64,
    pub reason: RevocationReason,
}

fn reason(s: Option<String>) -> Result<RevocationReason, StoreError> {
    match s {
        None => Ok(RevocationReason::Unspecified),
        Some(r) => r
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("revocation reason {r:?}"))),
    }
}

impl Tx<'_> {
    /// Records the intent; fails if the serial exists.
    pub fn insert_intent(&mut self, c: &NewCertificate<'_>) -> Result<(), StoreError> {
        diesel::insert_into(certificates::table)
            .values((
                certificates::serial.eq(c.serial.as_str()),
                certificates::authority.eq(c.authority),
                certificates::profile.eq(c.profile),
                certificates::status.eq("intent"),
                certificates::tbs.eq(c.tbs),
                certificates::not_after.eq(c.not_after),
                certificates::created_at.eq(c.created_at),
            ))
            .execute(self.conn)?;
        Ok(())
    }

    /// Records a certificate the CA made for one of the issuer's own keys (OCSP responder,
    /// audit signer, HTTPS server) as issued, with its audit record: it can then be
    /// revoked, and is listed on its CA's CRL if it is.
    pub fn record_own_certificate(
        &mut self,
        own: &OwnCertificate<'_>,
        at: i64,
        actor: &str,
    ) -> Result<(), StoreError> {
        self.insert_intent(&NewCertificate {
            serial: own.serial,
            authority: own.authority,
            profile: own.profile,
            tbs: own.tbs,
            not_after: own.not_after,
            created_at: at,
        })?;
        self.own_certificate_issued(own, at, actor)
    }

    /// Stores an own certificate whose intent was recorded before it was signed, with its
    /// audit record.
    pub fn own_certificate_issued(
        &mut self,
        own: &OwnCertificate<'_>,
        at: i64,
        actor: &str,
    ) -> Result<(), StoreError> {
        self.mark_issued(own.serial, own.der)?;
        self.audit(
            actor,
            &crate::audit::AuditEvent::OwnCertificateIssued {
                role: own.profile.to_owned(),
                serial: own.serial.to_string(),
                sha256: own.fingerprint.to_owned(),
                not_after: own.not_after,
            },
            at,
        )?;
        Ok(())
    }

    /// Stores the signed certificate of an intent.
    pub fn mark_issued(&mut self, serial: &Serial, der: &[u8]) -> Result<(), StoreError> {
        let n =
            diesel::update(certificates::table.filter(certificates::serial.eq(serial.as_str())))
                .set((
                    certificates::certificate.eq(der),
                    certificates::status.eq("issued"),
                ))
                .execute(self.conn)?;
        if n != 1 {
            return Err(StoreError::Corrupt(format!(
                "no intent for serial {serial}"
            )));
        }
        Ok(())
    }

    /// The profile a certificate was issued under.
    pub fn profile(&mut self, serial: &Serial) -> Result<Option<String>, StoreError> {
        Ok(certificates::table
            .filter(certificates::serial.eq(serial.as_str()))
            .select(certificates::profile)
            .first(self.conn)
            .optional()?)
    }

    /// Where a certificate of `authority` stands; `None` for a serial it never issued.
    pub fn status_under(
        &mut self,
        authority: &str,
        serial: &Serial,
    ) -> Result<Option<CertificateStatus>, StoreError> {
        let issued_here: Option<String> = certificates::table
            .filter(certificates::serial.eq(serial.as_str()))
            .filter(certificates::authority.eq(authority))
            .select(certificates::serial)
            .first(self.conn)
            .optional()?;
        match issued_here {
            Some(_) => self.status(serial),
            None => Ok(None),
        }
    }

    /// Where a certificate stands; `None` for a serial never recorded.
    pub fn status(&mut self, serial: &Serial) -> Result<Option<CertificateStatus>, StoreError> {
        let row: Option<(String, Option<i64>, Option<String>)> = certificates::table
            .filter(certificates::serial.eq(serial.as_str()))
            .select((
                certificates::status,
                certificates::revoked_at,
                certificates::revocation_reason,
            ))
            .first(self.conn)
            .optional()?;
        let Some((status, revoked_at, why)) = row else {
            return Ok(None);
        };
        Ok(Some(match (revoked_at, status.as_str()) {
            (Some(at), _) => CertificateStatus::Revoked {
                at,
                reason: reason(why)?,
            },
            (None, "intent") => CertificateStatus::Intent,
            (None, "issued") => CertificateStatus::Issued,
            (None, other) => {
                return Err(StoreError::Corrupt(format!("certificate status {other:?}")))
            }
        }))
    }

    /// Marks a certificate revoked (or, with `CertificateHold`, suspended).
    pub fn set_revoked(
        &mut self,
        serial: &Serial,
        at: i64,
        reason: RevocationReason,
    ) -> Result<(), StoreError> {
        diesel::update(certificates::table.filter(certificates::serial.eq(serial.as_str())))
            .set((
                certificates::revoked_at.eq(at),
                certificates::revocation_reason.eq(reason.as_str()),
            ))
            .execute(self.conn)?;
        Ok(())
    }

    /// Ends a hold (RFC 5280 §5.3.1: the certificate is good again).
    pub fn clear_revocation(&mut self, serial: &Serial) -> Result<(), StoreError> {
        diesel::update(certificates::table.filter(certificates::serial.eq(serial.as_str())))
            .set((
                certificates::revoked_at.eq(None::<i64>),
                certificates::revocation_reason.eq(None::<String>),
            ))
            .execute(self.conn)?;
        Ok(())
    }

    /// How many revoked certificates are not yet expired at `now`.
    pub fn revoked_count(&mut self, now: i64) -> Result<i64, StoreError> {
        Ok(certificates::table
            .filter(certificates::authority.eq(ISSUING))
            .filter(certificates::revoked_at.is_not_null())
            .filter(certificates::not_after.gt(now))
            .count()
            .get_result(self.conn)?)
    }

    /// The next page of the issuing CA's revoked, unexpired certificates after serial `after`, in serial
    /// order (keyset pagination over the covering index `certificates_revoked`).
    pub fn revoked_page(
        &mut self,
        after: &str,
        now: i64,
        limit: i64,
    ) -> Result<Vec<RevokedRow>, StoreError> {
        let rows: Vec<(String, Option<i64>, Option<String>)> = certificates::table
            .filter(certificates::authority.eq(ISSUING))
            .filter(certificates::revoked_at.is_not_null())
            .filter(certificates::not_after.gt(now))
            .filter(certificates::serial.gt(after))
            .select((
                certificates::serial,
                certificates::revoked_at,
                certificates::revocation_reason,
            ))
            .order(certificates::serial.asc())
            .limit(limit)
            .load(self.conn)?;
        rows.into_iter()
            .map(|(serial, at, why)| {
                Ok(RevokedRow {
                    serial,
                    at: at.unwrap_or(0),
                    reason: reason(why)?,
                })
            })
            .collect()
    }

    /// The signed certificate, once stored.
    pub fn certificate(&mut self, serial: &Serial) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(certificates::table
            .filter(certificates::serial.eq(serial.as_str()))
            .select(certificates::certificate)
            .first::<Option<Vec<u8>>>(self.conn)
            .optional()?
            .flatten())
    }
}

/// One period's count.
#[derive(diesel::QueryableByName)]
struct Bucket {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    period: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Certificates issued and revoked per period, for the portal's charts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerPeriod {
    /// Certificates of the holders' profiles issued in each period, oldest first.
    pub issued: Vec<u64>,
    /// Certificates revoked (holds not counted) in each period, oldest first.
    pub revoked: Vec<u64>,
}

impl Tx<'_> {
    /// Holders' certificates issued, and certificates revoked, in `periods` periods of
    /// `length` seconds from `from`. Counted by the database (GROUP BY), not loaded.
    pub fn certificates_per_period(
        &mut self,
        from: i64,
        length: i64,
        periods: usize,
    ) -> Result<PerPeriod, StoreError> {
        let length = length.max(1);
        let until = from.saturating_add(length.saturating_mul(periods as i64));
        // Numbers only (i64s), formatted in: one statement text for both backends.
        let profiles = "'authentication', 'signature', 'encryption', 'card_authentication'";
        let issued = format!(
            "SELECT (created_at - {from}) / {length} AS period, COUNT(*) AS n FROM certificates \
             WHERE created_at >= {from} AND created_at < {until} AND certificate IS NOT NULL \
             AND profile IN ({profiles}) GROUP BY 1"
        );
        let revoked = format!(
            "SELECT (revoked_at - {from}) / {length} AS period, COUNT(*) AS n FROM certificates \
             WHERE revoked_at >= {from} AND revoked_at < {until} \
             AND revocation_reason <> 'certificateHold' AND profile IN ({profiles}) GROUP BY 1"
        );
        let mut count = |text: String| -> Result<Vec<u64>, StoreError> {
            let q = diesel::sql_query(text);
            let rows: Vec<Bucket> = match &mut *self.conn {
                crate::Conn::Postgresql(c) => q.load(c)?,
                crate::Conn::Sqlite(c) => q.load(c)?,
            };
            let mut out = vec![0u64; periods];
            for b in rows {
                if let Some(slot) = usize::try_from(b.period).ok().and_then(|i| out.get_mut(i)) {
                    *slot = u64::try_from(b.n).unwrap_or(0);
                }
            }
            Ok(out)
        };
        Ok(PerPeriod {
            issued: count(issued)?,
            revoked: count(revoked)?,
        })
    }
}

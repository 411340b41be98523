//! The registration authority's records: officers and their tokens, people and their
//! identity proofings, carriers and the certificates on them, four-eyes approvals. Rows
//! come out typed (states are the lifecycle enums); the rules about which change is
//! allowed live in the RA, which calls these inside one [`Store::write`](crate::Store).

use diesel::prelude::*;
use tessera_issuer_types::lifecycle::{
    ApprovalKind, ApprovalState, CarrierKind, CarrierRevokeReason, CarrierState, OfficerRole,
    PersonState, SuspendReason,
};
use tessera_issuer_types::Serial;

use crate::schema::{
    approvals, bulk_revocations, carrier_certificates, carrier_puks, carrier_tpm, carriers,
    loss_codes, officer_tokens, officers, people, proofings, puk_releases,
};
use crate::{StoreError, Tx};

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

/// Stored serial numbers, parsed (one that does not parse is a corrupt row).
fn serials(rows: Vec<String>) -> Result<Vec<Serial>, StoreError> {
    rows.iter()
        .map(|s| Serial::parse(s).map_err(|_| StoreError::Corrupt(format!("serial {s:?}"))))
        .collect()
}

/// The TPM a TPM virtual card was enrolled in: its endorsement key (SHA-256 of the
/// SubjectPublicKeyInfo, hex) and the name of the card's PIN index (hex), which a renewal's
/// keys must be in and bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierTpm {
    pub carrier_id: String,
    pub ek_key_sha256: String,
    pub pin_index_name: Option<String>,
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("{what} {s:?}")))
}

fn parse_opt<T: std::str::FromStr>(what: &str, s: Option<String>) -> Result<Option<T>, StoreError> {
    s.map(|s| parse(what, &s)).transpose()
}

/// An officer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfficerRow {
    pub id: String,
    pub display_name: String,
    pub roles: Vec<OfficerRole>,
    pub person_id: Option<String>,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

type OfficerTuple = (String, String, String, Option<String>, i64, Option<i64>);

fn officer(t: OfficerTuple) -> Result<OfficerRow, StoreError> {
    let roles =
        t.2.split(',')
            .filter(|r| !r.is_empty())
            .map(|r| parse("officer role", r))
            .collect::<Result<_, _>>()?;
    Ok(OfficerRow {
        id: t.0,
        display_name: t.1,
        roles,
        person_id: t.3,
        created_at: t.4,
        disabled_at: t.5,
    })
}

const OFFICER_COLUMNS: (
    officers::id,
    officers::display_name,
    officers::roles,
    officers::person_id,
    officers::created_at,
    officers::disabled_at,
) = (
    officers::id,
    officers::display_name,
    officers::roles,
    officers::person_id,
    officers::created_at,
    officers::disabled_at,
);

/// A person.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = people)]
pub struct PersonRow {
    pub id: String,
    pub employee_number: String,
    pub given_name: String,
    pub family_name: String,
    pub email: Option<String>,
    pub upn: Option<String>,
    pub identity_number: Option<String>,
    /// The non-resident data set as JSON.
    pub non_resident: Option<String>,
    pub protected_identity: bool,
    pub directory_sid: Option<String>,
    pub state: String,
    pub proofed_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The HR feed's (SCIM client's) own identifier for the person.
    pub external_id: Option<String>,
    /// When the HR feed removed the person (SCIM DELETE); the record stays.
    pub removed_at: Option<i64>,
}

impl PersonRow {
    pub fn person_state(&self) -> Result<PersonState, StoreError> {
        parse("person state", &self.state)
    }
}

/// A PIN-unblock release (its approval is the second officer's).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = puk_releases)]
pub struct PukReleaseRow {
    pub approval_id: String,
    pub carrier_id: String,
    /// The holder at the request.
    pub person_id: String,
    /// The serial of the card-authentication certificate at the request.
    pub certificate: String,
    /// The requester's release code (SHA-256).
    pub code_sha256: Vec<u8>,
    /// The approver's release code (SHA-256), set at the approval.
    pub approver_code_sha256: Option<Vec<u8>>,
    pub verification: String,
    pub released_at: Option<i64>,
    /// When the channel escrowed the new PUK it set on the card.
    pub rotated_at: Option<i64>,
    /// Closed unused: refused, lapsed, or the card left ACTIVE.
    pub closed_at: Option<i64>,
}

/// What the HR feed looks people up by (a SCIM filter's `id`, `userName`, `externalId`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedKey {
    Id(String),
    EmployeeNumber(String),
    ExternalId(String),
}

/// An identity proofing record (K5.10).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = proofings)]
pub struct ProofingRow {
    pub id: String,
    pub person_id: String,
    pub document_type: String,
    pub document_number: String,
    pub issuing_country: String,
    pub document_expiry: String,
    pub officer_id: String,
    pub at: i64,
    pub place: String,
}

/// A carrier, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierRow {
    pub id: String,
    pub kind: CarrierKind,
    pub serial_number: String,
    pub state: CarrierState,
    pub person_id: Option<String>,
    pub suspend_reason: Option<SuspendReason>,
    pub deadline: Option<i64>,
    pub revoke_reason: Option<CarrierRevokeReason>,
    pub original_id: Option<String>,
    pub ends_at: Option<i64>,
    pub terms_version: Option<String>,
    pub terms_accepted_at: Option<i64>,
    pub receipt: Option<String>,
    pub approval_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = carriers, treat_none_as_null = true)]
struct CarrierDb {
    id: String,
    kind: String,
    serial_number: String,
    state: String,
    person_id: Option<String>,
    suspend_reason: Option<String>,
    deadline: Option<i64>,
    revoke_reason: Option<String>,
    original_id: Option<String>,
    ends_at: Option<i64>,
    terms_version: Option<String>,
    terms_accepted_at: Option<i64>,
    receipt: Option<String>,
    approval_id: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl CarrierDb {
    fn typed(self) -> Result<CarrierRow, StoreError> {
        Ok(CarrierRow {
            kind: parse("carrier kind", &self.kind)?,
            state: parse("carrier state", &self.state)?,
            suspend_reason: parse_opt("suspension reason", self.suspend_reason)?,
            revoke_reason: parse_opt("carrier revocation reason", self.revoke_reason)?,
            id: self.id,
            serial_number: self.serial_number,
            person_id: self.person_id,
            deadline: self.deadline,
            original_id: self.original_id,
            ends_at: self.ends_at,
            terms_version: self.terms_version,
            terms_accepted_at: self.terms_accepted_at,
            receipt: self.receipt,
            approval_id: self.approval_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }

    fn from_row(r: &CarrierRow) -> Self {
        Self {
            id: r.id.clone(),
            kind: r.kind.as_str().to_owned(),
            serial_number: r.serial_number.clone(),
            state: r.state.as_str().to_owned(),
            person_id: r.person_id.clone(),
            suspend_reason: r.suspend_reason.map(|s| s.as_str().to_owned()),
            deadline: r.deadline,
            revoke_reason: r.revoke_reason.map(|s| s.as_str().to_owned()),
            original_id: r.original_id.clone(),
            ends_at: r.ends_at,
            terms_version: r.terms_version.clone(),
            terms_accepted_at: r.terms_accepted_at,
            receipt: r.receipt.clone(),
            approval_id: r.approval_id.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A four-eyes approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRow {
    pub id: String,
    pub kind: ApprovalKind,
    pub carrier_id: String,
    pub person_id: String,
    pub requested_by: String,
    pub requested_at: i64,
    /// The certificate subject as JSON, fixed at the request.
    pub subject: String,
    pub state: ApprovalState,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = approvals)]
struct ApprovalDb {
    id: String,
    kind: String,
    carrier_id: String,
    person_id: String,
    requested_by: String,
    requested_at: i64,
    subject: String,
    state: String,
    decided_by: Option<String>,
    decided_at: Option<i64>,
}

impl ApprovalDb {
    fn typed(self) -> Result<ApprovalRow, StoreError> {
        Ok(ApprovalRow {
            kind: parse("approval kind", &self.kind)?,
            state: parse("approval state", &self.state)?,
            id: self.id,
            carrier_id: self.carrier_id,
            person_id: self.person_id,
            requested_by: self.requested_by,
            requested_at: self.requested_at,
            subject: self.subject,
            decided_by: self.decided_by,
            decided_at: self.decided_at,
        })
    }
}

/// An officer's token as listed: (id, label, created, expires, revoked).
pub type TokenRow = (String, String, i64, i64, Option<i64>);

/// A bulk revocation as stored (the carriers as a JSON array).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = bulk_revocations)]
pub struct BulkRow {
    pub id: String,
    pub reason: String,
    pub carriers: String,
    /// SHA-256 (hex) of `carriers`, also in the chained audit record: the list cannot be
    /// changed unseen between request and approval.
    pub carriers_sha256: String,
    pub requested_by: String,
    pub requested_at: i64,
    pub state: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
}

/// A live token's officer, for authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub token_id: String,
    pub officer: OfficerRow,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

impl Tx<'_> {
    pub fn insert_officer(&mut self, o: &OfficerRow) -> Result<(), StoreError> {
        let mut roles: Vec<&str> = o.roles.iter().map(|r| r.as_str()).collect();
        roles.sort_unstable();
        roles.dedup();
        diesel::insert_into(officers::table)
            .values((
                officers::id.eq(&o.id),
                officers::display_name.eq(&o.display_name),
                officers::roles.eq(roles.join(",")),
                officers::person_id.eq(&o.person_id),
                officers::created_at.eq(o.created_at),
            ))
            .execute(self.conn)?;
        Ok(())
    }

    pub fn officer(&mut self, id: &str) -> Result<Option<OfficerRow>, StoreError> {
        officers::table
            .filter(officers::id.eq(id))
            .select(OFFICER_COLUMNS)
            .first::<OfficerTuple>(self.conn)
            .optional()?
            .map(officer)
            .transpose()
    }

    pub fn officers(&mut self) -> Result<Vec<OfficerRow>, StoreError> {
        officers::table
            .order(officers::id)
            .select(OFFICER_COLUMNS)
            .load::<OfficerTuple>(self.conn)?
            .into_iter()
            .map(officer)
            .collect()
    }

    /// Whether an officer with the administrator role exists (then the bootstrap token is
    /// spent).
    /// Administrators not disabled.
    pub fn enabled_administrators(&mut self) -> Result<i64, StoreError> {
        Ok(officers::table
            .filter(officers::roles.like(format!("%{}%", OfficerRole::Administrator.as_str())))
            .filter(officers::disabled_at.is_null())
            .count()
            .get_result(self.conn)?)
    }

    pub fn administrator_exists(&mut self) -> Result<bool, StoreError> {
        // Roles are stored comma-separated; "administrator" is no other role's substring.
        let found: Option<String> = officers::table
            .filter(officers::roles.like(format!("%{}%", OfficerRole::Administrator.as_str())))
            .select(officers::id)
            .first(self.conn)
            .optional()?;
        Ok(found.is_some())
    }

    pub fn insert_officer_token(
        &mut self,
        id: &str,
        token_sha256: &[u8],
        officer_id: &str,
        label: &str,
        created_at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        diesel::insert_into(officer_tokens::table)
            .values((
                officer_tokens::id.eq(id),
                officer_tokens::token_hash.eq(token_sha256),
                officer_tokens::officer_id.eq(officer_id),
                officer_tokens::label.eq(label),
                officer_tokens::created_at.eq(created_at),
                officer_tokens::expires_at.eq(expires_at),
            ))
            .execute(self.conn)?;
        Ok(())
    }

    /// The officer behind a token's SHA-256, with the token's expiry and revocation.
    pub fn token_owner(&mut self, token_sha256: &[u8]) -> Result<Option<TokenOwner>, StoreError> {
        let found: Option<(String, String, i64, Option<i64>)> = officer_tokens::table
            .filter(officer_tokens::token_hash.eq(token_sha256))
            .select((
                officer_tokens::id,
                officer_tokens::officer_id,
                officer_tokens::expires_at,
                officer_tokens::revoked_at,
            ))
            .first(self.conn)
            .optional()?;
        let Some((token_id, officer_id, expires_at, revoked_at)) = found else {
            return Ok(None);
        };
        let officer = self
            .officer(&officer_id)?
            .ok_or_else(|| StoreError::Corrupt(format!("token of unknown officer {officer_id}")))?;
        Ok(Some(TokenOwner {
            token_id,
            officer,
            expires_at,
            revoked_at,
        }))
    }

    /// Disables an officer and revokes every live token of theirs.
    pub fn disable_officer(&mut self, id: &str, at: i64) -> Result<(), StoreError> {
        diesel::update(officers::table.filter(officers::id.eq(id)))
            .set(officers::disabled_at.eq(at))
            .execute(self.conn)?;
        diesel::update(
            officer_tokens::table
                .filter(officer_tokens::officer_id.eq(id))
                .filter(officer_tokens::revoked_at.is_null()),
        )
        .set(officer_tokens::revoked_at.eq(at))
        .execute(self.conn)?;
        Ok(())
    }

    /// Officers linked to a person record.
    pub fn officers_of_person(&mut self, person_id: &str) -> Result<Vec<OfficerRow>, StoreError> {
        officers::table
            .filter(officers::person_id.eq(person_id))
            .select(OFFICER_COLUMNS)
            .load::<OfficerTuple>(self.conn)?
            .into_iter()
            .map(officer)
            .collect()
    }

    /// An officer's tokens, never the tokens themselves.
    pub fn officer_tokens(&mut self, officer_id: &str) -> Result<Vec<TokenRow>, StoreError> {
        Ok(officer_tokens::table
            .filter(officer_tokens::officer_id.eq(officer_id))
            .order(officer_tokens::created_at)
            .select((
                officer_tokens::id,
                officer_tokens::label,
                officer_tokens::created_at,
                officer_tokens::expires_at,
                officer_tokens::revoked_at,
            ))
            .load(self.conn)?)
    }

    /// Revokes an officer's token; false if the officer has no such live token.
    pub fn revoke_officer_token(
        &mut self,
        officer_id: &str,
        token_id: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let n = diesel::update(
            officer_tokens::table
                .filter(officer_tokens::id.eq(token_id))
                .filter(officer_tokens::officer_id.eq(officer_id))
                .filter(officer_tokens::revoked_at.is_null()),
        )
        .set(officer_tokens::revoked_at.eq(at))
        .execute(self.conn)?;
        Ok(n == 1)
    }

    pub fn insert_person(&mut self, p: &PersonRow) -> Result<(), StoreError> {
        diesel::insert_into(people::table)
            .values(p)
            .execute(self.conn)?;
        Ok(())
    }

    pub fn person(&mut self, id: &str) -> Result<Option<PersonRow>, StoreError> {
        Ok(people::table
            .filter(people::id.eq(id))
            .select(PersonRow::as_select())
            .first(self.conn)
            .optional()?)
    }

    pub fn person_by_employee_number(
        &mut self,
        number: &str,
    ) -> Result<Option<PersonRow>, StoreError> {
        Ok(people::table
            .filter(people::employee_number.eq(number))
            .select(PersonRow::as_select())
            .first(self.conn)
            .optional()?)
    }

    /// Inserts several people (an import's batch), in slices the database's bind limit
    /// allows.
    pub fn insert_people(&mut self, rows: &[PersonRow]) -> Result<(), StoreError> {
        // One multi-row INSERT per slice, on the backend's own connection (the two-backend
        // connection does not batch).
        for chunk in rows.chunks(500) {
            let insert = diesel::insert_into(people::table).values(chunk);
            match &mut *self.conn {
                crate::Conn::Postgresql(c) => insert.execute(c)?,
                crate::Conn::Sqlite(c) => insert.execute(c)?,
            };
        }
        Ok(())
    }

    /// The people with any of these employee numbers, identity numbers, UPNs or SIDs (an
    /// import's batch checked in four queries, not four per row).
    pub fn people_matching(
        &mut self,
        employee_numbers: &[&str],
        identity_numbers: &[&str],
        upns: &[&str],
        sids: &[&str],
    ) -> Result<Vec<PersonRow>, StoreError> {
        // PostgreSQL plans these for their values: a generic plan cached while the register
        // was small (empty, before the first import) scanned the table whole as it grew
        // (350 ms per 1 000-value lookup at 20 000 people). Only for this transaction
        // (`SET LOCAL`, so nothing outlives it on a pooled connection, whatever fails):
        // every other statement keeps its cached plan. Callers run this inside
        // `Store::write` or `Store::snapshot`.
        if matches!(self.conn, crate::Conn::Postgresql(_)) {
            diesel::sql_query("SET LOCAL plan_cache_mode = force_custom_plan")
                .execute(self.conn)?;
        }
        self.people_matching_planned(employee_numbers, identity_numbers, upns, sids)
    }

    fn people_matching_planned(
        &mut self,
        employee_numbers: &[&str],
        identity_numbers: &[&str],
        upns: &[&str],
        sids: &[&str],
    ) -> Result<Vec<PersonRow>, StoreError> {
        let mut out = Vec::new();
        // One `= ANY` query per column and slice of 1 000 values (a diesel column is its
        // own type, hence a macro rather than a loop over columns).
        macro_rules! matching {
            ($column:expr, $values:expr) => {
                for chunk in $values.chunks(1000) {
                    out.extend(
                        people::table
                            .filter($column.eq_any(chunk))
                            .select(PersonRow::as_select())
                            .load(self.conn)?,
                    );
                }
            };
        }
        matching!(people::employee_number, employee_numbers);
        matching!(people::identity_number, identity_numbers);
        matching!(people::upn, upns);
        matching!(people::directory_sid, sids);
        Ok(out)
    }

    /// At most `limit` people whose employee number, e-mail or either name starts with
    /// `text` (case-insensitive; on SQLite, whose lower() folds ASCII only, a name with
    /// letters outside ASCII is found as typed or as stored, e.g. "Åsa" but not "åsa"),
    /// in employee-number order; protected identities only with `include_protected`.
    pub fn search_people(
        &mut self,
        text: &str,
        limit: i64,
        include_protected: bool,
    ) -> Result<Vec<PersonRow>, StoreError> {
        // PostgreSQL plans this for the pattern given (a generic plan for `LIKE $1` cannot
        // use the prefix indexes); only for this transaction (call it in a snapshot).
        if matches!(self.conn, crate::Conn::Postgresql(_)) {
            diesel::sql_query("SET LOCAL plan_cache_mode = force_custom_plan")
                .execute(self.conn)?;
        }
        let folded = format!("{}%", crate::audit::like_escape(&text.to_lowercase()));
        let typed = format!("{}%", crate::audit::like_escape(text));
        Ok(people::table
            .filter(
                people::protected_identity
                    .eq(false)
                    .or(people::protected_identity.eq(include_protected)),
            )
            .filter(
                lower(people::employee_number)
                    .like(&folded)
                    .escape('\\')
                    .or(lower(people::given_name).like(&folded).escape('\\'))
                    .or(lower(people::family_name).like(&folded).escape('\\'))
                    .or(people::given_name.like(&typed).escape('\\'))
                    .or(people::family_name.like(&typed).escape('\\'))
                    .or(lower(people::email.assume_not_null())
                        .like(&folded)
                        .escape('\\')),
            )
            .order(people::employee_number)
            .limit(limit)
            .select(PersonRow::as_select())
            .load(self.conn)?)
    }

    /// People in employee-number order, after `after`, at most `limit`.
    pub fn people(&mut self, after: &str, limit: i64) -> Result<Vec<PersonRow>, StoreError> {
        Ok(people::table
            .filter(people::employee_number.gt(after))
            .order(people::employee_number)
            .limit(limit)
            .select(PersonRow::as_select())
            .load(self.conn)?)
    }

    /// Writes a person's HR fields (names, e-mail, UPN, protection, directory SID, the
    /// feed's identifier and removal).
    pub fn update_person_details(&mut self, p: &PersonRow) -> Result<(), StoreError> {
        diesel::update(people::table.filter(people::id.eq(&p.id)))
            .set((
                people::given_name.eq(&p.given_name),
                people::family_name.eq(&p.family_name),
                people::email.eq(&p.email),
                people::upn.eq(&p.upn),
                people::protected_identity.eq(p.protected_identity),
                people::directory_sid.eq(&p.directory_sid),
                people::updated_at.eq(p.updated_at),
                people::external_id.eq(&p.external_id),
                people::removed_at.eq(p.removed_at),
            ))
            .execute(self.conn)?;
        Ok(())
    }

    pub fn set_person_state(
        &mut self,
        id: &str,
        state: PersonState,
        proofed_at: Option<i64>,
        at: i64,
    ) -> Result<(), StoreError> {
        diesel::update(people::table.filter(people::id.eq(id)))
            .set((
                people::state.eq(state.as_str()),
                people::proofed_at.eq(proofed_at),
                people::updated_at.eq(at),
            ))
            .execute(self.conn)?;
        Ok(())
    }

    /// Records a person's identity number or non-resident data set (read off the document
    /// at proofing, when HR did not send it).
    pub fn set_person_identity(
        &mut self,
        id: &str,
        identity_number: Option<&str>,
        non_resident: Option<&str>,
        at: i64,
    ) -> Result<(), StoreError> {
        diesel::update(people::table.filter(people::id.eq(id)))
            .set((
                people::identity_number.eq(identity_number),
                people::non_resident.eq(non_resident),
                people::updated_at.eq(at),
            ))
            .execute(self.conn)?;
        Ok(())
    }

    /// The people the HR feed shows (not removed), in employee-number order: all of them,
    /// or those with one id, employee number or feed identifier; `offset` and `limit` page
    /// them. Returns the number that match and the page.
    pub fn feed_people(
        &mut self,
        key: Option<&FeedKey>,
        offset: i64,
        limit: i64,
    ) -> Result<(i64, Vec<PersonRow>), StoreError> {
        let shown = people::removed_at.is_null();
        macro_rules! page {
            ($filter:expr) => {{
                let total: i64 = people::table
                    .filter(shown)
                    .filter($filter)
                    .count()
                    .get_result(self.conn)?;
                let rows = people::table
                    .filter(shown)
                    .filter($filter)
                    .order(people::employee_number)
                    .offset(offset)
                    .limit(limit)
                    .select(PersonRow::as_select())
                    .load(self.conn)?;
                Ok((total, rows))
            }};
        }
        match key {
            None => page!(people::id.is_not_null()),
            Some(FeedKey::Id(v)) => page!(people::id.eq(v)),
            Some(FeedKey::EmployeeNumber(v)) => page!(people::employee_number.eq(v)),
            Some(FeedKey::ExternalId(v)) => page!(people::external_id.eq(v)),
        }
    }

    pub fn insert_proofing(&mut self, p: &ProofingRow) -> Result<(), StoreError> {
        diesel::insert_into(proofings::table)
            .values(p)
            .execute(self.conn)?;
        Ok(())
    }

    pub fn proofings(&mut self, person_id: &str) -> Result<Vec<ProofingRow>, StoreError> {
        Ok(proofings::table
            .filter(proofings::person_id.eq(person_id))
            .order(proofings::at)
            .select(ProofingRow::as_select())
            .load(self.conn)?)
    }

    pub fn insert_carrier(&mut self, c: &CarrierRow) -> Result<(), StoreError> {
        diesel::insert_into(carriers::table)
            .values(CarrierDb::from_row(c))
            .execute(self.conn)?;
        Ok(())
    }

    /// Keeps a card's sealed PUK (replacing an earlier one: a re-personalisation).
    pub fn set_carrier_puk(
        &mut self,
        carrier_id: &str,
        sealed: &[u8],
        at: i64,
    ) -> Result<(), StoreError> {
        self.clear_carrier_puk(carrier_id)?;
        diesel::insert_into(carrier_puks::table)
            .values((
                carrier_puks::carrier_id.eq(carrier_id),
                carrier_puks::sealed.eq(sealed),
                carrier_puks::created_at.eq(at),
            ))
            .execute(self.conn)?;
        Ok(())
    }

    /// Records the TPM a virtual card's keys were enrolled in, replacing any earlier record.
    pub fn set_carrier_tpm(&mut self, t: &CarrierTpm, at: i64) -> Result<(), StoreError> {
        diesel::delete(carrier_tpm::table.filter(carrier_tpm::carrier_id.eq(&t.carrier_id)))
            .execute(self.conn)?;
        diesel::insert_into(carrier_tpm::table)
            .values((
                carrier_tpm::carrier_id.eq(&t.carrier_id),
                carrier_tpm::ek_key_sha256.eq(&t.ek_key_sha256),
                carrier_tpm::pin_index_name.eq(&t.pin_index_name),
                carrier_tpm::enrolled_at.eq(at),
            ))
            .execute(self.conn)?;
        Ok(())
    }

    /// The TPM a virtual card was enrolled in, if recorded.
    pub fn carrier_tpm(&mut self, carrier_id: &str) -> Result<Option<CarrierTpm>, StoreError> {
        Ok(carrier_tpm::table
            .filter(carrier_tpm::carrier_id.eq(carrier_id))
            .select((
                carrier_tpm::carrier_id,
                carrier_tpm::ek_key_sha256,
                carrier_tpm::pin_index_name,
            ))
            .first::<(String, String, Option<String>)>(self.conn)
            .optional()?
            .map(|(carrier_id, ek_key_sha256, pin_index_name)| CarrierTpm {
                carrier_id,
                ek_key_sha256,
                pin_index_name,
            }))
    }

    /// The certificates the carrier carries now for the key whose SubjectPublicKeyInfo
    /// hashes to `spki_sha256`.
    pub fn carrier_serials_for_key(
        &mut self,
        carrier_id: &str,
        spki_sha256: &str,
    ) -> Result<Vec<Serial>, StoreError> {
        carrier_certificates::table
            .filter(carrier_certificates::carrier_id.eq(carrier_id))
            .filter(carrier_certificates::spki_sha256.eq(spki_sha256))
            .filter(carrier_certificates::released_at.is_null())
            .order(carrier_certificates::serial)
            .select(carrier_certificates::serial)
            .load::<String>(self.conn)
            .map_err(StoreError::from)
            .and_then(serials)
    }

    /// Records that a renewal signed by the card's certificate `signed_by` issued `serial`.
    pub fn mark_renewal(&mut self, serial: &Serial, signed_by: &Serial) -> Result<(), StoreError> {
        diesel::update(
            carrier_certificates::table.filter(carrier_certificates::serial.eq(serial.to_string())),
        )
        .set(carrier_certificates::renewal_signed_by.eq(signed_by.to_string()))
        .execute(self.conn)?;
        Ok(())
    }

    /// The carrier's certificates that renewals signed by `signed_by` issued.
    pub fn renewal_serials(
        &mut self,
        carrier_id: &str,
        signed_by: &Serial,
    ) -> Result<Vec<Serial>, StoreError> {
        carrier_certificates::table
            .filter(carrier_certificates::carrier_id.eq(carrier_id))
            .filter(carrier_certificates::renewal_signed_by.eq(signed_by.to_string()))
            .filter(carrier_certificates::released_at.is_null())
            .order(carrier_certificates::serial)
            .select(carrier_certificates::serial)
            .load::<String>(self.conn)
            .map_err(StoreError::from)
            .and_then(serials)
    }

    /// Forgets a card's PUK (a wiped card has another).
    pub fn clear_carrier_puk(&mut self, carrier_id: &str) -> Result<(), StoreError> {
        diesel::delete(carrier_puks::table.filter(carrier_puks::carrier_id.eq(carrier_id)))
            .execute(self.conn)?;
        Ok(())
    }

    pub fn carrier_puk(&mut self, carrier_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(carrier_puks::table
            .filter(carrier_puks::carrier_id.eq(carrier_id))
            .select(carrier_puks::sealed)
            .first(self.conn)
            .optional()?)
    }

    pub fn insert_puk_release(&mut self, r: &PukReleaseRow) -> Result<(), StoreError> {
        diesel::insert_into(puk_releases::table)
            .values(r)
            .execute(self.conn)?;
        Ok(())
    }

    pub fn puk_release(&mut self, approval_id: &str) -> Result<Option<PukReleaseRow>, StoreError> {
        Ok(puk_releases::table
            .filter(puk_releases::approval_id.eq(approval_id))
            .select(PukReleaseRow::as_select())
            .first(self.conn)
            .optional()?)
    }

    /// A carrier's releases neither taken nor closed.
    pub fn open_puk_releases(
        &mut self,
        carrier_id: &str,
    ) -> Result<Vec<PukReleaseRow>, StoreError> {
        Ok(puk_releases::table
            .filter(puk_releases::carrier_id.eq(carrier_id))
            .filter(puk_releases::released_at.is_null())
            .filter(puk_releases::closed_at.is_null())
            .select(PukReleaseRow::as_select())
            .load(self.conn)?)
    }

    /// Closes a carrier's open releases unused; returns their approval ids.
    pub fn close_puk_releases(
        &mut self,
        carrier_id: &str,
        at: i64,
    ) -> Result<Vec<String>, StoreError> {
        let open: Vec<String> = self
            .open_puk_releases(carrier_id)?
            .into_iter()
            .map(|r| r.approval_id)
            .collect();
        if !open.is_empty() {
            diesel::update(puk_releases::table.filter(puk_releases::approval_id.eq_any(&open)))
                .set(puk_releases::closed_at.eq(Some(at)))
                .execute(self.conn)?;
        }
        Ok(open)
    }

    /// Records the approver's release code.
    pub fn set_puk_approver_code(
        &mut self,
        approval_id: &str,
        hash: &[u8],
    ) -> Result<(), StoreError> {
        diesel::update(puk_releases::table.filter(puk_releases::approval_id.eq(approval_id)))
            .set(puk_releases::approver_code_sha256.eq(Some(hash)))
            .execute(self.conn)?;
        Ok(())
    }

    /// A carrier's releases whose PUK was taken and never replaced by the channel, since
    /// `since` (the current PUK's escrow).
    pub fn unrotated_puk_releases(
        &mut self,
        carrier_id: &str,
        since: i64,
    ) -> Result<Vec<PukReleaseRow>, StoreError> {
        Ok(puk_releases::table
            .filter(puk_releases::carrier_id.eq(carrier_id))
            .filter(puk_releases::released_at.ge(since))
            .filter(puk_releases::rotated_at.is_null())
            .select(PukReleaseRow::as_select())
            .load(self.conn)?)
    }

    /// When the carrier's current PUK was escrowed.
    pub fn carrier_puk_since(&mut self, carrier_id: &str) -> Result<Option<i64>, StoreError> {
        Ok(carrier_puks::table
            .filter(carrier_puks::carrier_id.eq(carrier_id))
            .select(carrier_puks::created_at)
            .first(self.conn)
            .optional()?)
    }

    /// The carrier a certificate belongs to, if any.
    pub fn carrier_of_certificate(
        &mut self,
        serial: &Serial,
    ) -> Result<Option<String>, StoreError> {
        Ok(carrier_certificates::table
            .filter(carrier_certificates::serial.eq(serial.to_string()))
            .select(carrier_certificates::carrier_id)
            .first(self.conn)
            .optional()?)
    }

    /// The carrier a certificate is on, and when it was released from it (a pool card's
    /// earlier holder's certificate, kept as history after the card was restocked).
    pub fn certificate_carrier(
        &mut self,
        serial: &Serial,
    ) -> Result<Option<(String, Option<i64>)>, StoreError> {
        Ok(carrier_certificates::table
            .filter(carrier_certificates::serial.eq(serial.to_string()))
            .select((
                carrier_certificates::carrier_id,
                carrier_certificates::released_at,
            ))
            .first(self.conn)
            .optional()?)
    }

    /// Marks a release taken; false if it already was, or was closed.
    pub fn take_puk_release(&mut self, approval_id: &str, at: i64) -> Result<bool, StoreError> {
        let n = diesel::update(
            puk_releases::table
                .filter(puk_releases::approval_id.eq(approval_id))
                .filter(puk_releases::released_at.is_null())
                .filter(puk_releases::closed_at.is_null()),
        )
        .set(puk_releases::released_at.eq(Some(at)))
        .execute(self.conn)?;
        Ok(n == 1)
    }

    /// Marks a taken release's PUK replaced; false if it already was.
    pub fn rotate_puk_release(&mut self, approval_id: &str, at: i64) -> Result<bool, StoreError> {
        let n = diesel::update(
            puk_releases::table
                .filter(puk_releases::approval_id.eq(approval_id))
                .filter(puk_releases::released_at.is_not_null())
                .filter(puk_releases::rotated_at.is_null()),
        )
        .set(puk_releases::rotated_at.eq(Some(at)))
        .execute(self.conn)?;
        Ok(n == 1)
    }

    /// Gives a carrier its holder's loss-report code (the SHA-256), replacing any earlier.
    pub fn set_loss_code(&mut self, carrier_id: &str, hash: &[u8]) -> Result<(), StoreError> {
        self.clear_loss_code(carrier_id)?;
        diesel::insert_into(loss_codes::table)
            .values((
                loss_codes::code_hash.eq(hash),
                loss_codes::carrier_id.eq(carrier_id),
            ))
            .execute(self.conn)?;
        Ok(())
    }

    pub fn clear_loss_code(&mut self, carrier_id: &str) -> Result<(), StoreError> {
        diesel::delete(loss_codes::table.filter(loss_codes::carrier_id.eq(carrier_id)))
            .execute(self.conn)?;
        Ok(())
    }

    /// The carrier whose loss-report code has this SHA-256.
    pub fn carrier_by_loss_code(&mut self, hash: &[u8]) -> Result<Option<CarrierRow>, StoreError> {
        let id: Option<String> = loss_codes::table
            .filter(loss_codes::code_hash.eq(hash))
            .select(loss_codes::carrier_id)
            .first(self.conn)
            .optional()?;
        match id {
            Some(id) => self.carrier(&id),
            None => Ok(None),
        }
    }

    pub fn carrier_by_serial(
        &mut self,
        kind: CarrierKind,
        serial_number: &str,
    ) -> Result<Option<CarrierRow>, StoreError> {
        carriers::table
            .filter(carriers::kind.eq(kind.as_str()))
            .filter(carriers::serial_number.eq(serial_number))
            .select(CarrierDb::as_select())
            .first(self.conn)
            .optional()?
            .map(CarrierDb::typed)
            .transpose()
    }

    /// Writes every field of the carrier (its state and what goes with it).
    pub fn update_carrier(&mut self, c: &CarrierRow) -> Result<(), StoreError> {
        diesel::update(carriers::table.filter(carriers::id.eq(&c.id)))
            .set(CarrierDb::from_row(c))
            .execute(self.conn)?;
        Ok(())
    }

    pub fn carrier(&mut self, id: &str) -> Result<Option<CarrierRow>, StoreError> {
        carriers::table
            .filter(carriers::id.eq(id))
            .select(CarrierDb::as_select())
            .first(self.conn)
            .optional()?
            .map(CarrierDb::typed)
            .transpose()
    }

    pub fn carriers_of(&mut self, person_id: &str) -> Result<Vec<CarrierRow>, StoreError> {
        carriers::table
            .filter(carriers::person_id.eq(person_id))
            .order(carriers::created_at)
            .select(CarrierDb::as_select())
            .load(self.conn)?
            .into_iter()
            .map(CarrierDb::typed)
            .collect()
    }

    /// Every carrier, in id order, after `after`, at most `limit` (reconciliation).
    pub fn carriers_page(
        &mut self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<CarrierRow>, StoreError> {
        carriers::table
            .filter(carriers::id.gt(after))
            .order(carriers::id)
            .limit(limit)
            .select(CarrierDb::as_select())
            .load(self.conn)?
            .into_iter()
            .map(CarrierDb::typed)
            .collect()
    }

    /// Carriers in `state` whose deadline is at or before `now`.
    pub fn carriers_due(
        &mut self,
        state: CarrierState,
        now: i64,
        limit: i64,
    ) -> Result<Vec<CarrierRow>, StoreError> {
        carriers::table
            .filter(carriers::state.eq(state.as_str()))
            .filter(carriers::deadline.le(now))
            .order(carriers::deadline)
            .limit(limit)
            .select(CarrierDb::as_select())
            .load(self.conn)?
            .into_iter()
            .map(CarrierDb::typed)
            .collect()
    }

    /// Temporary cards linked to `original_id`.
    pub fn temporaries_of(&mut self, original_id: &str) -> Result<Vec<CarrierRow>, StoreError> {
        carriers::table
            .filter(carriers::original_id.eq(original_id))
            .select(CarrierDb::as_select())
            .load(self.conn)?
            .into_iter()
            .map(CarrierDb::typed)
            .collect()
    }

    /// The carrier a certificate is on (now or as history), if any.
    pub fn carrier_of_serial(&mut self, serial: &Serial) -> Result<Option<String>, StoreError> {
        Ok(carrier_certificates::table
            .filter(carrier_certificates::serial.eq(serial.to_string()))
            .select(carrier_certificates::carrier_id)
            .first(self.conn)
            .optional()?)
    }

    pub fn link_certificate(
        &mut self,
        serial: &Serial,
        carrier_id: &str,
        spki_sha256: &str,
    ) -> Result<(), StoreError> {
        diesel::insert_into(carrier_certificates::table)
            .values((
                carrier_certificates::serial.eq(serial.to_string()),
                carrier_certificates::carrier_id.eq(carrier_id),
                carrier_certificates::spki_sha256.eq(spki_sha256),
            ))
            .execute(self.conn)?;
        Ok(())
    }

    /// A carrier other than `carrier_id` with a certificate for the key whose
    /// SubjectPublicKeyInfo hashes to `spki_sha256`, if any.
    pub fn other_carrier_with_key(
        &mut self,
        spki_sha256: &str,
        carrier_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(carrier_certificates::table
            .filter(carrier_certificates::spki_sha256.eq(spki_sha256))
            .filter(carrier_certificates::carrier_id.ne(carrier_id))
            .select(carrier_certificates::carrier_id)
            .first::<String>(self.conn)
            .optional()?)
    }

    /// Releases a wiped pool card's certificates: they stay as its history, no longer as
    /// what it carries.
    pub fn release_certificates(&mut self, carrier_id: &str, at: i64) -> Result<(), StoreError> {
        diesel::update(
            carrier_certificates::table
                .filter(carrier_certificates::carrier_id.eq(carrier_id))
                .filter(carrier_certificates::released_at.is_null()),
        )
        .set(carrier_certificates::released_at.eq(at))
        .execute(self.conn)?;
        Ok(())
    }

    /// The certificates the carrier carries now (not those of a pool card's earlier
    /// holders).
    pub fn carrier_serials(&mut self, carrier_id: &str) -> Result<Vec<Serial>, StoreError> {
        carrier_certificates::table
            .filter(carrier_certificates::carrier_id.eq(carrier_id))
            .filter(carrier_certificates::released_at.is_null())
            .order(carrier_certificates::serial)
            .select(carrier_certificates::serial)
            .load::<String>(self.conn)
            .map_err(StoreError::from)
            .and_then(serials)
    }

    pub fn insert_approval(&mut self, a: &ApprovalRow) -> Result<(), StoreError> {
        diesel::insert_into(approvals::table)
            .values(ApprovalDb {
                id: a.id.clone(),
                kind: a.kind.as_str().to_owned(),
                carrier_id: a.carrier_id.clone(),
                person_id: a.person_id.clone(),
                requested_by: a.requested_by.clone(),
                requested_at: a.requested_at,
                subject: a.subject.clone(),
                state: a.state.as_str().to_owned(),
                decided_by: a.decided_by.clone(),
                decided_at: a.decided_at,
            })
            .execute(self.conn)?;
        Ok(())
    }

    pub fn approval(&mut self, id: &str) -> Result<Option<ApprovalRow>, StoreError> {
        approvals::table
            .filter(approvals::id.eq(id))
            .select(ApprovalDb::as_select())
            .first(self.conn)
            .optional()?
            .map(ApprovalDb::typed)
            .transpose()
    }

    pub fn approvals_pending(&mut self) -> Result<Vec<ApprovalRow>, StoreError> {
        approvals::table
            .filter(approvals::state.eq(ApprovalState::Pending.as_str()))
            .order(approvals::requested_at)
            .select(ApprovalDb::as_select())
            .load(self.conn)?
            .into_iter()
            .map(ApprovalDb::typed)
            .collect()
    }

    /// Pending approvals of `kind` asked for at or before `before` (at most 100).
    pub fn pending_approvals_before(
        &mut self,
        kind: ApprovalKind,
        before: i64,
    ) -> Result<Vec<ApprovalRow>, StoreError> {
        approvals::table
            .filter(approvals::state.eq(ApprovalState::Pending.as_str()))
            .filter(approvals::kind.eq(kind.as_str()))
            .filter(approvals::requested_at.le(before))
            .order(approvals::requested_at)
            .limit(100)
            .select(ApprovalDb::as_select())
            .load(self.conn)?
            .into_iter()
            .map(ApprovalDb::typed)
            .collect()
    }

    pub fn decide_approval(
        &mut self,
        id: &str,
        state: ApprovalState,
        by: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        diesel::update(approvals::table.filter(approvals::id.eq(id)))
            .set((
                approvals::state.eq(state.as_str()),
                approvals::decided_by.eq(by),
                approvals::decided_at.eq(at),
            ))
            .execute(self.conn)?;
        Ok(())
    }

    pub fn insert_bulk(&mut self, b: &BulkRow) -> Result<(), StoreError> {
        diesel::insert_into(bulk_revocations::table)
            .values(b)
            .execute(self.conn)?;
        Ok(())
    }

    pub fn bulk(&mut self, id: &str) -> Result<Option<BulkRow>, StoreError> {
        Ok(bulk_revocations::table
            .filter(bulk_revocations::id.eq(id))
            .select(BulkRow::as_select())
            .first(self.conn)
            .optional()?)
    }

    pub fn bulks_pending(&mut self) -> Result<Vec<BulkRow>, StoreError> {
        Ok(bulk_revocations::table
            .filter(bulk_revocations::state.eq(ApprovalState::Pending.as_str()))
            .order(bulk_revocations::requested_at)
            .select(BulkRow::as_select())
            .load(self.conn)?)
    }

    pub fn decide_bulk(
        &mut self,
        id: &str,
        state: ApprovalState,
        by: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        diesel::update(bulk_revocations::table.filter(bulk_revocations::id.eq(id)))
            .set((
                bulk_revocations::state.eq(state.as_str()),
                bulk_revocations::decided_by.eq(by),
                bulk_revocations::decided_at.eq(at),
            ))
            .execute(self.conn)?;
        Ok(())
    }
}

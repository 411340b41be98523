//! The audit trail as a hash chain (LoA3 K2.7: tamper-evident records of every action).
//! Each record's hash covers its contents and the previous record's hash, so an edited,
//! deleted or reordered record breaks the chain at a place [`Tx::verify_audit`] names. A
//! record is appended in the same transaction as the change it records, and what may be
//! recorded is an [`AuditEvent`]: the audit trail is an API, not log lines.

use diesel::prelude::*;
use sha2::Digest;

use crate::schema::{audit_checkpoints, audit_log};
use crate::{StoreError, Tx};

/// The hash before the first record.
pub use tessera_issuer_types::audit::GENESIS;

/// What can happen in the issuer, as the audit trail records it. The details are the
/// variant's fields as JSON, in this order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum AuditEvent {
    /// `init` made the CA: its token, keys and certificates.
    CaCreated {
        token: String,
        key_alg: String,
        root_key: String,
        root_sha256: String,
        issuing_sha256: String,
        ocsp_sha256: String,
    },
    /// `init --external-root`: keys made, the issuing CA's request written for the root
    /// ceremony.
    CaRequested {
        token: String,
        key_alg: String,
        offline_root_sha256: String,
        issuing_csr_sha256: String,
    },
    ApiTokenCreated {
        name: String,
        role: String,
    },
    /// The intent to sign, committed before the token signs.
    CertificateIntent {
        serial: String,
        profile: String,
        subject: String,
        /// SHA-256 of the TBS certificate the token will sign.
        tbs_sha256: String,
        /// How the requester proved it holds the key: `csr`, `attestation`,
        /// `tpm-attestation`, `own-key` or `none`.
        proof: String,
        /// What the proof rested on, where it is worth keeping: for a TPM attestation the
        /// endorsement key certificate's SHA-256, the attestation key's and the key's TPM
        /// names and the TPM's firmware version, so that certificates can be found again
        /// when a TPM model or firmware proves weak. Absent in older records.
        #[serde(skip_serializing_if = "Option::is_none")]
        evidence: Option<String>,
    },
    CertificateIssued {
        serial: String,
        subject: String,
        tbs_sha256: String,
    },
    CertificateRevoked {
        serial: String,
        reason: String,
    },
    /// A certificate for one of the issuer's own keys (OCSP responder, audit signer, HTTPS
    /// server), at `init` or renewed.
    OwnCertificateIssued {
        role: String,
        serial: String,
        sha256: String,
        not_after: i64,
    },
    /// A signed checkpoint of the chain up to the record before this one.
    AuditCheckpoint {
        records: u64,
        head: String,
    },
    HoldReleased {
        serial: String,
    },
    OfficerCreated {
        officer: String,
        roles: String,
    },
    OfficerTokenCreated {
        officer: String,
        token_id: String,
        expires_at: i64,
    },
    OfficerTokenRevoked {
        officer: String,
        token_id: String,
    },
    /// An officer removed (or their person record ended): every token revoked.
    OfficerDisabled {
        officer: String,
    },
    /// The bootstrap token was used for the last time: an administrator exists.
    BootstrapSpent {
        administrator: String,
    },
    PersonRegistered {
        person: String,
        employee_number: String,
    },
    /// An in-person identity check (K5.10); the officer is the record's actor.
    PersonProofed {
        person: String,
        proofing: String,
        document_type: String,
        issuing_country: String,
        place: String,
    },
    PersonEnded {
        person: String,
    },
    /// An ENDED person employed again (the HR feed set them active): REGISTERED, to be
    /// proofed again; their old carriers stay revoked.
    PersonRehired {
        person: String,
    },
    /// The HR feed removed the person (SCIM DELETE): ended if they were not, and hidden
    /// from the feed; the record stays.
    PersonRemovedFromFeed {
        person: String,
    },
    /// An import checked against the register without applying it (a dry run, or a
    /// batch with bad rows).
    PeopleImportChecked {
        rows: u64,
        errors: u64,
    },
    /// HR changed a registered person's names, e-mail, UPN or protection (`fields`).
    PersonUpdated {
        person: String,
        fields: String,
    },
    CarrierRegistered {
        carrier: String,
        kind: String,
        serial_number: String,
    },
    /// A carrier's state changed; its certificates' changes are their own records in the
    /// same transaction.
    CarrierChanged {
        carrier: String,
        from: String,
        to: String,
        /// The suspension or revocation reason, the verification, or the receipt.
        why: String,
        /// The suspension's (or temporary card's) deadline, 0 if none.
        deadline: i64,
    },
    /// A four-eyes request; `terms_version` is what the applicant accepted (K5.6).
    ApprovalRequested {
        approval: String,
        kind: String,
        carrier: String,
        person: String,
        terms_version: String,
    },
    /// A card's PUK sealed under the token's escrow key at personalisation.
    PukEscrowed {
        carrier: String,
    },
    /// The service desk asked, for the holder, to release a card's PUK.
    PukReleaseRequested {
        approval: String,
        carrier: String,
        verification: String,
    },
    /// A card's PUK released to the card's own channel (proved by the card's
    /// card-authentication key, certificate `certificate`).
    PukReleased {
        approval: String,
        carrier: String,
        certificate: String,
    },
    ApprovalDecided {
        approval: String,
        decision: String,
        kind: String,
        carrier: String,
        person: String,
    },
    /// A TPM virtual card renewed its certificates without an officer, proved by the
    /// signature of its authentication key (certificate `signed_by`, used after the PIN);
    /// `serials` are the new certificates, good at once.
    CarrierRenewed {
        carrier: String,
        signed_by: String,
        serials: Vec<String>,
    },
    /// The card confirmed, with its new authentication key, that it carries the renewed
    /// certificates `kept`; the carrier's others were revoked as superseded.
    RenewalConfirmed {
        carrier: String,
        kept: Vec<String>,
        superseded: Vec<String>,
    },
    /// A bulk revocation asked for (it waits for a second officer).
    BulkRevocationRequested {
        bulk: String,
        reason: String,
        carriers: u64,
        /// SHA-256 of the stored list of carriers and holders.
        carriers_sha256: String,
    },
    /// A bulk revocation decided; with approval, each carrier's revocation is its own
    /// record in the same transaction.
    BulkRevocationDecided {
        bulk: String,
        decision: String,
        revoked: u64,
    },
    /// An officer signed in to the admin portal (`session`: the first bytes of the
    /// session cookie's SHA-256, to match its end).
    PortalSignedIn {
        officer: String,
        credential: String,
        session: String,
    },
    /// A portal session ended: signed out, idle, at its time limit, or its credential no
    /// longer good.
    PortalSessionEnded {
        officer: String,
        session: String,
        reason: String,
    },
    /// An officer registered a passkey for the portal, in a session begun with the card
    /// whose certificate it stays bound to.
    PasskeyRegistered {
        officer: String,
        passkey: String,
        label: String,
        certificate: String,
        /// The authenticator's model (AAGUID), as its attestation proved it.
        aaguid: String,
    },
    /// An officer's passkey removed (by the officer or an administrator).
    PasskeyRemoved {
        officer: String,
        passkey: String,
    },
    /// An auditor or administrator exported the audit trail from record `after` on
    /// (K2.9: access to the evidence is itself logged).
    AuditExported {
        after: i64,
    },
    /// An action the actor was not allowed (K2.9: refused attempts are evidence too).
    Refused {
        action: String,
        reason: String,
    },
}

impl AuditEvent {
    /// The action name stored beside the details.
    pub fn action(&self) -> &'static str {
        match self {
            Self::CaCreated { .. } => "ca.created",
            Self::CaRequested { .. } => "ca.requested",
            Self::ApiTokenCreated { .. } => "api_token.created",
            Self::CertificateIntent { .. } => "certificate.intent",
            Self::CertificateIssued { .. } => "certificate.issued",
            Self::CertificateRevoked { .. } => "certificate.revoked",
            Self::OwnCertificateIssued { .. } => "own_certificate.issued",
            Self::AuditCheckpoint { .. } => "audit.checkpoint",
            Self::HoldReleased { .. } => "certificate.hold_released",
            Self::OfficerCreated { .. } => "officer.created",
            Self::OfficerTokenCreated { .. } => "officer.token_created",
            Self::OfficerTokenRevoked { .. } => "officer.token_revoked",
            Self::OfficerDisabled { .. } => "officer.disabled",
            Self::BootstrapSpent { .. } => "officer.bootstrap_spent",
            Self::PersonRegistered { .. } => "person.registered",
            Self::PersonProofed { .. } => "person.proofed",
            Self::PersonEnded { .. } => "person.ended",
            Self::PersonRehired { .. } => "person.rehired",
            Self::PersonRemovedFromFeed { .. } => "person.removed_from_feed",
            Self::PersonUpdated { .. } => "person.updated",
            Self::PeopleImportChecked { .. } => "person.import_checked",
            Self::CarrierRegistered { .. } => "carrier.registered",
            Self::CarrierChanged { .. } => "carrier.changed",
            Self::ApprovalRequested { .. } => "approval.requested",
            Self::ApprovalDecided { .. } => "approval.decided",
            Self::PukEscrowed { .. } => "carrier.puk_escrowed",
            Self::PukReleaseRequested { .. } => "carrier.puk_release_requested",
            Self::PukReleased { .. } => "carrier.puk_released",
            Self::CarrierRenewed { .. } => "carrier.renewed",
            Self::RenewalConfirmed { .. } => "carrier.renewal_confirmed",
            Self::Refused { .. } => "refused",
            Self::PortalSignedIn { .. } => "portal.signed_in",
            Self::PortalSessionEnded { .. } => "portal.session_ended",
            Self::PasskeyRegistered { .. } => "portal.passkey_registered",
            Self::PasskeyRemoved { .. } => "portal.passkey_removed",
            Self::AuditExported { .. } => "audit.exported",
            Self::BulkRevocationRequested { .. } => "bulk_revocation.requested",
            Self::BulkRevocationDecided { .. } => "bulk_revocation.decided",
        }
    }

    fn details(&self) -> String {
        // Plain strings: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One audit record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Insertable, Selectable)]
#[diesel(table_name = audit_log)]
pub struct Record {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub details: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

pub use tessera_issuer_types::audit::record_hash;

/// What [`Tx::verify_audit`] found wrong first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Tamper {
    #[error("audit record {0} was edited: its hash does not match its contents")]
    Edited(i64),
    #[error("audit record {found_at} was moved: it was written as record {written_as} (records reordered)")]
    Reordered { found_at: i64, written_as: i64 },
    #[error("audit record {expected} is missing: the records jump from {before} to {found}")]
    Missing {
        expected: i64,
        before: i64,
        found: i64,
    },
    #[error(
        "audit record {0} does not follow the record before it: the chain is broken there \
         (records were deleted, reordered or rewritten)"
    )]
    ChainBroken(i64),
    /// The chain is intact in itself but contradicts what anchors it: a signed
    /// checkpoint, or the head hash expected.
    #[error("{0}")]
    Anchor(String),
}

/// A verified chain: how many records and the head hash to anchor elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub head: Vec<u8>,
}

/// How far from its place a moved record is looked for when its hash does not match.
const MOVE_SEARCH: i64 = 1000;

impl Tx<'_> {
    /// Appends a record. Call it inside the [`crate::Store::write`] that makes the change.
    pub fn audit(
        &mut self,
        actor: &str,
        event: &AuditEvent,
        at: i64,
    ) -> Result<Record, StoreError> {
        let last: Option<(i64, Vec<u8>)> = audit_log::table
            .select((audit_log::seq, audit_log::hash))
            .order(audit_log::seq.desc())
            .first(self.conn)
            .optional()?;
        let (seq, prev) = match last {
            Some((seq, hash)) => (seq + 1, hash),
            None => (1, GENESIS.to_vec()),
        };
        let (action, details) = (event.action(), event.details());
        let record = Record {
            seq,
            at,
            actor: actor.to_owned(),
            action: action.to_owned(),
            hash: record_hash(&prev, seq, at, actor, action, &details),
            details,
            prev_hash: prev,
        };
        diesel::insert_into(audit_log::table)
            .values(&record)
            .execute(self.conn)?;
        Ok(record)
    }

    /// Appends several records in order (one look at the chain's head, then the inserts):
    /// for batches such as an HR import, where each person still gets a record of their
    /// own.
    pub fn audit_many(
        &mut self,
        actor: &str,
        events: &[AuditEvent],
        at: i64,
    ) -> Result<(), StoreError> {
        let last: Option<(i64, Vec<u8>)> = audit_log::table
            .select((audit_log::seq, audit_log::hash))
            .order(audit_log::seq.desc())
            .first(self.conn)
            .optional()?;
        let (mut seq, mut prev) = match last {
            Some((seq, hash)) => (seq + 1, hash),
            None => (1, GENESIS.to_vec()),
        };
        let mut records = Vec::with_capacity(events.len());
        for event in events {
            let (action, details) = (event.action(), event.details());
            let hash = record_hash(&prev, seq, at, actor, action, &details);
            records.push(Record {
                seq,
                at,
                actor: actor.to_owned(),
                action: action.to_owned(),
                hash: hash.clone(),
                details,
                prev_hash: std::mem::replace(&mut prev, hash),
            });
            seq += 1;
        }
        // One multi-row INSERT per slice (a statement's bind parameters are bounded: SQLite
        // 32 766), on the backend's own connection: the two-backend connection does not
        // batch.
        for chunk in records.chunks(1000) {
            let insert = diesel::insert_into(audit_log::table).values(chunk);
            match &mut *self.conn {
                crate::Conn::Postgresql(c) => insert.execute(c)?,
                crate::Conn::Sqlite(c) => insert.execute(c)?,
            };
        }
        Ok(())
    }

    /// Up to `limit` records after `after`, in order.
    pub fn audit_page(&mut self, after: i64, limit: i64) -> Result<Vec<Record>, StoreError> {
        Ok(audit_log::table
            .filter(audit_log::seq.gt(after))
            .select(Record::as_select())
            .order(audit_log::seq.asc())
            .limit(limit)
            .load(self.conn)?)
    }

    /// Up to `limit` records before `before` (all when `None`), newest first; only those
    /// whose action starts with `action` and whose actor is `actor`, where given.
    pub fn audit_recent(
        &mut self,
        before: Option<i64>,
        limit: i64,
        action: Option<&str>,
        actor: Option<&str>,
    ) -> Result<Vec<Record>, StoreError> {
        // Planned for the values given (PostgreSQL; only for this transaction: call it in a
        // snapshot), so the action-prefix and actor indexes serve the filters.
        if matches!(self.conn, crate::Conn::Postgresql(_)) {
            diesel::sql_query("SET LOCAL plan_cache_mode = force_custom_plan")
                .execute(self.conn)?;
        }
        let mut q = audit_log::table
            .filter(audit_log::seq.lt(before.unwrap_or(i64::MAX)))
            .select(Record::as_select())
            .order(audit_log::seq.desc())
            .limit(limit)
            .into_boxed();
        if let Some(action) = action.filter(|a| !a.is_empty()) {
            // A whole action name (`person.registered`, one the trail holds) is matched
            // exactly, newest first along its index; anything else (`person`, `carrier.`,
            // `portal.passkey`) by prefix, which for a large family costs a sort.
            let whole = action.contains('.')
                && !action.ends_with('.')
                && diesel::select(diesel::dsl::exists(
                    audit_log::table.filter(audit_log::action.eq(action.to_owned())),
                ))
                .get_result::<bool>(self.conn)?;
            if whole {
                q = q.filter(audit_log::action.eq(action.to_owned()));
            } else {
                let prefix = format!("{}%", like_escape(action));
                q = q.filter(audit_log::action.like(prefix).escape('\\'));
            }
        }
        if let Some(actor) = actor.filter(|a| !a.is_empty()) {
            // An actor is named whole (its index serves it).
            q = q.filter(audit_log::actor.eq(actor.to_owned()));
        }
        Ok(q.load(self.conn)?)
    }

    /// Every record, in order.
    pub fn audit_records(&mut self) -> Result<Vec<Record>, StoreError> {
        Ok(audit_log::table
            .select(Record::as_select())
            .order(audit_log::seq.asc())
            .load(self.conn)?)
    }

    /// Checks the whole chain in order.
    pub fn verify_audit(&mut self) -> Result<Result<Verified, Tamper>, StoreError> {
        self.verify_audit_after(&Verified {
            records: 0,
            head: GENESIS.to_vec(),
        })
    }

    /// Checks the records after a part of the chain already verified (`records` long,
    /// ending in `head`); the answer covers the whole chain from the first record.
    pub fn verify_audit_after(
        &mut self,
        verified: &Verified,
    ) -> Result<Result<Verified, Tamper>, StoreError> {
        let after = i64::try_from(verified.records).unwrap_or(i64::MAX);
        let records: Vec<Record> = audit_log::table
            .filter(audit_log::seq.gt(after))
            .select(Record::as_select())
            .order(audit_log::seq.asc())
            .load(self.conn)?;
        let mut prev = verified.head.clone();
        let mut prev_seq = after;
        for r in &records {
            if r.seq != prev_seq + 1 {
                return Ok(Err(Tamper::Missing {
                    expected: prev_seq + 1,
                    before: prev_seq,
                    found: r.seq,
                }));
            }
            if record_hash(&r.prev_hash, r.seq, r.at, &r.actor, &r.action, &r.details) != r.hash {
                // Intact contents under another sequence number mean the record was moved.
                let moved_from = (r.seq.saturating_sub(MOVE_SEARCH)
                    ..=r.seq.saturating_add(MOVE_SEARCH))
                    .filter(|s| *s != r.seq && *s > 0)
                    .find(|s| {
                        record_hash(&r.prev_hash, *s, r.at, &r.actor, &r.action, &r.details)
                            == r.hash
                    });
                return Ok(Err(match moved_from {
                    Some(written_as) => Tamper::Reordered {
                        found_at: r.seq,
                        written_as,
                    },
                    None => Tamper::Edited(r.seq),
                }));
            }
            if r.prev_hash != prev {
                return Ok(Err(Tamper::ChainBroken(r.seq)));
            }
            prev.clone_from(&r.hash);
            prev_seq = r.seq;
        }
        Ok(Ok(Verified {
            records: u64::try_from(prev_seq).unwrap_or(0),
            head: prev,
        }))
    }
}

/// A stored checkpoint: the record count it covers and the signed JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub records: i64,
    pub at: i64,
    pub head: String,
    pub signed: String,
}

impl Tx<'_> {
    /// Stores a signed checkpoint of the first `records` records, and appends its audit
    /// record (after them).
    pub fn insert_checkpoint(&mut self, c: &StoredCheckpoint) -> Result<(), StoreError> {
        diesel::insert_into(audit_checkpoints::table)
            .values((
                audit_checkpoints::records.eq(c.records),
                audit_checkpoints::at.eq(c.at),
                audit_checkpoints::head.eq(&c.head),
                audit_checkpoints::signed.eq(&c.signed),
            ))
            .execute(self.conn)?;
        self.audit(
            "issuer",
            &AuditEvent::AuditCheckpoint {
                records: u64::try_from(c.records).unwrap_or(0),
                head: c.head.clone(),
            },
            c.at,
        )?;
        Ok(())
    }

    /// Every stored checkpoint, oldest first.
    pub fn checkpoints(&mut self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let rows: Vec<(i64, i64, String, String)> = audit_checkpoints::table
            .select((
                audit_checkpoints::records,
                audit_checkpoints::at,
                audit_checkpoints::head,
                audit_checkpoints::signed,
            ))
            .order(audit_checkpoints::records.asc())
            .load(self.conn)?;
        Ok(rows
            .into_iter()
            .map(|(records, at, head, signed)| StoredCheckpoint {
                records,
                at,
                head,
                signed,
            })
            .collect())
    }
}

/// SHA-256, hex: how audit records name the documents they are about.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `text` with LIKE's wildcards (and the escape character) escaped by `\`.
pub(crate) fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

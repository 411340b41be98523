//! The request and response bodies of the issuer's HTTP API (`/api/v1`), as the OpenAPI
//! document describes them.

use crate::{ErrorCode, ProfileName, RevocationReason, Serial, Subject};

/// `POST /api/v1/certificates`. Exactly one of `csr`, `attestation` and `public_key`
/// carries the key to certify.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    pub profile: ProfileName,
    pub subject: Subject,
    /// A PKCS#10 request (PEM), signed by the key: proof that the requester holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
    /// A PIV attestation of a key generated on the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<Attestation>,
    /// A bare SubjectPublicKeyInfo (PEM): no proof; only for profiles that allow it, and
    /// audited as such.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Days of validity; the profile's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity_days: Option<u32>,
}

/// A PIV attestation in Yubico's format: the certificate the card's attestation key (`F9`)
/// made for the key, and the card's attestation certificate (object `5FFF01`) that signed
/// it, both PEM; the issuer chains them to a manufacturer CA it trusts and checks the slot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    pub certificate: String,
    pub intermediate: String,
}

/// The answer to an issuance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IssueResponse {
    pub serial: Serial,
    /// The certificate, PEM.
    pub certificate: String,
}

/// `POST /api/v1/certificates/{serial}/revocation`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    pub reason: RevocationReason,
}

/// The answer to a revocation or the release of a hold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RevocationResponse {
    pub serial: Serial,
    /// `revoked` or `good`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RevocationReason>,
}

/// Every error answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

// The registration authority's bodies (`/api/v1/officers`, `/people`, `/carriers`,
// `/approvals`). Times are Unix seconds; dates (document expiry, birth date) YYYY-MM-DD.

use crate::lifecycle::{
    ApprovalKind, ApprovalState, CarrierKind, CarrierRevokeReason, CarrierState, OfficerRole,
    PersonState, SuspendReason,
};

/// `POST /api/v1/officers`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOfficer {
    /// A short handle (`anna.berg`): letters, digits, `.`, `-`, `_`.
    pub id: String,
    pub display_name: String,
    pub roles: Vec<OfficerRole>,
    /// The officer's own person record, if they have one: they never act on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person_id: Option<String>,
}

/// An officer as the API shows them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Officer {
    pub id: String,
    pub display_name: String,
    pub roles: Vec<OfficerRole>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person_id: Option<String>,
    pub created_at: i64,
    /// When the officer was disabled (their tokens revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<i64>,
    /// In the answer to creating the officer only, once: the officer's first token (the
    /// bootstrap token is spent by creating the first administrator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token: Option<TokenIssued>,
}

/// `GET /api/v1/certificates/{serial}`: a certificate the issuer made, for the station that
/// writes it to the card and for anyone who must check it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertificateInfo {
    pub serial: String,
    pub profile: String,
    /// The certificate, PEM.
    pub pem: String,
}

/// `GET /api/v1/certificates/{serial}/holder`: who a certificate on a live carrier
/// belongs to, for the identity provider logging its holder in. Only what the login and
/// the org-person attributes need: no identity number, no directory data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    pub serial: String,
    pub person_id: String,
    pub employee_number: String,
    pub given_name: String,
    pub family_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub person_state: PersonState,
    pub carrier_id: String,
    pub carrier_kind: CarrierKind,
    pub carrier_state: CarrierState,
    /// Whether the certificate itself is good now (issued, not revoked, not on hold): the
    /// status over the authenticated link, which an attacker who blocks OCSP cannot
    /// replace with an old CRL.
    pub certificate_good: bool,
    /// The status feed's head in the same reading: a follower that has handled events
    /// after it knows this answer may be older than them.
    pub feed_head: i64,
}

/// `GET /api/v1/status-feed?after=N&limit=M`: the certificate status changes after
/// sequence number `after`, in order (the issuer's outbox), for followers that must act
/// on a revocation within seconds (the identity provider ends the holder's sessions).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatusFeed {
    /// The newest sequence number at the time of reading: a follower that has handled
    /// every event up to it is current.
    pub head: i64,
    pub events: Vec<StatusEvent>,
}

/// One status change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatusEvent {
    pub seq: i64,
    /// When it was recorded (seconds since the epoch).
    pub at: i64,
    /// `issued`, `revoked`, `held` or `released` (a hold lifted).
    pub change: String,
    pub serial: String,
}

/// `POST /api/v1/officers/{id}/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub label: String,
    /// Days until it expires (default 30, at most 365).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_days: Option<u32>,
}

/// A token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub label: String,
    pub created_at: i64,
    pub expires_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

/// A token just made: shown once, stored only as a hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenIssued {
    /// The token's id (for revoking it), not the token.
    pub id: String,
    pub token: String,
    pub expires_at: i64,
}

/// Name, birth date and nationality of a person without a Swedish number (K5.7).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonResident {
    pub birth_date: String,
    /// ISO 3166-1 alpha-2.
    pub nationality: String,
}

/// `POST /api/v1/people`: a person from HR. At most one of `identity_number` and
/// `non_resident`; with neither, the registration officer records the document's at
/// proofing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPerson {
    pub employee_number: String,
    pub given_name: String,
    pub family_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    /// Personal identity or coordination number, 12 digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_resident: Option<NonResident>,
    /// A protected identity (K5.9): only registration officers and administrators read
    /// the record.
    #[serde(default)]
    pub protected_identity: bool,
    /// The person's Active Directory SID (`S-1-5-21-…`), which the authentication
    /// certificate carries for Windows strong certificate mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_sid: Option<String>,
}

/// `POST /api/v1/people/import`: a batch of people from HR (at most 5,000), all applied
/// or none. A person already registered under the employee number is updated (names,
/// e-mail, UPN, protected identity) or left as it is: importing a file twice changes
/// nothing the second time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    pub people: Vec<NewPerson>,
    /// Check and report only; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What an import did (or, with errors or a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportReport {
    pub dry_run: bool,
    /// Whether the batch was applied (no errors, not a dry run).
    pub applied: bool,
    pub created: u32,
    pub updated: u32,
    pub unchanged: u32,
    /// Every row that is not acceptable; a batch with any is applied not at all.
    pub errors: Vec<RowError>,
    /// The rows that create or change a person (unchanged rows are only counted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<RowChange>,
}

/// One row of an import that creates or changes a person.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RowChange {
    /// The row's index in the batch, from 0.
    pub index: u32,
    pub employee_number: String,
    /// `create` or `update`.
    pub kind: String,
    /// For an update, the names of the fields that change (their values are in the
    /// audit record).
    #[serde(default)]
    pub fields: String,
}

/// One unacceptable row of an import.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RowError {
    /// The row's index in the batch, from 0.
    pub index: u32,
    pub employee_number: String,
    pub message: String,
}

/// A person as the API shows them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Person {
    pub id: String,
    pub employee_number: String,
    pub given_name: String,
    pub family_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_resident: Option<NonResident>,
    pub protected_identity: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_sid: Option<String>,
    pub state: PersonState,
    /// When the last identity proofing was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proofed_at: Option<i64>,
    pub created_at: i64,
}

/// `POST /api/v1/people/{id}/proofing`: an in-person identity check (K5.10). The officer
/// and the time are the server's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProofing {
    /// `passport`, `national_id_card`, `drivers_licence` or `service_id_card`.
    pub document_type: String,
    pub document_number: String,
    /// ISO 3166-1 alpha-2.
    pub issuing_country: String,
    /// YYYY-MM-DD; the document must be valid on the day of the check.
    pub document_expiry: String,
    pub place: String,
    /// The personal identity or coordination number the document shows, read at every
    /// check (this or `non_resident` is required): recorded when the register has no
    /// identity data for the person (HR did not send it), else it must match the
    /// register's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_number: Option<String>,
    /// The non-resident data set the document shows (K5.7), as for `identity_number`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_resident: Option<NonResident>,
}

/// `POST /api/v1/carriers`: a blank carrier into stock.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCarrier {
    pub kind: CarrierKind,
    /// The card's serial number (printed or read from the chip).
    pub serial_number: String,
}

/// A carrier as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Carrier {
    pub id: String,
    pub kind: CarrierKind,
    pub serial_number: String,
    pub state: CarrierState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend_reason: Option<SuspendReason>,
    /// When a suspension turns into a revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_reason: Option<CarrierRevokeReason>,
    /// A temporary card's original carrier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_id: Option<String>,
    /// A temporary card's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<i64>,
    pub certificates: Vec<Serial>,
    /// Only in the activation's answer: the holder's code for reporting the card lost
    /// (`POST /api/v1/loss-report`), printed on the hand-over receipt; stored as a hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_report_code: Option<String>,
}

/// `POST /api/v1/loss-report`: the holder reports their card lost, any time, with the
/// code from the hand-over receipt (LoA3 K6.8); no officer token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossReport {
    pub code: String,
}

/// The answer to a loss report: the card is suspended until the deadline, when it is
/// revoked unless the holder finds it and an officer re-activates it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LossReported {
    pub serial_number: String,
    pub suspended_until: i64,
}

/// `POST /api/v1/carriers/{id}/assignment`: bind a carrier to a proofed person and ask a
/// second officer to approve its issuance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    pub person_id: String,
    /// The version of the terms the applicant accepted (K5.6), recorded with the time.
    pub terms_version: String,
}

/// `POST /api/v1/people/{id}/temporary-card`: a temporary card for a holder who forgot
/// theirs; a second officer approves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemporaryRequest {
    /// A temporary card in stock.
    pub carrier_id: String,
    /// The card it stands in for (needed when the holder has more than one active card).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_id: Option<String>,
    /// Days from the approval (default 1, at most the policy's maximum, 14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
}

/// `POST /api/v1/people/{id}/substitute-card`: a pool card bound to a substitute (a
/// proofed person) for a bounded period; authentication only; a second officer approves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubstituteRequest {
    /// A substitute card in stock.
    pub carrier_id: String,
    /// Days (at most the policy's maximum, 90).
    pub days: u32,
}

/// `POST /api/v1/carriers/{id}/retirement`: a revoked or expired carrier handed back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetireRequest {
    /// The card was wiped and goes back to stock (pool cards: temporary and substitute);
    /// otherwise it was destroyed.
    #[serde(default)]
    pub restock: bool,
}

/// A four-eyes approval.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Approval {
    pub id: String,
    pub kind: ApprovalKind,
    pub carrier_id: String,
    pub person_id: String,
    pub requested_by: String,
    pub requested_at: i64,
    /// What the certificates will say, fixed at the request: what the approver approves.
    pub subject: Subject,
    pub state: ApprovalState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// What else the approver must know (a PUK release: how the holder was verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// In the answer to approving a PUK release only, once: the approver's release code,
    /// for the holder (the requester got the other).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_code: Option<String>,
}

/// One key to certify on a carrier, with its proof of possession.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierKey {
    pub profile: ProfileName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<Attestation>,
    /// A TPM attestation (TPM virtual cards: the only proof their keys take).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmKeyProof>,
}

/// `POST /api/v1/carriers/{id}/tpm-challenge`: the TPM virtual card's agent asks for a
/// credential for its attestation key, encrypted to the TPM's endorsement key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmChallengeRequest {
    /// The endorsement key's certificate (PEM), as the TPM's manufacturer wrote it in NV.
    pub ek_certificate: String,
    /// The attestation key's `TPMT_PUBLIC`, hex.
    pub ak_public: String,
}

/// The answer: what `TPM2_ActivateCredential` takes, the nonce to certify keys over, and
/// the challenge to send back with the keys (opaque, sealed by the issuer, valid 10
/// minutes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TpmChallenge {
    pub challenge: String,
    /// `TPM2B_ID_OBJECT` content, hex.
    pub credential: String,
    /// `TPM2B_ENCRYPTED_SECRET` content, hex.
    pub encrypted_secret: String,
    /// The qualifying data for `TPM2_Certify`, hex.
    pub nonce: String,
}

/// A key's TPM attestation: the challenge it answers, the secret the TPM recovered from
/// the credential, the key's `TPMT_PUBLIC`, and the attestation key's `TPM2_Certify` of it
/// (`TPMS_ATTEST` and `TPMT_SIGNATURE`), all hex but the challenge.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmKeyProof {
    pub challenge: String,
    pub secret: String,
    pub public: String,
    pub attest: String,
    pub signature: String,
    /// The `TPMS_NV_PUBLIC` of the PIN index the key's policy is `PolicySecret` on, hex:
    /// required for every key used through a policy (all but a PIN-less card
    /// authentication key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_index: Option<String>,
}

/// `POST /api/v1/carriers/{id}/renewal`: a TPM virtual card renews its certificates before
/// they expire, without an officer: new keys in the same TPM (proven as at enrolment, with
/// a challenge from `POST /api/v1/carriers/{id}/renewal-challenge`), the request signed by
/// the card's authentication key (9A), which the card uses only after its PIN. The new
/// certificates are good at once; the old ones stay good until the card confirms it
/// carries the new ones ([`RenewalConfirmation`]) or they expire.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewalRequest {
    /// One key per profile the card has a good certificate for, each with its `tpm` proof.
    pub keys: Vec<CarrierKey>,
    /// `ecdsa-with-SHA256` (P-256), `ecdsa-with-SHA384` (P-384) or
    /// `sha256WithRSAEncryption`.
    pub algorithm: String,
    /// Base64: the authentication key's signature over [`renewal_message`].
    pub signature: String,
}

/// What the card's authentication key signs to renew: a domain label, the carrier, the
/// issuer's sealed challenge (which binds the TPM's attestation key and nonce) and each
/// new key's profile and TPM public area, so a signature serves these keys only.
pub fn renewal_message(carrier_id: &str, keys: &[CarrierKey]) -> Vec<u8> {
    let mut m = format!("tessera renewal v1\n{carrier_id}\n");
    for k in keys {
        let (challenge, public) = k
            .tpm
            .as_ref()
            .map(|t| (t.challenge.as_str(), t.public.as_str()))
            .unwrap_or_default();
        m.push_str(&format!("{} {challenge} {public}\n", k.profile));
    }
    m.into_bytes()
}

/// The answer to a renewal: the new certificates (PEM), for the card's certificate objects.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Renewed {
    pub carrier: Carrier,
    pub certificates: Vec<CertificateInfo>,
}

/// `POST /api/v1/carriers/{id}/renewal-confirmation`: the card carries the renewed
/// certificates; every other certificate of the carrier is revoked as superseded. Signed
/// by the new authentication key over [`renewal_confirmation_message`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewalConfirmation {
    /// The serials the card carries now (the renewal's), one of them its authentication
    /// certificate.
    pub serials: Vec<String>,
    pub algorithm: String,
    pub signature: String,
}

/// What the new authentication key signs to confirm a renewal.
pub fn renewal_confirmation_message(carrier_id: &str, serials: &[String]) -> Vec<u8> {
    let mut m = format!("tessera renewal confirmation v1\n{carrier_id}\n");
    for s in serials {
        m.push_str(s);
        m.push('\n');
    }
    m.into_bytes()
}

/// `POST /api/v1/carriers/{id}/keys`: the carrier's keys, generated on it; certified from
/// the person's record, on hold until activation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysRequest {
    pub keys: Vec<CarrierKey>,
    /// The PUK the personalisation set on the card (6 to 8 printable ASCII characters):
    /// sealed at once under the issuer's token key, never shown again, released only to
    /// the card's own channel for a PIN unblock (LIFECYCLE.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub puk: Option<String>,
}

/// `POST /api/v1/carriers/{id}/unblock`: the holder asks the service desk to unblock
/// their PIN; a second officer approves the release of the card's PUK.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnblockRequest {
    /// How the desk verified the holder.
    pub verification: crate::lifecycle::HolderVerification,
}

/// An unblock request: the approval it waits for, and the release code for the holder's
/// agent (shown once; with an approval and the card itself it releases the PUK).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnblockRequested {
    pub approval: Approval,
    pub release_code: String,
}

/// `POST /api/v1/carriers/{id}/puk-release`: the card's channel (the agent) asks for the
/// PUK, proving the card is present with its card-authentication key (9E, no PIN needed):
/// `signature` is over [`puk_release_message`], base64.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PukReleaseRequest {
    pub approval_id: String,
    /// The requester's release code.
    pub release_code: String,
    /// The approver's release code.
    pub approval_code: String,
    /// `ecdsa-with-SHA256` (P-256), `ecdsa-with-SHA384` (P-384) or
    /// `sha256WithRSAEncryption`.
    pub algorithm: String,
    pub signature: String,
}

/// The released PUK, for the channel that writes it to the card (RESET RETRY COUNTER).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PukReleased {
    pub puk: String,
}

/// What the card's card-authentication key signs to have its PUK released: a domain
/// label, the approval and the carrier, so a signature serves one release only.
pub fn puk_release_message(approval_id: &str, carrier_id: &str) -> Vec<u8> {
    format!("tessera puk release v1\n{approval_id}\n{carrier_id}\n").into_bytes()
}

/// `POST /api/v1/carriers/{id}/puk-rotation`: after the reset, the card's channel sets a new
/// PUK on the card and escrows it, so the released one opens nothing any more. The same
/// codes as the release; the card signs [`puk_rotation_message`], which binds the new
/// PUK's digest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PukRotation {
    pub approval_id: String,
    pub release_code: String,
    pub approval_code: String,
    pub new_puk: String,
    pub algorithm: String,
    pub signature: String,
}

/// What the card's card-authentication key signs to escrow a new PUK: the approval, the
/// carrier and the new PUK's SHA-256 (hex).
pub fn puk_rotation_message(approval_id: &str, carrier_id: &str, new_puk: &str) -> Vec<u8> {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(new_puk.as_bytes()));
    format!("tessera puk rotation v1\n{approval_id}\n{carrier_id}\n{digest}\n").into_bytes()
}

/// `POST /api/v1/carriers/{id}/activation`: the in-person hand-over (K6.7).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    /// The signed receipt's reference (scan id, or the receipt's SHA-256).
    pub receipt: String,
}

/// `POST /api/v1/carriers/{id}/suspension`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuspendRequest {
    pub reason: SuspendReason,
    /// Days until the suspension becomes a revocation (1 to the policy's maximum, 30).
    pub days: u32,
}

/// `DELETE /api/v1/carriers/{id}/suspension` body: how the holder was re-verified
/// (eIDAS 2015/1502 §2.2.3: reactivation only if the original assurance still holds).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    /// `in_person` or `pin` (the holder presented the card and its PIN).
    pub verification: String,
}

/// `POST /api/v1/carriers/{id}/revocation`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeCarrierRequest {
    pub reason: CarrierRevokeReason,
}

/// `POST /api/v1/carriers/{id}/extension`: a temporary card's period, lengthened.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    /// Days added; the whole period stays within the policy's maximum.
    pub days: u32,
}

/// `POST /api/v1/carriers/{id}/return`: a temporary card handed back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnRequest {
    /// `no_longer_needed` (the original is re-activated) or `lost` (the original is
    /// revoked; the temporary card stays until a replacement is issued).
    pub outcome: ReturnOutcome,
}

/// How a temporary card comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnOutcome {
    NoLongerNeeded,
    Lost,
}

/// A difference between a carrier's state and its certificates' statuses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Difference {
    pub carrier_id: String,
    pub carrier_state: CarrierState,
    pub serial: Serial,
    /// `good`, `on_hold`, `revoked:<reason>` or `missing`.
    pub certificate_status: String,
}

/// `POST /api/v1/bulk-revocations`: many carriers revoked at once (a lost batch of cards, a
/// closed office), carried out only when a second officer approves (LoA3 K6.9).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRevocationRequest {
    /// At most 10 000 carriers.
    pub carrier_ids: Vec<String>,
    pub reason: CarrierRevokeReason,
}

/// A bulk revocation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BulkRevocation {
    pub id: String,
    pub reason: CarrierRevokeReason,
    pub carrier_ids: Vec<String>,
    pub requested_by: String,
    pub requested_at: i64,
    pub state: ApprovalState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// After approval: the carriers revoked (those no longer revocable are left as they
    /// are and not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<u64>,
}

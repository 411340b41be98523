//! Single Logout's sender: the relying parties a session answered are told, over the
//! SOAP back channel, when it ends (`tessera_saml::logout`). The notices are queued in
//! the transaction that ends the session (the store's `end_session`), so none is lost to
//! a crash; this loop leases the due ones (another server on the same database leaves
//! them alone meanwhile), sends a signed LogoutRequest to each, and records the outcome
//! in the notice and the audit trail. An unreachable relying party is tried again with a
//! growing pause, and given up after [`ATTEMPTS`] tries.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tessera_idp_store::LogoutNotice;
use tessera_saml::logout::{
    read_logout_answer, seal_logout_request, AnswerError, LogoutRequest, MAX_ANSWER, REASON_ADMIN,
    REASON_USER,
};
use tessera_saml::response::new_id;

use crate::serve::Idp;
use crate::sso::secs;

/// Notices taken per round.
const BATCH: i64 = 10;
/// How long a leased notice is left to its sender: longer than a whole round may take
/// (BATCH sends of at most TIMEOUT each), so that no other server sends it meanwhile.
const LEASE: i64 = 300;
/// Tries before a relying party is given up on (the pauses between them add up to
/// about three and a half hours).
pub(crate) const ATTEMPTS: i32 = 12;
/// How long one send may take, and its connection.
const TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT: Duration = Duration::from_secs(3);
/// How long a LogoutRequest is valid (its NotOnOrAfter).
const VALID: Duration = Duration::from_secs(300);

/// The HTTP client for relying parties' SOAP endpoints.
pub(crate) struct Sender {
    agent: ureq::Agent,
}

impl Sender {
    /// Over https only, no redirects; the endpoint's certificate chains to the CAs in `ca`
    /// (PEM, one or more) when given — a federation with a TLS PKI of its own — else to
    /// the public roots.
    pub(crate) fn new(ca: Option<&Path>) -> Result<Self> {
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .timeout_connect(Some(CONNECT))
            .http_status_as_error(false)
            .https_only(true)
            .max_redirects(0);
        if let Some(ca) = ca {
            use rustls::pki_types::pem::PemObject;
            let certs: Vec<ureq::tls::Certificate<'static>> =
                rustls::pki_types::CertificateDer::pem_file_iter(ca)
                    .with_context(|| format!("reading {}", ca.display()))?
                    .map(|c| c.map(|c| ureq::tls::Certificate::from_der(&c).to_owned()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| anyhow!("{}: {e}", ca.display()))?;
            if certs.is_empty() {
                anyhow::bail!("{}: no certificate", ca.display());
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        Ok(Self {
            agent: config.build().into(),
        })
    }
}

/// What became of one notice.
enum Outcome {
    /// Answered, or nothing to send: done.
    Done(String),
    /// Could not be delivered; try again.
    Again(String),
}

impl Idp {
    /// Sends the logout notices that are due; returns how many were handled.
    pub(crate) fn send_logouts(&self) -> Result<usize> {
        let now = secs(self.clock.now());
        if !self.store.read(|tx| tx.logout_notice_due(now))? {
            return Ok(0);
        }
        let due = self
            .store
            .write(|tx| tx.lease_logout_notices(now, now + LEASE, BATCH))?;
        // A relying party that failed once this round is not tried again in it: its other
        // notices wait with it, instead of holding up everyone else's.
        let mut failing: std::collections::HashSet<String> = std::collections::HashSet::new();
        for notice in &due {
            let outcome = if failing.contains(&notice.relying_party) {
                Outcome::Again("not tried: the relying party failed a moment ago".into())
            } else {
                self.send_logout(notice)
            };
            if matches!(outcome, Outcome::Again(_)) {
                failing.insert(notice.relying_party.clone());
            }
            let at = secs(self.clock.now());
            let tries = notice.attempts + 1;
            let (text, done, retry_at) = match outcome {
                Outcome::Done(t) => (t, true, 0),
                Outcome::Again(t) if tries >= ATTEMPTS => {
                    (format!("given up after {tries} tries: {t}"), true, 0)
                }
                Outcome::Again(t) => {
                    // 10 s, 20 s, 40 s … at most an hour.
                    let pause = (10i64 << (tries - 1).clamp(0, 9)).min(3600);
                    (t, false, at + pause)
                }
            };
            let held = self.store.write(|tx| {
                // Only while this server still holds the notice (else another sends it).
                if !tx.logout_notice_outcome(
                    &notice.session_id,
                    &notice.relying_party,
                    tries,
                    &text,
                    done,
                    retry_at,
                    at,
                )? {
                    return Ok(false);
                }
                if done {
                    let details = serde_json::json!({
                        "session": notice.session_id, "relying_party": notice.relying_party,
                        "reason": notice.reason, "tries": tries, "outcome": text,
                    });
                    tx.audit("idp", "slo.notice", &details.to_string(), at)?;
                }
                Ok::<_, tessera_idp_store::StoreError>(true)
            })?;
            if !held {
                tracing::warn!(relying_party = %notice.relying_party, "a logout notice's lease ran out before its outcome was recorded; another server has it");
            } else if done {
                self.metrics.logouts_sent.inc();
            } else {
                tracing::warn!(relying_party = %notice.relying_party, tries, why = %text, "a logout notice was not delivered; trying again later");
            }
        }
        Ok(due.len())
    }

    fn send_logout(&self, notice: &LogoutNotice) -> Outcome {
        let now = self.clock.now();
        // Unknown now (an aggregate past its validUntil, or a registry file being
        // replaced) may be known again soon: try again rather than forget the notice.
        let Some(rp) = self.parties.get(&notice.relying_party, now) else {
            return Outcome::Again("the relying party is not in the metadata now".into());
        };
        let Some(endpoint) = rp.soap_logout_services.first() else {
            return Outcome::Done(
                "its metadata lists no SOAP SingleLogoutService (not told)".into(),
            );
        };
        let name_id = match self.signer.name_id(&rp.entity_id, &notice.person_id) {
            Ok(n) => n,
            Err(e) => return Outcome::Again(format!("the token: {e:#}")),
        };
        let request = LogoutRequest {
            id: new_id(),
            issue_instant: now,
            destination: endpoint.clone(),
            issuer: self.config.entity_id.clone(),
            name_id,
            sp_name_qualifier: rp.entity_id.clone(),
            session_index: notice.session_index.clone(),
            reason: if notice.reason == "user" {
                REASON_USER
            } else {
                REASON_ADMIN
            },
            not_on_or_after: now + VALID,
        };
        let sealed = match seal_logout_request(
            &request,
            self.signer.alg(),
            self.signer.certificate(),
            |bytes| self.signer.sign_raw(bytes).map_err(|e| format!("{e:#}")),
        ) {
            Ok(s) => s,
            Err(e) => {
                self.metrics.signing_failures.inc();
                return Outcome::Again(format!("signing: {e}"));
            }
        };
        let answer = self
            .logout
            .agent
            .post(endpoint)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header(
                "SOAPAction",
                "http://www.oasis-open.org/committees/security",
            )
            .send(&sealed[..]);
        let mut answer = match answer {
            Ok(a) => a,
            Err(e) => return Outcome::Again(format!("{endpoint}: {e}")),
        };
        let status = answer.status().as_u16();
        let body = answer
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER as u64)
            .read_to_vec();
        let body = match body {
            Ok(b) => b,
            Err(e) => return Outcome::Again(format!("{endpoint}: {e}")),
        };
        match read_logout_answer(&body, &request.id) {
            Ok(a) if a.success() => Outcome::Done("logged out at the relying party".into()),
            Ok(a) => Outcome::Done(format!(
                "the relying party answered {}{}{}",
                a.status,
                a.sub_status.map(|s| format!(" / {s}")).unwrap_or_default(),
                a.message.map(|m| format!(": {m}")).unwrap_or_default()
            )),
            // A server error page is not an answer: try again; a SOAP fault is one.
            Err(AnswerError::Invalid(e)) if status >= 500 || status == 429 => {
                Outcome::Again(format!("{endpoint}: HTTP {status} ({e})"))
            }
            Err(e) => Outcome::Done(format!("the relying party refused it (HTTP {status}): {e}")),
        }
    }
}

//! Renewal of the issuer's own certificates — the OCSP responder's and the audit signer's
//! (same key in the token, new certificate from the issuing CA), the HTTPS server's (a new
//! key, from the TLS CA) — and of an embedded root's CRL. Each is renewed when a third of
//! its lifetime is left, by `serve` every hour and by `tessera-issuer renew` (also on
//! demand, `--force`).
//!
//! The intent (serial, TBS) is committed before the token signs and the certificate with
//! its audit record after, as for any certificate. What is judged due is what is in
//! service here: the OCSP certificate this process answers with (after taking up a newer
//! one another server on the database renewed), and the HTTPS certificate and key on this
//! server's disk (a pair that does not match, after a crash mid-renewal, is renewed).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use der::{Decode, Encode};
use tessera_issuer_ca::authority::{self, OwnCertificate as OwnKind, OwnRequest, Period};
use tessera_issuer_ca::{x509, KeyRole};
use tessera_issuer_store::audit::AuditEvent;
use tessera_issuer_store::{AuthorityRole, NewCertificate, OwnCertificate, StoreError};
use tessera_issuer_types::config::files;
use tessera_issuer_types::{Clock, Serial};
use x509_cert::Certificate;

use crate::deployment::Deployment;

/// How long the certificates made here are valid.
const OWN_DAYS: u64 = 365;
const ROOT_CRL_DAYS: u64 = 365;

/// What was renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Renewed {
    /// `ocsp-responder`, `audit-signer`, `tls-server` or `root-crl`.
    pub what: &'static str,
    /// notAfter (nextUpdate for the CRL), Unix seconds.
    pub until: u64,
}

/// Whether less than a third of `[start, end)` is left at `now`.
pub(crate) fn due(start: Duration, end: Duration, now: Duration) -> bool {
    let life = end.saturating_sub(start);
    end.saturating_sub(now) < life / 3
}

fn validity(cert: &Certificate) -> (Duration, Duration) {
    let v = &cert.tbs_certificate.validity;
    (
        v.not_before.to_unix_duration(),
        v.not_after.to_unix_duration(),
    )
}

/// Replaces files atomically and durably: each written to a temporary file beside it and
/// synced, then all renamed, then the directory synced.
fn replace_files(dir: &Path, files: &[(&str, &[u8], u32)]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut staged = Vec::new();
    for (name, content, mode) in files {
        let tmp = dir.join(format!("{name}.renew.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(*mode)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(content)?;
        f.sync_all()?;
        staged.push((tmp, dir.join(name)));
    }
    for (tmp, path) in staged {
        std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

/// Signs an own certificate, committing its intent first, then the certificate, the
/// authority row and the audit record.
fn sign_and_record(
    dep: &Deployment,
    issuer: &Certificate,
    kind: OwnKind<'_>,
    request: OwnRequest<'_>,
    (role, authority, profile): (AuthorityRole, &str, &str),
    now: Duration,
) -> Result<Vec<u8>> {
    let at = tessera_issuer_store::secs(now);
    let der = authority::own_certificate(dep.signer.as_ref(), issuer, kind, request, &mut |tbs| {
        let parsed = x509_cert::TbsCertificate::from_der(tbs)?;
        let serial = Serial::from_bytes(parsed.serial_number.as_bytes())
            .map_err(|e| anyhow::anyhow!("serial: {e}"))?;
        let not_after = tessera_issuer_store::secs(parsed.validity.not_after.to_unix_duration());
        let subject = parsed.subject.to_string();
        dep.store.write(|tx| -> Result<(), StoreError> {
            tx.insert_intent(&NewCertificate {
                serial: &serial,
                authority,
                profile,
                tbs,
                not_after,
                created_at: at,
            })?;
            tx.audit(
                "renewal",
                &AuditEvent::CertificateIntent {
                    serial: serial.to_string(),
                    profile: profile.to_owned(),
                    subject,
                    tbs_sha256: tessera_issuer_store::audit::sha256_hex(tbs),
                    proof: "own-key".to_owned(),
                    evidence: None,
                },
                at,
            )?;
            Ok(())
        })?;
        Ok(())
    })?;
    let d = x509::describe(&der)?;
    dep.store.write(|tx| -> Result<(), StoreError> {
        tx.replace_authority_certificate(role, &der, at)?;
        tx.own_certificate_issued(
            &OwnCertificate {
                serial: &d.serial,
                authority,
                profile,
                tbs: &d.tbs,
                der: &der,
                not_after: d.not_after,
                fingerprint: &d.fingerprint,
            },
            at,
            "renewal",
        )
    })?;
    Ok(der)
}

/// Puts into service an OCSP responder certificate another server on the database
/// renewed, if it is newer than this process's. Returns whether it did.
pub(crate) fn take_up_ocsp(dep: &Deployment) -> Result<bool> {
    let row = dep
        .store
        .read(|tx| tx.authority(AuthorityRole::Ocsp))?
        .context("the database has no OCSP authority")?;
    let stored = Certificate::from_der(&row.certificate)?;
    let in_service = dep.ca.ocsp_certificate();
    if stored == in_service || validity(&stored).1 <= validity(&in_service).1 {
        return Ok(false);
    }
    // Checked there: for the responder key, issued by this CA.
    dep.ca.replace_ocsp_certificate(&row.certificate)?;
    replace_files(
        &dep.dir,
        &[(
            files::OCSP_PEM,
            x509::to_pem(&row.certificate)?.as_bytes(),
            0o644,
        )],
    )?;
    Ok(true)
}

/// The HTTPS certificate on disk and whether its key file holds the matching key.
fn tls_in_service(dir: &Path) -> Result<(Certificate, bool)> {
    use p256::pkcs8::DecodePrivateKey;
    // The chain file holds the server certificate first, then the TLS CA's.
    let der = x509::read_certificate(&dir.join(files::TLS_CERT))?;
    let cert = Certificate::from_der(&der)?;
    // Only a key this issuer made (P-256, PKCS#8) is judged: one an operator put there is
    // left alone until the certificate is due.
    let ours = std::fs::read_to_string(dir.join(files::TLS_KEY))
        .ok()
        .and_then(|pem| p256::SecretKey::from_pkcs8_pem(&pem).ok())
        .and_then(|key| pkcs8::EncodePublicKey::to_public_key_der(&key.public_key()).ok());
    let matches = match ours {
        Some(spki) => cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .is_ok_and(|c| c == spki.as_bytes()),
        None => true,
    };
    Ok((cert, matches))
}

/// Renews what is due (everything with `force`).
pub(crate) fn renew(dep: &Deployment, clock: &dyn Clock, force: bool) -> Result<Vec<Renewed>> {
    let now = clock.now();
    let mut renewed = Vec::new();
    let issuing = dep.ca.certificate().clone();
    let issuing_end = validity(&issuing).1;
    let period = |cap: Option<Duration>| {
        let end = now + Duration::from_secs(OWN_DAYS * 86_400);
        Period {
            not_before: now.saturating_sub(Duration::from_secs(3600)),
            not_after: cap.map_or(end, |c| end.min(c)),
        }
    };

    // The OCSP responder: what this process answers with (a newer one from another server
    // taken up first).
    take_up_ocsp(dep)?;
    let old = dep.ca.ocsp_certificate();
    let (start, end) = validity(&old);
    if force || due(start, end, now) {
        let der = sign_and_record(
            dep,
            &issuing,
            OwnKind::OcspResponder,
            OwnRequest {
                subject: old.tbs_certificate.subject.clone(),
                subject_spki: &dep.signer.public_key(KeyRole::Ocsp)?,
                period: period(Some(issuing_end)),
            },
            (AuthorityRole::Ocsp, "issuing", "ocsp-responder"),
            now,
        )?;
        dep.ca.replace_ocsp_certificate(&der)?;
        replace_files(
            &dep.dir,
            &[(files::OCSP_PEM, x509::to_pem(&der)?.as_bytes(), 0o644)],
        )?;
        renewed.push(Renewed {
            what: "ocsp-responder",
            until: validity(&Certificate::from_der(&der)?).1.as_secs(),
        });
    }

    // The audit signer: same key, a new certificate.
    let row = dep
        .store
        .read(|tx| tx.authority(AuthorityRole::Audit))?
        .context("the database has no audit authority")?;
    let old = Certificate::from_der(&row.certificate)?;
    let (start, end) = validity(&old);
    if force || due(start, end, now) {
        let der = sign_and_record(
            dep,
            &issuing,
            OwnKind::AuditSigner,
            OwnRequest {
                subject: old.tbs_certificate.subject.clone(),
                subject_spki: &dep.signer.public_key(KeyRole::Audit)?,
                period: period(Some(issuing_end)),
            },
            (AuthorityRole::Audit, "issuing", "audit-signer"),
            now,
        )?;
        replace_files(
            &dep.dir,
            &[(files::AUDIT_PEM, x509::to_pem(&der)?.as_bytes(), 0o644)],
        )?;
        renewed.push(Renewed {
            what: "audit-signer",
            until: validity(&Certificate::from_der(&der)?).1.as_secs(),
        });
    }

    // An embedded root's CRL.
    let root = dep.store.read(|tx| tx.authority(AuthorityRole::Root))?;
    if let Some(root) = root.filter(|r| r.key_label != "offline") {
        let path = dep.dir.join(files::ROOT_CRL);
        let (number, this, next) = root_crl_state(&path)?;
        if force || due(this, next, now) {
            let root_cert = Certificate::from_der(&root.certificate)?;
            let next_update = now + Duration::from_secs(ROOT_CRL_DAYS * 86_400);
            let crl = authority::root_crl(
                dep.signer.as_ref(),
                &root_cert,
                number + 1,
                now,
                next_update,
            )?;
            replace_files(&dep.dir, &[(files::ROOT_CRL, &crl, 0o644)])?;
            renewed.push(Renewed {
                what: "root-crl",
                until: next_update.as_secs(),
            });
        }
    }
    // The HTTPS server of this data directory: a new key, from the TLS CA.
    // Last, so that a problem with files on this server's disk stops nothing else.
    let (old, pair_matches) = tls_in_service(&dep.dir)?;
    let (start, end) = validity(&old);
    if force || !pair_matches || due(start, end, now) {
        let tls_ca = dep
            .store
            .read(|tx| tx.authority(AuthorityRole::TlsCa))?
            .context("the database has no TLS CA")?;
        let tls_ca = Certificate::from_der(&tls_ca.certificate)?;
        let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let spki = pkcs8::EncodePublicKey::to_public_key_der(&key.public_key())?.into_vec();
        let hosts = authority::tls_names(&dep.config.tls_hosts)?;
        let der = sign_and_record(
            dep,
            &tls_ca,
            OwnKind::TlsServer { hosts: &hosts },
            OwnRequest {
                subject: old.tbs_certificate.subject.clone(),
                subject_spki: &spki,
                period: period(None),
            },
            (AuthorityRole::TlsServer, "tls-ca", "tls-server"),
            now,
        )?;
        let key_pem = pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, der::pem::LineEnding::LF)?;
        let chain = format!(
            "{}{}",
            x509::to_pem(&der)?,
            x509::to_pem(&tls_ca.to_der()?)?
        );
        replace_files(
            &dep.dir,
            &[
                (files::TLS_KEY, key_pem.as_bytes(), 0o600),
                (files::TLS_CERT, chain.as_bytes(), 0o644),
            ],
        )?;
        renewed.push(Renewed {
            what: "tls-server",
            until: validity(&Certificate::from_der(&der)?).1.as_secs(),
        });
    }

    Ok(renewed)
}

/// The root CRL's number, thisUpdate and nextUpdate.
fn root_crl_state(path: &Path) -> Result<(i64, Duration, Duration)> {
    use x509_cert::ext::pkix::CrlNumber;
    let der = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let crl = x509_cert::crl::CertificateList::from_der(&der)
        .with_context(|| format!("{} is not a CRL", path.display()))?;
    let tbs = &crl.tbs_cert_list;
    let number = tbs
        .crl_extensions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|e| e.extn_id == <CrlNumber as der::oid::AssociatedOid>::OID)
        .and_then(|e| CrlNumber::from_der(e.extn_value.as_bytes()).ok())
        .and_then(|n| {
            let b = n.0.as_bytes();
            (b.len() <= 8).then(|| b.iter().fold(0i64, |a, x| (a << 8) | i64::from(*x)))
        })
        .unwrap_or(1);
    let this = tbs.this_update.to_unix_duration();
    let next = tbs.next_update.map_or(this, |t| t.to_unix_duration());
    Ok((number, this, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_when_a_third_is_left() {
        let d = |s| Duration::from_secs(s);
        assert!(!due(d(0), d(300), d(199)));
        assert!(due(d(0), d(300), d(201)));
        assert!(due(d(0), d(300), d(400)));
    }
}

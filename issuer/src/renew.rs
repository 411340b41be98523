//! Renewal of the issuer's own certificates — the OCSP responder's and the audit signer's
//! (same key in the token, new certificate from the issuing CA), the HTTPS server's (a new
//! key, from the TLS CA) — and of an embedded root's CRL. Each is renewed when a third of
//! its lifetime is left, by `serve` every hour and by `tessera-issuer renew` (also on
//! demand, `--force`). A renewed certificate is recorded in the certificates table and the
//! authorities in one transaction with its audit record, then put in service.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use der::{Decode, Encode};
use tessera_issuer_ca::authority::{self, OwnCertificate as OwnKind, Period};
use tessera_issuer_ca::{x509, KeyRole};
use tessera_issuer_store::{AuthorityRole, OwnCertificate, StoreError};
use tessera_issuer_types::config::files;
use tessera_issuer_types::Clock;
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

/// Replaces a file atomically (a temporary file beside it, renamed over it).
fn replace_file(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("renew.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(content)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
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
    let current = |role| -> Result<Certificate> {
        let row = dep
            .store
            .read(|tx| tx.authority(role))?
            .with_context(|| format!("the database has no {role:?} authority"))?;
        Ok(Certificate::from_der(&row.certificate)?)
    };

    // The OCSP responder and the audit signer: same key, a new certificate.
    for (role, key, kind, profile, file) in [
        (
            AuthorityRole::Ocsp,
            KeyRole::Ocsp,
            OwnKind::OcspResponder,
            "ocsp-responder",
            files::OCSP_PEM,
        ),
        (
            AuthorityRole::Audit,
            KeyRole::Audit,
            OwnKind::AuditSigner,
            "audit-signer",
            files::AUDIT_PEM,
        ),
    ] {
        let old = current(role)?;
        let (start, end) = validity(&old);
        if !force && !due(start, end, now) {
            continue;
        }
        let der = authority::own_certificate(
            dep.signer.as_ref(),
            KeyRole::Issuing,
            &issuing,
            kind,
            old.tbs_certificate.subject.clone(),
            &dep.signer.public_key(key)?,
            period(Some(issuing_end)),
        )?;
        record(dep, role, "issuing", profile, &der, now)?;
        if role == AuthorityRole::Ocsp {
            dep.ca.replace_ocsp_certificate(&der)?;
        }
        replace_file(&dep.dir.join(file), x509::to_pem(&der)?.as_bytes(), 0o644)?;
        renewed.push(Renewed {
            what: profile,
            until: validity(&Certificate::from_der(&der)?).1.as_secs(),
        });
    }

    // The HTTPS server: a new key, from the TLS CA.
    let old = current(AuthorityRole::TlsServer)?;
    let (start, end) = validity(&old);
    if force || due(start, end, now) {
        let tls_ca = current(AuthorityRole::TlsCa)?;
        let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let spki = pkcs8::EncodePublicKey::to_public_key_der(&key.public_key())?.into_vec();
        let hosts = authority::tls_names(&dep.config.tls_hosts)?;
        let der = authority::own_certificate(
            dep.signer.as_ref(),
            KeyRole::TlsCa,
            &tls_ca,
            OwnKind::TlsServer { hosts: &hosts },
            old.tbs_certificate.subject.clone(),
            &spki,
            period(None),
        )?;
        record(
            dep,
            AuthorityRole::TlsServer,
            "tls-ca",
            "tls-server",
            &der,
            now,
        )?;
        let key_pem = pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, der::pem::LineEnding::LF)?;
        replace_file(&dep.dir.join(files::TLS_KEY), key_pem.as_bytes(), 0o600)?;
        let chain = format!(
            "{}{}",
            x509::to_pem(&der)?,
            x509::to_pem(&tls_ca.to_der()?)?
        );
        replace_file(&dep.dir.join(files::TLS_CERT), chain.as_bytes(), 0o644)?;
        renewed.push(Renewed {
            what: "tls-server",
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
            replace_file(&path, &crl, 0o644)?;
            renewed.push(Renewed {
                what: "root-crl",
                until: next_update.as_secs(),
            });
        }
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
        .find(|e| e.extn_id == const_oid_crl_number())
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

fn const_oid_crl_number() -> der::oid::ObjectIdentifier {
    der::oid::ObjectIdentifier::new_unwrap("2.5.29.20")
}

/// Records a renewed certificate and puts it in the authorities, in one transaction.
fn record(
    dep: &Deployment,
    role: AuthorityRole,
    authority: &str,
    profile: &str,
    der: &[u8],
    now: Duration,
) -> Result<()> {
    let d = x509::describe(der)?;
    let at = tessera_issuer_store::secs(now);
    dep.store.write(|tx| -> Result<(), StoreError> {
        tx.replace_authority_certificate(role, der, at)?;
        tx.record_own_certificate(
            &OwnCertificate {
                serial: &d.serial,
                authority,
                profile,
                tbs: &d.tbs,
                der,
                not_after: d.not_after,
                fingerprint: &d.fingerprint,
            },
            at,
            "renewal",
        )
    })?;
    Ok(())
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

//! `audit verify` and `audit checkpoint`: the hash chain checked record by record, and
//! anchored by checkpoints the audit key in the token signs (at an interval by `serve`, on
//! demand by `audit checkpoint`). A checkpoint kept outside the database shows truncation
//! below it and forged records up to it; `--expect-head` (a head hash kept elsewhere) shows
//! anything appended after it.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use der::{Decode, Encode};
use tessera_issuer_ca::checkpoint::{self, Checkpoint, SignedCheckpoint};
use tessera_issuer_store::audit::{StoredCheckpoint, Tamper};
use tessera_issuer_store::{AuthorityRole, Store};
use tessera_issuer_types::Clock;
use x509_cert::Certificate;

use crate::deployment::Deployment;

/// Where every checkpoint is also written, one file each, in the data directory.
pub(crate) const CHECKPOINTS: &str = "checkpoints";

/// Signs a checkpoint of the chain as it is now, stores it (with its audit record) and
/// returns it. Refuses a broken chain: a checkpoint vouches for what it covers.
pub(crate) fn make(dep: &Deployment, clock: &dyn Clock) -> Result<SignedCheckpoint> {
    let verified = match dep.store.read(|tx| tx.verify_audit())? {
        Ok(v) => v,
        Err(tamper) => bail!("the audit chain is broken ({tamper}); no checkpoint signed"),
    };
    let now = clock.now();
    let signed = checkpoint::sign(
        dep.signer.as_ref(),
        Checkpoint {
            records: verified.records,
            head: hex::encode(&verified.head),
            at: now.as_secs(),
            key: checkpoint::key_id(&dep.signer.public_key(tessera_issuer_ca::KeyRole::Audit)?),
        },
    )?;
    let json = serde_json::to_string(&signed)?;
    // Outside the database too: whoever can write to the database can delete checkpoint
    // rows, not these files.
    let exported = dep.dir.join(CHECKPOINTS);
    std::fs::create_dir_all(&exported)
        .with_context(|| format!("creating {}", exported.display()))?;
    let mut nonce = [0u8; 4];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let file = exported.join(format!(
        "{:012}-{}-{}.json",
        signed.checkpoint.records,
        signed.checkpoint.at,
        hex::encode(nonce)
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, json.as_bytes())?;
            f.sync_all()
        })
        .with_context(|| format!("writing {}", file.display()))?;
    dep.store.write(|tx| {
        tx.insert_checkpoint(&StoredCheckpoint {
            records: i64::try_from(signed.checkpoint.records).unwrap_or(i64::MAX),
            at: tessera_issuer_store::secs(now),
            head: signed.checkpoint.head.clone(),
            signed: json.clone(),
        })
    })?;
    Ok(signed)
}

/// Signs a checkpoint when records were added since the last one (for `serve`).
pub(crate) fn make_if_grown(
    dep: &Deployment,
    clock: &dyn Clock,
) -> Result<Option<SignedCheckpoint>> {
    let (records, last) = dep.store.read(|tx| -> Result<_> {
        let records = tx.audit_records()?.len();
        let last = tx.checkpoints()?.last().map(|c| c.records);
        Ok((records, last))
    })?;
    // The checkpoint's own audit record follows it: a chain that grew by that alone has
    // nothing new to anchor.
    let covered = last.map_or(0, |n| usize::try_from(n).unwrap_or(0) + 1);
    if records <= covered {
        return Ok(None);
    }
    make(dep, clock).map(Some)
}

/// The audit signer's certificate, checked to chain to the root: the issuing CA's
/// certificate signed by `root`, the audit signer's by the issuing CA. Whoever can write to
/// the database cannot put in a certificate for a key of their own.
fn audit_certificate(store: &Store, root: &Certificate) -> Result<Certificate> {
    let (issuing, audit) = store.read(|tx| -> Result<_> {
        let get = |tx: &mut tessera_issuer_store::Tx<'_>, role| -> Result<Certificate> {
            let row = tx
                .authority(role)?
                .with_context(|| format!("the database has no {role:?} authority"))?;
            Ok(Certificate::from_der(&row.certificate)?)
        };
        Ok((
            get(tx, AuthorityRole::Issuing)?,
            get(tx, AuthorityRole::Audit)?,
        ))
    })?;
    for (cert, by, what) in [
        (&issuing, root, "the issuing CA certificate by the root"),
        (
            &audit,
            &issuing,
            "the audit signer certificate by the issuing CA",
        ),
    ] {
        tessera_issuer_ca::x509::verify_signature(
            &by.tbs_certificate.subject_public_key_info,
            &cert.signature_algorithm,
            &cert.tbs_certificate.to_der()?,
            cert.signature.raw_bytes(),
        )
        .with_context(|| format!("{what} does not verify"))?;
    }
    Ok(audit)
}

/// What `audit verify` is asked to check besides the chain itself.
#[derive(Debug, Default)]
pub(crate) struct Expectations<'a> {
    /// The head hash (hex) the chain must end with.
    pub expect_head: Option<&'a str>,
    /// A checkpoint file kept outside the database.
    pub checkpoint: Option<&'a Path>,
    /// The root certificate to check the audit signer against (default: the data
    /// directory's `root-ca.pem`).
    pub root: Option<&'a Path>,
    /// The SHA-256 (hex) of the audit key's SubjectPublicKeyInfo that checkpoints must
    /// verify with (from `--audit-key`, or the configuration's `audit_key_sha256`).
    pub audit_key: Option<&'a str>,
}

/// Checks the chain, the stored checkpoints and the expectations; returns the report on
/// success, or the first failure.
pub(crate) fn verify(dir: &Path, store: &Store, expect: &Expectations<'_>) -> Result<String> {
    let records = store.read(|tx| tx.audit_records())?;
    let verified = match store.read(|tx| tx.verify_audit())? {
        Ok(v) => v,
        Err(tamper) => return Err(anyhow::Error::new(Broken(tamper))),
    };
    let head = hex::encode(&verified.head);
    let mut report = format!(
        "audit chain intact: {} records, head {head}\n",
        verified.records
    );
    let hash_at = |n: u64| -> Option<String> {
        let i = usize::try_from(n).ok()?.checked_sub(1)?;
        records.get(i).map(|r| hex::encode(&r.hash))
    };
    let root_path = expect.root.map_or_else(
        || dir.join(tessera_issuer_types::config::files::ROOT_PEM),
        Path::to_path_buf,
    );
    let root = Certificate::from_der(&tessera_issuer_ca::x509::read_certificate(&root_path)?)?;
    let audit = audit_certificate(store, &root)?;
    let audit_key = checkpoint::key_id(&audit.tbs_certificate.subject_public_key_info.to_der()?);
    match expect.audit_key {
        Some(pinned) => ensure!(
            pinned.trim().eq_ignore_ascii_case(&audit_key),
            "the audit signer certificate in the database is for key {audit_key}, not the \
             pinned audit key {}: it was replaced",
            pinned.trim()
        ),
        None => bail!(
            "no audit key is pinned: give --audit-key (the SHA-256 of the audit key's public \
             key, kept outside the issuer); without it a certificate put into the database for \
             another key would make forged checkpoints pass"
        ),
    }
    let check = |signed: &SignedCheckpoint, source: &str| -> Result<()> {
        checkpoint::verify(&audit, signed).with_context(|| format!("{source}: forged"))?;
        let c = &signed.checkpoint;
        ensure!(
            c.records <= verified.records,
            "{source}: signed for {} records, but the chain has {}: records were cut from \
             the end",
            c.records,
            verified.records
        );
        ensure!(
            hash_at(c.records).as_deref() == Some(c.head.as_str()),
            "{source}: record {} is not the one the checkpoint signed: records up to it were \
             replaced",
            c.records
        );
        Ok(())
    };
    let stored = store.read(|tx| tx.checkpoints())?;
    for c in &stored {
        let signed: SignedCheckpoint = serde_json::from_str(&c.signed)
            .with_context(|| format!("stored checkpoint at record {}", c.records))?;
        ensure!(
            i64::try_from(signed.checkpoint.records).ok() == Some(c.records),
            "stored checkpoint at record {}: its signed count differs",
            c.records
        );
        check(
            &signed,
            &format!("stored checkpoint at record {}", c.records),
        )?;
    }
    match stored.last() {
        Some(last) => report.push_str(&format!(
            "{} signed checkpoints; the last covers {} records ({} after it not yet \
             anchored)\n",
            stored.len(),
            last.records,
            verified
                .records
                .saturating_sub(u64::try_from(last.records).unwrap_or(0))
        )),
        None => report.push_str("no signed checkpoints yet\n"),
    }
    // The exported checkpoints in the data directory.
    let mut exported = 0;
    if let Ok(entries) = std::fs::read_dir(dir.join(CHECKPOINTS)) {
        let mut files: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let signed: SignedCheckpoint = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a checkpoint", file.display()))?;
            check(&signed, &file.display().to_string())?;
            exported += 1;
        }
    }
    if exported > 0 {
        report.push_str(&format!("{exported} exported checkpoints hold\n"));
    }
    if let Some(file) = expect.checkpoint {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let signed: SignedCheckpoint = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a checkpoint", file.display()))?;
        check(&signed, &file.display().to_string())?;
        report.push_str(&format!(
            "checkpoint {} holds: record {} is its head\n",
            file.display(),
            signed.checkpoint.records
        ));
    }
    if let Some(expected) = expect.expect_head {
        let expected = expected.trim().to_ascii_lowercase();
        if expected != head {
            match records
                .iter()
                .position(|r| hex::encode(&r.hash) == expected)
            {
                Some(i) => bail!(
                    "the chain goes on past the expected head (record {}): {} records were \
                     appended after it",
                    i + 1,
                    records.len() - i - 1
                ),
                None => bail!(
                    "the expected head {expected} is not in the chain: records were cut or \
                     replaced"
                ),
            }
        }
        report.push_str("the head is the one expected\n");
    }
    Ok(report)
}

/// A broken chain, for the caller to tell apart from other failures.
#[derive(Debug)]
pub(crate) struct Broken(pub Tamper);

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "audit chain BROKEN: {}", self.0)
    }
}

impl std::error::Error for Broken {}

//! Signed checkpoints of the audit chain's head: the number of records and the head hash
//! at a time, signed with the audit key in the token. Whoever can write to the database
//! can append records that chain correctly, or cut the tail; neither can make a checkpoint.
//! Kept outside the database (`audit checkpoint --out`), a checkpoint shows a chain that
//! has fewer records than it, or other records up to it; kept in the database at an
//! interval, checkpoints bound how many records could have been appended unnoticed.

use anyhow::{ensure, Context, Result};
use base64ct::Encoding;
use der::{Decode, Encode};
use x509_cert::Certificate;

use crate::signer::{KeyRole, Signer, Tbs};

/// What a checkpoint says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// How many records the chain had.
    pub records: u64,
    /// The hash of the last of them (hex).
    pub head: String,
    /// When, in Unix seconds.
    pub at: u64,
    /// The SHA-256 (hex) of the audit key's SubjectPublicKeyInfo: which key signs it, so a
    /// checkpoint names the key it must verify with (and an auditor pins it).
    pub key: String,
}

impl Checkpoint {
    /// The bytes the audit key signs: a domain tag, then each field length-prefixed.
    pub fn to_be_signed(&self) -> Vec<u8> {
        let mut out = b"tessera-audit-checkpoint-v2\0".to_vec();
        for field in [
            &self.records.to_be_bytes()[..],
            self.head.as_bytes(),
            &self.at.to_be_bytes()[..],
            self.key.as_bytes(),
        ] {
            out.extend_from_slice(&(field.len() as u64).to_be_bytes());
            out.extend_from_slice(field);
        }
        out
    }
}

/// A checkpoint with the audit key's signature (base64) and the algorithm it was made
/// with (an X.509 AlgorithmIdentifier, DER, base64).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCheckpoint {
    #[serde(flatten)]
    pub checkpoint: Checkpoint,
    pub algorithm: String,
    pub signature: String,
}

/// The SHA-256 (hex) of a SubjectPublicKeyInfo: how checkpoints and the configuration
/// name the audit key.
pub fn key_id(spki_der: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(spki_der))
}

/// Signs a checkpoint with the audit key (its `key` must name that key).
pub fn sign(signer: &dyn Signer, checkpoint: Checkpoint) -> Result<SignedCheckpoint> {
    ensure!(
        checkpoint.key == key_id(&signer.public_key(KeyRole::Audit)?),
        "the checkpoint names another key than the audit key"
    );
    let tbs = checkpoint.to_be_signed();
    let signature = signer.sign(KeyRole::Audit, Tbs::new(&tbs))?;
    let algorithm = crate::signature_algorithm(signer.algorithm()).to_der()?;
    Ok(SignedCheckpoint {
        checkpoint,
        algorithm: base64ct::Base64::encode_string(&algorithm),
        signature: base64ct::Base64::encode_string(&signature),
    })
}

/// Checks a checkpoint's signature against the audit signer's certificate, whose key must
/// be the one the checkpoint names.
pub fn verify(audit_certificate: &Certificate, signed: &SignedCheckpoint) -> Result<()> {
    let spki = audit_certificate
        .tbs_certificate
        .subject_public_key_info
        .to_der()?;
    ensure!(
        key_id(&spki) == signed.checkpoint.key,
        "the checkpoint names audit key {}, not the certificate's {}",
        signed.checkpoint.key,
        key_id(&spki)
    );
    let algorithm = base64ct::Base64::decode_vec(&signed.algorithm)
        .map_err(|e| anyhow::anyhow!("checkpoint algorithm: {e}"))?;
    let algorithm =
        spki::AlgorithmIdentifierOwned::from_der(&algorithm).context("checkpoint algorithm")?;
    let signature = base64ct::Base64::decode_vec(&signed.signature)
        .map_err(|e| anyhow::anyhow!("checkpoint signature: {e}"))?;
    ensure!(
        signed.checkpoint.head.len() == 64
            && signed
                .checkpoint
                .head
                .bytes()
                .all(|b| b.is_ascii_hexdigit()),
        "checkpoint head is not a SHA-256 in hex"
    );
    crate::x509::verify_signature(
        &audit_certificate.tbs_certificate.subject_public_key_info,
        &algorithm,
        &signed.checkpoint.to_be_signed(),
        &signature,
    )
    .context("the checkpoint's signature is not the audit key's")
}

#[cfg(all(test, feature = "memory-signer"))]
mod tests {
    use super::*;
    use crate::signer::MemorySigner;

    #[test]
    fn a_checkpoint_verifies_and_any_change_breaks_it() {
        let signer = MemorySigner::new();
        let now = std::time::Duration::from_secs(1_800_000_000);
        let (issuing, _) = crate::authority::memory_certificates(&signer, now).unwrap();
        let issuing = Certificate::from_der(&issuing).unwrap();
        let audit = crate::authority::own_certificate(
            &signer,
            &issuing,
            crate::authority::OwnCertificate::AuditSigner,
            crate::authority::OwnRequest {
                subject: "CN=Audit".parse().unwrap(),
                subject_spki: &signer.public_key(KeyRole::Audit).unwrap(),
                period: crate::authority::Period {
                    not_before: now,
                    not_after: now + std::time::Duration::from_secs(86_400),
                },
            },
            &mut |_| Ok(()),
        )
        .unwrap();
        let audit = Certificate::from_der(&audit).unwrap();
        let signed = sign(
            &signer,
            Checkpoint {
                records: 42,
                head: "ab".repeat(32),
                at: 1_800_000_000,
                key: key_id(&signer.public_key(KeyRole::Audit).unwrap()),
            },
        )
        .unwrap();
        verify(&audit, &signed).unwrap();
        let mut cut = signed.clone();
        cut.checkpoint.records = 41;
        assert!(verify(&audit, &cut).is_err());
        let mut other = signed;
        other.checkpoint.head = "cd".repeat(32);
        assert!(verify(&audit, &other).is_err());
    }
}

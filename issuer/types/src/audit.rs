//! The audit chain's record hash, shared by the store that writes the chain and by anyone
//! who checks an exported copy of it (the `tessera audit export` CLI): one definition.

use sha2::Digest;

/// The hash before the first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// The hash of a record's contents after `prev`: a domain tag, then every field
/// length-prefixed, so no two different records encode alike.
pub fn record_hash(
    prev: &[u8],
    seq: i64,
    at: i64,
    actor: &str,
    action: &str,
    details: &str,
) -> Vec<u8> {
    let mut h = sha2::Sha256::new();
    h.update(b"tessera-audit-v1\0");
    for field in [
        prev,
        &seq.to_be_bytes(),
        &at.to_be_bytes(),
        actor.as_bytes(),
        action.as_bytes(),
        details.as_bytes(),
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    h.finalize().to_vec()
}

/// One audit record as the API shows it (hashes in hex).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    pub actor: String,
    pub action: String,
    /// The event's fields, as JSON text (what the hash covers).
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// Whether the record's hash is its contents' after its `prev_hash`.
    pub fn hash_matches(&self) -> bool {
        hex::decode(&self.prev_hash).is_ok_and(|prev| {
            hex::encode(record_hash(
                &prev,
                self.seq,
                self.at,
                &self.actor,
                &self.action,
                &self.details,
            )) == self.hash
        })
    }
}

/// Checks a run of records, in order, as an export reads them: each matches its hash, the
/// sequence numbers follow on from `after` without a gap, and each links to the one before
/// (from the genesis hash when the run starts at the beginning; from later, the first
/// record's own predecessor is taken as given: anchor that with a checkpoint).
#[derive(Debug, Clone)]
pub struct ChainCheck {
    prev: Option<String>,
    last_seq: i64,
}

impl ChainCheck {
    /// A check for the records after record `after` (0: from the beginning).
    pub fn after(after: i64) -> Self {
        Self {
            prev: (after == 0).then(|| hex::encode(GENESIS)),
            last_seq: after,
        }
    }

    /// Takes the next record; says why when it does not hold.
    pub fn next(&mut self, r: &AuditRecord) -> Result<(), String> {
        if !r.hash_matches() {
            return Err(format!(
                "audit record {} does not match its hash (edited?)",
                r.seq
            ));
        }
        if r.seq != self.last_seq + 1 || self.prev.as_ref().is_some_and(|p| *p != r.prev_hash) {
            return Err(format!(
                "audit record {} does not follow record {} (deleted, reordered or rewritten?)",
                r.seq, self.last_seq
            ));
        }
        self.prev = Some(r.hash.clone());
        self.last_seq = r.seq;
        Ok(())
    }

    /// The last record taken (`after` before any).
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// The hash of the last record taken, if any was (or the genesis hash from the start).
    pub fn head(&self) -> Option<&str> {
        self.prev.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AuditRecord {
        let prev = GENESIS;
        let hash = record_hash(&prev, 1, 100, "anna", "person.proofed", "{}");
        AuditRecord {
            seq: 1,
            at: 100,
            actor: "anna".into(),
            action: "person.proofed".into(),
            details: "{}".into(),
            prev_hash: hex::encode(prev),
            hash: hex::encode(hash),
        }
    }

    #[test]
    fn any_edit_breaks_the_hash() {
        assert!(record().hash_matches());
        let edits: [fn(&mut AuditRecord); 6] = [
            |r| r.seq = 2,
            |r| r.at = 101,
            |r| r.actor = "bo".into(),
            |r| r.action = "person.ended".into(),
            |r| r.details = "{\"x\":1}".into(),
            |r| r.prev_hash = "zz".into(),
        ];
        for edit in edits {
            let mut r = record();
            edit(&mut r);
            assert!(!r.hash_matches(), "{r:?}");
        }
        // Fields run together differently still hash differently (length prefixes).
        let a = record_hash(&GENESIS, 1, 1, "ab", "c", "");
        let b = record_hash(&GENESIS, 1, 1, "a", "bc", "");
        assert_ne!(a, b);
    }
}

//! `tessera audit`: the audit trail for auditors — a page of it, or an export of all of it
//! (JSON lines) with every record's hash and the chain between them checked as it is
//! written, ending with the head hash to compare with a signed checkpoint. The check proves
//! the export consistent in itself; that it is the issuer's whole trail is what the
//! checkpoint comparison proves (a server could cut the tail, or rebuild a chain).

use std::io::Write;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use tessera_issuer_types::audit::{AuditRecord, ChainCheck};

use crate::client::{Client, Failure};

/// Records per request (the API's maximum).
const PAGE: u32 = 1000;

pub(crate) fn page(c: &Client, after: i64, limit: u32) -> Result<Vec<AuditRecord>, Failure> {
    c.get(&format!("/audit?after={after}&limit={limit}"))
}

/// What an export wrote.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Exported {
    pub records: u64,
    /// The last record's sequence number and hash (hex): the head to anchor.
    pub last_seq: i64,
    pub head: String,
}

/// Writes every record after `after` to `file`, checking each and the chain; a record that
/// does not hold stops the export (the file keeps what came before it).
pub(crate) fn export(c: &Client, file: &Path, after: i64) -> Result<Exported, Failure> {
    // The trail holds personal data: the file is the exporting officer's alone.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let out = options
        .open(file)
        .map_err(|e| Failure::Usage(format!("creating {}: {e}", file.display())))?;
    let mut out = std::io::BufWriter::new(out);
    let spinner = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {pos} records exported") {
        spinner.set_style(style);
    }
    let mut chain = ChainCheck::after(after);
    let (mut next, mut count) = (after, 0u64);
    loop {
        let records = page(c, next, PAGE)?;
        let Some(last) = records.last() else { break };
        next = last.seq;
        for r in &records {
            chain.next(r).map_err(Failure::ChainBroken)?;
            let line = serde_json::to_string(r).map_err(|e| Failure::Server(e.to_string()))?;
            writeln!(out, "{line}")
                .map_err(|e| Failure::Usage(format!("writing {}: {e}", file.display())))?;
            count += 1;
        }
        spinner.set_position(count);
    }
    out.flush()
        .map_err(|e| Failure::Usage(format!("writing {}: {e}", file.display())))?;
    spinner.finish_and_clear();
    Ok(Exported {
        records: count,
        last_seq: chain.last_seq(),
        head: chain.head().unwrap_or_default().to_owned(),
    })
}

//! `tessera import FILE`: people from an HR export (CSV, UTF-8, a header row). The whole
//! file is checked first — locally (encoding, columns, values) and by the issuer in dry
//! runs (identity numbers, duplicates, conflicts with the register) — and imported only if
//! no row is wrong; the report names every bad row by its line. Importing a file twice
//! changes nothing the second time. The file's format and the batching are
//! [`tessera_issuer_types::hr_file`]'s, shared with the admin portal's import page.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use tessera_issuer_types::api::ImportReport;
use tessera_issuer_types::hr_file::{HrFile, Outcome, Phase};

use crate::client::{Client, Failure};

fn bar(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(u64::try_from(len).unwrap_or(u64::MAX));
    if let Ok(style) =
        ProgressStyle::with_template("{msg:10} [{bar:40}] {pos}/{len} rows, {eta} left")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("checking");
    bar
}

/// Checks the whole file, then (unless `dry_run` or a row is wrong) imports it.
pub(crate) fn run(
    client: &Client,
    path: &Path,
    dry_run: bool,
    batch: usize,
) -> Result<Outcome, Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::Usage(format!("reading {}: {e}", path.display())))?;
    let file =
        HrFile::read(&bytes).map_err(|e| Failure::Invalid(format!("{}: {e}", path.display())))?;
    let progress = bar(file.people.len());
    let mut phase = Phase::Check;
    let out = file.run(
        batch,
        dry_run,
        |req| client.post::<ImportReport>("/people/import", req),
        |p, n| {
            if p != phase {
                phase = p;
                progress.reset();
                progress.set_message("importing");
            }
            progress.inc(u64::try_from(n).unwrap_or(0));
        },
    );
    match &out {
        // A batch refused while importing: the bar stays where it stopped.
        Ok(o) if phase == Phase::Import && !o.applied => progress.abandon(),
        _ => progress.finish_and_clear(),
    }
    out
}

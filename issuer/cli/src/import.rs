//! `tessera import FILE`: people from an HR export (CSV, UTF-8, a header row). The whole
//! file is checked first — locally (encoding, columns, values) and by the issuer in dry
//! runs (identity numbers, duplicates, conflicts with the register) — and imported only if
//! no row is wrong; the report names every bad row by its line. Importing a file twice
//! changes nothing the second time.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use tessera_issuer_types::api::{ImportReport, ImportRequest, NewPerson, NonResident};

use crate::client::{Client, Failure};

/// The columns an HR file may have; the first three are required.
const COLUMNS: [&str; 10] = [
    "employee_number",
    "given_name",
    "family_name",
    "email",
    "upn",
    "identity_number",
    "birth_date",
    "nationality",
    "protected_identity",
    "directory_sid",
];

/// One bad row, by its line in the file.
#[derive(Debug, serde::Serialize)]
pub(crate) struct BadRow {
    pub line: u64,
    pub employee_number: String,
    pub message: String,
}

/// What the import did, for `--json` and the summary line.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Outcome {
    pub rows: usize,
    pub dry_run: bool,
    pub applied: bool,
    /// Some batches were applied before one was refused (the register changed meanwhile).
    pub partial: bool,
    pub created: u32,
    pub updated: u32,
    pub unchanged: u32,
    pub errors: Vec<BadRow>,
}

/// People with the lines they are on.
type Lines = Vec<(u64, NewPerson)>;

/// Reads the file: people with their line numbers, and the rows that could not be read.
fn read(path: &Path) -> Result<(Lines, Vec<BadRow>), Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::Usage(format!("reading {}: {e}", path.display())))?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let mut reader = csv::ReaderBuilder::new().from_reader(bytes);
    let headers = reader
        .byte_headers()
        .map_err(|e| Failure::Invalid(format!("{}: the header row: {e}", path.display())))?
        .clone();
    let mut index = std::collections::HashMap::new();
    let mut unknown = Vec::new();
    for (i, h) in headers.iter().enumerate() {
        let name = String::from_utf8_lossy(h).trim().to_owned();
        if COLUMNS.contains(&name.as_str()) {
            if index.insert(name.clone(), i).is_some() {
                return Err(Failure::Invalid(format!("column {name:?} appears twice")));
            }
        } else {
            unknown.push(name);
        }
    }
    if !unknown.is_empty() {
        return Err(Failure::Invalid(format!(
            "{}: unknown columns {unknown:?}; the columns are {}",
            path.display(),
            COLUMNS.join(", ")
        )));
    }
    for required in &COLUMNS[..3] {
        if !index.contains_key(*required) {
            return Err(Failure::Invalid(format!(
                "{}: the column {required} is missing",
                path.display()
            )));
        }
    }
    let mut people = Vec::new();
    let mut bad = Vec::new();
    for record in reader.byte_records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                bad.push(BadRow {
                    line,
                    employee_number: String::new(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        match person(&record, &index) {
            Ok(p) => people.push((line, p)),
            Err((employee_number, message)) => bad.push(BadRow {
                line,
                employee_number,
                message,
            }),
        }
    }
    Ok((people, bad))
}

/// One row as a person, or (employee number, what is wrong).
fn person(
    record: &csv::ByteRecord,
    index: &std::collections::HashMap<String, usize>,
) -> Result<NewPerson, (String, String)> {
    let mut fields = std::collections::HashMap::new();
    let mut encoding = None;
    for (name, i) in index {
        let raw = record.get(*i).unwrap_or_default();
        match std::str::from_utf8(raw) {
            Ok(v) => {
                let v = v.trim();
                if !v.is_empty() {
                    fields.insert(name.as_str(), v.to_owned());
                }
            }
            Err(_) => encoding = Some(name.clone()),
        }
    }
    let employee_number = fields.get("employee_number").cloned().unwrap_or_default();
    if let Some(column) = encoding {
        return Err((
            employee_number,
            format!("{column}: not UTF-8 (save the file as UTF-8)"),
        ));
    }
    let protected_identity = match fields.get("protected_identity").map(String::as_str) {
        None | Some("false" | "no" | "0") => false,
        Some("true" | "yes" | "1") => true,
        Some(other) => {
            return Err((
                employee_number,
                format!("protected_identity: {other:?} is not true/false/yes/no/1/0"),
            ))
        }
    };
    let non_resident = match (fields.get("birth_date"), fields.get("nationality")) {
        (None, None) => None,
        (Some(b), Some(n)) => Some(NonResident {
            birth_date: b.clone(),
            nationality: n.clone(),
        }),
        _ => {
            return Err((
                employee_number,
                "birth_date and nationality go together (the non-resident data set)".into(),
            ))
        }
    };
    Ok(NewPerson {
        employee_number: employee_number.clone(),
        given_name: fields.get("given_name").cloned().unwrap_or_default(),
        family_name: fields.get("family_name").cloned().unwrap_or_default(),
        email: fields.get("email").cloned(),
        upn: fields.get("upn").cloned(),
        identity_number: fields.get("identity_number").cloned(),
        non_resident,
        protected_identity,
        directory_sid: fields.get("directory_sid").cloned(),
    })
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(u64::try_from(len).unwrap_or(u64::MAX));
    if let Ok(style) =
        ProgressStyle::with_template("{msg:10} [{bar:40}] {pos}/{len} rows, {eta} left")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// Sends `people` in batches (dry run or for real), folding the answers into `out`.
fn send(
    client: &Client,
    people: &[(u64, NewPerson)],
    batch: usize,
    dry_run: bool,
    out: &mut Outcome,
) -> Result<(), Failure> {
    let progress = bar(people.len(), if dry_run { "checking" } else { "importing" });
    for chunk in people.chunks(batch) {
        let report: ImportReport = client.post(
            "/people/import",
            &ImportRequest {
                people: chunk.iter().map(|(_, p)| p.clone()).collect(),
                dry_run,
            },
        )?;
        out.created += report.created;
        out.updated += report.updated;
        out.unchanged += report.unchanged;
        for e in report.errors {
            let line = usize::try_from(e.index)
                .ok()
                .and_then(|i| chunk.get(i))
                .map_or(0, |(l, _)| *l);
            out.errors.push(BadRow {
                line,
                employee_number: e.employee_number,
                message: e.message,
            });
        }
        if !dry_run && !report.applied {
            out.partial = out.created + out.updated > 0;
            // Another change between the check and this batch (the register moved): the
            // batches before this one stand; a re-run finishes the file.
            progress.abandon();
            return Ok(());
        }
        progress.inc(u64::try_from(chunk.len()).unwrap_or(0));
    }
    progress.finish_and_clear();
    Ok(())
}

/// Checks the whole file, then (unless `dry_run` or a row is wrong) imports it.
pub(crate) fn run(
    client: &Client,
    path: &Path,
    dry_run: bool,
    batch: usize,
) -> Result<Outcome, Failure> {
    let batch = batch.clamp(1, 5_000);
    let (people, bad) = read(path)?;
    let mut out = Outcome {
        rows: people.len() + bad.len(),
        dry_run,
        errors: bad,
        ..Outcome::default()
    };
    // Duplicates across batches (the issuer sees one batch at a time): employee numbers,
    // and identity numbers in either spelling (YYYYMMDD-NNNC and YYYYMMDDNNNC are one).
    let mut seen = std::collections::HashMap::new();
    let mut numbers = std::collections::HashMap::new();
    for (line, p) in &people {
        if let Some(first) = seen.insert(p.employee_number.clone(), *line) {
            out.errors.push(BadRow {
                line: *line,
                employee_number: p.employee_number.clone(),
                message: format!("employee number also on line {first}"),
            });
        }
        let number = p
            .identity_number
            .as_deref()
            .and_then(|n| tessera_issuer_types::identity::IdentityNumber::parse(n).ok())
            .map(|n| ("identity number", n.as_str().to_owned()));
        // A logon name and a SID name one person too.
        let upn = p
            .upn
            .as_ref()
            .map(|u| ("logon name (UPN)", u.trim().to_owned()));
        let sid = p
            .directory_sid
            .as_ref()
            .map(|s| ("SID", s.trim().to_owned()));
        for (what, key) in [number, upn, sid].into_iter().flatten() {
            if let Some(first) = numbers.insert((what, key), *line) {
                out.errors.push(BadRow {
                    line: *line,
                    employee_number: p.employee_number.clone(),
                    message: format!("{what} also on line {first}"),
                });
            }
        }
    }
    let mut check = Outcome::default();
    send(client, &people, batch, true, &mut check)?;
    out.errors.append(&mut check.errors);
    // One message per line: the file's own (e.g. "also on line 2") before the issuer's
    // (a stable sort keeps them in that order).
    out.errors.sort_by_key(|e| e.line);
    out.errors.dedup_by(|later, first| later.line == first.line);
    if dry_run || !out.errors.is_empty() {
        out.created = check.created;
        out.updated = check.updated;
        out.unchanged = check.unchanged;
        return Ok(out);
    }
    send(client, &people, batch, false, &mut out)?;
    out.applied = out.errors.is_empty();
    Ok(out)
}

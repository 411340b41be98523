//! An HR export as the import reads it (CSV, UTF-8, a header row), and the import's run
//! over it in batches: shared by the `tessera import` CLI (batches over the HTTP API) and
//! the admin portal's import page (batches straight to the registration authority).
//!
//! The whole file is checked first — here (encoding, columns, values, duplicates across
//! batches) and by the issuer in dry runs (identity numbers, conflicts with the register) —
//! and imported only if no row is wrong; every bad row is named by its line.

use std::collections::HashMap;

use crate::api::{ImportReport, ImportRequest, NewPerson, NonResident};

/// The columns an HR file may have; the first three are required.
pub const COLUMNS: [&str; 10] = [
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

/// The most rows a file may have (a whole organisation's export; a bigger file is split).
pub const MAX_ROWS: usize = 200_000;
/// Bad rows after which reading stops: a file this wrong is the wrong file.
pub const MAX_BAD: usize = 1_000;

/// One bad row, by its line in the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BadRow {
    pub line: u64,
    pub employee_number: String,
    pub message: String,
}

/// One row the import creates or changes, by its line in the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChangedRow {
    pub line: u64,
    pub employee_number: String,
    /// `create` or `update`.
    pub kind: String,
    /// For an update, the names of the fields that change.
    pub fields: String,
}

/// What an import did (or, checked only, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Outcome {
    pub rows: usize,
    pub dry_run: bool,
    pub applied: bool,
    /// Some batches were applied before one was refused (the register changed meanwhile).
    pub partial: bool,
    pub created: u32,
    pub updated: u32,
    pub unchanged: u32,
    pub errors: Vec<BadRow>,
    /// The rows that create or change a person, in line order.
    pub changes: Vec<ChangedRow>,
}

/// People with the lines they are on.
pub type Lines = Vec<(u64, NewPerson)>;

/// A file read: the people in it with their lines, and the rows that could not be read.
#[derive(Debug, Default)]
pub struct HrFile {
    pub people: Lines,
    pub bad: Vec<BadRow>,
}

impl HrFile {
    /// Reads an export. A file whose header is wrong (unknown, repeated or missing
    /// columns) is refused whole, with why; a row that is wrong is kept in `bad`.
    pub fn read(bytes: &[u8]) -> Result<Self, String> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let mut reader = csv::ReaderBuilder::new().from_reader(bytes);
        let headers = reader
            .byte_headers()
            .map_err(|e| format!("the header row: {e}"))?
            .clone();
        let mut index = HashMap::new();
        let mut unknown = Vec::new();
        for (i, h) in headers.iter().enumerate() {
            let name = String::from_utf8_lossy(h).trim().to_owned();
            if COLUMNS.contains(&name.as_str()) {
                if index.insert(name.clone(), i).is_some() {
                    return Err(format!("column {name:?} appears twice"));
                }
            } else {
                unknown.push(name);
            }
        }
        if !unknown.is_empty() {
            return Err(format!(
                "unknown columns {unknown:?}; the columns are {}",
                COLUMNS.join(", ")
            ));
        }
        for required in &COLUMNS[..3] {
            if !index.contains_key(*required) {
                return Err(format!("the column {required} is missing"));
            }
        }
        let mut file = HrFile::default();
        for record in reader.byte_records() {
            if file.rows() >= MAX_ROWS {
                return Err(format!(
                    "more than {MAX_ROWS} rows: split the file and import the parts"
                ));
            }
            if file.bad.len() >= MAX_BAD {
                let first = &file.bad[0];
                return Err(format!(
                    "more than {MAX_BAD} bad rows (the first, line {}: {}): is this the HR export?",
                    first.line, first.message
                ));
            }
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    file.bad.push(BadRow {
                        line,
                        employee_number: String::new(),
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            let line = record.position().map_or(0, |p| p.line());
            match person(&record, &index) {
                Ok(p) => file.people.push((line, p)),
                Err((employee_number, message)) => file.bad.push(BadRow {
                    line,
                    employee_number,
                    message,
                }),
            }
        }
        Ok(file)
    }

    /// Rows in the file.
    pub fn rows(&self) -> usize {
        self.people.len() + self.bad.len()
    }

    /// Duplicates across the whole file (the issuer sees one batch at a time): employee
    /// numbers, identity numbers in either spelling (YYYYMMDD-NNNC and YYYYMMDDNNNC are
    /// one), logon names and SIDs.
    pub fn duplicates(&self) -> Vec<BadRow> {
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        let mut numbers = HashMap::new();
        for (line, p) in &self.people {
            if let Some(first) = seen.insert(p.employee_number.clone(), *line) {
                out.push(BadRow {
                    line: *line,
                    employee_number: p.employee_number.clone(),
                    message: format!("employee number also on line {first}"),
                });
            }
            let number = p
                .identity_number
                .as_deref()
                .and_then(|n| crate::identity::IdentityNumber::parse(n).ok())
                .map(|n| ("identity number", n.as_str().to_owned()));
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
                    out.push(BadRow {
                        line: *line,
                        employee_number: p.employee_number.clone(),
                        message: format!("{what} also on line {first}"),
                    });
                }
            }
        }
        out
    }

    /// Checks the whole file with `send` (dry runs, `batch` people at a time), then —
    /// unless `dry_run` or a row is wrong — imports it the same way. `progress` hears how
    /// many people each finished batch held and whether it was the check or the import.
    pub fn run<E>(
        &self,
        batch: usize,
        dry_run: bool,
        mut send: impl FnMut(&ImportRequest) -> Result<ImportReport, E>,
        mut progress: impl FnMut(Phase, usize),
    ) -> Result<Outcome, E> {
        let batch = batch.clamp(1, 5_000);
        let mut out = Outcome {
            rows: self.rows(),
            dry_run,
            errors: self.bad.clone(),
            ..Outcome::default()
        };
        out.errors.extend(self.duplicates());
        let mut check = Outcome::default();
        self.send(batch, true, &mut send, &mut progress, &mut check)?;
        out.errors.append(&mut check.errors);
        // One message per line: the file's own (e.g. "also on line 2") before the
        // issuer's (a stable sort keeps them in that order).
        out.errors.sort_by_key(|e| e.line);
        out.errors.dedup_by(|later, first| later.line == first.line);
        if dry_run || !out.errors.is_empty() {
            out.created = check.created;
            out.updated = check.updated;
            out.unchanged = check.unchanged;
            out.changes = check.changes;
            return Ok(out);
        }
        let whole = self.send(batch, false, &mut send, &mut progress, &mut out)?;
        out.applied = whole && out.errors.is_empty();
        Ok(out)
    }

    /// Sends the people in batches (dry run or for real), folding the answers into `out`;
    /// stops at the first batch not applied. Whether every batch was.
    fn send<E>(
        &self,
        batch: usize,
        dry_run: bool,
        send: &mut impl FnMut(&ImportRequest) -> Result<ImportReport, E>,
        progress: &mut impl FnMut(Phase, usize),
        out: &mut Outcome,
    ) -> Result<bool, E> {
        let phase = if dry_run { Phase::Check } else { Phase::Import };
        // The pass begins (a progress display shows it before the first batch's answer).
        progress(phase, 0);
        let mut applied_before = false;
        for chunk in self.people.chunks(batch) {
            let report = send(&ImportRequest {
                people: chunk.iter().map(|(_, p)| p.clone()).collect(),
                dry_run,
            })?;
            let line_of = |index: u32| {
                usize::try_from(index)
                    .ok()
                    .and_then(|i| chunk.get(i))
                    .map_or(0, |(l, _)| *l)
            };
            for e in report.errors {
                out.errors.push(BadRow {
                    line: line_of(e.index),
                    employee_number: e.employee_number,
                    message: e.message,
                });
            }
            if !dry_run && !report.applied {
                // Another change between the check and this batch (the register moved):
                // the batches before this one stand (their counts are what was written),
                // this one's would-be changes are not; a re-run finishes the file.
                out.partial = applied_before;
                return Ok(false);
            }
            applied_before = true;
            out.created += report.created;
            out.updated += report.updated;
            out.unchanged += report.unchanged;
            for c in report.changes {
                out.changes.push(ChangedRow {
                    line: line_of(c.index),
                    employee_number: c.employee_number,
                    kind: c.kind,
                    fields: c.fields,
                });
            }
            progress(phase, chunk.len());
        }
        Ok(true)
    }
}

/// Which pass of an import a batch belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Check,
    Import,
}

/// One row as a person, or (employee number, what is wrong).
fn person(
    record: &csv::ByteRecord,
    index: &HashMap<String, usize>,
) -> Result<NewPerson, (String, String)> {
    let mut fields = HashMap::new();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RowError;

    #[test]
    fn a_bad_header_refuses_the_file() {
        assert!(HrFile::read(b"employee_number,given_name\n1,A\n")
            .unwrap_err()
            .contains("family_name is missing"));
        assert!(
            HrFile::read(b"employee_number,given_name,family_name,shoe\n")
                .unwrap_err()
                .contains("unknown columns")
        );
        assert!(
            HrFile::read(b"employee_number,given_name,family_name,email,email\n")
                .unwrap_err()
                .contains("twice")
        );
    }

    #[test]
    fn bad_rows_are_named_by_line_and_duplicates_across_the_file_found() {
        let file = HrFile::read(
            "\u{feff}employee_number,given_name,family_name,protected_identity,birth_date\n\
             E1,Åsa,Berg,no,\n\
             E2,Bo,Ek,maybe,\n\
             E3,Cy,Al,,1990-01-01\n\
             E1,Di,Ox,,\n"
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(file.rows(), 4);
        assert_eq!(file.people.len(), 2);
        assert_eq!(file.people[0].1.given_name, "Åsa");
        let lines: Vec<u64> = file.bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, [3, 4]);
        let dup = file.duplicates();
        assert_eq!(dup.len(), 1);
        assert_eq!(dup[0].line, 5);
        assert!(dup[0].message.contains("line 2"));
    }

    #[test]
    fn a_run_imports_only_a_clean_file_and_maps_answers_to_lines() {
        let mut text = String::from("employee_number,given_name,family_name\n");
        for i in 0..5 {
            text.push_str(&format!("E{i},G{i},F{i}\n"));
        }
        let file = HrFile::read(text.as_bytes()).unwrap();
        let mut sent = Vec::new();
        let mut seen = 0;
        // An issuer that refuses the fourth person of the file (index 1 of batch 2).
        let out = file
            .run(
                3,
                false,
                |req| -> Result<ImportReport, ()> {
                    sent.push((req.dry_run, req.people.len()));
                    let bad = req.people.iter().position(|p| p.employee_number == "E3");
                    Ok(ImportReport {
                        dry_run: req.dry_run,
                        applied: false,
                        errors: bad
                            .map(|i| RowError {
                                index: i as u32,
                                employee_number: "E3".into(),
                                message: "no".into(),
                            })
                            .into_iter()
                            .collect(),
                        ..ImportReport::default()
                    })
                },
                |_, n| seen += n,
            )
            .unwrap();
        assert_eq!(sent, [(true, 3), (true, 2)], "checked only, never imported");
        assert_eq!(seen, 5);
        assert!(!out.applied);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].line, 5);
    }
}

#[cfg(test)]
mod partial {
    use super::*;

    /// A batch refused while importing (the register moved after the check): only the
    /// batches before it count, and "partial" only if there were any.
    #[test]
    fn a_refused_batch_counts_nothing_and_partial_means_something_was_written() {
        let mut text = String::from("employee_number,given_name,family_name\n");
        for i in 0..4 {
            text.push_str(&format!("E{i},G{i},F{i}\n"));
        }
        let file = HrFile::read(text.as_bytes()).unwrap();
        for (refuse_batch, partial, created) in [(0, false, 0), (1, true, 2)] {
            let mut writes = 0;
            let out = file
                .run(
                    2,
                    false,
                    |req| -> Result<ImportReport, ()> {
                        let refused = !req.dry_run && writes == refuse_batch;
                        if !req.dry_run {
                            writes += 1;
                        }
                        Ok(ImportReport {
                            dry_run: req.dry_run,
                            applied: !req.dry_run && !refused,
                            created: 2,
                            ..ImportReport::default()
                        })
                    },
                    |_, _| {},
                )
                .unwrap();
            assert_eq!(out.partial, partial, "refused batch {refuse_batch}");
            assert_eq!(out.created, created, "refused batch {refuse_batch}");
            assert!(!out.applied);
        }
    }

    #[test]
    fn a_file_with_too_many_bad_rows_is_refused_whole() {
        let mut text = String::from("employee_number,given_name,family_name,protected_identity\n");
        for i in 0..=MAX_BAD {
            text.push_str(&format!("E{i},G,F,maybe\n"));
        }
        let e = HrFile::read(text.as_bytes()).unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }
}

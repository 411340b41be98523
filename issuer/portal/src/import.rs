//! The HR import page: an HR admin uploads an export (CSV), sees the dry run's report row
//! by row — every row that would be created or changed and every bad row, by its line —
//! and only then applies it. Checking and importing run in the background, a batch at a
//! time, while the job's page shows how far they are (a progress bar that reloads itself
//! once a second: no JavaScript).
//!
//! A job lives in this server's memory, belongs to the officer who uploaded it (anyone
//! else gets "no such import"), and is dropped an hour after its last step; at most
//! [`MAX_JOBS`] exist at once. The file is checked again, batch by batch, when applied
//! (the register may have changed since the dry run); the RA audits both passes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tessera_issuer_ra::{Actor, Ra, RaError};
use tessera_issuer_types::hr_file::{HrFile, Outcome, Phase};
use tessera_issuer_types::lifecycle::OfficerRole;

use crate::pages::{forged, page, refusal, signed_in, to_sign_in, Ctx, Frame};
use crate::Portal;

/// The largest file the page takes (about 100 000 people).
pub(crate) const MAX_FILE: usize = 32 << 20;
/// Import jobs kept at once (checked, running or finished).
const MAX_JOBS: usize = 16;
/// How long a job is kept after its last step.
const KEEP: Duration = Duration::from_secs(3600);
/// People per batch sent to the RA.
const BATCH: usize = 1000;
/// Rows the report lists (the counts cover all).
const SHOWN: usize = 1000;

/// Where an import job is.
#[derive(Debug, Clone)]
enum Stage {
    Checking,
    Checked(Outcome),
    Importing,
    Imported(Outcome),
    Failed(String),
}

/// One uploaded file on its way in.
pub(crate) struct Job {
    owner: String,
    file_name: String,
    file: HrFile,
    /// People through the current pass.
    done: AtomicUsize,
    stage: Mutex<(Stage, Instant)>,
}

impl Job {
    fn stage(&self) -> Stage {
        self.stage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    fn set(&self, stage: Stage) {
        *self.stage.lock().unwrap_or_else(|p| p.into_inner()) = (stage, Instant::now());
    }
}

/// This server's import jobs.
#[derive(Default)]
pub(crate) struct Jobs(Mutex<HashMap<String, Arc<Job>>>);

impl Jobs {
    fn get(&self, id: &str, owner: &str) -> Option<Arc<Job>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .filter(|j| j.owner == owner)
            .cloned()
    }

    /// Keeps `job`, dropping those idle for an hour; refuses when full.
    fn add(&self, job: Job) -> Result<String, RaError> {
        let mut jobs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        jobs.retain(|_, j| {
            let (stage, at) = &*j.stage.lock().unwrap_or_else(|p| p.into_inner());
            let running = matches!(stage, Stage::Checking | Stage::Importing);
            running || at.elapsed() < KEEP
        });
        if jobs.len() >= MAX_JOBS {
            return Err(RaError::Invalid(
                "too many imports are open on this server; try again in a while".into(),
            ));
        }
        let id: String = rand::random::<[u8; 16]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        jobs.insert(id.clone(), Arc::new(job));
        Ok(id)
    }
}

/// Runs one pass (the check, or the check and the import) of `job` in the background.
fn start(ra: Arc<Ra>, actor: Actor, job: Arc<Job>, apply: bool) {
    job.done.store(0, Ordering::Relaxed);
    job.set(if apply {
        Stage::Importing
    } else {
        Stage::Checking
    });
    tokio::task::spawn_blocking(move || {
        let mut pass = Phase::Check;
        let result = job.file.run(
            BATCH,
            !apply,
            |req| ra.import_people(&actor, req),
            |phase, n| {
                // The import's own pass (after its check again): the bar starts over.
                if phase != pass {
                    pass = phase;
                    job.done.store(0, Ordering::Relaxed);
                }
                job.done.fetch_add(n, Ordering::Relaxed);
            },
        );
        job.set(match result {
            Ok(out) if apply => Stage::Imported(out),
            Ok(out) => Stage::Checked(out),
            Err(e) => {
                tracing::warn!(error = %e, "a portal import failed");
                Stage::Failed(match e {
                    RaError::Forbidden(m) | RaError::Invalid(m) => m,
                    other => other.to_string(),
                })
            }
        });
    });
}

#[derive(Template)]
#[template(path = "import.html")]
struct ImportPage {
    f: Frame,
    max_mib: usize,
    problem: Option<String>,
}

fn may_import(ctx: &Ctx) -> Option<Response> {
    let (_, s) = signed_in(ctx)?;
    (!s.actor.has(OfficerRole::HrAdmin))
        .then(|| refusal(ctx, RaError::Forbidden(ctx.tr().import_hr_only.to_owned())))
}

pub(crate) async fn form(ctx: Ctx) -> Response {
    if signed_in(&ctx).is_none() {
        return to_sign_in();
    }
    if let Some(r) = may_import(&ctx) {
        return r;
    }
    upload_page(&ctx, StatusCode::OK, None)
}

fn upload_page(ctx: &Ctx, status: StatusCode, problem: Option<String>) -> Response {
    page(
        ctx,
        status,
        ImportPage {
            f: ctx.frame(ctx.tr().import_title),
            max_mib: MAX_FILE >> 20,
            problem,
        },
    )
}

/// `POST /admin/import`: the file (multipart), checked in the background.
pub(crate) async fn upload(
    State(portal): State<Arc<Portal>>,
    ctx: Ctx,
    mut form: Multipart,
) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    if let Some(r) = may_import(&ctx) {
        return r;
    }
    let (mut csrf, mut file, mut file_name) = (String::new(), None, String::new());
    loop {
        match form.next_field().await {
            Ok(Some(field)) => match field.name() {
                Some("csrf") => csrf = field.text().await.unwrap_or_default(),
                Some("file") => {
                    file_name = field.file_name().unwrap_or("").to_owned();
                    match field.bytes().await {
                        Ok(b) => file = Some(b),
                        Err(e) => {
                            return upload_page(&ctx, StatusCode::BAD_REQUEST, Some(e.body_text()))
                        }
                    }
                }
                _ => {}
            },
            Ok(None) => break,
            Err(e) => return upload_page(&ctx, StatusCode::BAD_REQUEST, Some(e.body_text())),
        }
    }
    if let Some(r) = forged(&ctx, &session.csrf, &csrf) {
        return r;
    }
    let bytes = match file {
        Some(b) if !b.is_empty() => b,
        _ => {
            return upload_page(
                &ctx,
                StatusCode::BAD_REQUEST,
                Some(ctx.tr().import_no_file.to_owned()),
            )
        }
    };
    let file = match HrFile::read(&bytes) {
        Ok(f) => f,
        Err(e) => return upload_page(&ctx, StatusCode::BAD_REQUEST, Some(e)),
    };
    let job = Job {
        owner: session.actor.name.clone(),
        file_name: file_name.chars().take(200).collect(),
        file,
        done: AtomicUsize::new(0),
        stage: Mutex::new((Stage::Checking, Instant::now())),
    };
    match portal.imports.add(job) {
        Ok(id) => {
            if let Some(job) = portal.imports.get(&id, &session.actor.name) {
                start(Arc::clone(&portal.ra), session.actor.clone(), job, false);
            }
            Redirect::to(&format!("/admin/import/{id}")).into_response()
        }
        Err(e) => refusal(&ctx, e),
    }
}

/// A row of the report: a bad row or one that creates or changes a person.
struct ReportRow {
    line: u64,
    employee_number: String,
    /// `error`, `create` or `update`.
    kind: &'static str,
    text: String,
}

#[derive(Template)]
#[template(path = "import_job.html")]
struct JobPage {
    f: Frame,
    id: String,
    file_name: String,
    rows: usize,
    /// Still running: the pass's name, people done, people in all.
    running: Option<(&'static str, usize, usize)>,
    outcome: Option<Outcome>,
    applied: bool,
    failed: Option<String>,
    report: Vec<ReportRow>,
    more: usize,
}

pub(crate) async fn job(
    State(portal): State<Arc<Portal>>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    let Some(job) = portal.imports.get(&id, &session.actor.name) else {
        return refusal(&ctx, RaError::Missing(ctx.tr().import_missing.to_owned()));
    };
    let tr = ctx.tr();
    let total = job.file.people.len();
    let done = job.done.load(Ordering::Relaxed).min(total);
    let (mut running, mut outcome, mut applied, mut failed) = (None, None, false, None);
    match job.stage() {
        Stage::Checking => running = Some((tr.import_checking, done, total)),
        Stage::Importing => running = Some((tr.import_importing, done, total)),
        Stage::Checked(o) => outcome = Some(o),
        Stage::Imported(o) => {
            applied = o.applied;
            outcome = Some(o);
        }
        Stage::Failed(why) => failed = Some(why),
    }
    let mut report = Vec::new();
    let mut more = 0;
    if let Some(o) = &outcome {
        let errors = o.errors.iter().map(|e| ReportRow {
            line: e.line,
            employee_number: e.employee_number.clone(),
            kind: "error",
            text: e.message.clone(),
        });
        let changes = o.changes.iter().map(|c| ReportRow {
            line: c.line,
            employee_number: c.employee_number.clone(),
            kind: if c.kind == "create" {
                "create"
            } else {
                "update"
            },
            text: c.fields.clone(),
        });
        report = errors.chain(changes).collect();
        report.sort_by_key(|r| r.line);
        more = report.len().saturating_sub(SHOWN);
        report.truncate(SHOWN);
    }
    let mut r = page(
        &ctx,
        StatusCode::OK,
        JobPage {
            f: ctx.frame(tr.import_title),
            id,
            file_name: job.file_name.clone(),
            rows: job.file.rows(),
            running,
            outcome,
            applied,
            failed,
            report,
            more,
        },
    );
    if running.is_some() {
        // The page reloads itself while the job runs (the progress bar moves).
        r.headers_mut()
            .insert("refresh", axum::http::HeaderValue::from_static("1"));
    }
    r
}

#[derive(Deserialize)]
pub(crate) struct ApplyForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /admin/import/{id}/apply`: imports a checked file without bad rows.
pub(crate) async fn apply(
    State(portal): State<Arc<Portal>>,
    ctx: Ctx,
    Path(id): Path<String>,
    axum::extract::Form(form): axum::extract::Form<ApplyForm>,
) -> Response {
    let Some((_, session)) = signed_in(&ctx) else {
        return to_sign_in();
    };
    if let Some(r) = forged(&ctx, &session.csrf, &form.csrf) {
        return r;
    }
    if let Some(r) = may_import(&ctx) {
        return r;
    }
    let Some(job) = portal.imports.get(&id, &session.actor.name) else {
        return refusal(&ctx, RaError::Missing(ctx.tr().import_missing.to_owned()));
    };
    // Only a checked file without bad rows, once (the stage moves on under the lock).
    {
        let mut stage = job.stage.lock().unwrap_or_else(|p| p.into_inner());
        match &stage.0 {
            Stage::Checked(o) if o.errors.is_empty() => {
                *stage = (Stage::Importing, Instant::now());
            }
            _ => {
                drop(stage);
                return refusal(
                    &ctx,
                    RaError::InvalidTransition {
                        what: "this import".into(),
                        current: "not a checked file without bad rows".into(),
                        verb: "apply",
                    },
                );
            }
        }
    }
    start(Arc::clone(&portal.ra), session.actor.clone(), job, true);
    Redirect::to(&format!("/admin/import/{id}")).into_response()
}

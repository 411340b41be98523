//! The HR import page: an HR admin uploads an export (CSV), sees the dry run's report row
//! by row — every row that would be created or changed and every bad row, by its line —
//! and only then applies it. Checking and importing run in the background, a batch at a
//! time, while the job's page shows how far they are (a progress bar that reloads itself
//! once a second: no JavaScript).
//!
//! A job lives in this server's memory (behind a load balancer, the officer's requests
//! must reach the same server), belongs to the officer who uploaded it (anyone else gets
//! "no such import"), and is dropped an hour after its last step; an officer has at most
//! [`PER_OFFICER`] (a new upload replaces their finished ones), the server at most
//! [`MAX_JOBS`]. Every batch re-checks the officer's session — signed out, card suspended,
//! or role gone, the job stops. The file is checked again, batch by batch, when applied
//! (the register may have changed since the dry run); the RA audits both passes. Only the
//! report's first [`SHOWN`] rows are kept once a pass ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tessera_issuer_ra::{Ra, RaError};
use tessera_issuer_types::hr_file::{HrFile, Outcome, Phase};
use tessera_issuer_types::lifecycle::OfficerRole;

use crate::pages::{forged, page, refusal, signed_in, to_sign_in, Ctx, Frame};
use crate::Portal;

/// The largest file the page takes (about 100 000 people).
pub(crate) const MAX_FILE: usize = 32 << 20;
/// Import jobs kept at once on this server (checked, running or finished).
const MAX_JOBS: usize = 16;
/// Import jobs one officer may have at once.
const PER_OFFICER: usize = 2;
/// How long a job is kept after its last step.
const KEEP: Duration = Duration::from_secs(3600);
/// People per batch sent to the RA.
const BATCH: usize = 1000;
/// Rows the report lists (the counts cover all).
const SHOWN: usize = 1000;
/// The job page's `Refresh` while it runs: seconds between reloads.
const RELOAD: &str = "3";

/// What a pass found, as the page shows it: the counts and the first [`SHOWN`] rows.
#[derive(Debug)]
struct Summary {
    created: u32,
    updated: u32,
    unchanged: u32,
    bad: usize,
    applied: bool,
    partial: bool,
    rows: Vec<ReportRow>,
    more: usize,
}

impl Summary {
    fn of(o: Outcome) -> Self {
        let bad = o.errors.len();
        let errors = o.errors.into_iter().map(|e| ReportRow {
            line: e.line,
            employee_number: e.employee_number,
            kind: "error",
            text: e.message,
        });
        let changes = o.changes.into_iter().map(|c| ReportRow {
            line: c.line,
            employee_number: c.employee_number,
            kind: if c.kind == "create" {
                "create"
            } else {
                "update"
            },
            text: c.fields,
        });
        let mut rows: Vec<ReportRow> = errors.chain(changes).collect();
        rows.sort_by_key(|r| r.line);
        let more = rows.len().saturating_sub(SHOWN);
        rows.truncate(SHOWN);
        Self {
            created: o.created,
            updated: o.updated,
            unchanged: o.unchanged,
            bad,
            applied: o.applied,
            partial: o.partial,
            rows,
            more,
        }
    }
}

/// Where an import job is.
#[derive(Debug, Clone)]
enum Stage {
    Checking,
    Checked(Arc<Summary>),
    Importing,
    Imported(Arc<Summary>),
    /// Why, when it is the officer's to know (else the page says the server failed).
    Failed(Option<String>),
}

impl Stage {
    fn running(&self) -> bool {
        matches!(self, Stage::Checking | Stage::Importing)
    }
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
    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Job>>> {
        let mut jobs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Those idle for an hour go (running ones never idle).
        jobs.retain(|_, j| {
            let (stage, at) = &*j.stage.lock().unwrap_or_else(|p| p.into_inner());
            stage.running() || at.elapsed() < KEEP
        });
        jobs
    }

    fn get(&self, id: &str, owner: &str) -> Option<Arc<Job>> {
        self.jobs().get(id).filter(|j| j.owner == owner).cloned()
    }

    /// Whether `owner` may start another job: their finished ones are dropped to make
    /// room; refused if they already run [`PER_OFFICER`] or the server holds [`MAX_JOBS`].
    fn make_room(&self, owner: &str) -> Result<(), RaError> {
        let mut jobs = self.jobs();
        jobs.retain(|_, j| j.owner != owner || j.stage().running());
        if jobs.values().filter(|j| j.owner == owner).count() >= PER_OFFICER {
            return Err(RaError::Invalid(format!(
                "you already have {PER_OFFICER} imports running; wait for them to finish"
            )));
        }
        if jobs.len() >= MAX_JOBS {
            return Err(RaError::Invalid(
                "too many imports are open on this server; try again in a while".into(),
            ));
        }
        Ok(())
    }

    /// Keeps `job` (after [`Jobs::make_room`], checked again: two uploads may race).
    fn add(&self, job: Job) -> Result<(String, Arc<Job>), RaError> {
        self.make_room(&job.owner)?;
        let id: String = rand::random::<[u8; 16]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let job = Arc::new(job);
        self.jobs().insert(id.clone(), Arc::clone(&job));
        Ok((id, job))
    }
}

/// The officer a job runs for: their session, checked again before every batch.
#[derive(Clone)]
struct Officer {
    token: String,
    peer: Option<axum::body::Bytes>,
}

/// Runs one pass (the check, or the check and the import) of `job` in the background.
fn start(ra: Arc<Ra>, officer: Officer, job: Arc<Job>, apply: bool) {
    job.done.store(0, Ordering::Relaxed);
    job.set(if apply {
        Stage::Importing
    } else {
        Stage::Checking
    });
    tokio::task::spawn_blocking(move || {
        let mut pass = Phase::Check;
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            job.file.run(
                BATCH,
                !apply,
                |req| {
                    // The officer as they are now: a session ended (sign-out, card
                    // suspended, idle) or a role taken away stops the job here.
                    let session = ra.session(&officer.token, officer.peer.as_deref())?;
                    ra.import_people(&session.actor, req)
                },
                |phase, n| {
                    // The import's own pass (after its check again): the bar starts over.
                    if phase != pass {
                        pass = phase;
                        job.done.store(0, Ordering::Relaxed);
                    }
                    job.done.fetch_add(n, Ordering::Relaxed);
                },
            )
        }));
        job.set(match run {
            Ok(Ok(out)) if apply => Stage::Imported(Arc::new(Summary::of(out))),
            Ok(Ok(out)) => Stage::Checked(Arc::new(Summary::of(out))),
            Ok(Err(e)) => Stage::Failed(match e {
                RaError::Forbidden(m) | RaError::Invalid(m) | RaError::BadRequest(m) => Some(m),
                RaError::SessionEnded(why) => Some(why),
                other => {
                    tracing::error!(error = %other, "a portal import failed");
                    None
                }
            }),
            Err(_) => {
                tracing::error!("a portal import panicked");
                Stage::Failed(None)
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

/// The signed-in officer of `ctx`, for a background job.
fn officer(ctx: &Ctx) -> Officer {
    Officer {
        token: signed_in(ctx)
            .map(|(t, _)| t.to_owned())
            .unwrap_or_default(),
        peer: ctx.peer.0.clone(),
    }
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
    // Room for the job first: no upload is read for nothing.
    if let Err(e) = portal.imports.make_room(&session.actor.name) {
        return refusal(&ctx, e);
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
    let file = match tokio::task::spawn_blocking(move || HrFile::read(&bytes)).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return upload_page(&ctx, StatusCode::BAD_REQUEST, Some(e)),
        Err(e) => return refusal(&ctx, RaError::Invalid(format!("the file: {e}"))),
    };
    let job = Job {
        owner: session.actor.name.clone(),
        file_name: file_name.chars().take(200).collect(),
        file,
        done: AtomicUsize::new(0),
        stage: Mutex::new((Stage::Checking, Instant::now())),
    };
    match portal.imports.add(job) {
        Ok((id, job)) => {
            start(Arc::clone(&portal.ra), officer(&ctx), job, false);
            Redirect::to(&format!("/admin/import/{id}")).into_response()
        }
        Err(e) => refusal(&ctx, e),
    }
}

/// A row of the report: a bad row or one that creates or changes a person.
#[derive(Debug)]
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
    /// While running: whether the page reloads itself (the officer can stop it).
    follow: bool,
    report: Option<Arc<Summary>>,
    /// The report is of the import itself (not only the check).
    imported: bool,
    failed: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct JobQuery {
    follow: Option<String>,
}

pub(crate) async fn job(
    State(portal): State<Arc<Portal>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(query): Query<JobQuery>,
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
    let (mut running, mut report, mut imported, mut failed) = (None, None, false, None);
    match job.stage() {
        Stage::Checking => running = Some((tr.import_checking, done, total)),
        Stage::Importing => running = Some((tr.import_importing, done, total)),
        Stage::Checked(r) => report = Some(r),
        Stage::Imported(r) => {
            imported = true;
            report = Some(r);
        }
        Stage::Failed(why) => failed = Some(why.unwrap_or_else(|| tr.server_failed.to_owned())),
    }
    let follow = running.is_some() && query.follow.as_deref() != Some("no");
    let mut r = page(
        &ctx,
        StatusCode::OK,
        JobPage {
            f: ctx.frame(tr.import_title),
            id,
            file_name: job.file_name.clone(),
            rows: job.file.rows(),
            running,
            follow,
            report,
            imported,
            failed,
        },
    );
    if follow {
        // The page reloads itself while the job runs (the bar moves), every few seconds,
        // until the officer stops it (WCAG 2.2.1: a time limit they can turn off).
        r.headers_mut()
            .insert("refresh", axum::http::HeaderValue::from_static(RELOAD));
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
            Stage::Checked(r) if r.bad == 0 => {
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
    start(Arc::clone(&portal.ra), officer(&ctx), job, true);
    Redirect::to(&format!("/admin/import/{id}")).into_response()
}

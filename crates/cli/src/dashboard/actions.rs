//! Actions: requeue, cancel and retry-now, through the same fenced storage
//! operations as `stuckless requeue` / `stuckless cancel`, with the CLI's
//! confirmation — requeueing a live lease (`--force`) is a second step that
//! says what it does — and each logged in the job's events with who did it.
//!
//! Every form carries the epoch the page showed: if the job was claimed,
//! reaped or requeued since, the action is refused (409) rather than applied
//! to a job the person has not seen.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use stuckless_core::driver::{JobGet, Storage};
use stuckless_core::{Client, Job, JobId, JobStatus};

use super::auth::Viewer;
use super::layout::{self, Nav, Page};
use super::{query, Dashboard, PageError};
use crate::ops;

/// The fields every action form sends (all text, so a bad value gets a
/// clear message instead of a parser's rejection).
#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    /// The session's CSRF token (cookie sessions).
    csrf: Option<String>,
    /// The epoch the page showed.
    epoch: Option<String>,
    /// "yes": revoke a live lease (the second step of a requeue).
    force: Option<String>,
}

/// A job id from the path: a positive integer.
pub fn parse_id(raw: &str) -> Result<JobId, PageError> {
    match raw.parse::<i64>() {
        Ok(n) if n > 0 => Ok(JobId(n)),
        _ => Err(PageError::BadRequest(format!(
            "invalid job id {raw:?}: job ids are positive integers"
        ))),
    }
}

fn parse_epoch(raw: Option<&str>) -> Result<Option<i64>, PageError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .map(Some)
            .map_err(|_| PageError::BadRequest(format!("invalid epoch {s:?}: an integer"))),
    }
}

/// The job, refused when missing or when it moved past the epoch the page showed.
async fn fenced(d: &Dashboard, id: JobId, epoch: Option<i64>) -> Result<Job, PageError> {
    let job = d
        .storage
        .job_get(JobGet { id })
        .await
        .map_err(|e| PageError::Unavailable(format!("reading job {id}: {e}")))?
        .ok_or_else(|| PageError::NotFound(format!("no job with id {id}")))?;
    if let Some(seen) = epoch {
        if seen != job.epoch.0 {
            return Err(PageError::Conflict(format!(
                "job {id} changed since the page was drawn (epoch {seen}, now {}): nothing was done",
                job.epoch.0
            )));
        }
    }
    Ok(job)
}

fn hidden(viewer: &Viewer, epoch: i64) -> Markup {
    html! {
        @if let Some(csrf) = &viewer.csrf { input type="hidden" name="csrf" value=(csrf); }
        input type="hidden" name="epoch" value=(epoch);
    }
}

/// The requeue button (nothing for a viewer who may not act).
pub fn requeue_form(d: &Dashboard, viewer: &Viewer, id: i64, epoch: i64, force: bool, label: &str) -> Markup {
    if !viewer.can_act() {
        return html! {};
    }
    html! {
        form.action method="post" action=(d.url(&format!("/jobs/{id}/requeue"))) {
            (hidden(viewer, epoch))
            @if force { input type="hidden" name="force" value="yes"; }
            button.requeue type="submit" class=@if force { "danger" } { (label) }
        }
    }
}

/// The cancel button.
pub fn cancel_form(d: &Dashboard, viewer: &Viewer, id: i64, epoch: i64) -> Markup {
    if !viewer.can_act() {
        return html! {};
    }
    html! {
        form.action method="post" action=(d.url(&format!("/jobs/{id}/cancel")))
            data-confirm=(format!("Cancel job {id}? It will never run again.")) {
            (hidden(viewer, epoch))
            button.danger type="submit" { "Cancel" }
        }
    }
}

/// The retry-now button.
pub fn retry_now_form(d: &Dashboard, viewer: &Viewer, id: i64, epoch: i64) -> Markup {
    if !viewer.can_act() {
        return html! {};
    }
    html! {
        form.action method="post" action=(d.url(&format!("/jobs/{id}/retry-now"))) {
            (hidden(viewer, epoch))
            button type="submit" { "Retry now" }
        }
    }
}

/// Which actions apply to `job` as it stands at `now` (micros).
pub fn buttons(d: &Dashboard, viewer: &Viewer, job: &Job, now: stuckless_core::Timestamp) -> Markup {
    let id = job.id.0;
    let epoch = job.epoch.0;
    let expired = job.lease_expires_at.is_some_and(|at| at <= now);
    html! {
        @match job.status {
            JobStatus::Dead => (requeue_form(d, viewer, id, epoch, false, "Requeue")),
            JobStatus::Running if expired => (requeue_form(d, viewer, id, epoch, false, "Requeue")),
            JobStatus::Running => (requeue_form(d, viewer, id, epoch, false, "Requeue (revokes the lease)…")),
            _ => {}
        }
        @if job.status == JobStatus::Queued && job.run_at > now {
            (retry_now_form(d, viewer, id, epoch))
        }
        @if matches!(job.status, JobStatus::Queued | JobStatus::Running) {
            (cancel_form(d, viewer, id, epoch))
        }
    }
}

/// Checks the request and reads the job: (actor, job).
async fn prepare(
    d: &Dashboard,
    viewer: &Viewer,
    headers: &HeaderMap,
    raw_id: &str,
    form: &ActionForm,
) -> Result<(String, Job), PageError> {
    let actor = viewer.authorize(d, headers, form.csrf.as_deref())?;
    let id = parse_id(raw_id)?;
    let job = fenced(d, id, parse_epoch(form.epoch.as_deref())?).await?;
    Ok((actor, job))
}

fn done(d: &Dashboard, id: JobId, what: &str) -> Response {
    Redirect::to(&d.url(&format!("/jobs/{id}?done={what}"))).into_response()
}

fn refused(error: anyhow::Error) -> PageError {
    PageError::Conflict(format!("{error:#}"))
}

/// POST /jobs/{id}/requeue
pub async fn requeue(
    State(d): State<Arc<Dashboard>>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let viewer = Viewer::of(&d, &headers);
    let result = async {
        let (actor, job) = prepare(&d, &viewer, &headers, &raw_id, &form).await?;
        let now = d.now().await?;
        let live = job.status == JobStatus::Running && job.lease_expires_at.is_some_and(|at| at > now);
        let force = form.force.as_deref() == Some("yes");
        if live && !force {
            return Ok(confirm_force(&d, &viewer, &job, now));
        }
        let before = query::last_event_id(d.pool(), job.id.0).await?;
        let client = Client::new(Arc::new(d.storage.clone()));
        ops::requeue(&client, job.id, force).await.map_err(refused)?;
        query::sign_event(d.pool(), job.id.0, before, "requeued", &actor).await?;
        tracing::info!(job_id = job.id.0, %actor, force, "requeued from the dashboard");
        Ok(done(&d, job.id, "requeued"))
    }
    .await;
    layout::answer(&d, &viewer, result)
}

/// The second step of requeueing a live lease: what it does, and the button.
fn confirm_force(d: &Dashboard, viewer: &Viewer, job: &Job, now: stuckless_core::Timestamp) -> Response {
    let id = job.id;
    let owner = job.lease_owner.as_deref().unwrap_or("(unknown)");
    let body = html! {
        div.notice {
            "Job " (id) " is running with a live lease held by " strong { (owner) }
            @if let Some(at) = job.lease_expires_at { " (it expires " (layout::ago(now, at)) ")" }
            ": its worker may still be working on it."
        }
        p {
            "Requeueing revokes the lease (the CLI's " code { "stuckless requeue " (id) " --force" } "): the job goes back to the queue at once, "
            "and the holder's later heartbeats, checkpoints and completion are refused by the epoch fence. "
            "If the worker is only slow, its work is thrown away and the job runs again."
        }
        p { a href=(d.url(&format!("/jobs/{id}"))) { "Look at the job's diagnosis first" } }
        (requeue_form(d, viewer, id.0, job.epoch.0, true, "Revoke the lease and requeue"))
    };
    let page = Page {
        title: format!("Requeue job {id}?"),
        nav: Nav::None,
        refresh: false,
        body,
    };
    layout::render(d, viewer, StatusCode::OK, page)
}

/// POST /jobs/{id}/cancel
pub async fn cancel(
    State(d): State<Arc<Dashboard>>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let viewer = Viewer::of(&d, &headers);
    let result = async {
        let (actor, job) = prepare(&d, &viewer, &headers, &raw_id, &form).await?;
        if job.status == JobStatus::Cancelled {
            return Err(PageError::Conflict(format!(
                "job {} is already cancelled",
                job.id
            )));
        }
        let before = query::last_event_id(d.pool(), job.id.0).await?;
        let client = Client::new(Arc::new(d.storage.clone()));
        ops::cancel(&client, job.id).await.map_err(refused)?;
        query::sign_event(d.pool(), job.id.0, before, "cancelled", &actor).await?;
        tracing::info!(job_id = job.id.0, %actor, "cancelled from the dashboard");
        Ok(done(&d, job.id, "cancelled"))
    }
    .await;
    layout::answer(&d, &viewer, result)
}

/// POST /jobs/{id}/retry-now
pub async fn retry_now(
    State(d): State<Arc<Dashboard>>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let viewer = Viewer::of(&d, &headers);
    let result = async {
        let (actor, job) = prepare(&d, &viewer, &headers, &raw_id, &form).await?;
        let now = d.now().await?;
        if !(job.status == JobStatus::Queued && job.run_at > now) {
            return Err(PageError::Conflict(format!(
                "job {} is {} and not waiting for a later run: retry-now applies to a queued job whose run is scheduled ahead (a retry's backoff or a delay)",
                job.id, job.status
            )));
        }
        if !query::retry_now(d.pool(), job.id.0, job.epoch.0, now, &actor).await? {
            return Err(PageError::Conflict(format!(
                "job {} changed while retry-now was applied: nothing was done",
                job.id
            )));
        }
        tracing::info!(job_id = job.id.0, %actor, "retry brought forward from the dashboard");
        Ok(done(&d, job.id, "retried-now"))
    }
    .await;
    layout::answer(&d, &viewer, result)
}

//! One job: the diagnosis (`stuckless diagnose`'s own), payload, progress
//! and checkpoint, attempts, the event log, the actions that apply, and the
//! job's timeline drawn by `stuckless-timeline`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use stuckless_core::driver::{JobEvents, Storage};
use stuckless_core::Timestamp;

use super::actions::{self, parse_id};
use super::auth::Viewer;
use super::layout::{self, Nav, Page};
use super::{Dashboard, PageError};
use crate::diagnose::{self, Case};

/// The query string: which action just happened, if any.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    done: Option<String>,
}

/// GET /jobs/{id}
pub async fn page(
    State(d): State<Arc<Dashboard>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let viewer = Viewer::of(&d, &headers);
    let result = draw(&d, &viewer, &raw, &params).await;
    layout::answer(&d, &viewer, result)
}

async fn diagnosis(d: &Dashboard, raw: &str) -> Result<diagnose::Diagnosis, PageError> {
    let id = parse_id(raw)?;
    diagnose::diagnose(&d.storage, id, d.stale_after)
        .await
        .map_err(|e| {
            let text = format!("{e:#}");
            if text.contains("no job") {
                PageError::NotFound(format!("no job with id {id}"))
            } else {
                PageError::Unavailable(text)
            }
        })
}

async fn draw(d: &Dashboard, viewer: &Viewer, raw: &str, params: &Params) -> Result<Response, PageError> {
    let g = diagnosis(d, raw).await?;
    let j = &g.job;
    let now = g.now;
    let done = match params.done.as_deref() {
        Some("requeued") => Some("Requeued: the job is back in the queue."),
        Some("cancelled") => Some("Cancelled: the job will never run again."),
        Some("retried-now") => Some("Retry brought forward: the job is due now."),
        _ => None,
    };
    let over_limit = g
        .time_limit
        .as_ref()
        .and_then(|t| t.cancels_at)
        .is_some_and(|at| at < now);
    let stuck = over_limit
        || matches!(
            g.case,
            Case::ExpiredLease | Case::WorkerGone | Case::NoLiveWorker | Case::UnhandledKind
        );
    let body = html! {
        @if let Some(done) = done { div.fine { (done) } }
        div #diagnosis class=(if stuck { "banner" } else { "card" }) {
            div.verdict data-case=(serde_json::to_value(g.case).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()) {
                @if let Some(s) = &g.scenario { "(" (s) ") " }
                (g.title)
            }
            p { (g.explanation) }
            @if let Some(fix) = &g.fix { p { "Safe fix: " code { (fix) } } }
            @if let Some(note) = &g.fix_note { p.muted { (note) } }
            (actions::buttons(d, viewer, j, now))
        }
        div.grid {
            div.card {
                h2 { "Job" }
                dl.facts {
                    dt { "Status" } dd { (layout::status_pill(j.status.as_str())) }
                    dt { "Queue / kind" } dd { (j.queue) " / " (j.kind) }
                    dt { "Attempt" } dd { (j.attempt) " of " (j.max_attempts) }
                    dt { "Epoch" } dd { (j.epoch.0) }
                    dt { "Priority" } dd { (j.priority) }
                    dt { "Run at" } dd { (j.run_at) " (" (layout::ago(now, j.run_at)) ")" }
                    dt { "Created" } dd { (j.created_at) }
                    @if let Some(owner) = &j.lease_owner { dt { "Lease owner" } dd { (owner) } }
                    @if let Some(at) = j.lease_expires_at { dt { "Lease expires" } dd { (at) " (" (layout::ago(now, at)) ")" } }
                    @if let Some(at) = j.claimed_at { dt { "Claimed" } dd { (layout::ago(now, at)) } }
                    @if let Some(at) = j.heartbeat_at { dt { "Last heartbeat" } dd { (layout::ago(now, at)) } }
                    @if let Some(at) = j.finished_at { dt { "Finished" } dd { (at) } }
                    @if let Some(limit) = j.timeout { dt { "Time limit" } dd { (layout::span(limit)) } }
                    @if let Some(key) = &j.idempotency_key { dt { "Idempotency key" } dd { (key) } }
                    @if let Some(e) = &j.last_error { dt { "Last error" } dd { (e) } }
                }
            }
            div.card {
                h2 { "Payload" }
                pre #payload { (layout::pretty(&j.payload)) }
                h2 { "Progress" }
                @match &j.progress { Some(p) => pre { (layout::pretty(p)) }, None => p.muted { "none reported" } }
                h2 { "Checkpoint" }
                @match &j.checkpoint {
                    Some(c) => {
                        pre { (layout::pretty(c)) }
                        @if let Some(at) = j.checkpointed_at { p.muted { "saved " (layout::ago(now, at)) } }
                    },
                    None => p.muted { "none saved" },
                }
            }
        }
        h2 { "Events" }
        @if g.events.is_empty() {
            p.muted { "No events logged (happy-path events are off by default)." }
        } @else {
            table #events {
                thead { tr { th { "When" } th { "Event" } th.num { "Epoch" } th.num { "Attempt" } th { "Worker" } th { "Detail" } } }
                tbody {
                    @for e in &g.events {
                        tr {
                            td { (e.at) } td { (e.kind.as_str()) } td.num { (e.epoch.0) } td.num { (e.attempt) }
                            td { (e.worker_id.as_deref().unwrap_or("")) } td { (e.detail.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        h2 { "Timeline" }
        img.timeline src=(d.url(&format!("/jobs/{}/timeline.svg", j.id))) alt=(format!("timeline of job {}", j.id));
    };
    let page = Page {
        title: format!("Job {}", j.id),
        nav: Nav::Jobs,
        refresh: matches!(
            j.status,
            stuckless_core::JobStatus::Running | stuckless_core::JobStatus::Queued
        ),
        body,
    };
    Ok(layout::render(d, viewer, StatusCode::OK, page))
}

/// GET /jobs/{id}/timeline.svg: the job's attempts, from its creation to now.
pub async fn timeline_svg(
    State(d): State<Arc<Dashboard>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Response {
    let viewer = Viewer::of(&d, &headers);
    let result = async {
        let id = parse_id(&raw)?;
        let now = d.now().await?;
        let job = d
            .storage
            .job_get(stuckless_core::driver::JobGet { id })
            .await
            .map_err(|e| PageError::Unavailable(format!("reading job {id}: {e}")))?
            .ok_or_else(|| PageError::NotFound(format!("no job with id {id}")))?;
        let events = d
            .storage
            .job_events(JobEvents { id })
            .await
            .map_err(|e| PageError::Unavailable(format!("reading job {id}'s events: {e}")))?;
        let end = job.finished_at.unwrap_or(now).max(job.created_at);
        // A little room either side, so the bars do not touch the edges.
        let pad = ((end.as_micros() - job.created_at.as_micros()) / 20).max(1_000_000);
        let (since, until) = (
            Timestamp::from_micros(job.created_at.as_micros() - pad),
            Timestamp::from_micros(end.as_micros() + pad),
        );
        let title = format!("job {id} · {since} → {until}");
        let timeline = crate::timeline::build(title, std::slice::from_ref(&job), &events, since, until);
        Ok(svg(stuckless_timeline::render_svg(&timeline)))
    }
    .await;
    layout::answer(&d, &viewer, result)
}

/// An SVG answer.
pub fn svg(text: String) -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml")], text).into_response()
}

//! Stuck jobs: every job the diagnosis says needs someone (lease expired
//! and not reaped, worker gone, past its time limit, due with no live worker
//! for its queue or kind), in plain words with the safe fix — the verdicts
//! of `stuckless diagnose`, read from `stuckless.job_verdicts_at` — and the
//! jobs at risk: running with a live lease far longer than their kind
//! usually takes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{html, Markup};
use stuckless_core::Timestamp;

use super::actions;
use super::auth::Viewer;
use super::layout::{self, Nav, Page};
use super::query::{self, AT_RISK_FACTOR, AT_RISK_SAMPLES};
use super::{Dashboard, PageError};

/// Most stuck jobs listed.
const LIMIT: i64 = 500;

/// GET /stuck
pub async fn page(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    let viewer = Viewer::of(&d, &headers);
    let result = draw(&d, &viewer).await;
    layout::answer(&d, &viewer, result)
}

async fn draw(d: &Dashboard, viewer: &Viewer) -> Result<Response, PageError> {
    let now = d.now().await?;
    let stuck = query::stuck(d.pool(), now, d.stale_after, LIMIT)
        .await
        .map_err(|e| {
            PageError::Unavailable(format!(
                "could not judge which jobs are stuck ({e}): the verdicts read every unfinished job, and a large \
                 backlog can exceed the dashboard's statement timeout; psql has none: \
                 select * from stuckless.stuck_jobs limit 50"
            ))
        })?;
    let risky = query::at_risk(d.pool(), now).await?;
    let body = html! {
        @if stuck.is_empty() {
            div.fine { "No job is stuck." }
        } @else {
            div.banner { strong { (stuck.len()) " stuck job(s)" } @if stuck.len() as i64 >= LIMIT { " (the first " (LIMIT) ")" } }
            table #stuck {
                thead { tr { th { "Job" } th { "Queue / kind" } th { "Diagnosis" } th { "Since" } th { "Safe fix" } } }
                tbody {
                    @for v in &stuck {
                        tr data-job=(v.job_id) data-verdict=(v.verdict) {
                            td { a href=(d.url(&format!("/jobs/{}", v.job_id))) { (v.job_id) } br; (layout::status_pill(&v.status)) }
                            td { (v.queue) br; span.muted { (v.kind) } }
                            td {
                                div.verdict {
                                    @if let Some(s) = &v.scenario { "(" (s) ") " }
                                    (v.title)
                                }
                                div { (v.problem) }
                            }
                            td { (since(now, v.since_us)) }
                            td {
                                @if let Some(fix) = &v.fix { code { (fix) } }
                                @if let Some(sql) = &v.fix_in_sql { br; span.muted { "or in SQL: " } code { (sql) } }
                                div { (fix_button(d, viewer, v.job_id, v.epoch, &v.verdict)) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "At risk" }
        p.muted {
            "Running with a live lease for more than " (AT_RISK_FACTOR) "× the median time of their kind's successes in the last day (kinds with at least "
            (AT_RISK_SAMPLES) " of them): not stuck yet, but worth a look."
        }
        @if risky.is_empty() {
            p { "None." }
        } @else {
            table #at-risk {
                thead { tr { th { "Job" } th { "Queue / kind" } th { "Worker" } th.num { "Running for" } th.num { "Usually" } th { "" } } }
                tbody {
                    @for r in &risky {
                        tr {
                            td { a href=(d.url(&format!("/jobs/{}", r.job_id))) { (r.job_id) } }
                            td { (r.queue) " / " (r.kind) }
                            td { (r.lease_owner.as_deref().unwrap_or("?")) }
                            td.num { (layout::span(Duration::from_secs_f64(r.running_secs.max(0.0)))) }
                            td.num { (layout::span(Duration::from_secs_f64(r.usual_secs.max(0.0)))) " (" (r.samples) " runs)" }
                            td { (actions::requeue_form(d, viewer, r.job_id, r.epoch, false, "Requeue (revokes the lease)…")) }
                        }
                    }
                }
            }
        }
    };
    let page = Page {
        title: "Stuck jobs".into(),
        nav: Nav::Stuck,
        refresh: true,
        body,
    };
    Ok(layout::render(d, viewer, StatusCode::OK, page))
}

fn since(now: Timestamp, micros: Option<i64>) -> String {
    micros
        .map(|m| layout::ago(now, Timestamp::from_micros(m)))
        .unwrap_or_else(|| "-".into())
}

/// The button that applies the fix, for the verdicts a requeue fixes.
fn fix_button(d: &Dashboard, viewer: &Viewer, id: i64, epoch: i64, verdict: &str) -> Markup {
    match verdict {
        "expired_lease" => actions::requeue_form(d, viewer, id, epoch, false, "Requeue"),
        "worker_gone" => actions::requeue_form(d, viewer, id, epoch, false, "Requeue (revokes the lease)…"),
        _ => html! {},
    }
}

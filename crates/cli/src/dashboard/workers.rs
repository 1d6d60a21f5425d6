//! Workers (the registry: heartbeats, in-flight jobs, queues and kinds
//! served) and Timeline (the last N minutes as the SVG `stuckless timeline`
//! draws): the two views of who is doing the work.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use stuckless_core::Timestamp;

use super::auth::Viewer;
use super::job::svg;
use super::layout::{self, Nav, Page};
use super::query::{self, Held};
use super::{Dashboard, PageError};
use crate::ops;

/// Most in-flight jobs listed.
const IN_FLIGHT: i64 = 1000;
/// Most events and jobs the timeline reads (as `stuckless timeline --limit`).
const TIMELINE_LIMIT: u32 = 20_000;
/// The timeline's window when none is asked for, and the longest allowed.
const MINUTES: (u32, u32) = (15, 24 * 60);

/// GET /workers
pub async fn page(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    let viewer = Viewer::of(&d, &headers);
    let result = draw(&d, &viewer).await;
    layout::answer(&d, &viewer, result)
}

async fn draw(d: &Dashboard, viewer: &Viewer) -> Result<Response, PageError> {
    let registry = ops::workers(&d.storage, d.stale_after)
        .await
        .map_err(|e| PageError::Unavailable(format!("{e:#}")))?;
    let now = registry.now;
    let held = query::in_flight(d.pool(), IN_FLIGHT).await?;
    let mut by_owner: BTreeMap<&str, Vec<&Held>> = BTreeMap::new();
    for h in &held {
        by_owner
            .entry(h.lease_owner.as_deref().unwrap_or("?"))
            .or_default()
            .push(h);
    }
    let body = html! {
        p.muted { "A worker is alive when its registry heartbeat is at most " (layout::span(d.stale_after)) " old." }
        @if registry.workers.is_empty() {
            p { "No registered workers." }
        } @else {
            table #workers {
                thead { tr {
                    th { "Worker" } th { "State" } th { "Last heartbeat" } th { "Queues" } th { "Kinds" }
                    th.num { "Concurrency" } th.num { "In flight" } th { "Jobs held" }
                } }
                tbody {
                    @for w in &registry.workers {
                        @let r = &w.record;
                        tr {
                            td { (r.id) }
                            td { @if w.alive { span.pill.alive { "alive" } } @else { span.pill.stale { "stale" } } }
                            td { (layout::span(Duration::from_secs_f64(w.heartbeat_age_secs.max(0.0)))) " ago" }
                            td { (r.queues.join(", ")) }
                            td { @if r.kinds.is_empty() { span.muted { "every kind (not recorded)" } } @else { (r.kinds.join(", ")) } }
                            td.num { (r.concurrency) }
                            td.num { (r.in_flight) }
                            td {
                                @for h in by_owner.get(r.id.as_str()).map(Vec::as_slice).unwrap_or(&[]) {
                                    a href=(d.url(&format!("/jobs/{}", h.id))) { (h.id) } " "
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Running jobs by holder" }
        @if held.is_empty() {
            p.muted { "No job is running." }
        } @else {
            table #held {
                thead { tr { th { "Holder" } th.num { "Job" } th { "Queue / kind" } th { "Claimed" } } }
                tbody {
                    @for h in &held {
                        tr {
                            td { (h.lease_owner.as_deref().unwrap_or("?")) }
                            td.num { a href=(d.url(&format!("/jobs/{}", h.id))) { (h.id) } }
                            td { (h.queue) " / " (h.kind) }
                            td { (h.claimed_at_us.map(|m| layout::ago(now, Timestamp::from_micros(m))).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    };
    let page = Page {
        title: "Workers".into(),
        nav: Nav::Workers,
        refresh: true,
        body,
    };
    Ok(layout::render(d, viewer, StatusCode::OK, page))
}

/// `?minutes=N`
#[derive(Debug, Default, Deserialize)]
pub struct Window {
    minutes: Option<String>,
}

fn minutes(w: &Window) -> Result<u32, PageError> {
    match w.minutes.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(MINUTES.0),
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=MINUTES.1).contains(&n) => Ok(n),
            _ => Err(PageError::BadRequest(format!(
                "invalid minutes {text:?}: a whole number from 1 to {}",
                MINUTES.1
            ))),
        },
    }
}

/// GET /timeline
pub async fn timeline_page(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(w): Query<Window>,
) -> Response {
    let viewer = Viewer::of(&d, &headers);
    let result = minutes(&w).map(|n| {
        let body = html! {
            form.filters method="get" action=(d.url("/timeline")) {
                label { "Last minutes" input type="number" name="minutes" min="1" max=(MINUTES.1) value=(n); }
                button type="submit" { "Draw" }
            }
            p.muted {
                "The picture " code { "stuckless timeline --since " (n) "m" } " draws: a lane per worker, a bar per attempt, reaps and waits. "
                "See " code { "stuckless timeline --help" } " for what it cannot know."
            }
            img.timeline src=(d.url(&format!("/timeline.svg?minutes={n}"))) alt=(format!("timeline of the last {n} minutes"));
        };
        let page = Page {
            title: "Timeline".into(),
            nav: Nav::Timeline,
            refresh: true,
            body,
        };
        layout::render(&d, &viewer, StatusCode::OK, page)
    });
    layout::answer(&d, &viewer, result)
}

/// GET /timeline.svg?minutes=N
pub async fn timeline_svg(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(w): Query<Window>,
) -> Response {
    let viewer = Viewer::of(&d, &headers);
    let result = async {
        let n = minutes(&w)?;
        // The storage's clock (pinned in tests) sets the right edge.
        let (text, _) = crate::timeline::draw(&d.storage, &format!("{n}m"), None, TIMELINE_LIMIT)
            .await
            .map_err(|e| PageError::Unavailable(format!("{e:#}")))?;
        Ok(svg(text))
    }
    .await;
    layout::answer(&d, &viewer, result)
}

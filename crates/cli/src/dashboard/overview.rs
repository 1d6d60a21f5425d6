//! Overview: per queue, what is due, scheduled, running, expired and dead,
//! the last hour's throughput and failure rate as a small chart, workers
//! alive and stale; a banner with the stuck jobs by cause.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{html, Markup};

use super::auth::Viewer;
use super::layout::{self, Nav, Page};
use super::query::{self, Slice, StuckCounts, SLICES};
use super::{Dashboard, PageError};

/// GET /
pub async fn page(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    let viewer = Viewer::of(&d, &headers);
    let result = draw(&d, &viewer).await;
    layout::answer(&d, &viewer, result)
}

async fn draw(d: &Dashboard, viewer: &Viewer) -> Result<Response, PageError> {
    let now = d.now().await?;
    let queues = query::counts(d.pool(), now, d.stale_after).await?;
    // The verdicts judge every unfinished job: with a huge backlog they may
    // time out, and the counts are still worth showing without them.
    let stuck = query::stuck_counts(d.pool(), now, d.stale_after).await;
    let slices = query::last_hour(d.pool(), now).await?;
    let mut hour: BTreeMap<&str, Vec<&Slice>> = BTreeMap::new();
    for s in &slices {
        hour.entry(s.queue.as_str()).or_default().push(s);
    }
    let stuck_in: BTreeMap<&str, i64> = match &stuck {
        Ok(rows) => rows.iter().map(|r| (r.queue.as_str(), r.stuck)).collect(),
        Err(_) => BTreeMap::new(),
    };
    let body = html! {
        (banner(d, &stuck))
        @if queues.is_empty() {
            p.muted { "No queue has unfinished jobs, dead jobs or workers." }
        } @else {
            table {
                thead { tr {
                    th { "Queue" } th.num { "Due" } th.num { "Scheduled" } th.num { "Running" }
                    th.num { "Expired leases" } th.num { "Dead" } th.num { "Stuck" }
                    th { "Last hour (5-minute slices)" } th.num { "Done / h" } th.num { "Failure rate" }
                    th.num { "Workers alive" } th.num { "Stale" }
                } }
                tbody {
                    @for q in &queues {
                        @let mine = hour.get(q.queue.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                        @let (ok, bad) = totals(mine);
                        tr {
                            td { a href=(d.url(&format!("/jobs?queue={}", q.queue))) { (q.queue) } }
                            td.num { (q.due) } td.num { (q.scheduled) } td.num { (q.running) }
                            td.num { (q.expired_leases) }
                            td.num { a href=(d.url(&format!("/jobs?queue={}&status=dead", q.queue))) { (q.dead) } }
                            td.num {
                                @match (stuck.is_ok(), stuck_in.get(q.queue.as_str()).copied().unwrap_or(0)) {
                                    (false, _) => "?",
                                    (true, 0) => "0",
                                    (true, n) => a href=(d.url("/stuck")) { strong { (n) } },
                                }
                            }
                            td { (chart(mine)) }
                            td.num { (ok) }
                            td.num { (failure_rate(ok, bad)) }
                            td.num { (q.live_workers) } td.num { (q.stale_workers) }
                        }
                    }
                }
            }
            p.muted { "Chart: blue, jobs that succeeded; red, attempts that failed (retried or dead); judged at " (now) "." }
        }
    };
    let page = Page {
        title: "Overview".into(),
        nav: Nav::Overview,
        refresh: true,
        body,
    };
    Ok(layout::render(d, viewer, StatusCode::OK, page))
}

/// The red banner when anything is stuck, with the count per cause; a
/// notice when the verdicts could not be read.
fn banner(d: &Dashboard, stuck: &Result<Vec<StuckCounts>, sqlx::Error>) -> Markup {
    let queues = match stuck {
        Ok(rows) => rows,
        Err(error) => {
            return html! {
                div.notice {
                    "Could not judge which jobs are stuck (" (error.to_string())
                    "): the verdicts read every unfinished job, and a large backlog can exceed the dashboard's statement timeout. The counts below are exact."
                }
            }
        }
    };
    let sum = |f: fn(&StuckCounts) -> i64| queues.iter().map(f).sum::<i64>();
    let total = sum(|q| q.stuck);
    let causes = [
        (sum(|q| q.stuck_expired_lease), "lease expired, not reaped"),
        (sum(|q| q.stuck_worker_gone), "worker gone"),
        (sum(|q| q.stuck_over_time_limit), "past its time limit"),
        (sum(|q| q.stuck_no_live_worker), "no live worker for its queue"),
        (sum(|q| q.stuck_unhandled_kind), "no live worker handles its kind"),
    ];
    html! {
        @if total > 0 {
            div.banner {
                strong { (total) " stuck job(s): " }
                @for (i, (n, cause)) in causes.iter().filter(|(n, _)| *n > 0).enumerate() {
                    @if i > 0 { ", " }
                    (n) " " (cause)
                }
                " — " a href=(d.url("/stuck")) { "see the stuck jobs and their fixes" }
            }
        } @else {
            div.fine { "Nothing is stuck." }
        }
    }
}

fn totals(slices: &[&Slice]) -> (i64, i64) {
    slices
        .iter()
        .fold((0, 0), |(ok, bad), s| (ok + s.succeeded, bad + s.failed))
}

/// Failed attempts over all ended attempts, as a percentage; "-" with none.
fn failure_rate(ok: i64, bad: i64) -> String {
    if ok + bad == 0 {
        return "-".into();
    }
    format!("{:.1} %", 100.0 * bad as f64 / (ok + bad) as f64)
}

/// A tiny bar chart: one slot per five minutes, successes up in blue,
/// failures stacked on them in red, scaled to the busiest slot.
fn chart(slices: &[&Slice]) -> Markup {
    const W: i32 = 10;
    const H: i32 = 28;
    let mut ok = [0i64; SLICES as usize];
    let mut bad = [0i64; SLICES as usize];
    for s in slices {
        let i = s.slice.clamp(0, SLICES - 1) as usize;
        ok[i] += s.succeeded;
        bad[i] += s.failed;
    }
    let top = (0..ok.len()).map(|i| ok[i] + bad[i]).max().unwrap_or(0).max(1);
    let scale = |n: i64| ((n * i64::from(H)) as f64 / top as f64).round() as i32;
    html! {
        svg.chart width=(W * SLICES) height=(H) viewBox=(format!("0 0 {} {H}", W * SLICES)) role="img"
            aria-label="jobs succeeded and failed per five minutes over the last hour" {
            line x1="0" y1=(H - 1) x2=(W * SLICES) y2=(H - 1) stroke="#dfe3ea" {}
            @for i in 0..ok.len() {
                @let x = i as i32 * W + 1;
                @let g = scale(ok[i]);
                @let r = scale(bad[i]);
                @if ok[i] > 0 {
                    rect x=(x) y=(H - g) width=(W - 2) height=(g.max(1)) fill="#2451b7" {
                        title { (ok[i]) " succeeded" }
                    }
                }
                @if bad[i] > 0 {
                    rect x=(x) y=(H - g - r.max(1)) width=(W - 2) height=(r.max(1)) fill="#b42318" {
                        title { (bad[i]) " failed" }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_rate_is_failed_over_ended_attempts() {
        assert_eq!(failure_rate(0, 0), "-");
        assert_eq!(failure_rate(3, 1), "25.0 %");
        assert_eq!(failure_rate(0, 2), "100.0 %");
    }

    #[test]
    fn the_chart_draws_a_bar_per_busy_slice() {
        let a = Slice {
            queue: "q".into(),
            slice: 0,
            succeeded: 4,
            failed: 0,
        };
        let b = Slice {
            queue: "q".into(),
            slice: 11,
            succeeded: 2,
            failed: 2,
        };
        let svg = chart(&[&a, &b]).into_string();
        assert_eq!(svg.matches("<rect").count(), 3, "{svg}");
        assert!(svg.contains("4 succeeded") && svg.contains("2 failed"), "{svg}");
    }
}

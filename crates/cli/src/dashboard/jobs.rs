//! Jobs: filter by queue, kind, status and creation time, newest first,
//! paged by keyset (`before=<id>`) so a table of millions of rows costs
//! one short index walk per page: no OFFSET, no count of all rows.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use stuckless_core::Timestamp;

use super::auth::Viewer;
use super::layout::{self, Nav, Page};
use super::query::{self, JobFilter};
use super::{Dashboard, PageError};
use crate::timeline::parse_instant;

/// Rows per page.
pub const PAGE: i64 = 50;

const STATUSES: [&str; 5] = ["queued", "running", "succeeded", "dead", "cancelled"];

/// The query string as typed (all text: each value is checked with a message).
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    queue: Option<String>,
    kind: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<String>,
}

fn present(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A queue or kind name as the schema allows it.
fn name(what: &str, value: &str) -> Result<String, PageError> {
    let ok = (1..=128).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(PageError::BadRequest(format!(
            "invalid {what} filter {value:?}: 1 to 128 of A-Z a-z 0-9 _ . : -"
        )))
    }
}

/// Checks every filter; a bad one is a 400 with what is wrong.
pub fn parse(params: &Params, now: Timestamp) -> Result<JobFilter, PageError> {
    let instant = |what: &str, v: &str| {
        parse_instant(v, now).map_err(|e| PageError::BadRequest(format!("invalid {what} filter: {e:#}")))
    };
    let filter = JobFilter {
        queue: present(&params.queue).map(|v| name("queue", v)).transpose()?,
        kind: present(&params.kind).map(|v| name("kind", v)).transpose()?,
        status: present(&params.status)
            .map(|v| {
                if STATUSES.contains(&v) {
                    Ok(v.to_owned())
                } else {
                    Err(PageError::BadRequest(format!(
                        "invalid status filter {v:?}: one of {}",
                        STATUSES.join(", ")
                    )))
                }
            })
            .transpose()?,
        since: present(&params.since).map(|v| instant("since", v)).transpose()?,
        until: present(&params.until).map(|v| instant("until", v)).transpose()?,
        before: present(&params.before)
            .map(|v| match v.parse::<i64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(PageError::BadRequest(format!(
                    "invalid page cursor before={v:?}: a positive job id"
                ))),
            })
            .transpose()?,
    };
    if let (Some(s), Some(u)) = (filter.since, filter.until) {
        if s >= u {
            return Err(PageError::BadRequest(format!(
                "the since filter ({s}) must be before the until filter ({u})"
            )));
        }
    }
    Ok(filter)
}

/// The query string for `filter` with the cursor `before`.
fn link(params: &Params, before: Option<i64>) -> String {
    let mut parts = Vec::new();
    for (key, value) in [
        ("queue", &params.queue),
        ("kind", &params.kind),
        ("status", &params.status),
        ("since", &params.since),
        ("until", &params.until),
    ] {
        if let Some(v) = present(value) {
            parts.push(format!("{key}={}", encode(v)));
        }
    }
    if let Some(b) = before {
        parts.push(format!("before={b}"));
    }
    format!("/jobs?{}", parts.join("&"))
}

/// Percent-encodes a query value (everything but unreserved characters).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET /jobs
pub async fn page(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let viewer = Viewer::of(&d, &headers);
    let result = draw(&d, &viewer, &params).await;
    layout::answer(&d, &viewer, result)
}

async fn draw(d: &Dashboard, viewer: &Viewer, params: &Params) -> Result<Response, PageError> {
    let now = d.now().await?;
    let filter = parse(params, now)?;
    // One row more than shown says whether there is a next page.
    let mut rows = query::jobs(d.pool(), &filter, PAGE + 1).await?;
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let body = html! {
        form.filters method="get" action=(d.url("/jobs")) {
            label { "Queue" input type="text" name="queue" value=(value(&params.queue)); }
            label { "Kind" input type="text" name="kind" value=(value(&params.kind)); }
            label { "Status" select name="status" {
                option value="" { "any" }
                @for s in STATUSES {
                    option value=(s) selected[present(&params.status) == Some(s)] { (s) }
                }
            } }
            label { "Created since (10m, 2h or RFC 3339)" input type="text" name="since" value=(value(&params.since)); }
            label { "Created before" input type="text" name="until" value=(value(&params.until)); }
            button type="submit" { "Filter" }
        }
        @if rows.is_empty() {
            p.muted { "No job matches." }
        } @else {
            table #jobs {
                thead { tr {
                    th.num { "Id" } th { "Queue" } th { "Kind" } th { "Status" } th.num { "Attempt" }
                    th { "Run at" } th { "Created" } th { "Worker" } th { "Last error" }
                } }
                tbody {
                    @for j in &rows {
                        tr {
                            td.num { a href=(d.url(&format!("/jobs/{}", j.id))) { (j.id) } }
                            td { (j.queue) } td { (j.kind) } td { (layout::status_pill(&j.status)) }
                            td.num { (j.attempt) " / " (j.max_attempts) }
                            td { (layout::ago(now, Timestamp::from_micros(j.run_at_us))) }
                            td { (layout::ago(now, Timestamp::from_micros(j.created_at_us))) }
                            td { (j.lease_owner.as_deref().unwrap_or("")) }
                            td { (j.last_error.as_deref().map(|e| e.chars().take(120).collect::<String>()).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
        div.pager {
            @if filter.before.is_some() { a href=(d.url(&link(params, None))) { "« Newest" } }
            @if more {
                @if let Some(last) = rows.last() { a #next href=(d.url(&link(params, Some(last.id)))) { "Older »" } }
            }
        }
    };
    let page = Page {
        title: "Jobs".into(),
        nav: Nav::Jobs,
        refresh: false,
        body,
    };
    Ok(layout::render(d, viewer, StatusCode::OK, page))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        let text = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        serde_urlencoded_from(&text)
    }

    fn serde_urlencoded_from(text: &str) -> Params {
        let uri: axum::http::Uri = format!("/jobs?{text}").parse().unwrap();
        Query::<Params>::try_from_uri(&uri).unwrap().0
    }

    #[test]
    fn good_filters_parse_and_bad_ones_say_why() {
        let now = Timestamp::from_secs(10_000);
        let f = parse(
            &params(&[
                ("queue", "mail"),
                ("status", "dead"),
                ("since", "1h"),
                ("before", "9"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(f.queue.as_deref(), Some("mail"));
        assert_eq!(f.status.as_deref(), Some("dead"));
        assert_eq!(f.since, Some(Timestamp::from_secs(10_000 - 3600)));
        assert_eq!(f.before, Some(9));
        for (key, value, says) in [
            ("queue", "<script>", "invalid queue filter"),
            ("status", "stuck", "one of queued"),
            ("since", "yesterday", "invalid since filter"),
            ("before", "-3", "positive job id"),
            ("before", "1 or 1=1", "positive job id"),
        ] {
            let error = parse(&params(&[(key, value)]), now).unwrap_err();
            assert!(matches!(error, PageError::BadRequest(_)), "{key}={value}");
            assert!(error.to_string().contains(says), "{key}={value}: {error}");
        }
        let error = parse(&params(&[("since", "10m"), ("until", "1h")]), now).unwrap_err();
        assert!(error.to_string().contains("must be before"), "{error}");
    }

    #[test]
    fn page_links_keep_the_filters_and_move_the_cursor() {
        let p = params(&[("queue", "mail"), ("since", "2026-11-29T12:00:00Z")]);
        assert_eq!(
            link(&p, Some(41)),
            "/jobs?queue=mail&since=2026-11-29T12:00:00Z&before=41"
        );
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }
}

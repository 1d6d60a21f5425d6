//! The frame every page shares (navigation, who is logged in, auto-refresh),
//! the error page, the embedded assets, and small formatting helpers.
//!
//! maud escapes every interpolated value, so a payload, a filter or an id a
//! person typed shows as text; nothing here uses `PreEscaped` on input.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use stuckless_core::Timestamp;

use super::auth::Viewer;
use super::{Dashboard, PageError, REFRESH_SECS};
use crate::util::human_duration;

/// The embedded stylesheet.
const STYLE: &str = include_str!("assets/style.css");
/// The embedded progressive-enhancement script.
const SCRIPT: &str = include_str!("assets/app.js");

/// Which navigation entry a page is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Stuck,
    Jobs,
    Workers,
    Timeline,
    None,
}

/// A page to draw in the shared frame.
pub struct Page {
    /// The `<title>` and the heading.
    pub title: String,
    /// Its navigation entry.
    pub nav: Nav,
    /// Whether it reloads itself every [`REFRESH_SECS`].
    pub refresh: bool,
    /// The content.
    pub body: Markup,
}

/// Draws `page` in the frame, answered with `status`.
pub fn render(d: &Dashboard, viewer: &Viewer, status: StatusCode, page: Page) -> Response {
    let entries = [
        (Nav::Overview, "/", "Overview"),
        (Nav::Stuck, "/stuck", "Stuck jobs"),
        (Nav::Jobs, "/jobs", "Jobs"),
        (Nav::Workers, "/workers", "Workers"),
        (Nav::Timeline, "/timeline", "Timeline"),
    ];
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if page.refresh {
                    meta http-equiv="refresh" content=(REFRESH_SECS);
                }
                title { (page.title) " · stuckless" }
                link rel="stylesheet" href=(d.url("/assets/style.css"));
                script src=(d.url("/assets/app.js")) defer {}
            }
            body {
                header {
                    a.brand href=(d.url("/")) { "stuckless" }
                    @for (nav, path, label) in entries {
                        a class=@if nav == page.nav { "here" } href=(d.url(path)) { (label) }
                    }
                    span.who {
                        @match (&viewer.actor, d.writable()) {
                            (Some(actor), _) => {
                                "admin: " (actor) " "
                                @if let Some(csrf) = &viewer.csrf {
                                    form method="post" action=(d.url("/logout")) {
                                        input type="hidden" name="csrf" value=(csrf);
                                        button.plain type="submit" { "Log out" }
                                    }
                                }
                            }
                            (None, true) => { "read-only · " a href=(d.url("/login")) { "log in for actions" } }
                            (None, false) => { "read-only (no admin token configured)" }
                        }
                    }
                }
                main {
                    h1 { (page.title) }
                    (page.body)
                    @if page.refresh {
                        p.muted { "Reloads every " (REFRESH_SECS) " s." }
                    }
                }
            }
        }
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// The page for an error: its status and the reason in words.
pub fn error_page(d: &Dashboard, viewer: &Viewer, error: &PageError) -> Response {
    let (title, hint) = match error {
        PageError::BadRequest(_) => ("Bad request", "Fix the value and try again."),
        PageError::NotFound(_) => ("Not found", ""),
        PageError::Forbidden(_) => ("Not allowed", ""),
        PageError::Unauthorized(_) => ("Log in first", "Actions need the admin token."),
        PageError::Conflict(_) => ("Not done", "Reload the job and look again."),
        PageError::Unavailable(_) => (
            "Database unavailable",
            "The page will work again once the database answers.",
        ),
    };
    let body = html! {
        div.error { strong { (error.to_string()) } }
        @if !hint.is_empty() { p { (hint) } }
        @if matches!(error, PageError::Unauthorized(_)) { p { a href=(d.url("/login")) { "Log in" } } }
        p { a href=(d.url("/")) { "Back to the overview" } }
    };
    let page = Page {
        title: title.to_owned(),
        nav: Nav::None,
        refresh: false,
        body,
    };
    render(d, viewer, error.status(), page)
}

/// Answers `result`: the page, or the error page.
pub fn answer(d: &Dashboard, viewer: &Viewer, result: Result<Response, PageError>) -> Response {
    result.unwrap_or_else(|error| error_page(d, viewer, &error))
}

/// Any path the dashboard does not have.
pub async fn not_found(State(d): State<Arc<Dashboard>>, headers: axum::http::HeaderMap) -> Response {
    let viewer = Viewer::of(&d, &headers);
    error_page(&d, &viewer, &PageError::NotFound("no such page".into()))
}

/// GET /assets/style.css
pub async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

/// GET /assets/app.js
pub async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT)
}

/// "4m 0s ago" from `then` to `now`; "in 4m 0s" when `then` is later.
pub fn ago(now: Timestamp, then: Timestamp) -> String {
    if then <= now {
        format!("{} ago", human_duration(now.saturating_since(then)))
    } else {
        format!("in {}", human_duration(then.saturating_since(now)))
    }
}

/// A duration in people's words.
pub fn span(d: Duration) -> String {
    human_duration(d)
}

/// A status as a coloured pill.
pub fn status_pill(status: &str) -> Markup {
    html! { span class=(format!("pill {status}")) { (status) } }
}

/// Pretty JSON for a `<pre>` (escaped by the template).
pub fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

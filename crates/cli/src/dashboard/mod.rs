//! `stuckless dashboard`: what the queue is doing, at a glance, in a browser.
//!
//! Server-rendered HTML (maud templates, compiled into the binary) on the
//! same axum/hyper server as the worker's endpoints; the stylesheet and the
//! few lines of script are embedded, so it works with no network and no
//! Node build. Pages: overview, stuck jobs, jobs, one job, workers,
//! timeline. Read-only unless an admin token is configured; then requeue,
//! cancel and retry-now are offered behind a bearer token or a login cookie,
//! CSRF-checked, each logged in the job's events with who did it.
//!
//! Postgres only: the reads are plain SQL on the `stuckless` schema through
//! a small pool of the dashboard's own (so a busy page cannot take a
//! connection a worker needs), and the verdicts come from the same
//! `stuckless.job_verdicts_at` and `diagnose` that the CLI prints.

mod actions;
mod auth;
mod job;
mod jobs;
mod layout;
mod overview;
mod query;
pub mod serve;
mod stuck;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use stuckless_core::driver::{Storage, StorageNow};
use stuckless_core::{Clock, ManualClock, Timestamp};
use stuckless_pg::PgStorage;

pub use auth::Sessions;

/// Seconds between automatic reloads of the pages a person watches.
pub const REFRESH_SECS: u32 = 10;

/// What the dashboard reads from and how it is configured.
pub struct Dashboard {
    /// Reads and operator actions, on the dashboard's own small pool.
    pub storage: PgStorage,
    /// The admin token actions need; `None`: read-only.
    pub admin_token: Option<String>,
    /// A worker whose registry heartbeat is older than this is presumed dead.
    pub stale_after: Duration,
    /// Where the pages live: "" standalone, "/dashboard" inside a worker.
    pub base: String,
    /// Judge everything as if the database clock read this (tests of the
    /// verdicts on fixtures); `None`: the database's clock.
    pub pinned_now: Option<Timestamp>,
    /// Logged-in browsers.
    pub sessions: Sessions,
}

impl Dashboard {
    /// A dashboard on `pool` (give it a pool of its own, e.g.
    /// [`crate::observability::pool_beside`]).
    pub fn new(
        pool: sqlx::PgPool,
        admin_token: Option<String>,
        stale_after: Duration,
        base: &str,
    ) -> Dashboard {
        Dashboard {
            storage: PgStorage::new(pool),
            admin_token: admin_token.filter(|t| !t.is_empty()),
            stale_after,
            base: base.trim_end_matches('/').to_owned(),
            pinned_now: None,
            sessions: Sessions::default(),
        }
    }

    /// Judges as if the database clock read `now` (for reproducible tests).
    pub fn pinned(mut self, now: Timestamp) -> Dashboard {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(now));
        self.storage = self.storage.with_pinned_clock(clock);
        self.pinned_now = Some(now);
        self
    }

    /// The link to `path` (which starts with '/') under this dashboard.
    pub fn url(&self, path: &str) -> String {
        // A nested router answers its root at "/dashboard", not "/dashboard/".
        if path == "/" && !self.base.is_empty() {
            return self.base.clone();
        }
        format!("{}{path}", self.base)
    }

    /// Whether actions can be enabled at all.
    pub fn writable(&self) -> bool {
        self.admin_token.is_some()
    }

    /// The instant pages judge at: the database's clock, or the pinned one.
    async fn now(&self) -> Result<Timestamp, PageError> {
        self.storage
            .storage_now(StorageNow {})
            .await
            .map_err(|e| PageError::Unavailable(format!("reading the database clock: {e}")))
    }

    fn pool(&self) -> &sqlx::PgPool {
        self.storage.pool()
    }
}

/// The shared state handlers get.
pub type Shared = axum::extract::State<Arc<Dashboard>>;

/// Why a page could not be drawn, shown to the person as a page, never a bare 500.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// A filter, id or form value that cannot be used: 400 with what is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// Nothing there: 404.
    #[error("{0}")]
    NotFound(String),
    /// Not allowed (read-only dashboard, bad CSRF token, cross-site request): 403.
    #[error("{0}")]
    Forbidden(String),
    /// Needs a login or a bearer token: 401.
    #[error("{0}")]
    Unauthorized(String),
    /// The request no longer fits the job (its epoch moved, wrong status): 409.
    #[error("{0}")]
    Conflict(String),
    /// The database could not answer: 503.
    #[error("{0}")]
    Unavailable(String),
}

impl PageError {
    fn status(&self) -> StatusCode {
        match self {
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::Forbidden(_) => StatusCode::FORBIDDEN,
            PageError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            PageError::Conflict(_) => StatusCode::CONFLICT,
            PageError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<sqlx::Error> for PageError {
    fn from(error: sqlx::Error) -> PageError {
        PageError::Unavailable(format!("the database could not answer: {error}"))
    }
}

/// Adds the headers every dashboard answer carries: no caching, no
/// sniffing, no framing, and a policy that allows only our own assets.
async fn harden(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}

/// Every page, asset and action, relative to [`Dashboard::base`] (nest it
/// there when `base` is not empty).
pub fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(overview::page))
        .route("/stuck", get(stuck::page))
        .route("/jobs", get(jobs::page))
        .route("/jobs/{id}", get(job::page))
        .route("/jobs/{id}/timeline.svg", get(job::timeline_svg))
        .route("/jobs/{id}/requeue", post(actions::requeue))
        .route("/jobs/{id}/cancel", post(actions::cancel))
        .route("/jobs/{id}/retry-now", post(actions::retry_now))
        .route("/workers", get(workers::page))
        .route("/timeline", get(workers::timeline_page))
        .route("/timeline.svg", get(workers::timeline_svg))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/assets/style.css", get(layout::style))
        .route("/assets/app.js", get(layout::script))
        .fallback(layout::not_found)
        .method_not_allowed_fallback(|| async { (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n") })
        .layer(axum::middleware::from_fn(harden))
        .with_state(dashboard)
}

/// The dashboard inside another router: at "/" when `base` is empty, else nested there.
pub fn mount(outer: Router, dashboard: Arc<Dashboard>) -> Router {
    let base = dashboard.base.clone();
    let inner = router(dashboard);
    if base.is_empty() {
        outer.merge(inner)
    } else {
        let root = base.clone();
        outer.nest(&base, inner).route(
            &format!("{base}/"),
            get(move || async move { axum::response::Redirect::to(&root) }),
        )
    }
}

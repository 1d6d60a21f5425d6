//! The dashboard's router in-process, asked through `tower::ServiceExt::oneshot`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use axum::Router;
use stuckless_cli::dashboard::{self, Dashboard};
use stuckless_core::Timestamp;
use stuckless_tests::TestDb;
use tower::ServiceExt;

/// The admin token the tests configure.
pub const TOKEN: &str = "test-admin-token-0123456789";
/// The Host every request names.
pub const HOST: &str = "dash.test";

/// A dashboard on a test database.
pub struct App {
    pub router: Router,
}

/// One answer.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// The `Location` of a redirect.
    pub fn location(&self) -> &str {
        self.headers["location"].to_str().unwrap()
    }
}

impl App {
    /// A dashboard at "/" with `token` (None: read-only).
    pub fn new(db: &TestDb, token: Option<&str>) -> App {
        Self::build(Dashboard::new(
            db.pool().clone(),
            token.map(str::to_owned),
            Duration::from_secs(90),
            "",
        ))
    }

    /// Judging as if the database clock read `now`.
    pub fn pinned(db: &TestDb, now: Timestamp) -> App {
        Self::build(Dashboard::new(db.pool().clone(), None, Duration::from_secs(90), "").pinned(now))
    }

    fn build(d: Dashboard) -> App {
        App {
            router: dashboard::router(Arc::new(d)),
        }
    }

    /// Sends `request`.
    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// GET `path` with `headers`.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut r = Request::get(path).header("host", HOST);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        self.send(r.body(Body::empty()).unwrap()).await
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Answer {
        self.get_with(path, &[]).await
    }

    /// POST the url-encoded `form` to `path` with `headers`.
    pub async fn post(&self, path: &str, form: &str, headers: &[(&str, &str)]) -> Answer {
        let mut r = Request::post(path)
            .header("host", HOST)
            .header("content-type", "application/x-www-form-urlencoded");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        self.send(r.body(Body::from(form.to_owned())).unwrap()).await
    }

    /// Logs in as `name`: (the Cookie header value, the session's CSRF token).
    pub async fn login(&self, name: &str) -> (String, String) {
        let a = self
            .post(
                "/login",
                &format!("name={name}&token={TOKEN}"),
                &[("sec-fetch-site", "same-origin")],
            )
            .await;
        assert_eq!(a.status, 303, "{}", a.body);
        let set = a.headers["set-cookie"].to_str().unwrap().to_owned();
        let cookie = set.split(';').next().unwrap().to_owned();
        let page = self.get_with("/", &[("cookie", &cookie)]).await;
        (
            cookie,
            csrf_of(&page.body).expect("a logged-in page carries a CSRF token"),
        )
    }
}

/// The CSRF token in a page's forms.
pub fn csrf_of(body: &str) -> Option<String> {
    let rest = body.split("name=\"csrf\" value=\"").nth(1)?;
    Some(rest.split('"').next()?.to_owned())
}

/// Bearer header for [`TOKEN`].
pub fn bearer() -> (&'static str, String) {
    ("authorization", format!("Bearer {TOKEN}"))
}

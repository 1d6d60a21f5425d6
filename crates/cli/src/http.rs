//! The worker's HTTP endpoints: `GET /healthz`, `GET /readyz`, `GET /metrics`,
//! `POST /wake`.
//!
//! An axum router served by hyper's HTTP/1.1 connection handler (the hyper
//! that reqwest already brings in). Each connection carries one request and
//! is closed after the answer, a client gets [`READ_TIMEOUT`] to send its
//! request head (408 after that) and heads over [`MAX_HEAD`] are refused, so
//! a slow or hostile client cannot hold the server.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use stuckless_core::driver::{QueueStatsGet, Storage, StorageNow};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::{self, Metrics};

/// Largest request head accepted, in bytes (hyper's minimum is 8 KiB).
pub const MAX_HEAD: usize = 16 * 1024;
/// Time a client gets to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time /readyz and /metrics give the database.
const DB_TIMEOUT: Duration = Duration::from_secs(2);

/// What the endpoints need from the worker.
pub struct Endpoints {
    /// For /readyz and queue-depth gauges.
    pub storage: Arc<dyn Storage>,
    /// Whether the wake-up listener is connected (/readyz).
    pub listener_connected: Box<dyn Fn() -> bool + Send + Sync>,
    /// Wakes the worker (/wake).
    pub wake: Box<dyn Fn() + Send + Sync>,
    /// The shared secret /wake requires; `None` refuses every /wake.
    pub wake_secret: Option<String>,
    /// /metrics.
    pub metrics: Arc<Metrics>,
}

/// Whether `presented` is `secret`, compared in constant time (the secret's
/// length is not hidden; its content is).
pub fn token_matches(secret: &str, presented: &str) -> bool {
    secret.as_bytes().ct_eq(presented.as_bytes()).into()
}

/// The routes, with plain-text answers for unknown paths and methods.
pub fn router(endpoints: Arc<Endpoints>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/wake", post(wake))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .method_not_allowed_fallback(|| async { (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n") })
        .with_state(endpoints)
}

/// Serves the endpoints on `listener` until `stop` fires.
pub async fn serve(listener: TcpListener, endpoints: Arc<Endpoints>, stop: CancellationToken) {
    let app = router(endpoints);
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = connection {
                debug!(%peer, %error, "http connection ended with an error");
            }
        });
    }
}

type Shared = State<Arc<Endpoints>>;

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(e): Shared) -> (StatusCode, String) {
    let db = match tokio::time::timeout(DB_TIMEOUT, e.storage.storage_now(StorageNow {})).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {DB_TIMEOUT:?}")),
    };
    match (db, (e.listener_connected)()) {
        (Ok(()), true) => (
            StatusCode::OK,
            "ready: database reachable, listener connected\n".into(),
        ),
        (Ok(()), false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: database reachable, but the LISTEN connection is down\n".into(),
        ),
        (Err(error), _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: database unreachable: {error}\n"),
        ),
    }
}

async fn metrics(State(e): Shared) -> impl IntoResponse {
    let stats = tokio::time::timeout(DB_TIMEOUT, e.storage.queue_stats(QueueStatsGet {}))
        .await
        .ok()
        .and_then(Result::ok);
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        e.metrics.render(stats.as_deref()),
    )
}

async fn wake(State(e): Shared, headers: HeaderMap) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = match (&e.wake_secret, presented) {
        (Some(secret), Some(token)) => token_matches(secret, token),
        _ => false,
    };
    if ok {
        (e.wake)();
        info!("woken by POST /wake");
        return (StatusCode::ACCEPTED, "woken\n").into_response();
    }
    if e.wake_secret.is_none() {
        warn!("POST /wake refused: no WAKE_SECRET is configured");
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "unauthorized: POST /wake needs Authorization: Bearer <WAKE_SECRET>\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use stuckless_core::{ManualClock, MemStore, Timestamp};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A real server on 127.0.0.1; stops when dropped.
    struct Server {
        addr: SocketAddr,
        stop: CancellationToken,
    }

    impl Server {
        async fn start(endpoints: Endpoints) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let stop = CancellationToken::new();
            tokio::spawn(serve(listener, Arc::new(endpoints), stop.clone()));
            Server { addr, stop }
        }

        /// One request through reqwest: (status, headers, body).
        async fn ask(&self, method: &str, path: &str, auth: Option<&str>) -> (u16, HeaderMap, String) {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut request = reqwest::Client::new().request(method, format!("http://{}{path}", self.addr));
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            (status, headers, response.text().await.unwrap())
        }

        /// Raw bytes in, the whole raw answer out (the server closes).
        async fn raw(&self, request: &[u8]) -> String {
            let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
            s.write_all(request).await.unwrap();
            let mut bytes = Vec::new();
            // A reset after a refused head still leaves the answer read so far.
            let read = tokio::time::timeout(READ_TIMEOUT * 2, s.read_to_end(&mut bytes)).await;
            assert!(read.is_ok(), "the server answers and closes in time");
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    fn endpoints(storage: Arc<dyn Storage>, listening: bool, wakes: Arc<AtomicU32>) -> Endpoints {
        let flag = Arc::new(AtomicBool::new(listening));
        Endpoints {
            storage,
            listener_connected: Box::new(move || flag.load(Ordering::SeqCst)),
            wake: Box::new(move || {
                wakes.fetch_add(1, Ordering::SeqCst);
            }),
            wake_secret: Some("s3cret".into()),
            metrics: Metrics::new(),
        }
    }

    fn mem() -> Arc<dyn Storage> {
        Arc::new(MemStore::new(ManualClock::new(Timestamp::from_secs(1))))
    }

    #[tokio::test]
    async fn healthz_answers_ok_and_unknown_routes_say_so() {
        let server = Server::start(endpoints(mem(), true, Default::default())).await;
        let (status, headers, body) = server.ask("GET", "/healthz", None).await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        assert!(headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(server.ask("GET", "/nope", None).await.0, 404);
        let (status, _, body) = server.ask("GET", "/wake", None).await;
        assert_eq!((status, body.as_str()), (405, "method not allowed\n"));
        assert_eq!(server.ask("POST", "/healthz", None).await.0, 405);
    }

    #[tokio::test]
    async fn readyz_needs_both_the_database_and_the_listener() {
        let wakes = Arc::new(AtomicU32::new(0));
        let ready = Server::start(endpoints(mem(), true, wakes.clone())).await;
        assert_eq!(ready.ask("GET", "/readyz", None).await.0, 200);
        let deaf = Server::start(endpoints(mem(), false, wakes.clone())).await;
        let (status, _, body) = deaf.ask("GET", "/readyz", None).await;
        assert_eq!(status, 503);
        assert!(body.contains("LISTEN connection is down"), "{body}");
        // A pool to a port where nothing listens: the database check fails.
        let dead = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(500))
            .connect_lazy("postgres://postgres@127.0.0.1:1/nothing")
            .unwrap();
        let storage = Arc::new(stuckless_pg::PgStorage::new(dead));
        let unreachable = Server::start(endpoints(storage, true, wakes)).await;
        let (status, _, body) = unreachable.ask("GET", "/readyz", None).await;
        assert_eq!(status, 503);
        assert!(body.contains("database unreachable"), "{body}");
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text_with_queue_depths() {
        let storage = mem();
        stuckless_core::Client::new(storage.clone())
            .enqueue_job(stuckless_core::NewJob::new("mail", "k", serde_json::json!({})))
            .await
            .unwrap();
        let server = Server::start(endpoints(storage, true, Default::default())).await;
        let (status, headers, body) = server.ask("GET", "/metrics", None).await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], metrics::CONTENT_TYPE);
        assert!(
            body.contains("# TYPE stuckless_jobs_reaped_total counter"),
            "{body}"
        );
        assert!(body.contains("stuckless_queue_due{queue=\"mail\"} 1\n"), "{body}");
    }

    #[tokio::test]
    async fn wake_fires_only_with_the_right_bearer_token() {
        let wakes = Arc::new(AtomicU32::new(0));
        let server = Server::start(endpoints(mem(), true, wakes.clone())).await;
        for (auth, status) in [
            (None, 401),
            (Some("Bearer nope"), 401),
            (Some("Bearer s3cre"), 401),
            (Some("Bearer s3cret2"), 401),
            (Some("s3cret"), 401),
            (Some("Basic s3cret"), 401),
            (Some("Bearer s3cret"), 202),
        ] {
            let (got, headers, _) = server.ask("POST", "/wake", auth).await;
            assert_eq!(got, status, "{auth:?}");
            if status == 401 {
                assert_eq!(headers["www-authenticate"], "Bearer", "{auth:?}");
            }
        }
        assert_eq!(wakes.load(Ordering::SeqCst), 1, "only the right token wakes");
    }

    #[tokio::test]
    async fn an_unset_secret_refuses_every_wake() {
        let wakes = Arc::new(AtomicU32::new(0));
        let mut e = endpoints(mem(), true, wakes.clone());
        e.wake_secret = None;
        let server = Server::start(e).await;
        for auth in [None, Some("Bearer "), Some("Bearer s3cret")] {
            assert_eq!(server.ask("POST", "/wake", auth).await.0, 401, "{auth:?}");
        }
        assert_eq!(wakes.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn malformed_oversized_and_slow_requests_are_refused() {
        let server = Server::start(endpoints(mem(), true, Default::default())).await;
        let garbage = server.raw(b"garbage\r\n\r\n").await;
        assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
        let huge = format!(
            "GET /healthz HTTP/1.1\r\nx-big: {}\r\n\r\n",
            "a".repeat(2 * MAX_HEAD)
        );
        let answer = server.raw(huge.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        // A head that never ends: answered 408 and closed after READ_TIMEOUT.
        let started = std::time::Instant::now();
        let slow = server.raw(b"GET /healthz HTTP/1.1\r\n").await;
        assert!(slow.is_empty() || slow.starts_with("HTTP/1.1 408"), "{slow}");
        assert!(started.elapsed() >= READ_TIMEOUT - Duration::from_millis(100));
        // One request per connection: the answer says so and the server closes.
        let ok = server.raw(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.to_ascii_lowercase().contains("connection: close"), "{ok}");
    }

    #[test]
    fn token_compare_checks_content_and_length() {
        assert!(token_matches("secret", "secret"));
        assert!(!token_matches("secret", "secreT"));
        assert!(!token_matches("secret", "secret2"));
        assert!(!token_matches("secret", "secre"));
        assert!(!token_matches("secret", ""));
        assert!(!token_matches("", "x"));
    }
}

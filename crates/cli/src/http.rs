//! The worker's HTTP endpoints: `GET /healthz`, `GET /readyz`, `GET /metrics`,
//! `POST /wake`.
//!
//! Their database reads go through [`Observed`]: a pool of their own,
//! single-flight and cached, so no number of requests can take a connection
//! the worker needs (see [`crate::observability`]).
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
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::{self, Metrics};
use crate::observability::Observed;
use crate::wake::{bearer_token, token_matches};

/// Largest request head accepted, in bytes (hyper's minimum is 8 KiB).
pub const MAX_HEAD: usize = 16 * 1024;
/// Time a client gets to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoints need from the worker.
pub struct Endpoints {
    /// Database reads for /readyz and the queue gauges.
    pub observed: Arc<Observed>,
    /// Whether the wake-up listener is connected (/readyz).
    pub listener_connected: Box<dyn Fn() -> bool + Send + Sync>,
    /// Why the worker cannot do its work, if it cannot (/readyz): the
    /// worker's `HealthHandle::problem`.
    pub problem: Box<dyn Fn() -> Option<String> + Send + Sync>,
    /// Wakes the worker (/wake).
    pub wake: Box<dyn Fn() + Send + Sync>,
    /// The shared secret /wake requires, already normalized
    /// ([`crate::wake::WakeSecret`]); `None` refuses every /wake.
    pub wake_secret: Option<String>,
    /// /metrics.
    pub metrics: Arc<Metrics>,
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
    serve_router(listener, router(endpoints), stop).await;
}

/// Serves `app` on `listener` until `stop` fires, with the limits above
/// (one request per connection, [`READ_TIMEOUT`], [`MAX_HEAD`]): the
/// worker's endpoints, the dashboard, or both on one port.
pub async fn serve_router(listener: TcpListener, app: Router, stop: CancellationToken) {
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
    let mut problems = Vec::new();
    if let Err(error) = e.observed.ping().await {
        problems.push(format!("database unreachable: {error}"));
    }
    if !(e.listener_connected)() {
        problems.push("the LISTEN connection is down".to_owned());
    }
    if let Some(problem) = (e.problem)() {
        problems.push(format!("the worker's calls keep failing: {problem}"));
    }
    if problems.is_empty() {
        return (
            StatusCode::OK,
            "ready: database reachable, listener connected, claims and reaps getting through\n".into(),
        );
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {}\n", problems.join("; ")),
    )
}

async fn metrics(State(e): Shared) -> impl IntoResponse {
    let snapshot = e.observed.snapshot().await.ok();
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        e.metrics.render(snapshot.as_deref()),
    )
}

async fn wake(State(e): Shared, headers: HeaderMap) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
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
    use std::sync::Mutex;
    use stuckless_core::driver::Storage;
    use stuckless_core::{ManualClock, MemStore, Timestamp};

    use crate::gauges::QueueSnapshot;
    use crate::observability::{PgReads, Reads, StorageReads};
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
        let reads = StorageReads {
            storage,
            stale_after: Duration::from_secs(90),
        };
        endpoints_reading(Arc::new(reads), listening, wakes)
    }

    fn endpoints_reading(reads: Arc<dyn Reads>, listening: bool, wakes: Arc<AtomicU32>) -> Endpoints {
        let flag = Arc::new(AtomicBool::new(listening));
        Endpoints {
            observed: Arc::new(Observed::new(reads)),
            listener_connected: Box::new(move || flag.load(Ordering::SeqCst)),
            problem: Box::new(|| None),
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
        // The endpoints' pool to a port where nothing listens: the database check fails.
        let dead = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(500))
            .connect_lazy("postgres://postgres@127.0.0.1:1/nothing")
            .unwrap();
        let reads = PgReads {
            pool: crate::observability::pool_beside(&dead),
            stale_after: Duration::from_secs(90),
        };
        let unreachable = Server::start(endpoints_reading(Arc::new(reads), true, wakes)).await;
        let (status, _, body) = unreachable.ask("GET", "/readyz", None).await;
        assert_eq!(status, 503);
        assert!(body.contains("database unreachable"), "{body}");
        // The queue gauges are left out, the worker's own metrics are not.
        let (status, _, body) = unreachable.ask("GET", "/metrics", None).await;
        assert_eq!(status, 200);
        assert!(!body.contains("stuckless_queue_"), "{body}");
        assert!(body.contains("stuckless_jobs_reaped_total"), "{body}");
    }

    #[tokio::test]
    async fn readyz_names_the_operation_that_keeps_failing() {
        let mut e = endpoints(mem(), true, Default::default());
        let problem = "job_claim failed 3 times in a row: cannot convert infinity to bigint";
        e.problem = Box::new(move || Some(problem.to_owned()));
        let server = Server::start(e).await;
        let (status, _, body) = server.ask("GET", "/readyz", None).await;
        assert_eq!(status, 503);
        assert_eq!(
            body,
            format!("not ready: the worker's calls keep failing: {problem}\n")
        );
    }

    /// Reads that count themselves and take a while, like a slow query.
    #[derive(Default)]
    struct SlowReads {
        snapshots: AtomicU32,
        pings: AtomicU32,
        in_flight: Mutex<(u32, u32)>,
    }

    #[async_trait::async_trait]
    impl Reads for SlowReads {
        async fn ping(&self) -> Result<(), String> {
            self.pings.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }

        async fn snapshot(&self) -> Result<QueueSnapshot, String> {
            {
                let mut f = self.in_flight.lock().unwrap();
                f.0 += 1;
                f.1 = f.1.max(f.0);
            }
            self.snapshots.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.in_flight.lock().unwrap().0 -= 1;
            Ok(QueueSnapshot::default())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_and_probes_share_one_read() {
        let reads = Arc::new(SlowReads::default());
        let server =
            Arc::new(Server::start(endpoints_reading(reads.clone(), true, Default::default())).await);
        let asks: Vec<_> = (0..200)
            .map(|i| {
                let server = server.clone();
                let path = if i % 4 == 0 { "/readyz" } else { "/metrics" };
                tokio::spawn(async move { server.ask("GET", path, None).await.0 })
            })
            .collect();
        for ask in asks {
            assert_eq!(ask.await.unwrap(), 200);
        }
        // All 200 arrive within the cache period (5 s): one read of each.
        let (snapshots, pings) = (
            reads.snapshots.load(Ordering::SeqCst),
            reads.pings.load(Ordering::SeqCst),
        );
        eprintln!("200 requests: {snapshots} snapshot read(s), {pings} ping(s)");
        assert_eq!(snapshots, 1);
        assert!(
            pings <= 2,
            "a ping serves a second; the burst may straddle one boundary: {pings}"
        );
        assert_eq!(reads.in_flight.lock().unwrap().1, 1, "never two reads at once");
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
        // No worker is registered: nobody handles kind k.
        assert!(
            body.contains("stuckless_queue_unhandled{queue=\"mail\",kind=\"k\"} 1\n"),
            "{body}"
        );
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
            (Some("bearer s3cret"), 202),
            (Some("BEARER  s3cret"), 202),
        ] {
            let (got, headers, _) = server.ask("POST", "/wake", auth).await;
            assert_eq!(got, status, "{auth:?}");
            if status == 401 {
                assert_eq!(headers["www-authenticate"], "Bearer", "{auth:?}");
            }
        }
        assert_eq!(wakes.load(Ordering::SeqCst), 3, "only the right token wakes");
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
}

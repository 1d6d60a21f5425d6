//! The worker's HTTP endpoints: `GET /healthz`, `GET /readyz`, `GET /metrics`,
//! `POST /wake`.
//!
//! Hand-rolled HTTP/1.1 on tokio rather than hyper or axum: four fixed routes,
//! tiny bodies, one request per connection (`Connection: close`). That is a
//! hundred lines with no new dependencies, keeps the build fast on small CI
//! machines, and a probe or Prometheus scrape needs nothing more. Requests are
//! bounded in header size and in time, so a slow or hostile client cannot hold
//! the server.

use std::sync::Arc;
use std::time::Duration;

use stuckless_core::driver::{QueueStatsGet, Storage, StorageNow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Time a client gets to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
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

/// Compares two byte strings in time independent of where they differ (the
/// length of the expected secret is not hidden; its content is).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// Serves until `stop` fires.
pub async fn serve(listener: TcpListener, endpoints: Arc<Endpoints>, stop: CancellationToken) {
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
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            if let Err(error) = handle(stream, &endpoints).await {
                debug!(%peer, %error, "http connection ended with an error");
            }
        });
    }
}

struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
}

async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let (Some(method), Some(target)) = (first.next(), first.next()) else {
        return Ok(None);
    };
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_owned());
    // Any body (a /wake may carry one) is ignored: the connection closes after
    // the answer.
    Ok(Some(Request {
        method: method.to_owned(),
        path: target.split('?').next().unwrap_or("/").to_owned(),
        authorization,
    }))
}

async fn handle(mut stream: TcpStream, e: &Endpoints) -> std::io::Result<()> {
    let request = match tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream)).await {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => return respond(&mut stream, 400, "text/plain", "bad request\n").await,
        Ok(Err(error)) => return Err(error),
        Err(_) => return respond(&mut stream, 408, "text/plain", "request timeout\n").await,
    };
    let (status, content_type, body) = route(&request, e).await;
    respond(&mut stream, status, content_type, &body).await
}

async fn route(r: &Request, e: &Endpoints) -> (u16, &'static str, String) {
    let text = "text/plain; charset=utf-8";
    match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/healthz") => (200, text, "ok\n".into()),
        ("GET", "/readyz") => {
            let db = match tokio::time::timeout(DB_TIMEOUT, e.storage.storage_now(StorageNow {})).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("no answer within {DB_TIMEOUT:?}")),
            };
            let listening = (e.listener_connected)();
            match (db, listening) {
                (Ok(()), true) => (
                    200,
                    text,
                    "ready: database reachable, listener connected\n".into(),
                ),
                (Ok(()), false) => (
                    503,
                    text,
                    "not ready: database reachable, but the LISTEN connection is down\n".into(),
                ),
                (Err(error), _) => (503, text, format!("not ready: database unreachable: {error}\n")),
            }
        }
        ("GET", "/metrics") => {
            let stats = tokio::time::timeout(DB_TIMEOUT, e.storage.queue_stats(QueueStatsGet {}))
                .await
                .ok()
                .and_then(Result::ok);
            (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                e.metrics.render(stats.as_deref()),
            )
        }
        ("POST", "/wake") => {
            let presented = r.authorization.as_deref().and_then(|a| a.strip_prefix("Bearer "));
            let ok = match (&e.wake_secret, presented) {
                (Some(secret), Some(token)) => constant_time_eq(secret.as_bytes(), token.trim().as_bytes()),
                _ => false,
            };
            if ok {
                (e.wake)();
                info!("woken by POST /wake");
                (202, text, "woken\n".into())
            } else {
                if e.wake_secret.is_none() {
                    warn!("POST /wake refused: no WAKE_SECRET is configured");
                }
                (
                    401,
                    text,
                    "unauthorized: POST /wake needs Authorization: Bearer <WAKE_SECRET>\n".into(),
                )
            }
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/wake") => (405, text, "method not allowed\n".into()),
        _ => (404, text, "not found\n".into()),
    }
}

async fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        _ => "Service Unavailable",
    };
    let extra = if status == 401 {
        "WWW-Authenticate: Bearer\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use stuckless_core::{ManualClock, MemStore, Timestamp};

    /// Serves `endpoints` on 127.0.0.1 and sends one raw request.
    async fn ask(endpoints: Endpoints, request: &str) -> (u16, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, Arc::new(endpoints), stop.clone()));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        stop.cancel();
        server.await.unwrap();
        let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, text.split_once("\r\n\r\n").unwrap().1.to_owned())
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
    async fn readyz_needs_both_the_database_and_the_listener() {
        let wakes = Arc::new(AtomicU32::new(0));
        let get = "GET /readyz HTTP/1.1\r\n\r\n";
        assert_eq!(ask(endpoints(mem(), true, wakes.clone()), get).await.0, 200);
        let (status, body) = ask(endpoints(mem(), false, wakes.clone()), get).await;
        assert_eq!(status, 503);
        assert!(body.contains("LISTEN connection is down"), "{body}");
        // A pool to a port where nothing listens: the database check fails.
        let dead = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(500))
            .connect_lazy("postgres://postgres@127.0.0.1:1/nothing")
            .unwrap();
        let (status, body) = ask(
            endpoints(Arc::new(stuckless_pg::PgStorage::new(dead)), true, wakes),
            get,
        )
        .await;
        assert_eq!(status, 503);
        assert!(body.contains("database unreachable"), "{body}");
    }

    #[tokio::test]
    async fn wake_fires_only_with_the_right_bearer_token() {
        let wakes = Arc::new(AtomicU32::new(0));
        for (auth, status) in [
            ("", 401),
            ("Authorization: Bearer nope\r\n", 401),
            ("Authorization: s3cret\r\n", 401),
            ("Authorization: Bearer s3cret\r\n", 202),
        ] {
            let req = format!("POST /wake HTTP/1.1\r\n{auth}Content-Length: 0\r\n\r\n");
            assert_eq!(
                ask(endpoints(mem(), true, wakes.clone()), &req).await.0,
                status,
                "{auth:?}"
            );
        }
        assert_eq!(wakes.load(Ordering::SeqCst), 1, "only the right token wakes");
        assert_eq!(
            ask(endpoints(mem(), true, wakes.clone()), "garbage\r\n\r\n")
                .await
                .0,
            400
        );
    }

    #[test]
    fn constant_time_eq_compares_content_and_length() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}

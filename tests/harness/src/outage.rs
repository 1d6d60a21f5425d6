//! What must hold around a database outage (a Postgres restart, or every
//! worker connection terminated at once):
//!
//! - **/readyz says so**: while the server is down, every healthy
//!   `stuckless worker` answers 503 at least once, and 200 again afterwards;
//! - **workers reconnect by themselves**: within [`RECONNECT_BOUND`] of the
//!   server's return, every worker that was healthy when it went down has a
//!   new backend on the server (and, for `stuckless worker`, /readyz 200),
//!   with nobody restarting it;
//! - **late reaps**: a lease that expired while the server was down, or so
//!   shortly before that no reaper could get to it, is reaped within reap
//!   interval + slack of the server's return ([`Outage`] windows are handed
//!   to [`crate::checks`], which moves such a reap's deadline to the return).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// How long workers may take to reconnect after the server is back. Their
/// pools reconnect at the next call; the slowest caller is the poll loop
/// (1 s in the chaos run) or a call that was waiting out a storage timeout
/// (10 s for `stuckless worker`), so 20 s leaves room for a loaded machine.
pub const RECONNECT_BOUND: Duration = Duration::from_secs(20);

/// How long one /readyz request may take. The endpoint's own pool gives up
/// acquiring after 2 s and its statements after 3 s, so it answers within 5 s.
const PROBE_TIMEOUT: Duration = Duration::from_secs(6);

/// A span in which the database could not be reached, µs on the database clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outage {
    /// When the harness began stopping the server (or terminating backends).
    pub from_us: i64,
    /// When the server accepted connections again.
    pub back_us: i64,
}

/// A worker watched through an outage.
#[derive(Clone, Debug)]
pub struct Watched {
    /// The worker id.
    pub worker_id: String,
    /// The `application_name` of its connections.
    pub application_name: String,
    /// Its /readyz address (`stuckless worker` only).
    pub http: Option<SocketAddr>,
}

/// The answers one /readyz request can get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// An HTTP status.
    Status(u16),
    /// No answer within the timeout, or the connection failed.
    NoAnswer,
}

/// `GET /readyz` on `addr`; the status line is all that is read, so a bare
/// HTTP/1.0 exchange on a socket is enough.
pub async fn readyz(addr: SocketAddr) -> Probe {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut head = Vec::new();
        stream.read_to_end(&mut head).await.ok()?;
        let text = String::from_utf8_lossy(&head);
        text.split_whitespace().nth(1)?.parse::<u16>().ok()
    };
    match tokio::time::timeout(PROBE_TIMEOUT, exchange).await {
        Ok(Some(status)) => Probe::Status(status),
        _ => Probe::NoAnswer,
    }
}

/// What one worker's /readyz answered during an outage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Answers {
    /// 503s.
    pub not_ready: u32,
    /// 200s.
    pub ready: u32,
    /// Probes without an answer.
    pub none: u32,
}

/// Probes every watched worker's /readyz, a round at a time, until `stop` is
/// cancelled; returns, per worker (in order), what it answered.
pub async fn probe_until(watched: Vec<Watched>, stop: CancellationToken) -> Vec<Answers> {
    let mut seen = vec![Answers::default(); watched.len()];
    while !stop.is_cancelled() {
        let round = watched.iter().map(|w| async move {
            match w.http {
                Some(addr) => Some(readyz(addr).await),
                None => None,
            }
        });
        for (s, probe) in seen.iter_mut().zip(futures::future::join_all(round).await) {
            match probe {
                Some(Probe::Status(503)) => s.not_ready += 1,
                Some(Probe::Status(200)) => s.ready += 1,
                Some(_) => s.none += 1,
                None => {}
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    seen
}

/// Whether the worker has a backend on the server that started at or after
/// `since_us` (database clock).
async fn reconnected(pool: &PgPool, application_name: &str, since_us: i64) -> anyhow::Result<bool> {
    sqlx::query_scalar(
        "select exists (select 1 from pg_stat_activity
                        where application_name = $1 and stuckless.to_micros(backend_start) >= $2)",
    )
    .bind(application_name)
    .bind(since_us)
    .fetch_one(pool)
    .await
    .context("reading pg_stat_activity")
}

/// How one watched worker came back after an outage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// How long after the wait began it was back (new backend and, if it
    /// serves HTTP, /readyz 200); `None` if not within [`RECONNECT_BOUND`].
    pub took: Option<Duration>,
    /// Whether a new backend of it was seen at all (tells a worker that never
    /// reconnected from one whose /readyz stayed unready).
    pub reconnected: bool,
}

/// Waits, up to [`RECONNECT_BOUND`], for every watched worker to have a
/// backend that started at or after `since_us` (database clock) and, if it
/// serves HTTP, to answer /readyz 200. Returns per worker how it came back.
pub async fn await_recovery(pool: &PgPool, watched: &[Watched], since_us: i64) -> Vec<Recovery> {
    let started = Instant::now();
    let deadline = started + RECONNECT_BOUND;
    let mut seen = vec![Recovery::default(); watched.len()];
    while Instant::now() < deadline && seen.iter().any(|r| r.took.is_none()) {
        for (w, r) in watched.iter().zip(seen.iter_mut()) {
            if r.took.is_some() {
                continue;
            }
            // A failed read (the harness's own pool reconnecting) is a "not yet".
            let back = r.reconnected
                || reconnected(pool, &w.application_name, since_us)
                    .await
                    .unwrap_or(false);
            r.reconnected = back;
            let ready = match w.http {
                Some(addr) => back && readyz(addr).await == Probe::Status(200),
                None => back,
            };
            if ready {
                r.took = Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// A worker's /readyz address, from the registry (`stuckless worker` puts it
/// in its metadata as `http`).
pub async fn http_address(pool: &PgPool, worker_id: &str) -> Option<SocketAddr> {
    let found: Option<Option<String>> =
        sqlx::query_scalar("select metadata->>'http' from stuckless.workers where id = $1")
            .bind(worker_id)
            .fetch_optional(pool)
            .await
            .ok()?;
    found.flatten()?.parse().ok()
}

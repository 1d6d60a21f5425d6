//! The external API the jobs call: a stand-in for OpenAI on its own host.
//!
//! It answers with seeded latency, and the fault plan can switch it to slow
//! (answers beyond the lease), hung (never answers), rate-limited (429) or
//! failing (500). It counts each job's successful calls per section (a
//! resumable job makes one call per section): more than one is an
//! at-least-once duplicate effect.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use stuckless_core::{Epoch, JobContext, JobError, JobId};
use turmoil::net::{TcpListener, TcpStream};

use crate::wire::{read_frame, write_frame};

/// Port the API host listens on.
pub const API_PORT: u16 = 443;

/// Longest answer in normal mode. Some jobs outlast the 30 s lease even when
/// nothing is wrong, as long report generations do, so heartbeats matter.
pub const NORMAL_MAX: Duration = Duration::from_secs(60);

/// Longest answer in slow mode.
pub const SLOW_MAX: Duration = Duration::from_secs(120);

/// Longest normal answer to a quick job (a lookup, a short completion): a
/// worker that claimed a fan-out of them finishes several in one step.
pub const QUICK_MAX: Duration = Duration::from_millis(300);

/// Longest `Retry-After` a 429 asks for.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(30);

/// How the API behaves right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiMode {
    /// 80 % answer in 0.2–10 s, 20 % in 10–60 s (a quick job's call in
    /// 20–300 ms); no errors.
    #[default]
    Normal,
    /// Every answer takes 30–120 s: longer than the lease.
    Slow,
    /// Accepts requests and never answers.
    Hung,
    /// 70 % of calls get 429 with a Retry-After of 1–30 s.
    RateLimited,
    /// 70 % of calls get 500 after 0.1–2 s.
    Failing,
}

/// What one call got back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiReply {
    /// The work was done.
    Ok,
    /// 429: try again after this many milliseconds.
    TooManyRequests {
        /// Retry-After.
        retry_after_ms: u64,
    },
    /// 500.
    ServerError,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct ApiRequest {
    job: JobId,
    epoch: Epoch,
    /// The section of a resumable job; 0 for a one-call job.
    section: u64,
    /// A quick job's call: answered in 20–300 ms when the API is normal.
    #[serde(default)]
    quick: bool,
}

/// The API's state: its mode, its randomness and the effects it performed.
pub struct ApiState {
    /// Current behaviour.
    pub mode: ApiMode,
    rng: ChaCha8Rng,
    /// Successful calls per job and section.
    pub effects: BTreeMap<(JobId, u64), u32>,
    /// Calls received.
    pub calls: u64,
}

/// The API state shared by the API host and the driver.
pub type SharedApi = Arc<Mutex<ApiState>>;

impl ApiState {
    /// A normal API drawing from `rng`.
    pub fn new(rng: ChaCha8Rng) -> SharedApi {
        Arc::new(Mutex::new(ApiState {
            mode: ApiMode::Normal,
            rng,
            effects: BTreeMap::new(),
            calls: 0,
        }))
    }

    /// Job sections whose effect happened more than once, and the extra effects.
    pub fn duplicates(&self) -> (u64, u64) {
        let dup: Vec<u32> = self.effects.values().copied().filter(|n| *n > 1).collect();
        (dup.len() as u64, dup.iter().map(|n| u64::from(n - 1)).sum())
    }

    /// Decides one call's fate: latency and reply, or `None` to hang.
    fn decide(&mut self, quick: bool) -> Option<(Duration, ApiReply)> {
        self.calls += 1;
        let ms = |rng: &mut ChaCha8Rng, lo: u64, hi: u64| Duration::from_millis(rng.random_range(lo..=hi));
        let rng = &mut self.rng;
        Some(match self.mode {
            ApiMode::Normal => normal(rng, quick),
            ApiMode::Slow => (ms(rng, 30_000, SLOW_MAX.as_millis() as u64), ApiReply::Ok),
            ApiMode::Hung => return None,
            ApiMode::RateLimited if rng.random_bool(0.7) => (
                ms(rng, 50, 300),
                ApiReply::TooManyRequests {
                    retry_after_ms: rng.random_range(1_000..=RETRY_AFTER_MAX.as_millis() as u64),
                },
            ),
            ApiMode::Failing if rng.random_bool(0.7) => (ms(rng, 100, 2_000), ApiReply::ServerError),
            ApiMode::RateLimited | ApiMode::Failing => normal(rng, quick),
        })
    }
}

fn normal(rng: &mut ChaCha8Rng, quick: bool) -> (Duration, ApiReply) {
    let ms = if quick {
        rng.random_range(20..=QUICK_MAX.as_millis() as u64)
    } else if rng.random_bool(0.8) {
        rng.random_range(200..=10_000)
    } else {
        rng.random_range(10_000..=NORMAL_MAX.as_millis() as u64)
    };
    (Duration::from_millis(ms), ApiReply::Ok)
}

/// The API host's software.
pub async fn serve(state: SharedApi) -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", API_PORT)).await?;
    loop {
        let (mut conn, _) = listener.accept().await?;
        let state = state.clone();
        tokio::task::spawn_local(async move {
            let Ok(request) = read_frame::<_, ApiRequest>(&mut conn).await else {
                return;
            };
            let fate = state.lock().expect("api lock").decide(request.quick);
            let Some((latency, reply)) = fate else {
                // Hung: hold the connection open and never answer.
                std::future::pending::<()>().await;
                return;
            };
            tokio::time::sleep(latency).await;
            if reply == ApiReply::Ok {
                *state
                    .lock()
                    .expect("api lock")
                    .effects
                    .entry((request.job, request.section))
                    .or_insert(0) += 1;
            }
            let _ = write_frame(&mut conn, &reply).await;
        });
    }
}

/// Calls the API for one attempt (`quick` for a quick job's), or one
/// section (from 1) of a resumable job.
pub async fn call(job: JobId, epoch: Epoch, section: u64, quick: bool) -> std::io::Result<ApiReply> {
    let mut conn = TcpStream::connect(("api", API_PORT)).await?;
    let request = ApiRequest {
        job,
        epoch,
        section,
        quick,
    };
    write_frame(&mut conn, &request).await?;
    read_frame(&mut conn).await
}

/// A handler's future, boxed so a host can wrap [`handler`] in a closure.
pub type HandlerFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), JobError>> + Send>>;

/// The job handler every worker runs: one API call per attempt, stopping as
/// soon as the runtime cancels the attempt.
pub async fn handler(ctx: JobContext) -> Result<(), JobError> {
    ctx.report_progress(serde_json::json!({"phase": "waiting_for_api"}));
    let reply = tokio::select! {
        biased;
        _ = ctx.cancelled() => return Err(JobError::retryable("cancelled")),
        reply = call(ctx.id(), ctx.epoch(), 0, quick(&ctx)) => reply,
    };
    outcome(reply)
}

/// Whether the job is a quick one (`"quick": true` in its payload,
/// [`crate::workload`]'s fan-outs).
pub fn quick(ctx: &JobContext) -> bool {
    ctx.payload().get("quick").and_then(|q| q.as_bool()) == Some(true)
}

/// What an attempt returns for one call's reply: done, or a retry (after
/// a 429's `Retry-After`).
pub fn outcome(reply: std::io::Result<ApiReply>) -> Result<(), JobError> {
    match reply {
        Ok(ApiReply::Ok) => Ok(()),
        Ok(ApiReply::TooManyRequests { retry_after_ms }) => Err(JobError::retry_after(
            "api: 429",
            Duration::from_millis(retry_after_ms),
        )),
        Ok(ApiReply::ServerError) => Err(JobError::retryable("api: 500")),
        Err(e) => Err(JobError::retryable(format!("api unreachable: {e}"))),
    }
}

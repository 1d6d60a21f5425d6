//! The seed document's report generator as a typed stuckless job kind:
//! `Report` is the payload ([`JobArgs`]) and runs itself ([`JobHandler`]).
//!
//! A report is several sections, each one a slow call to an OpenAI-style
//! chat-completions API. The handler checkpoints after every section (the
//! sections written so far), so a retry, a crash or a scale-in resumes after
//! the last finished section instead of paying for its calls again; it
//! reports progress too (so `stuckless diagnose` shows how far it got),
//! honours cancellation while a call is in flight, and maps the API's answers
//! onto retry decisions: 429 and 5xx retry (429 after its `Retry-After`),
//! other 4xx are permanent.
//!
//! It starts its own fake API on 127.0.0.1 (slow, and rate-limiting the
//! third request once), so it needs only Postgres:
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo run -p stuckless-cli --example report_generator
//! ```
//!
//! It enqueues two reports, lets the first finish (its third call is refused
//! with 429; the retry resumes at section 3, so the API is called once per
//! section plus the refused call), cancels the second midway, and prints
//! what happened.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::json;
use stuckless_core::{Client, JobArgs, JobContext, JobError, JobHandler, JobStatus, NewJob, Worker};
use stuckless_pg::PgStorage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The completions API every report job calls (set once in `main`).
static API: OnceLock<(reqwest::Client, String)> = OnceLock::new();
/// Whether a handler saw its job cancelled mid-call.
static SAW_CANCEL: AtomicBool = AtomicBool::new(false);
/// Requests the fake API received.
static API_CALLS: AtomicU64 = AtomicU64::new(0);

/// A report's checkpoint: the sections written so far, in order. Resuming
/// from it costs no API call for any of them.
#[derive(Default, Serialize, Deserialize)]
struct Written {
    sections: Vec<String>,
}

/// A report job: its payload, and (below) how to run it.
#[derive(Serialize, Deserialize)]
struct Report {
    title: String,
    sections: Vec<String>,
}

impl JobArgs for Report {
    const KIND: &'static str = "report";
}

impl JobHandler for Report {
    /// Calls the completions API once per section not yet written,
    /// checkpointing after each.
    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        let (client, api) = API.get().ok_or_else(|| JobError::permanent("API not set"))?;
        let mut written: Written = ctx.last_checkpoint_as()?.unwrap_or_default();
        if !written.sections.is_empty() {
            tracing::info!(
                done = written.sections.len(),
                "resuming after the last finished section"
            );
        }
        for (i, section) in self.sections.iter().enumerate().skip(written.sections.len()) {
            let call = client
                .post(format!("{api}/v1/chat/completions"))
                .timeout(Duration::from_secs(30))
                .header("content-type", "application/json")
                .body(json!({
                    "model": "gpt-fake",
                    "messages": [{"role": "user", "content": format!("Write the {section} section of {}", self.title)}],
                })
                .to_string())
                .send();
            // The lease may be lost (or the job cancelled) while the API is
            // thinking: stop waiting at once, the result would be refused anyway.
            let response = tokio::select! {
                biased;
                _ = ctx.cancelled() => {
                    SAW_CANCEL.store(true, Ordering::SeqCst);
                    return Err(JobError::retryable(format!("stopped during section {section}: {:?}", ctx.cancel_reason())));
                }
                r = call => r.map_err(|e| JobError::retryable(format!("API unreachable: {e}")))?,
            };
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response.text().await.unwrap_or_default();
            stuckless_cli::handlers::classify(status, retry_after.as_deref(), &body)?;
            tracing::info!(section = %section, "section written");
            // Acknowledged by the database under this attempt's epoch: a later
            // attempt starts after it. A refusal means the lease is lost.
            written.sections.push(body);
            if let Err(refused) = ctx.checkpoint_as(&written).await {
                // Refused because the job was cancelled (or taken over): the
                // context is cancelled now, as a lost lease would leave it.
                SAW_CANCEL.store(ctx.is_cancelled(), Ordering::SeqCst);
                return Err(refused.into());
            }
            ctx.report_progress(json!({"section": i + 1, "of": self.sections.len(), "last": section}));
        }
        Ok(())
    }
}

/// A report job on this run's own queue.
fn report_job(queue: &str, title: &str, sections: &[&str]) -> anyhow::Result<NewJob> {
    let report = Report {
        title: title.into(),
        sections: sections.iter().map(|s| s.to_string()).collect(),
    };
    Ok(NewJob {
        queue: queue.into(),
        ..NewJob::from_args(&report)?
    })
}

/// A fake chat-completions API: 700 ms per answer; the third request is
/// refused with 429 and `Retry-After: 1`, so the first report retries once.
async fn fake_api() -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let n = API_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = s.read(&mut buf).await;
                let (status, extra, body) = if n == 3 {
                    (
                        "429 Too Many Requests",
                        "Retry-After: 1\r\n",
                        r#"{"error":"rate limited"}"#.to_owned(),
                    )
                } else {
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    (
                        "200 OK",
                        "",
                        json!({"choices": [{"message": {"content": format!("answer {n}")}}]}).to_string(),
                    )
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(format!("http://{addr}"))
}

async fn wait_for(
    client: &Client,
    id: stuckless_core::JobId,
    done: impl Fn(&stuckless_core::Job) -> bool,
) -> anyhow::Result<stuckless_core::Job> {
    for _ in 0..600 {
        let job = client.get(id).await?.context("job vanished")?;
        if done(&job) {
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("job {id} did not get there within 60 s")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter("info,sqlx=warn")
        .with_writer(std::io::stderr)
        .init();
    let url = std::env::var("DATABASE_URL")
        .context("set DATABASE_URL, e.g. postgres://postgres@127.0.0.1:5432/postgres")?;
    let storage = PgStorage::connect(&url).await?;
    stuckless_pg::migrate(storage.pool()).await?;
    let _ = API.set((reqwest::Client::new(), fake_api().await?));
    let client = Client::new(Arc::new(storage.clone()));

    let queue = format!("reports-example-{}", std::process::id());
    let sections = ["summary", "market", "risks", "outlook"];
    let first = client
        .enqueue_job(report_job(&queue, "Q3 report", &sections)?)
        .await?
        .job;

    let worker = Worker::builder("report-generator-example", Arc::new(storage))
        .queues([queue.clone()])
        .concurrency(2)
        .lease(Duration::from_secs(3))
        .heartbeat_interval(Duration::from_millis(500))
        .poll_interval(Duration::from_millis(200))
        .handle::<Report>()
        .build()?;
    let shutdown = worker.shutdown_handle();
    let running = tokio::spawn(worker.run());

    let done = wait_for(&client, first.id, |j| j.status.is_terminal()).await?;
    let calls = API_CALLS.load(Ordering::SeqCst);
    println!(
        "report {} is {} after {} attempt(s) and {calls} API calls for {} sections; progress {}",
        done.id,
        done.status,
        done.attempt,
        sections.len(),
        done.progress.clone().unwrap_or_default()
    );
    // One call per section plus the one refused with 429: the retry resumed
    // from the checkpoint instead of writing sections 1 and 2 again.
    anyhow::ensure!(
        calls == sections.len() as u64 + 1,
        "expected {} API calls, got {calls}: a section was paid for twice",
        sections.len() + 1
    );

    let second = client
        .enqueue_job(report_job(&queue, "Q4 report", &["a", "b", "c", "d", "e", "f"])?)
        .await?
        .job;
    wait_for(&client, second.id, |j| j.progress.is_some()).await?;
    client.cancel(second.id).await?;
    println!("cancelled report {} midway", second.id);
    for _ in 0..100 {
        if SAW_CANCEL.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cancelled = client.get(second.id).await?.context("job vanished")?;
    println!(
        "report {} is {}; the handler {} the cancellation; last progress {}",
        cancelled.id,
        cancelled.status,
        if SAW_CANCEL.load(Ordering::SeqCst) {
            "saw"
        } else {
            "did NOT see"
        },
        cancelled.progress.unwrap_or_default()
    );

    shutdown.graceful();
    let report = running.await??;
    println!("worker stopped: {report:?}");
    anyhow::ensure!(
        done.status == JobStatus::Succeeded && cancelled.status == JobStatus::Cancelled,
        "unexpected outcome"
    );
    Ok(())
}

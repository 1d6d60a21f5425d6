//! The seed document's report generator as a custom stuckless handler.
//!
//! A report is several sections, each one a slow call to an OpenAI-style
//! chat-completions API. The handler reports progress after every section (so
//! `stuckless diagnose` shows how far it got), honours cancellation while a
//! call is in flight, and maps the API's answers onto retry decisions: 429 and
//! 5xx retry (429 after its `Retry-After`), other 4xx are permanent.
//!
//! It starts its own fake API on 127.0.0.1 (slow, and rate-limiting the
//! third request once), so it needs only Postgres:
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo run -p stuckless-cli --example report_generator
//! ```
//!
//! It enqueues two reports, lets the first finish, cancels the second midway,
//! and prints what happened.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use stuckless_core::{Handler, JobContext, JobError, JobStatus, NewJob, Storage, TokioClock, Worker};
use stuckless_pg::PgStorage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The job's payload.
#[derive(Deserialize)]
struct Report {
    title: String,
    sections: Vec<String>,
}

/// Calls the completions API once per section.
struct ReportGenerator {
    client: reqwest::Client,
    api: String,
    saw_cancel: Arc<AtomicBool>,
}

#[async_trait]
impl Handler for ReportGenerator {
    async fn handle(&self, ctx: JobContext) -> Result<(), JobError> {
        let report: Report = ctx.payload_as()?;
        for (i, section) in report.sections.iter().enumerate() {
            let call = self
                .client
                .post(format!("{}/v1/chat/completions", self.api))
                .timeout(Duration::from_secs(30))
                .header("content-type", "application/json")
                .body(json!({
                    "model": "gpt-fake",
                    "messages": [{"role": "user", "content": format!("Write the {section} section of {}", report.title)}],
                })
                .to_string())
                .send();
            // The lease may be lost (or the job cancelled) while the API is
            // thinking: stop waiting at once, the result would be refused anyway.
            let response = tokio::select! {
                biased;
                _ = ctx.cancelled() => {
                    self.saw_cancel.store(true, Ordering::SeqCst);
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
            ctx.report_progress(json!({"section": i + 1, "of": report.sections.len(), "last": section}));
        }
        Ok(())
    }
}

/// A fake chat-completions API: 700 ms per answer; the third request is
/// refused with 429 and `Retry-After: 1`, so the first report retries once.
async fn fake_api() -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let count = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
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
    storage: &PgStorage,
    id: stuckless_core::JobId,
    done: impl Fn(&stuckless_core::Job) -> bool,
) -> anyhow::Result<stuckless_core::Job> {
    for _ in 0..600 {
        let job = storage.job_get(id).await?.context("job vanished")?;
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
    let api = fake_api().await?;
    let saw_cancel = Arc::new(AtomicBool::new(false));

    let queue = format!("reports-example-{}", std::process::id());
    let sections: Vec<String> = ["summary", "market", "risks", "outlook"]
        .map(String::from)
        .to_vec();
    let first = storage
        .job_insert(NewJob::new(
            &queue,
            "report",
            json!({"title": "Q3 report", "sections": sections}),
        ))
        .await?
        .job;

    let worker = Worker::builder(
        "report-generator-example",
        Arc::new(storage.clone()),
        Arc::new(TokioClock::system()),
    )
    .queues([queue.clone()])
    .concurrency(2)
    .lease(Duration::from_secs(3))
    .heartbeat_interval(Duration::from_millis(500))
    .poll_interval(Duration::from_millis(200))
    .handler(
        "report",
        ReportGenerator {
            client: reqwest::Client::new(),
            api: api.clone(),
            saw_cancel: saw_cancel.clone(),
        },
    )
    .build()?;
    let shutdown = worker.shutdown_handle();
    let running = tokio::spawn(worker.run());

    let done = wait_for(&storage, first.id, |j| j.status.is_terminal()).await?;
    println!(
        "report {} is {} after {} attempt(s); progress {}",
        done.id,
        done.status,
        done.attempt,
        done.progress.unwrap_or_default()
    );

    let second = storage
        .job_insert(NewJob::new(
            &queue,
            "report",
            json!({"title": "Q4 report", "sections": ["a", "b", "c", "d", "e", "f"]}),
        ))
        .await?
        .job;
    wait_for(&storage, second.id, |j| j.progress.is_some()).await?;
    storage.job_cancel(second.id).await?;
    println!("cancelled report {} midway", second.id);
    for _ in 0..100 {
        if saw_cancel.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cancelled = storage.job_get(second.id).await?.context("job vanished")?;
    println!(
        "report {} is {}; the handler {} the cancellation; last progress {}",
        cancelled.id,
        cancelled.status,
        if saw_cancel.load(Ordering::SeqCst) {
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

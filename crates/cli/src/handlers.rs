//! The built-in handlers, chosen per job kind by `--handler KIND=HANDLER`:
//! `noop`, `sleep` and `http:URL`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use async_trait::async_trait;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::json;
use stuckless_core::{Handler, JobContext, JobError};
use tracing::info;

use crate::util::parse_pair;

/// A built-in handler as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandlerSpec {
    /// Succeeds at once (demos, benchmarks).
    Noop,
    /// Sleeps `{"ms": N}` (default 1000), reporting progress, honouring cancellation.
    Sleep,
    /// POSTs the payload to the URL.
    Http(String),
}

/// Parses `KIND=noop|sleep|http:URL` entries.
pub fn parse_handlers(entries: &[String]) -> anyhow::Result<Vec<(String, HandlerSpec)>> {
    let mut out = Vec::new();
    for entry in entries.iter().filter(|e| !e.trim().is_empty()) {
        let (kind, spec) = parse_pair(entry).context("invalid --handler")?;
        let spec = match spec.as_str() {
            "noop" => HandlerSpec::Noop,
            "sleep" => HandlerSpec::Sleep,
            s if s.starts_with("http:") => {
                let url = &s["http:".len()..];
                let parsed = reqwest::Url::parse(url)
                    .with_context(|| format!("invalid --handler {entry:?}: bad URL {url:?}"))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    bail!("invalid --handler {entry:?}: the URL must be http:// or https://");
                }
                HandlerSpec::Http(url.to_owned())
            }
            other => {
                bail!("invalid --handler {entry:?}: unknown handler {other:?} (use noop, sleep or http:URL)")
            }
        };
        if out.iter().any(|(k, _)| k == &kind) {
            bail!("invalid --handler: kind {kind:?} is configured twice");
        }
        out.push((kind, spec));
    }
    if out.is_empty() {
        bail!("no handlers configured: pass --handler KIND=noop|sleep|http:URL");
    }
    Ok(out)
}

/// Succeeds at once.
pub async fn noop(_ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

/// Sleeps for the payload's `ms` (default 1000), reporting progress each
/// 100 ms slice and stopping as soon as the attempt is cancelled.
pub async fn sleep(ctx: JobContext) -> Result<(), JobError> {
    let total = match ctx.payload().get("ms") {
        None => 1000,
        Some(v) => v.as_u64().ok_or_else(|| {
            JobError::permanent(format!("sleep: \"ms\" must be a non-negative integer, got {v}"))
        })?,
    };
    let started = tokio::time::Instant::now();
    let total = Duration::from_millis(total);
    while started.elapsed() < total {
        let step = (total - started.elapsed()).min(Duration::from_millis(100));
        tokio::select! {
            biased;
            _ = ctx.cancelled() => return Err(JobError::retryable(format!("sleep cancelled: {:?}", ctx.cancel_reason()))),
            _ = tokio::time::sleep(step) => {}
        }
        ctx.report_progress(
            json!({"slept_ms": started.elapsed().as_millis() as u64, "total_ms": total.as_millis() as u64}),
        );
    }
    Ok(())
}

/// What an HTTP answer means for the job: 2xx succeeds; 408, 429 and 5xx
/// retry (429/503 after `Retry-After` seconds when given); other statuses are
/// permanent, since sending the same request again cannot change them.
pub fn classify(status: u16, retry_after: Option<&str>, body: &str) -> Result<(), JobError> {
    let snippet: String = body.chars().take(200).collect();
    let message = format!("endpoint answered HTTP {status}: {snippet}");
    match status {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => match retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(secs) => Err(JobError::retry_after(
                message,
                Duration::from_secs(secs.min(24 * 3600)),
            )),
            None => Err(JobError::retryable(message)),
        },
        _ => Err(JobError::permanent(message)),
    }
}

/// POSTs the job's payload to a URL, as Cloud Tasks would.
pub struct HttpHandler {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
    token: Option<String>,
}

impl HttpHandler {
    /// A handler posting to `url` with a per-request `timeout` and an optional bearer `token`.
    pub fn new(url: String, timeout: Duration, token: Option<String>) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("stuckless/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(HttpHandler {
            client,
            url,
            timeout,
            token,
        })
    }
}

#[async_trait]
impl Handler for HttpHandler {
    async fn handle(&self, ctx: JobContext) -> Result<(), JobError> {
        let mut request = self
            .client
            .post(&self.url)
            .timeout(self.timeout)
            .header("content-type", "application/json")
            .header("x-stuckless-job-id", ctx.id().to_string())
            .header("x-stuckless-attempt", ctx.attempt().to_string())
            .header("x-stuckless-epoch", ctx.epoch().to_string())
            // Same key for every attempt of the job: the endpoint can dedupe retries.
            .header("idempotency-key", format!("stuckless-job-{}", ctx.id()))
            .body(ctx.payload().to_string());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = tokio::select! {
            biased;
            _ = ctx.cancelled() => return Err(JobError::retryable(format!("request cancelled: {:?}", ctx.cancel_reason()))),
            r = request.send() => r,
        };
        let response = match response {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Err(JobError::retryable(format!(
                    "no answer from {} within {:?}",
                    self.url, self.timeout
                )))
            }
            Err(e) => {
                return Err(JobError::retryable(format!(
                    "request to {} failed: {e}",
                    self.url
                )))
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.unwrap_or_default();
        info!(status, url = %self.url, "http handler got an answer");
        classify(status, retry_after.as_deref(), &body)
    }
}

/// Counts handlers running now, for the in-flight gauge.
pub struct Counted {
    /// The wrapped handler.
    pub inner: Arc<dyn Handler>,
    /// The gauge.
    pub in_flight: Gauge,
}

#[async_trait]
impl Handler for Counted {
    async fn handle(&self, ctx: JobContext) -> Result<(), JobError> {
        struct Guard(Gauge);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        self.in_flight.inc();
        // Decrements even when the runtime aborts the handler.
        let _guard = Guard(self.in_flight.clone());
        self.inner.handle(ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_map_to_outcomes() {
        assert!(classify(204, None, "").is_ok());
        assert_eq!(
            classify(429, Some("7"), "slow down"),
            Err(JobError::retry_after(
                "endpoint answered HTTP 429: slow down",
                Duration::from_secs(7)
            ))
        );
        assert!(matches!(
            classify(503, None, ""),
            Err(JobError::Retryable {
                retry_after: None,
                ..
            })
        ));
        assert!(matches!(classify(408, None, ""), Err(JobError::Retryable { .. })));
        assert!(matches!(
            classify(400, None, "bad"),
            Err(JobError::Permanent { .. })
        ));
        assert!(matches!(
            classify(404, Some("3"), ""),
            Err(JobError::Permanent { .. })
        ));
    }

    /// The client really speaks TLS for https URLs: a local listener receives
    /// a TLS ClientHello (record type 0x16), not plain HTTP or an "unsupported
    /// scheme" refusal. No certificate is needed to see the handshake start.
    #[tokio::test]
    async fn https_urls_get_a_tls_handshake() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut first = [0u8; 1];
            s.read_exact(&mut first).await.unwrap();
            first[0]
        });
        let handler = HttpHandler::new(
            format!("https://127.0.0.1:{port}/x"),
            Duration::from_secs(5),
            None,
        )
        .unwrap();
        let result = handler.client.post(&handler.url).body("{}").send().await;
        assert_eq!(server.await.unwrap(), 0x16, "expected a TLS handshake record");
        assert!(result.is_err(), "the fake server never completes the handshake");
    }

    #[test]
    fn handler_specs_parse_and_refuse_nonsense() {
        let specs = parse_handlers(&[
            "a=noop".into(),
            "b=sleep".into(),
            "c=http:https://example.com/jobs".into(),
        ])
        .unwrap();
        assert_eq!(specs[2].1, HandlerSpec::Http("https://example.com/jobs".into()));
        for bad in ["a=teleport", "a=http:ftp://x", "a=http:not a url", "noequals"] {
            assert!(parse_handlers(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(parse_handlers(&["a=noop".into(), "a=sleep".into()]).is_err());
        assert!(parse_handlers(&[]).is_err());
    }
}

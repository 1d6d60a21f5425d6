//! The recording endpoint for `stuckless worker` processes.
//!
//! The shipped binary has no chaos handler; its `http` handler POSTs the
//! job's payload with `x-stuckless-job-id`, `x-stuckless-epoch` and
//! `x-stuckless-attempt` headers. Each chaos worker is started with
//! `--handler chaos=http:http://127.0.0.1:PORT/w/<worker id>`, so this server
//! knows the worker from the path. Per request it writes the same side-table
//! row the in-process recording handler writes (start, then finish after the
//! payload's sleep) and answers 200, so the checks are the same either way.
//! A tiny HTTP/1.1 server, one request per connection.

use std::net::SocketAddr;
use std::time::Duration;

use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use anyhow::Context;

/// Largest request head or body accepted, bytes.
const MAX_REQUEST: usize = 64 * 1024;

/// A running recorder; stops on drop.
pub struct Recorder {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Starts recording into the side table through `pool`.
    pub async fn start(pool: PgPool) -> anyhow::Result<Recorder> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the recorder")?;
        let addr = listener.local_addr().context("recorder address")?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                tokio::spawn(serve(stream, pool.clone()));
            }
        });
        Ok(Recorder { addr, task })
    }

    /// The handler URL for worker `worker_id`.
    pub fn url_for(&self, worker_id: &str) -> String {
        format!("http://{}/w/{worker_id}", self.addr)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A parsed request: path, headers (lowercased names), body.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// Request path.
    pub path: String,
    /// Header name (lowercase) and value pairs.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a request head (up to the blank line); returns the request without
/// its body and the body length announced.
pub fn parse_head(head: &str) -> Option<(Request, usize)> {
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?;
    let mut parts = request_line.split(' ');
    let _method = parts.next()?;
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    let mut length = 0;
    for line in lines.filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once(':')?;
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim().to_owned();
        if k == "content-length" {
            length = v.parse().ok()?;
        }
        headers.push((k, v));
    }
    Some((
        Request {
            path,
            headers,
            body: Vec::new(),
        },
        length,
    ))
}

async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_REQUEST {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let (mut request, length) = parse_head(head)?;
    if length > MAX_REQUEST {
        return None;
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    request.body = body;
    Some(request)
}

async fn respond(stream: &mut TcpStream, status: u16, text: &str) {
    let reason = if status == 200 { "OK" } else { "Error" };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn serve(mut stream: TcpStream, pool: PgPool) {
    let Some(request) = read_request(&mut stream).await else {
        respond(&mut stream, 400, "bad request").await;
        return;
    };
    let worker = request.path.strip_prefix("/w/").unwrap_or("").to_owned();
    let num = |name: &str| request.header(name).and_then(|v| v.parse::<i64>().ok());
    let (Some(job_id), Some(epoch), Some(attempt)) = (
        num("x-stuckless-job-id"),
        num("x-stuckless-epoch"),
        num("x-stuckless-attempt"),
    ) else {
        respond(&mut stream, 400, "missing x-stuckless headers").await;
        return;
    };
    if worker.is_empty() {
        respond(&mut stream, 400, "path must be /w/<worker id>").await;
        return;
    }
    let payload: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
    let sleep_ms = match payload["first_attempt_sleep_ms"].as_u64() {
        Some(ms) if attempt == 1 => ms,
        _ => payload["sleep_ms"].as_u64().unwrap_or(0),
    };
    let row: Result<i64, _> = sqlx::query_scalar(
        "insert into stuckless_chaos.executions (job_id, epoch, attempt, worker_id)
         values ($1, $2, $3, $4) returning id",
    )
    .bind(job_id)
    .bind(epoch)
    .bind(attempt as i32)
    .bind(&worker)
    .fetch_one(&pool)
    .await;
    let Ok(row) = row else {
        respond(&mut stream, 503, "could not record the start").await;
        return;
    };
    tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
    let finished = sqlx::query("update stuckless_chaos.executions set finished_at = now() where id = $1")
        .bind(row)
        .execute(&pool)
        .await;
    match finished {
        Ok(_) => respond(&mut stream, 200, "ok").await,
        Err(_) => respond(&mut stream, 503, "could not record the finish").await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_cli_http_handlers_request_head() {
        let head = "POST /w/w0-g1 HTTP/1.1\r\nContent-Type: application/json\r\nx-stuckless-job-id: 42\r\n\
                    X-Stuckless-Epoch: 3\r\nx-stuckless-attempt: 2\r\ncontent-length: 17";
        let (req, len) = parse_head(head).expect("parses");
        assert_eq!(req.path, "/w/w0-g1");
        assert_eq!(len, 17);
        assert_eq!(req.header("x-stuckless-epoch"), Some("3"));
        assert_eq!(req.header("x-stuckless-job-id"), Some("42"));
        assert!(parse_head("POST /x HTTP/1.1\r\ncontent-length: nope").is_none());
    }
}

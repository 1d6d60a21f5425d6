//! Helpers for the end-to-end tests: real `stuckless` processes on a fresh
//! Postgres database per test.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use env::{scrape, Env};

pub mod dashboard;
mod env;
pub mod fixtures;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_stuckless");

/// A URL where nothing listens (port 1 on loopback): connection refused at once.
pub const DEAD_URL: &str = "postgres://postgres@127.0.0.1:1/nothing";

/// Runs `stuckless ARGS` against `url` to completion.
pub fn run(url: &str, args: &[&str]) -> Output {
    run_stdin(url, args, "")
}

/// Runs `stuckless ARGS` with `stdin` as standard input.
pub fn run_stdin(url: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", url)
        .env_remove("RUST_LOG")
        .env_remove("LOG_FORMAT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stuckless");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().expect("wait for stuckless")
}

/// Text of stdout.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Text of stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A free loopback port (bound, then released for the worker to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `stuckless worker` whose JSON logs go to a file.
pub struct WorkerProc {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
    pub id: String,
}

impl WorkerProc {
    /// Starts a worker with short test timings plus `extra` flags.
    pub fn start(url: &str, id: &str, extra: &[&str]) -> WorkerProc {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("stuckless-e2e-{}-{id}.log", std::process::id()));
        let file = std::fs::File::create(&log).unwrap();
        let port_s = port.to_string();
        let defaults = [
            ("--bind", "127.0.0.1"),
            ("--worker-id", id),
            ("--lease", "2s"),
            ("--heartbeat-interval", "500ms"),
            ("--reap-interval", "1s"),
            ("--poll-interval", "1s"),
            ("--registry-heartbeat-interval", "1s"),
            ("--wake-secret", "right-secret"),
            ("--port", &port_s),
        ];
        let mut args = vec!["--log-format", "json", "worker"];
        // A flag given in `extra` replaces its default (clap refuses repeats).
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        args.extend(extra);
        let child = Command::new(BIN)
            .args(&args)
            .env("DATABASE_URL", url)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn worker");
        let w = WorkerProc {
            child,
            port,
            log,
            id: id.to_owned(),
        };
        let ready = wait_until("worker /readyz 200", Duration::from_secs(30), || {
            http(port, "GET", "/readyz", None)
                .map(|(s, _)| s == 200)
                .unwrap_or(false)
        });
        assert!(ready, "worker {id} never became ready; log:\n{}", w.logs());
        w
    }

    /// The worker's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by pid.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Waits (bounded) for the process to exit; returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Keep the log of a failed test for a post-mortem; tidy up otherwise.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Polls `check` every 100 ms until it holds or `limit` passes; prints how long it took.
pub fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            eprintln!("{what}: after {:?}", start.elapsed());
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{what}: NOT within {limit:?}");
    false
}

/// One HTTP/1.1 request to 127.0.0.1:`port`; returns (status, body).
pub fn http(port: u16, method: &str, path: &str, bearer: Option<&str>) -> std::io::Result<(u16, String)> {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    http_auth(port, method, path, auth.as_deref())
}

/// One HTTP/1.1 request with `authorization` as the whole `Authorization`
/// header value (e.g. `bearer s3cret`); returns (status, body).
pub fn http_auth(
    port: u16,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = authorization
        .map(|v| format!("Authorization: {v}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 0\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Parses a Prometheus text exposition with `prometheus-parse` into
/// (series, value): `name{label="v",…}` with labels in name order and a
/// histogram bucket's `le` last, e.g.
/// `stuckless_pickup_latency_seconds_bucket{queue="default",le="+Inf"}`.
/// Fails on any line the parser does not understand, or a repeated series.
pub fn parse_exposition(text: &str) -> Result<std::collections::BTreeMap<String, f64>, String> {
    use prometheus_parse::{LineInfo, Scrape, Value};
    for (n, line) in text.lines().enumerate() {
        if LineInfo::parse(line) == LineInfo::Ignored {
            return Err(format!("line {}: not Prometheus text: {line:?}", n + 1));
        }
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).map_err(|e| e.to_string())?;
    let series = |name: &str, labels: &prometheus_parse::Labels, le: Option<String>| {
        let mut pairs: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        pairs.sort();
        pairs.extend(le.map(|le| ("le".to_owned(), le)));
        if pairs.is_empty() {
            return name.to_owned();
        }
        let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        format!("{name}{{{}}}", inner.join(","))
    };
    let mut out = std::collections::BTreeMap::new();
    let mut put = |key: String, value: f64| match out.insert(key.clone(), value) {
        Some(_) => Err(format!("duplicate series {key}")),
        None => Ok(()),
    };
    for sample in &scrape.samples {
        match &sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => {
                put(series(&sample.metric, &sample.labels, None), *v)?
            }
            Value::Histogram(buckets) => {
                for b in buckets {
                    let le = if b.less_than.is_infinite() {
                        "+Inf".to_owned()
                    } else {
                        b.less_than.to_string()
                    };
                    let name = format!("{}_bucket", sample.metric);
                    put(series(&name, &sample.labels, Some(le)), b.count)?;
                }
            }
            Value::Summary(_) => return Err(format!("unexpected summary {}", sample.metric)),
        }
    }
    Ok(out)
}

//! End to end: real `stuckless worker` processes on real Postgres.

mod common;

use std::time::{Duration, Instant};

use common::*;
use stuckless_core::driver::{Storage, WorkerList};
use stuckless_core::{JobEventKind, JobId, JobStatus};

#[test]
fn sql_enqueued_job_completes_and_cli_sees_it() {
    let env = Env::new();
    let w = WorkerProc::start(&env.url(), "w-basic", &[]);
    let id = env.sql_enqueue("noop", r#"{"hello":"world"}"#);
    assert!(wait_until("job succeeded", Duration::from_secs(30), || env
        .status(id)
        == JobStatus::Succeeded));
    // The start-up probe found LISTEN/NOTIFY working on a direct connection.
    assert!(
        w.logs().contains("LISTEN/NOTIFY works on this connection"),
        "{}",
        w.logs()
    );
    let d = run(&env.url(), &["diagnose", &id.to_string(), "--json"]);
    assert!(d.status.success(), "{}", stderr(&d));
    let v: serde_json::Value = serde_json::from_str(&stdout(&d)).unwrap();
    assert_eq!(v["case"], "succeeded");
    // Payload from stdin through the CLI, too.
    let e = run_stdin(
        &env.url(),
        &["enqueue", "--kind", "noop", "--json"],
        r#"{"from":"stdin"}"#,
    );
    assert!(e.status.success(), "{}", stderr(&e));
    let v: serde_json::Value = serde_json::from_str(&stdout(&e)).unwrap();
    let id2 = JobId(v["job"]["id"].as_i64().unwrap());
    assert_eq!(env.job(id2).payload["from"], "stdin");
    assert!(wait_until("stdin job succeeded", Duration::from_secs(30), || env
        .status(id2)
        == JobStatus::Succeeded));
    let s = run(&env.url(), &["stats", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&s)).unwrap();
    assert_eq!(v["queues"][0]["succeeded"], 2);
    assert_eq!(v["workers_alive"], 1);
}

#[test]
fn sigterm_releases_the_long_job_and_a_second_worker_finishes_it() {
    let env = Env::new();
    let mut a = WorkerProc::start(&env.url(), "w-term-a", &["--shutdown-grace", "1s"]);
    let id = env.sql_enqueue("sleep", r#"{"ms": 6000}"#);
    assert!(wait_until("A runs the job", Duration::from_secs(30), || {
        let j = env.job(id);
        j.status == JobStatus::Running && j.lease_owner.as_deref() == Some("w-term-a")
    }));
    let sent = Instant::now();
    a.signal("-TERM");
    let status = a
        .wait_exit(Duration::from_secs(30))
        .expect("A exits after SIGTERM");
    eprintln!(
        "A exited {status:?} {:?} after SIGTERM (grace 1s)",
        sent.elapsed()
    );
    assert!(status.success(), "graceful exit must be 0; log:\n{}", a.logs());
    let released = env.job(id);
    assert_eq!(released.status, JobStatus::Queued, "released, not left running");
    assert_eq!(released.attempt, 0, "a release costs no attempt");
    assert!(env.events(id).contains(&JobEventKind::Released));
    // The release log line carries the job's identity.
    let line = a
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "released at shutdown")
        .unwrap_or_else(|| panic!("no release line in:\n{}", a.logs()));
    assert_eq!(line["severity"], "INFO");
    assert_eq!(line["job_id"], id.0.to_string());
    assert_eq!(line["worker_id"], "w-term-a");
    assert_eq!(line["epoch"], "1");
    assert_eq!(line["attempt"], 1);
    let registry = env
        .rt
        .block_on(env.db.storage().worker_list(WorkerList {}))
        .unwrap();
    assert!(registry.iter().all(|w| w.id != "w-term-a"), "A deregistered");

    let _b = WorkerProc::start(&env.url(), "w-term-b", &[]);
    assert!(wait_until("B finishes the job", Duration::from_secs(60), || env
        .status(id)
        == JobStatus::Succeeded));
    assert_eq!(env.job(id).lease_owner.as_deref(), Some("w-term-b"));
}

#[test]
fn sigkill_leaves_jobs_that_another_worker_reaps_and_completes() {
    let env = Env::new();
    let a = WorkerProc::start(&env.url(), "w-kill-a", &[]);
    let ids: Vec<JobId> = (0..3)
        .map(|_| env.sql_enqueue("sleep", r#"{"ms": 1500}"#))
        .collect();
    assert!(wait_until("A holds all jobs", Duration::from_secs(30), || ids
        .iter()
        .all(|id| env.status(*id) == JobStatus::Running)));
    a.signal("-KILL");
    let killed = Instant::now();
    let _b = WorkerProc::start(&env.url(), "w-kill-b", &[]);
    // lease 2 s + reap interval 1 s + 1.5 s of work, with generous slack.
    let done = wait_until("B completes A's jobs", Duration::from_secs(60), || {
        ids.iter().all(|id| env.status(*id) == JobStatus::Succeeded)
    });
    eprintln!("all completed {:?} after SIGKILL", killed.elapsed());
    assert!(done);
    for id in &ids {
        assert!(
            env.events(*id).contains(&JobEventKind::Reaped),
            "job {id} was reaped"
        );
        assert_eq!(env.job(*id).lease_owner.as_deref(), Some("w-kill-b"));
    }
    drop(a);
}

#[test]
fn wake_needs_the_secret_and_metrics_count_what_happened() {
    let env = Env::new();
    let w = WorkerProc::start(&env.url(), "w-http", &["--poll-interval", "60s"]);
    assert_eq!(http(w.port, "GET", "/healthz", None).unwrap().0, 200);
    assert_eq!(http(w.port, "POST", "/wake", None).unwrap().0, 401);
    assert_eq!(
        http(w.port, "POST", "/wake", Some("wrong-secret")).unwrap().0,
        401
    );
    assert_eq!(
        http(w.port, "POST", "/wake", Some("right-secret")).unwrap().0,
        202
    );
    assert_eq!(http(w.port, "GET", "/wake", None).unwrap().0, 405);
    assert_eq!(http(w.port, "GET", "/nope", None).unwrap().0, 404);

    let ok: Vec<JobId> = (0..3).map(|_| env.sql_enqueue("noop", "{}")).collect();
    let bad = env.sql_enqueue("sleep", r#"{"ms": "soon"}"#);
    assert!(wait_until("jobs finished", Duration::from_secs(30), || {
        ok.iter().all(|id| env.status(*id) == JobStatus::Succeeded) && env.status(bad) == JobStatus::Dead
    }));
    let (status, body) = http(w.port, "GET", "/metrics", None).unwrap();
    assert_eq!(status, 200);
    let series = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    let get = |k: &str| {
        series
            .get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k} in\n{body}"))
    };
    assert_eq!(get("stuckless_jobs_claimed_total{queue=\"default\"}"), 4.0);
    assert_eq!(get("stuckless_jobs_completed_total{queue=\"default\"}"), 3.0);
    assert_eq!(get("stuckless_jobs_dead_total{queue=\"default\"}"), 1.0);
    assert_eq!(get("stuckless_jobs_failed_total{queue=\"default\"}"), 1.0);
    assert_eq!(get("stuckless_run_time_seconds_count{queue=\"default\"}"), 3.0);
    assert_eq!(
        get("stuckless_pickup_latency_seconds_bucket{queue=\"default\",le=\"+Inf\"}"),
        4.0
    );
    assert_eq!(get("stuckless_queue_dead{queue=\"default\"}"), 1.0);
    assert_eq!(get("stuckless_in_flight"), 0.0);
    assert!(env
        .job(bad)
        .last_error
        .unwrap()
        .contains("must be a non-negative integer"));
}

/// A one-thread HTTP server on 127.0.0.1 for the `http` handler: `/flaky`
/// answers 429 (Retry-After: 1) the first time and 200 after; `/bad` answers
/// 400. Returns the port and the raw requests it saw.
fn app_endpoint() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let mut flaky_calls = 0;
        // Bounded: the test needs a handful of requests.
        for stream in listener.incoming().take(20) {
            let Ok(mut s) = stream else { continue };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = vec![0u8; 16 * 1024];
            let mut req = Vec::new();
            // Read head and body (the payloads here are tiny).
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
            let text = String::from_utf8_lossy(&req).to_string();
            let reply = if text.starts_with("POST /flaky") {
                flaky_calls += 1;
                if flaky_calls == 1 {
                    "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 4\r\nConnection: close\r\n\r\nslow"
                } else {
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                }
            } else {
                "HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nConnection: close\r\n\r\nbad payload"
            };
            log.lock().unwrap().push(text);
            let _ = s.write_all(reply.as_bytes());
        }
    });
    (port, seen)
}

#[test]
fn http_handler_retries_429_after_retry_after_and_kills_on_400() {
    let env = Env::new();
    let (port, seen) = app_endpoint();
    let flaky = format!("flaky=http:http://127.0.0.1:{port}/flaky");
    let bad = format!("bad=http:http://127.0.0.1:{port}/bad");
    let _w = WorkerProc::start(
        &env.url(),
        "w-http-handler",
        &[
            "--handler",
            &flaky,
            "--handler",
            &bad,
            "--http-token",
            "app-token",
        ],
    );
    let f = env.sql_enqueue("flaky", r#"{"report_id": 7}"#);
    let b = env.sql_enqueue("bad", r#"{"report_id": 8}"#);
    assert!(wait_until("http jobs finished", Duration::from_secs(60), || {
        env.status(f) == JobStatus::Succeeded && env.status(b) == JobStatus::Dead
    }));
    let fj = env.job(f);
    assert_eq!(fj.attempt, 2, "one 429, then success");
    assert_eq!(env.events(f), vec![JobEventKind::Retried]);
    assert!(env.job(b).last_error.unwrap().contains("HTTP 400: bad payload"));
    assert_eq!(env.job(b).attempt, 1, "a 400 is permanent: no retry");
    let requests = seen.lock().unwrap().clone();
    let first = requests
        .iter()
        .find(|r| r.starts_with("POST /flaky"))
        .expect("flaky was called");
    let lower = first.to_ascii_lowercase();
    assert!(lower.contains(&format!("x-stuckless-job-id: {}", f.0)), "{first}");
    assert!(
        lower.contains(&format!("idempotency-key: stuckless-job-{}", f.0)),
        "{first}"
    );
    assert!(lower.contains("authorization: bearer app-token"), "{first}");
    assert!(
        first.ends_with(r#"{"report_id":7}"#),
        "payload is the body: {first}"
    );
}

//! End to end, the binary's side of "never stuck by default": real
//! `stuckless worker` processes on real Postgres.

mod common;

use std::time::Duration;

use common::*;
use stuckless_core::{JobEventKind, JobId, JobStatus};

/// Inserts a due job the way no client should but a second code path
/// might: without the NOTIFY every insert sends (replica mode skips the
/// trigger), so only a poll or a wake can get it claimed.
fn insert_silently(env: &Env, kind: &str) -> JobId {
    let id: i64 = env.rt.block_on(async {
        let mut tx = env.db.pool().begin().await.unwrap();
        sqlx::query("set local session_replication_role = replica")
            .execute(&mut *tx)
            .await
            .unwrap();
        let id = sqlx::query_scalar(
            "insert into stuckless.jobs (queue, kind, payload, run_at, created_at, updated_at)
             values ('default', $1, '{}', now(), now(), now()) returning id",
        )
        .bind(kind)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        id
    });
    JobId(id)
}

#[test]
fn a_wake_alone_gets_a_job_claimed_while_the_poll_is_an_hour_away() {
    let env = Env::new();
    // The secret as `echo` stores it, newline included.
    let w = WorkerProc::start(
        &env.url(),
        "w-wake",
        &["--poll-interval", "1h", "--wake-secret", "right-secret\n"],
    );
    let warned = w
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|v| {
            v["severity"] == "WARNING" && v["message"].as_str().unwrap_or("").contains("ends in whitespace")
        });
    assert!(
        warned,
        "a start-up WARN says the secret was trimmed:\n{}",
        w.logs()
    );

    let id = insert_silently(&env, "noop");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        env.status(id),
        JobStatus::Queued,
        "nothing but a wake may claim it: no NOTIFY was sent and the poll is an hour away"
    );
    // A lower-case scheme is the same scheme (RFC 7235), and the trimmed
    // secret is the one clients send.
    let (status, body) = http_auth(w.port, "POST", "/wake", Some("bearer right-secret")).unwrap();
    assert_eq!(status, 202, "{body}");
    assert!(
        wait_until("woken job succeeded", Duration::from_secs(15), || env.status(id)
            == JobStatus::Succeeded),
        "log:\n{}",
        w.logs()
    );
    assert_eq!(
        http_auth(w.port, "POST", "/wake", Some("BEARER right-secret\n"))
            .unwrap()
            .0,
        202
    );
    assert_eq!(
        http_auth(w.port, "POST", "/wake", Some("bearer wrong"))
            .unwrap()
            .0,
        401
    );
}

#[test]
fn time_limits_from_the_worker_flag_and_from_enqueue_cancel_hung_attempts() {
    let env = Env::new();
    let w = WorkerProc::start(&env.url(), "w-limits", &["--default-timeout", "1s"]);
    // A handler that would sleep for an hour, twice: cancelled at the
    // worker's default limit, retried, then dead.
    let hung: i64 = env
        .count("select stuckless.enqueue('default', 'sleep', '{\"ms\": 3600000}'::jsonb, max_attempts => 2)");
    let hung = JobId(hung);
    // The job's own limit wins over the worker's.
    let out = run(
        &env.url(),
        &[
            "enqueue",
            "--kind",
            "sleep",
            "--timeout",
            "2s",
            "--max-attempts",
            "1",
            "--json",
            r#"{"ms": 3600000}"#,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    // Whole microseconds, like the `timeout_us` column.
    assert_eq!(v["job"]["timeout_us"], serde_json::json!(2_000_000), "{v}");
    let own = JobId(v["job"]["id"].as_i64().unwrap());
    assert!(
        wait_until("both hung jobs dead", Duration::from_secs(60), || {
            env.status(hung) == JobStatus::Dead && env.status(own) == JobStatus::Dead
        }),
        "log:\n{}",
        w.logs()
    );
    let hung_job = env.job(hung);
    assert_eq!(hung_job.attempt, 2);
    assert_eq!(hung_job.last_error.as_deref(), Some("timed out after 1s"));
    assert_eq!(env.events(hung), [JobEventKind::Retried, JobEventKind::Dead]);
    assert_eq!(env.job(own).last_error.as_deref(), Some("timed out after 2s"));
}

#[test]
fn a_kind_no_live_worker_handles_waits_and_is_named_everywhere() {
    let env = Env::new();
    let old = WorkerProc::start(&env.url(), "w-old", &["--handler", "noop=noop"]);
    let report = env.sql_enqueue("report", "{}");
    let noop = env.sql_enqueue("noop", "{}");
    assert!(wait_until("noop done", Duration::from_secs(30), || env
        .status(noop)
        == JobStatus::Succeeded));
    std::thread::sleep(Duration::from_secs(2));
    let waiting = env.job(report);
    assert_eq!(
        (waiting.status, waiting.attempt),
        (JobStatus::Queued, 0),
        "not claimed, not killed"
    );

    let series = scrape(old.port);
    assert_eq!(
        series.get("stuckless_queue_unhandled{kind=\"report\",queue=\"default\"}"),
        Some(&1.0),
        "{series:?}"
    );
    assert_eq!(series.get("stuckless_queue_due{queue=\"default\"}"), Some(&1.0));

    let stats = run(&env.url(), &["stats", "--json"]);
    assert!(stats.status.success(), "{}", stderr(&stats));
    let v: serde_json::Value = serde_json::from_str(&stdout(&stats)).unwrap();
    assert_eq!(v["unhandled_due"], 1, "{v}");
    let human = stdout(&run(&env.url(), &["stats"]));
    assert!(
        human.contains("wait for kinds no live worker handles: report (default)"),
        "{human}"
    );

    let d = run(&env.url(), &["diagnose", &report.to_string()]);
    let text = stdout(&d);
    assert!(d.status.success(), "{}", stderr(&d));
    assert!(
        text.contains("no live worker handles kind \"report\" (live workers handle: noop)"),
        "{text}"
    );

    // A worker that handles it starts (the new version of a rolling deploy).
    let _new = WorkerProc::start(&env.url(), "w-new", &["--handler", "report=noop"]);
    assert!(wait_until("report done", Duration::from_secs(30), || env
        .status(report)
        == JobStatus::Succeeded));
    assert_eq!(env.job(report).lease_owner.as_deref(), Some("w-new"));
}

#[test]
fn readyz_answers_503_with_the_cause_while_claims_keep_failing() {
    let env = Env::new();
    let w = WorkerProc::start(&env.url(), "w-poisoned", &[]);
    // Every claim of a due job now fails, as a row the claim cannot read did.
    env.sql(
        "create function public.poison() returns trigger language plpgsql as
           $$ begin raise exception 'poisoned row: job % cannot be read', old.id; end $$;
         create trigger poison before update on stuckless.jobs
           for each row execute function public.poison();",
    );
    let id = env.sql_enqueue("noop", "{}");
    let mut body = String::new();
    let unready = wait_until("/readyz 503", Duration::from_secs(30), || {
        let (status, b) = http(w.port, "GET", "/readyz", None).unwrap();
        body = b;
        status == 503
    });
    assert!(unready, "log:\n{}", w.logs());
    assert!(
        body.starts_with("not ready: the worker's calls keep failing: job_claim failed")
            && body.contains("poisoned row: job"),
        "{body}"
    );
    let series = scrape(w.port);
    let failed = series["stuckless_call_failed_total{operation=\"job_claim\"}"];
    assert!(failed >= 3.0, "{failed}");
    // The queue gauges do not go through the claim: they still read.
    assert_eq!(series.get("stuckless_queue_due{queue=\"default\"}"), Some(&1.0));
    let warned = w
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|v| v["severity"] == "WARNING" && v["operation"] == "job_claim");
    assert!(warned, "the failures are logged at WARN:\n{}", w.logs());

    env.sql("drop trigger poison on stuckless.jobs");
    assert!(wait_until("job done", Duration::from_secs(30), || env.status(id)
        == JobStatus::Succeeded));
    assert!(wait_until("/readyz 200 again", Duration::from_secs(10), || {
        http(w.port, "GET", "/readyz", None).unwrap().0 == 200
    }));
}

#[test]
fn workers_delete_finished_jobs_past_their_retention() {
    let env = Env::new();
    env.insert_finished("succeeded", "2 days", 1500);
    env.insert_finished("succeeded", "1 hour", 10);
    env.insert_finished("dead", "2 days", 5);
    // Default ages (succeeded 1d, dead 7d); a short interval so the test
    // need not wait the default 10 minutes.
    let w = WorkerProc::start(&env.url(), "w-prune", &["--prune-interval", "1s"]);
    let count = |status: &str| {
        env.count(&format!(
            "select count(*) from stuckless.jobs where status = '{status}'"
        ))
    };
    assert!(
        wait_until("day-old succeeded jobs gone", Duration::from_secs(30), || count(
            "succeeded"
        ) == 10),
        "log:\n{}",
        w.logs()
    );
    assert_eq!(count("dead"), 5, "dead jobs are kept a week");
    assert!(wait_until("pruned counted", Duration::from_secs(10), || {
        scrape(w.port).get("stuckless_jobs_pruned_total") == Some(&1500.0)
    }));
}

#[test]
fn prune_deletes_by_hand_in_bounded_statements() {
    let env = Env::new();
    env.insert_finished("succeeded", "2 days", 2500);
    env.insert_finished("cancelled", "10 minutes", 3);
    env.insert_finished("dead", "8 days", 2);
    let out = run(&env.url(), &["prune", "--limit", "1000", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        v["deleted"],
        serde_json::json!({"succeeded": 2500, "cancelled": 0, "dead": 2})
    );
    assert_eq!(v["statements"], 3, "1000 + 1000 + 502: the short one ends it");
    let out = run(
        &env.url(),
        &["prune", "--retention-cancelled", "5m", "--limit", "2", "--once"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out)
            .starts_with("deleted 2 finished job(s) in 1 statement(s): 0 succeeded, 2 cancelled, 0 dead"),
        "{}",
        stdout(&out)
    );
    assert_eq!(env.count("select count(*) from stuckless.jobs"), 1);
}

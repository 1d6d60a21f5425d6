//! The SQL verdicts (`stuckless.job_verdicts_at`, behind the `stuck_jobs`
//! view and `stuckless.health()`, migration 5) agree with `stuckless
//! diagnose` on every fixture in `fixtures/diagnose/`: same case, scenario,
//! title, fix and time limit, judged at the fixtures' instant.

mod common;

use common::fixtures::{diagnose, fixture, fixtures, load, NOW};

/// The fixtures whose job needs someone, so the view lists it.
const STUCK: [&str; 4] = [
    "a_expired_lease",
    "c_no_live_worker",
    "unhandled_kind",
    "worker_gone",
];

/// What both sides say about job 42.
#[derive(Debug, PartialEq)]
struct Verdict {
    case: String,
    scenario: Option<String>,
    title: String,
    fix: Option<String>,
    limit_secs: Option<f64>,
}

type SqlRow = (String, Option<String>, String, Option<String>, Option<f64>, bool);

/// Loads `sql`, then asks `diagnose --json` and the SQL function at `now`;
/// returns both verdicts, whether SQL calls it stuck, and whether the
/// unfinished-jobs form (the view's source) lists job 42.
async fn both(sql: &str, now: &str) -> (Verdict, Verdict, bool, bool) {
    let db = load(sql).await;
    let json = diagnose(&db, now, &["--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rust = Verdict {
        case: v["case"].as_str().unwrap().to_owned(),
        scenario: v["scenario"].as_str().map(str::to_owned),
        title: v["title"].as_str().unwrap().to_owned(),
        fix: v["fix"].as_str().map(str::to_owned),
        limit_secs: v["time_limit"]["limit_secs"].as_f64(),
    };
    let row: SqlRow = sqlx::query_as(
        "select verdict, scenario, title, fix, extract(epoch from time_limit)::float8, stuck
         from stuckless.job_verdicts_at($1::timestamptz, interval '90 seconds', 42)",
    )
    .bind(now)
    .fetch_one(db.pool())
    .await
    .unwrap();
    let listed: bool = sqlx::query_scalar(
        "select exists (select 1 from stuckless.job_verdicts_at($1::timestamptz) where job_id = 42)",
    )
    .bind(now)
    .fetch_one(db.pool())
    .await
    .unwrap();
    db.cleanup().await;
    let sql = Verdict {
        case: row.0,
        scenario: row.1,
        title: row.2,
        fix: row.3,
        limit_secs: row.4,
    };
    (rust, sql, row.5, listed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_verdict_is_diagnose_s_on_every_fixture() {
    let all = fixtures();
    assert!(
        all.len() >= 11,
        "expected the eleven diagnose fixtures, found {}",
        all.len()
    );
    for (name, sql) in &all {
        let (rust, in_sql, stuck, listed) = both(sql, NOW).await;
        assert_eq!(in_sql, rust, "fixture {name}");
        assert_eq!(stuck, STUCK.contains(&name.as_str()), "fixture {name}: stuck");
        let unfinished = ["running", "queued", "waiting", "scheduled"]
            .iter()
            .any(|s| sql.contains(&format!("'{s}'")))
            && !["dead", "cancelled", "succeeded"].contains(&rust.case.as_str());
        assert_eq!(listed, unfinished, "fixture {name}: listed among unfinished jobs");
    }
}

/// Scenario B a minute later: the worker is still alive and the lease
/// valid, but the assumed 15-minute limit ran out at 12:00:01. diagnose
/// still calls it slow; the SQL verdict agrees and flags it stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_time_limit_a_live_job_is_stuck() {
    let sql = fixture("b_slow_but_alive");
    let (rust, in_sql, stuck, _) = both(&sql, "2026-11-29T12:01:00Z").await;
    assert_eq!(in_sql, rust);
    assert_eq!(
        (in_sql.case.as_str(), in_sql.limit_secs),
        ("slow_but_alive", Some(900.0))
    );
    assert!(stuck, "past its time limit");
}

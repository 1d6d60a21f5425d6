//! `stuckless import` on `fixtures/import/seed_jobs.sql`, a table shaped
//! like the incident's: every status maps, RUNNING rows come over due (and
//! the output says so), the old UUID becomes the external id that
//! `diagnose` and `stuckless.job_verdict()` accept, a dry run writes
//! nothing, and a second run imports nothing twice.

mod common;

use std::path::PathBuf;

use common::*;
use stuckless_tests::TestDb;

const INCIDENT: &str = "4dba4520-9073-42af-9d90-57042e3b75f5";

async fn seeded() -> TestDb {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/import/seed_jobs.sql");
    let sql = std::fs::read_to_string(&path).unwrap();
    let db = TestDb::new().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(db.pool())
        .await
        .expect("fixture loads");
    db
}

async fn cli(db: &TestDb, args: &[&str]) -> std::process::Output {
    let url = db.url().to_owned();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&url, &args)
    })
    .await
    .unwrap()
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// `stuckless import` of the seed-shaped table, its kinds from `type`.
const IMPORT: [&str; 7] = [
    "import",
    "--table",
    "public.jobs",
    "--queue",
    "default",
    "--kind-column",
    "type",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_table_moves_over_once_keeping_its_ids() {
    let db = seeded().await;

    let dry: Vec<&str> = IMPORT.iter().copied().chain(["--dry-run", "--json"]).collect();
    let out = cli(&db, &dry).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (
            v["rows"].as_u64(),
            v["queued"].as_u64(),
            v["succeeded"].as_u64(),
            v["dead"].as_u64()
        ),
        (Some(6), Some(4), Some(1), Some(1))
    );
    assert_eq!(
        count(&db, "select count(*) from stuckless.jobs").await,
        0,
        "a dry run writes nothing"
    );

    let out = cli(&db, &IMPORT).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("imported 6 of 6 row(s)"), "{text}");
    assert!(text.contains("2 RUNNING row(s) come over as due jobs"), "{text}");
    assert!(text.contains("1 still had a live lock"), "{text}");

    type Row = (String, String, String, i32, bool, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "select external_id, kind, status, attempt, run_at <= now(), last_error
         from stuckless.jobs order by external_id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let by_id = |id: &str| {
        rows.iter()
            .find(|r| r.0 == id)
            .unwrap_or_else(|| panic!("{id} imported"))
    };
    let incident = by_id(INCIDENT);
    assert_eq!(
        (incident.1.as_str(), incident.2.as_str(), incident.3, incident.4),
        ("generate_report", "queued", 0, true)
    );
    let live_lock = by_id("6f1c2a8e-3b5d-4e7f-9a0b-1c2d3e4f5a6b");
    assert_eq!(
        (live_lock.2.as_str(), live_lock.4),
        ("queued", true),
        "RUNNING comes over due"
    );
    let tomorrow = by_id("1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f");
    assert_eq!(
        (tomorrow.2.as_str(), tomorrow.4),
        ("queued", false),
        "scheduled_at is kept"
    );
    let done = by_id("2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a");
    assert_eq!(done.2, "succeeded");
    let failed = by_id("3e4f5a6b-7c8d-4e9f-8a1b-2c3d4e5f6a7b");
    assert_eq!(
        (failed.2.as_str(), failed.3, failed.5.as_deref()),
        ("dead", 3, Some("OpenAI API answered HTTP 400"))
    );
    let detail: String = sqlx::query_scalar(
        "select e.detail from stuckless.job_events e join stuckless.jobs j on j.id = e.job_id where j.external_id = $1",
    )
    .bind(INCIDENT)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert!(
        detail.contains("status RUNNING, locked by worker-123456789"),
        "{detail}"
    );

    // Idempotent: a second run finds every row already imported.
    let again: Vec<&str> = IMPORT.iter().copied().chain(["--json"]).collect();
    let out = cli(&db, &again).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (v["already_imported"].as_u64(), v["queued"].as_u64()),
        (Some(6), Some(0))
    );
    assert_eq!(count(&db, "select count(*) from stuckless.jobs").await, 6);

    // The old UUID names the job for diagnose and for the SQL verdict.
    let out = cli(&db, &["diagnose", INCIDENT, "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["case"], "no_live_worker");
    let verdict: String = sqlx::query_scalar("select verdict from stuckless.job_verdict($1)")
        .bind(INCIDENT)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(verdict, "no_live_worker");
    let out = cli(&db, &["diagnose", "00000000-0000-0000-0000-000000000000"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no job with id or external id"),
        "{}",
        stderr(&out)
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tables_and_rows_are_refused_with_nothing_written() {
    let db = seeded().await;
    let cases: [(&[&str], &str); 4] = [
        (
            &["--table", "nope", "--queue", "default", "--kind", "k"],
            "no table \"nope\"",
        ),
        (
            &[
                "--table",
                "jobs; drop table x",
                "--queue",
                "default",
                "--kind",
                "k",
            ],
            "invalid --table",
        ),
        (
            &[
                "--table",
                "public.jobs",
                "--queue",
                "default",
                "--kind-column",
                "colour",
            ],
            "no column \"colour\"",
        ),
        (
            &["--table", "public.jobs", "--queue", "bad queue", "--kind", "k"],
            "invalid --kind or --queue",
        ),
    ];
    for (args, expected) in cases {
        let all: Vec<&str> = ["import"].into_iter().chain(args.iter().copied()).collect();
        let out = cli(&db, &all).await;
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(expected), "{args:?}: {}", stderr(&out));
    }
    // A status the mapping does not know stops the whole import.
    sqlx::raw_sql(
        "alter table public.jobs drop constraint jobs_status_check;
         update public.jobs set status = 'PAUSED' where id = '0b9e8d7c-6a5b-4c3d-8e2f-1a0b9c8d7e6f'",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let out = cli(&db, &IMPORT).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("status \"PAUSED\""), "{}", stderr(&out));
    assert_eq!(count(&db, "select count(*) from stuckless.jobs").await, 0);
    db.cleanup().await;
}

//! The dashboard says what `stuckless diagnose` says: on every diagnose
//! fixture, the Stuck-jobs page lists job 42 exactly when it needs someone,
//! with diagnose's case, title and fix, and the Job page shows diagnose's
//! verdict. Also: the Jobs page's keyset pages cover every row once, and
//! the overview counts the last hour's successes and failures.

mod common;

use common::dashboard::App;
use common::fixtures::{diagnose, fixtures, load, NOW};
use stuckless_tests::TestDb;

/// The fixtures whose job needs someone (as in stuck_jobs_view.rs).
const STUCK: [&str; 4] = [
    "a_expired_lease",
    "c_no_live_worker",
    "unhandled_kind",
    "worker_gone",
];

/// maud's escaping of text, for comparing with rendered pages.
fn escaped(text: &str) -> String {
    maud::html! { (text) }.into_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stuck_and_job_pages_give_diagnose_s_verdict_on_every_fixture() {
    let all = fixtures();
    assert!(
        all.len() >= 11,
        "expected the eleven diagnose fixtures, found {}",
        all.len()
    );
    let now = stuckless_cli::util::parse_timestamp(NOW).unwrap();
    for (name, sql) in &all {
        let db = load(sql).await;
        let json = diagnose(&db, NOW, &["--json"]).await;
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let case = v["case"].as_str().unwrap();
        let title = v["title"].as_str().unwrap();
        let app = App::pinned(&db, now);
        let stuck = app.get("/stuck").await;
        assert_eq!(stuck.status, 200, "{name}: {}", stuck.body);
        let row = format!("data-job=\"42\" data-verdict=\"{case}\"");
        let listed = stuck.body.contains("data-job=\"42\"");
        assert_eq!(
            listed,
            STUCK.contains(&name.as_str()),
            "fixture {name}: listed as stuck"
        );
        if listed {
            assert!(
                stuck.body.contains(&row),
                "fixture {name}: page verdict is diagnose's {case}: {}",
                stuck.body
            );
            assert!(
                stuck.body.contains(&escaped(title)),
                "fixture {name}: title {title:?}"
            );
            if let Some(fix) = v["fix"].as_str() {
                assert!(stuck.body.contains(&escaped(fix)), "fixture {name}: fix {fix:?}");
            }
        }
        let job = app.get("/jobs/42").await;
        assert_eq!(job.status, 200, "{name}: {}", job.body);
        assert!(
            job.body.contains(&format!("data-case=\"{case}\"")),
            "fixture {name}: job page case"
        );
        assert!(
            job.body.contains(&escaped(v["explanation"].as_str().unwrap())),
            "fixture {name}: explanation"
        );
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_pages_cover_every_matching_job_once_newest_first() {
    let db = TestDb::new().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(
        "insert into stuckless.jobs (queue, kind, payload, run_at, created_at, updated_at, status, finished_at)
         select case when g % 3 = 0 then 'mail' else 'other' end, 'k', '{}', now(), now(), now(),
                case when g % 2 = 0 then 'succeeded' else 'queued' end,
                case when g % 2 = 0 then now() end
         from generate_series(1, 1000) g"
            .to_owned(),
    ))
    .execute(db.pool())
    .await
    .unwrap();
    let expected: Vec<i64> = sqlx::query_scalar(
        "select id from stuckless.jobs where queue = 'mail' and status = 'succeeded' order by id desc",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(expected.len(), 166, "jobs 6, 12, … 996 match");
    let app = App::new(&db, None);
    let ids_of = |body: &str| -> Vec<i64> {
        body.split("<td class=\"num\"><a href=\"/jobs/")
            .skip(1)
            .map(|s| s.split('"').next().unwrap().parse().unwrap())
            .collect()
    };
    let (mut seen, mut pages) = (Vec::new(), 0);
    let mut path = "/jobs?queue=mail&status=succeeded".to_owned();
    loop {
        let a = app.get(&path).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        seen.extend(ids_of(&a.body));
        pages += 1;
        match a.body.split("id=\"next\" href=\"").nth(1) {
            Some(rest) => path = rest.split('"').next().unwrap().replace("&amp;", "&"),
            None => break,
        }
    }
    assert_eq!(seen, expected, "every matching job once, newest first");
    assert_eq!(pages, expected.len().div_ceil(50), "pages of 50");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_counts_the_last_hour_per_queue() {
    let db = TestDb::new().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(
        "insert into stuckless.jobs (id, queue, kind, payload, run_at, created_at, updated_at, status, claimed_at, finished_at, attempt)
         overriding system value
         select g, 'mail', 'k', '{}', now(), now(), now(), 'succeeded', now() - interval '3 minutes', now() - interval '2 minutes', 1
         from generate_series(1, 6) g;
         insert into stuckless.jobs (id, queue, kind, payload, run_at, created_at, updated_at, status, attempt, last_error, finished_at)
         overriding system value values (7, 'mail', 'k', '{}', now(), now(), now(), 'dead', 5, 'boom', now());
         insert into stuckless.job_events (job_id, at, kind, epoch, attempt, detail) values
         (7, now() - interval '10 minutes', 'retried', 1, 1, 'boom'), (7, now(), 'dead', 2, 2, 'boom');
         insert into stuckless.jobs (id, queue, kind, payload, run_at, created_at, updated_at, status, finished_at)
         overriding system value values (8, 'mail', 'k', '{}', now(), now(), now(), 'succeeded', now() - interval '2 hours')"
            .to_owned(),
    ))
    .execute(db.pool())
    .await
    .unwrap();
    let app = App::new(&db, None);
    let page = app.get("/").await.body;
    let row = page
        .split("href=\"/jobs?queue=mail\">mail</a>")
        .nth(1)
        .expect("a row for mail");
    let row = row.split("</tr>").next().unwrap();
    // 6 succeeded within the hour (the 2-hour-old one is outside), 2 failed attempts.
    assert!(row.contains("<td class=\"num\">6</td>"), "{row}");
    assert!(row.contains("25.0 %"), "2 failed of 8 ended attempts: {row}");
    assert!(
        row.contains("6 succeeded") && row.contains("failed"),
        "the chart's bars: {row}"
    );
    assert!(row.contains("status=dead\">1</a>"), "one dead job: {row}");
    db.cleanup().await;
}

//! `diagnose` output for every case, held by insta snapshots: each fixture in
//! `fixtures/diagnose/` is loaded into a fresh database and diagnosed by the
//! real binary with the database clock pinned to the fixtures' instant.

mod common;

use std::path::PathBuf;

use common::*;
use stuckless_tests::TestDb;

/// The instant every fixture's times are relative to.
const NOW: &str = "2026-11-29T12:00:00Z";

fn fixtures() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/diagnose");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn diagnose(sql: &str, extra: &[&str]) -> String {
    let db = TestDb::new().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(db.pool())
        .await
        .expect("fixture loads");
    let url = db.url().to_owned();
    let mut args = vec!["diagnose".to_owned(), "42".into(), "--now".into(), NOW.into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&url, &args)
    })
    .await
    .unwrap();
    assert!(out.status.success(), "diagnose failed: {}", stderr(&out));
    db.cleanup().await;
    stdout(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_case_is_named_with_its_fix() {
    let all = fixtures();
    assert!(
        all.len() >= 11,
        "expected the eleven diagnose fixtures, found {}",
        all.len()
    );
    for (name, sql) in &all {
        let text = diagnose(sql, &[]).await;
        insta::assert_snapshot!(format!("diagnose_{name}"), text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_a_as_json() {
    let sql = fixtures()
        .into_iter()
        .find(|(n, _)| n == "a_expired_lease")
        .unwrap()
        .1;
    let text = diagnose(&sql, &["--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["case"], "expired_lease");
    assert_eq!(v["scenario"], "A");
    assert_eq!(v["title"], "lease expired, not reaped");
    assert_eq!(v["lease"]["expired_for_secs"], 240.0);
    assert_eq!(v["fix"], "stuckless requeue 42");
    insta::assert_snapshot!("diagnose_a_expired_lease_json", text);
}

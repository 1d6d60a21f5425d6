//! `diagnose` output for every case, held by insta snapshots: each fixture in
//! `fixtures/diagnose/` is loaded into a fresh database and diagnosed by the
//! real binary with the database clock pinned to the fixtures' instant.

mod common;

use common::fixtures::{fixture, fixtures, load, NOW};

async fn diagnose(sql: &str, extra: &[&str]) -> String {
    let db = load(sql).await;
    let out = common::fixtures::diagnose(&db, NOW, extra).await;
    db.cleanup().await;
    out
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
    let sql = fixture("a_expired_lease");
    let text = diagnose(&sql, &["--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["case"], "expired_lease");
    assert_eq!(v["scenario"], "A");
    assert_eq!(v["title"], "lease expired, not reaped");
    assert_eq!(v["lease"]["expired_for_secs"], 240.0);
    assert_eq!(v["fix"], "stuckless requeue 42");
    insta::assert_snapshot!("diagnose_a_expired_lease_json", text);
}

//! The diagnose fixtures (`fixtures/diagnose/*.sql`): one job 42 per case,
//! loaded into a fresh database and judged at the fixtures' instant.

use std::path::PathBuf;

use stuckless_tests::TestDb;

use super::{run, stderr, stdout};

/// The instant every fixture's times are relative to.
pub const NOW: &str = "2026-11-29T12:00:00Z";

/// Every fixture as (name, SQL), sorted by name.
pub fn fixtures() -> Vec<(String, String)> {
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

/// The SQL of the fixture `name`.
pub fn fixture(name: &str) -> String {
    fixtures()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no diagnose fixture {name}"))
        .1
}

/// A fresh database holding `sql`.
pub async fn load(sql: &str) -> TestDb {
    let db = TestDb::new().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(db.pool())
        .await
        .expect("fixture loads");
    db
}

/// `stuckless diagnose 42 --now NOW EXTRA…` on `db`: its stdout.
pub async fn diagnose(db: &TestDb, now: &str, extra: &[&str]) -> String {
    let url = db.url().to_owned();
    let mut args = vec!["diagnose".to_owned(), "42".into(), "--now".into(), now.into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&url, &args)
    })
    .await
    .unwrap();
    assert!(out.status.success(), "diagnose failed: {}", stderr(&out));
    stdout(&out)
}

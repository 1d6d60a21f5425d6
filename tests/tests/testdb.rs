//! TestDb itself: fresh, migrated, isolated, dropped.

use std::sync::Arc;

use stuckless_core::{Client, NewJob};
use stuckless_tests::TestDb;

#[tokio::test]
async fn each_test_db_is_fresh_migrated_and_dropped() {
    let Some(a) = TestDb::new_or_skip("each_test_db_is_fresh_migrated_and_dropped").await else {
        return;
    };
    let b = TestDb::new().await;
    assert_ne!(a.name(), b.name());
    let job = Client::new(Arc::new(a.storage()))
        .enqueue_job(NewJob::new("default", "k", serde_json::json!({"n": 1})))
        .await
        .unwrap()
        .job;
    assert_eq!(job.id.0, 1);
    // The other database did not see it: isolation.
    let count: i64 = sqlx::query_scalar("select count(*) from stuckless.jobs")
        .fetch_one(b.pool())
        .await
        .unwrap();
    assert_eq!(count, 0);
    let name = a.name().to_owned();
    let admin = b.pool().clone();
    a.cleanup().await;
    let left: i64 = sqlx::query_scalar("select count(*) from pg_database where datname = $1")
        .bind(&name)
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!(left, 0, "cleanup must drop the database");
    let name_b = b.name().to_owned();
    let url_b = b.url().to_owned();
    drop(b);
    let other = TestDb::new().await;
    let left: i64 = sqlx::query_scalar("select count(*) from pg_database where datname = $1")
        .bind(&name_b)
        .fetch_one(other.pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "Drop must drop the database {url_b}");
}

#[tokio::test]
async fn the_test_db_macro_gives_a_migrated_database() {
    let db = stuckless_tests::test_db!();
    let applied: i64 = sqlx::query_scalar("select count(*) from stuckless._sqlx_migrations where success")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(applied, stuckless_pg::migrator().iter().count() as i64);
    // Migrating again is a no-op.
    stuckless_pg::migrate(db.pool()).await.unwrap();
}

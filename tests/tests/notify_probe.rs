//! The start-up LISTEN/NOTIFY probe (`stuckless_pg::probe_notify`).
//!
//! On a direct connection the probe's notification arrives. The "not
//! delivered" case is shown with a listener that is connected but not
//! listening on the probed channel, which is what a client sees behind a
//! transaction pooler (its LISTEN went to some other server connection).
//! This proves the probe's timeout and verdict, not that it recognises a
//! particular pooler: no pooler runs in this suite.

use std::time::Duration;

use sqlx::postgres::PgListener;
use stuckless_pg::{probe_channel, probe_listener, probe_notify, NotifyProbe, PROBE_WAIT};

#[tokio::test]
async fn on_a_direct_connection_the_notification_arrives() {
    let db = stuckless_tests::test_db!("on_a_direct_connection_the_notification_arrives");
    let seen = probe_notify(db.pool(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(seen, NotifyProbe::Delivered);
}

#[tokio::test]
async fn a_listener_that_never_hears_the_channel_is_reported_not_delivered() {
    let db = stuckless_tests::test_db!("a_listener_that_never_hears_the_channel_is_reported_not_delivered");
    let mut listener = PgListener::connect_with(db.pool()).await.unwrap();
    // Registered elsewhere, as behind a transaction pooler.
    listener.listen(&probe_channel()).await.unwrap();
    let probed = probe_channel();
    let wait = Duration::from_millis(300);
    let seen = probe_listener(&mut listener, db.pool(), &probed, wait)
        .await
        .unwrap();
    assert_eq!(seen, NotifyProbe::NotDelivered { waited: wait });
    assert!(
        PROBE_WAIT >= Duration::from_secs(1),
        "the worker's wait leaves room for a slow link"
    );
}

/// Guards a cargo-mutants survivor (the channel check replaced by `true`):
/// a notification on another channel the connection hears is not the
/// probe's, so it does not count as delivered.
#[tokio::test]
async fn a_notification_on_another_channel_is_not_the_probes() {
    let db = stuckless_tests::test_db!("a_notification_on_another_channel_is_not_the_probes");
    let mut listener = PgListener::connect_with(db.pool()).await.unwrap();
    let other = probe_channel();
    listener.listen(&other).await.unwrap();
    sqlx::query("select pg_notify($1, 'not the probe')")
        .bind(&other)
        .execute(db.pool())
        .await
        .unwrap();
    let wait = Duration::from_secs(5);
    let seen = probe_listener(&mut listener, db.pool(), &probe_channel(), wait)
        .await
        .unwrap();
    assert_eq!(seen, NotifyProbe::NotDelivered { waited: wait });
}

#[test]
fn probe_channels_are_fresh_names() {
    let (a, b) = (probe_channel(), probe_channel());
    assert_ne!(a, b);
    assert!(a.starts_with("stuckless_probe_") && a.len() < 64, "{a}");
}

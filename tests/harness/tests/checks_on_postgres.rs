//! The end-of-run checks have teeth on a real database: a history built with
//! PgStorage on a pinned clock, then sabotaged the ways a broken queue would
//! (an unfenced completion, a lost row, a late reap, a phantom execution), is
//! flagged exactly where it was broken, and a clean history is not.

use std::sync::Arc;
use std::time::Duration;

use stuckless_core::driver::{JobClaim, JobComplete, JobInsertMany, JobReapExpired, Storage};
use stuckless_core::{ClaimedJob, Clock, ManualClock, NewJob, Timestamp};
use stuckless_harness::checks::{self, Bounds};
use stuckless_harness::db::{server_url, RunDb};
use stuckless_pg::PgStorage;

const S: i64 = 1_000_000;

fn claim(worker: &str, limit: u32) -> JobClaim {
    JobClaim {
        worker_id: worker.into(),
        queues: vec!["default".into()],
        limit,
        lease: Duration::from_secs(3),
        kinds: None,
    }
}

fn complete(job: &ClaimedJob) -> JobComplete {
    JobComplete {
        id: job.id(),
        epoch: job.epoch(),
    }
}

const REAP: JobReapExpired = JobReapExpired { limit: 100 };

async fn record(db: &RunDb, job: i64, epoch: i64, worker: &str, started: i64, finished: Option<i64>) {
    sqlx::query(
        "insert into stuckless_chaos.executions (job_id, epoch, attempt, worker_id, started_at, finished_at)
         values ($1, $2, 1, $3, stuckless.from_micros($4), stuckless.from_micros($5))",
    )
    .bind(job)
    .bind(epoch)
    .bind(worker)
    .bind(started)
    .bind(finished)
    .execute(db.pool())
    .await
    .expect("recording an execution");
}

#[tokio::test]
async fn checks_flag_each_sabotage_and_pass_the_clean_job() {
    if std::env::var("STUCKLESS_SKIP_PG").is_ok_and(|v| v == "1")
        && sqlx::PgPool::connect(&server_url()).await.is_err()
    {
        eprintln!(
            "SKIPPED checks_flag_each_sabotage_and_pass_the_clean_job: no Postgres and STUCKLESS_SKIP_PG=1"
        );
        return;
    }
    let db = RunDb::create(&server_url(), "stuckless_checks")
        .await
        .expect("database");
    let clock = ManualClock::new(Timestamp::from_micros(1_795_910_400 * S));
    let t0 = clock.now().as_micros();
    let storage = PgStorage::new(db.pool().clone())
        .with_pinned_clock(Arc::new(clock.clone()))
        .with_happy_path_events(true);
    let ids: Vec<i64> = storage
        // Priorities fix the claim order whatever the run_at: A, B, then C.
        .job_insert_many(
            JobInsertMany::new(
                [10, 10, 5, 0, 0]
                    .into_iter()
                    .map(|p| NewJob::new("default", "chaos", serde_json::json!({})).priority(p))
                    .collect(),
            )
            .expect("valid jobs"),
        )
        .await
        .expect("enqueue")
        .iter()
        .map(|o| o.job.id.0)
        .collect();
    let (a, b, c, d, e) = (ids[0], ids[1], ids[2], ids[3], ids[4]);

    // A and B: w1 claims both and dies; reaped 1 s after the lease expired.
    let first = storage.job_claim(claim("w1", 2)).await.expect("claim");
    assert_eq!(first.iter().map(|j| j.id().0).collect::<Vec<_>>(), vec![a, b]);
    record(&db, a, 1, "w1", t0, None).await;
    record(&db, b, 1, "w1", t0, None).await;
    clock.advance(Duration::from_secs(4));
    assert_eq!(
        storage.job_reap_expired(REAP).await.expect("reap").requeued.len(),
        2
    );

    // A: w2 runs it to a clean completion.
    let a2 = storage.job_claim(claim("w2", 1)).await.expect("claim").remove(0);
    assert_eq!(a2.id().0, a);
    record(&db, a, 2, "w2", t0 + 4 * S, Some(t0 + 5 * S)).await;
    clock.advance(Duration::from_secs(1));
    storage.job_complete(complete(&a2)).await.expect("complete");

    // B: w2 is still working on it when an unfenced write succeeds it (what
    // a completion accepted from w1's stale epoch would do).
    let b2 = storage.job_claim(claim("w2", 1)).await.expect("claim").remove(0);
    assert_eq!(b2.id().0, b);
    record(&db, b, 2, "w2", t0 + 5 * S, None).await;
    sqlx::query(
        "update stuckless.jobs set status = 'succeeded', lease_expires_at = null,
         finished_at = stuckless.from_micros($2) where id = $1",
    )
    .bind(b)
    .bind(t0 + 6 * S)
    .execute(db.pool())
    .await
    .expect("sabotage B");

    // C: w3 dies holding it and nobody reaps for 17 s past its lease.
    let c1 = storage.job_claim(claim("w3", 1)).await.expect("claim").remove(0);
    assert_eq!(c1.id().0, c);
    clock.advance(Duration::from_secs(20));
    assert_eq!(
        storage.job_reap_expired(REAP).await.expect("reap").requeued,
        vec![c1.id()]
    );
    let c2 = storage.job_claim(claim("w2", 1)).await.expect("claim").remove(0);
    assert_eq!(c2.id().0, c);
    let now = clock.now().as_micros();
    record(&db, c, 2, "w2", now, Some(now)).await;
    storage.job_complete(complete(&c2)).await.expect("complete");

    // D vanishes; E stays queued; a phantom execution of A at epoch 7.
    sqlx::query("delete from stuckless.jobs where id = $1")
        .bind(d)
        .execute(db.pool())
        .await
        .expect("sabotage D");
    record(&db, a, 7, "w9", now, Some(now)).await;

    let facts = checks::gather(db.pool(), ids.clone()).await.expect("gather");
    let bounds = Bounds {
        lease: Duration::from_secs(3),
        reap_interval: Duration::from_secs(2),
        slack: Duration::from_secs(1),
        outages: Vec::new(),
    };
    let v = checks::check(&facts, bounds);
    for line in v.summary().iter().chain(v.violations().iter()) {
        println!("{line}");
    }
    assert_eq!(v.lost, vec![d]);
    assert_eq!(v.not_terminal, vec![e]);
    assert_eq!(v.stale_completions.len(), 1, "{:?}", v.stale_completions);
    assert!(
        v.stale_completions[0].contains(&format!("job {b} ")),
        "{:?}",
        v.stale_completions
    );
    assert_eq!(v.stuck.len(), 1, "{:?}", v.stuck);
    assert!(v.stuck[0].contains(&format!("job {c} ")), "{:?}", v.stuck);
    assert!(
        v.stuck[0].contains("17000 ms"),
        "the reap delay is read from the event: {:?}",
        v.stuck
    );
    assert_eq!(v.reaps, 3);
    assert!(!v.bogus_executions.is_empty());
    assert!(
        v.bogus_executions
            .iter()
            .all(|s| s.contains(&format!("job {a} epoch 7"))),
        "only the phantom is bogus: {:?}",
        v.bogus_executions
    );
    db.drop_now().await.expect("drop");
}

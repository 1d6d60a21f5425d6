//! Concurrency on real Postgres: what one-statement claims, fenced writes and
//! the idempotency key must guarantee when many clients race. Figures
//! (durations, who won races) are printed, never asserted.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use stuckless_core::driver::{
    CompleteOutcome, JobClaim, JobComplete, JobCompleteMany, JobEvents, JobGet, JobInsert, JobInsertMany,
    JobReapExpired, Storage,
};
use stuckless_core::{Epoch, JobEventKind, JobId, JobStatus, NewJob, StorageError};
use stuckless_tests::manual_clock;
use tokio::sync::Barrier;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_claimers_complete_ten_thousand_jobs_each_exactly_once() {
    let db = stuckless_tests::test_db!("eight_claimers_complete_ten_thousand_jobs_each_exactly_once");
    const JOBS: usize = 10_000;
    const CLAIMERS: usize = 8;
    let s = db.storage();
    let started = Instant::now();
    for chunk in 0..10 {
        let batch: Vec<NewJob> = (0..JOBS / 10)
            .map(|i| NewJob::new("default", "k", json!({"n": chunk * 1000 + i})).priority((i % 3) as i16))
            .collect();
        s.job_insert_many(JobInsertMany::new(batch).unwrap())
            .await
            .unwrap();
    }
    println!("inserted {JOBS} jobs in {:?}", started.elapsed());

    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..CLAIMERS {
        let s = db.storage();
        tasks.push(tokio::spawn(async move {
            let mut done: Vec<(JobId, Epoch)> = Vec::new();
            loop {
                let request = JobClaim {
                    worker_id: format!("w{w}"),
                    queues: vec!["default".into()],
                    limit: 25,
                    lease: Duration::from_secs(300),
                    kinds: None,
                };
                let claimed = s.job_claim(request).await.unwrap();
                if claimed.is_empty() {
                    // Nothing queued is left: nothing fails or expires here.
                    return done;
                }
                let leases: Vec<(JobId, Epoch)> = claimed.iter().map(|c| (c.id(), c.epoch())).collect();
                let jobs = leases
                    .iter()
                    .map(|&(id, epoch)| JobComplete { id, epoch })
                    .collect();
                let results = s.job_complete_many(JobCompleteMany { jobs }).await.unwrap();
                for (lease, result) in leases.into_iter().zip(results) {
                    assert_eq!(result, Ok(CompleteOutcome::Completed), "job {}", lease.0);
                    done.push(lease);
                }
            }
        }));
    }
    let mut per_worker = Vec::new();
    let mut seen = HashSet::new();
    for task in tasks {
        let done = task.await.unwrap();
        per_worker.push(done.len());
        for (id, epoch) in done {
            assert_eq!(epoch, Epoch(1), "job {id} was claimed more than once");
            assert!(seen.insert(id), "job {id} completed twice");
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{CLAIMERS} claimers completed {} jobs in {elapsed:?} ({:.0} jobs/s); per claimer: {per_worker:?}",
        seen.len(),
        seen.len() as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(seen.len(), JOBS);
    let (succeeded, max_epoch, max_attempt): (i64, i64, i32) = sqlx::query_as(
        "select count(*) filter (where status = 'succeeded'), max(epoch), max(attempt) from stuckless.jobs",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!((succeeded, max_epoch, max_attempt), (JOBS as i64, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reap_racing_a_stale_workers_completion_never_yields_two_outcomes() {
    let db = stuckless_tests::test_db!("a_reap_racing_a_stale_workers_completion_never_yields_two_outcomes");
    const JOBS: usize = 300;
    const ROUNDS: usize = 5;
    let clock = manual_clock();
    let lease = Duration::from_secs(30);
    let (mut completions_won, mut reaps_won) = (0usize, 0usize);
    for round in 0..ROUNDS {
        let s = db.pinned_storage(Arc::new(clock.clone()));
        let batch: Vec<NewJob> = (0..JOBS)
            .map(|i| NewJob::new("race", "k", json!(i)).max_attempts(if i % 2 == 0 { 1 } else { 5 }))
            .collect();
        s.job_insert_many(JobInsertMany::new(batch).unwrap())
            .await
            .unwrap();
        let claimed = s
            .job_claim(JobClaim {
                worker_id: "stale".into(),
                queues: vec!["race".into()],
                limit: JOBS as u32,
                lease,
                kinds: None,
            })
            .await
            .unwrap();
        assert_eq!(claimed.len(), JOBS);
        // Every lease is now expired, but no reaper has run: the holder may
        // still complete, and the reapers may take the jobs back. Not both.
        clock.advance(lease);
        let barrier = Arc::new(Barrier::new(4));
        let mut reapers = Vec::new();
        for _ in 0..3 {
            let s = s.clone();
            let barrier = barrier.clone();
            reapers.push(tokio::spawn(async move {
                barrier.wait().await;
                let mut taken = Vec::new();
                loop {
                    let out = s.job_reap_expired(JobReapExpired { limit: 7 }).await.unwrap();
                    if out.is_empty() {
                        return taken;
                    }
                    taken.extend(out.requeued.into_iter().map(|id| (id, JobStatus::Queued)));
                    taken.extend(out.dead.into_iter().map(|id| (id, JobStatus::Dead)));
                }
            }));
        }
        let completer = {
            let s = s.clone();
            let barrier = barrier.clone();
            // Completes in reverse id order so it meets the reapers midway.
            let leases: Vec<(JobId, Epoch)> = claimed.iter().rev().map(|c| (c.id(), c.epoch())).collect();
            tokio::spawn(async move {
                barrier.wait().await;
                let mut results = Vec::new();
                for (id, epoch) in leases {
                    results.push((id, s.job_complete(JobComplete { id, epoch }).await));
                }
                results
            })
        };
        let mut reaped: BTreeMap<JobId, JobStatus> = BTreeMap::new();
        for r in reapers {
            for (id, status) in r.await.unwrap() {
                assert!(reaped.insert(id, status).is_none(), "job {id} reaped twice");
            }
        }
        for (id, result) in completer.await.unwrap() {
            let job = s.job_get(JobGet { id }).await.unwrap().unwrap();
            let events: Vec<JobEventKind> = s
                .job_events(JobEvents { id })
                .await
                .unwrap()
                .iter()
                .map(|e| e.kind)
                .collect();
            match result {
                Ok(CompleteOutcome::Completed) => {
                    completions_won += 1;
                    assert!(!reaped.contains_key(&id), "job {id}: completed AND reaped");
                    assert_eq!(job.status, JobStatus::Succeeded);
                    assert!(events.is_empty(), "job {id}: {events:?}");
                }
                Err(StorageError::WrongStatus { status, .. }) => {
                    reaps_won += 1;
                    let reaped_as = reaped.get(&id).copied();
                    assert_eq!(
                        reaped_as,
                        Some(status),
                        "job {id}: refused as {status} but reaped as {reaped_as:?}"
                    );
                    assert_eq!(job.status, status);
                    assert_eq!(events.len(), 1, "job {id}: {events:?}");
                }
                other => panic!("job {id}: unexpected completion answer {other:?}"),
            }
        }
        println!("round {round}: reapers took {} jobs", reaped.len());
        sqlx::query("truncate stuckless.jobs, stuckless.job_events restart identity cascade")
            .execute(db.pool())
            .await
            .unwrap();
    }
    println!(
        "{} races: the stale completion won {completions_won}, the reapers won {reaps_won}",
        JOBS * ROUNDS
    );
    assert_eq!(completions_won + reaps_won, JOBS * ROUNDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_enqueues_with_one_idempotency_key_yield_one_job() {
    let db = stuckless_tests::test_db!("parallel_enqueues_with_one_idempotency_key_yield_one_job");
    const ROUNDS: usize = 200;
    const RACERS: usize = 4;
    for round in 0..ROUNDS {
        let key = format!("key-{round}");
        let barrier = Arc::new(Barrier::new(RACERS));
        let mut racers = Vec::new();
        for r in 0..RACERS {
            let s = db.storage();
            let pool = db.pool().clone();
            let barrier = barrier.clone();
            let key = key.clone();
            racers.push(tokio::spawn(async move {
                let job = NewJob::new("default", "k", json!({"racer": r})).idempotency_key(key.clone());
                barrier.wait().await;
                // Every path in: the Storage trait, transactional enqueue, SQL.
                match r % 3 {
                    0 => {
                        let out = s.job_insert(JobInsert::new(job).unwrap()).await.unwrap();
                        (out.job.id.0, Some(out.inserted))
                    }
                    1 => {
                        let mut tx = pool.begin().await.unwrap();
                        let out = stuckless_pg::enqueue(&mut *tx, job).await.unwrap();
                        tx.commit().await.unwrap();
                        (out.job.id.0, Some(out.inserted))
                    }
                    _ => {
                        let id: i64 = sqlx::query_scalar(
                            "select stuckless.enqueue('default', 'k', idempotency_key => $1)",
                        )
                        .bind(&key)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                        (id, None)
                    }
                }
            }));
        }
        let mut ids = HashSet::new();
        let mut inserted = 0;
        for racer in racers {
            let (id, fresh) = racer.await.unwrap();
            ids.insert(id);
            inserted += usize::from(fresh == Some(true));
        }
        assert_eq!(ids.len(), 1, "round {round}: {ids:?}");
        assert!(
            inserted <= 1,
            "round {round}: {inserted} racers saw inserted = true"
        );
        let count: i64 = sqlx::query_scalar("select count(*) from stuckless.jobs where idempotency_key = $1")
            .bind(&key)
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(count, 1, "round {round}");
    }
    let (jobs, seq): (i64, i64) = sqlx::query_as(
        "select (select count(*) from stuckless.jobs), (select last_value from stuckless.jobs_id_seq)",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(jobs, ROUNDS as i64);
    println!(
        "{ROUNDS} rounds of {RACERS} racers: {jobs} jobs; {} sequence values burnt by races that reached ON CONFLICT",
        seq - jobs
    );
}

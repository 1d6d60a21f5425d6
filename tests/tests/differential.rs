//! The differential test: random operation sequences, applied with pinned
//! time to `MemStore` (the model) and to `PgStorage`, must give the same
//! answer to every operation and leave the same final state (every job, every
//! event, the worker registry, the queue stats).
//!
//! Ids: Postgres assigns them from an identity sequence. The insert statement
//! only draws from the sequence when it really inserts (an existing
//! idempotency key is found by a pre-check; invalid input never reaches the
//! database), so in sequential use the ids are *identical* to the model's and
//! are compared directly, with no mapping.
//!
//! Cases: 96 by default (each up to 60 operations), `STUCKLESS_DIFF_CASES=n`
//! to change it. One database serves every case; it is truncated (identity
//! restarted) between cases.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;
use stuckless_core::{
    ClaimRequest, Epoch, FailRequest, JobId, ManualClock, MemStore, NewJob, Storage, Timestamp,
    WorkerRegistration,
};
use stuckless_pg::PgStorage;
use stuckless_tests::{manual_clock, TestDb};

const QUEUES: [&str; 3] = ["default", "mail", "bad queue"];
const WORKERS: [&str; 3] = ["w0", "w1", "w2"];
const MAX_JOB: i64 = 12;

#[derive(Clone, Debug)]
struct Ins {
    queue: usize,
    priority: i16,
    delay_micros: Option<u32>,
    max_attempts: i32,
    key: Option<u8>,
}

#[derive(Clone, Debug)]
enum Lease {
    /// One handed out by an earlier claim (fresh or long stale).
    Known(Index),
    /// Any pair: unknown jobs, epochs never issued.
    Made { job: i64, epoch: i64 },
}

#[derive(Clone, Debug)]
enum Op {
    Insert(Ins),
    InsertMany(Vec<Ins>),
    Claim {
        worker: usize,
        queues: Vec<usize>,
        limit: u32,
        lease_micros: u32,
        /// `Duration::MAX`: refused alike (over 100 years).
        huge: bool,
    },
    Heartbeat {
        lease: Lease,
        lease_micros: u32,
        progress: Option<u8>,
        /// Progress `Some(null)`: stored as a JSON null, not "no change".
        null_progress: bool,
    },
    /// A job far outside Postgres's time range: refused alike by both stores.
    InsertAt {
        micros: i64,
    },
    Complete(Lease),
    CompleteMany(Vec<Lease>),
    Fail {
        lease: Lease,
        retry_micros: Option<u32>,
        long_error: bool,
    },
    Release(Lease),
    Reap {
        limit: u32,
    },
    Cancel {
        job: i64,
    },
    Requeue {
        job: i64,
        force: bool,
    },
    Get {
        job: i64,
    },
    Events {
        job: i64,
    },
    Advance {
        micros: u32,
    },
    Register {
        worker: usize,
        concurrency: u32,
    },
    WorkerHeartbeat {
        worker: usize,
        in_flight: u32,
    },
    Deregister {
        worker: usize,
    },
    Stats,
    Now,
}

fn ins() -> impl Strategy<Value = Ins> {
    (
        prop_oneof![8 => 0..2usize, 1 => Just(2usize)],
        -1i16..=1,
        proptest::option::weighted(0.3, 0u32..3_000_000),
        1i32..=3,
        proptest::option::weighted(0.3, 0u8..4),
    )
        .prop_map(|(queue, priority, delay_micros, max_attempts, key)| Ins {
            queue,
            priority,
            delay_micros,
            max_attempts,
            key,
        })
}

fn lease() -> impl Strategy<Value = Lease> {
    prop_oneof![
        6 => any::<Index>().prop_map(Lease::Known),
        1 => (0..MAX_JOB, 0i64..4).prop_map(|(job, epoch)| Lease::Made { job, epoch }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => ins().prop_map(Op::Insert),
        1 => proptest::collection::vec(ins(), 0..5).prop_map(Op::InsertMany),
        6 => (
            0..3usize,
            proptest::collection::vec(0..3usize, 0..3),
            0u32..4,
            1u32..40_000_000,
            proptest::bool::weighted(0.03)
        )
            .prop_map(|(worker, queues, limit, lease_micros, huge)| Op::Claim {
                worker,
                queues,
                limit,
                lease_micros,
                huge
            }),
        3 => (lease(), 1u32..40_000_000, proptest::option::of(any::<u8>()), proptest::bool::weighted(0.1))
            .prop_map(|(lease, lease_micros, progress, null_progress)| Op::Heartbeat {
                lease,
                lease_micros,
                progress,
                null_progress
            }),
        1 => prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(-62_135_596_800_000_001i64), Just(253_402_300_800_000_000i64)]
            .prop_map(|micros| Op::InsertAt { micros }),
        4 => lease().prop_map(Op::Complete),
        1 => proptest::collection::vec(lease(), 0..4).prop_map(Op::CompleteMany),
        3 => (lease(), proptest::option::weighted(0.7, 0u32..5_000_000), proptest::bool::weighted(0.1))
            .prop_map(|(lease, retry_micros, long_error)| Op::Fail { lease, retry_micros, long_error }),
        2 => lease().prop_map(Op::Release),
        3 => (0u32..4).prop_map(|limit| Op::Reap { limit }),
        1 => (0..MAX_JOB).prop_map(|job| Op::Cancel { job }),
        1 => (0..MAX_JOB, any::<bool>()).prop_map(|(job, force)| Op::Requeue { job, force }),
        1 => (0..MAX_JOB).prop_map(|job| Op::Get { job }),
        1 => (0..MAX_JOB).prop_map(|job| Op::Events { job }),
        5 => prop_oneof![0u32..2_000_000, 25_000_000u32..45_000_000].prop_map(|micros| Op::Advance { micros }),
        1 => (0..3usize, 0u32..20).prop_map(|(worker, concurrency)| Op::Register { worker, concurrency }),
        1 => (0..3usize, 0u32..20).prop_map(|(worker, in_flight)| Op::WorkerHeartbeat { worker, in_flight }),
        1 => (0..3usize).prop_map(|worker| Op::Deregister { worker }),
        1 => Just(Op::Stats),
        1 => Just(Op::Now),
    ]
}

fn new_job(spec: &Ins, now: Timestamp) -> NewJob {
    let mut job = NewJob::new(
        QUEUES[spec.queue],
        "kind",
        json!({"p": spec.priority, "k": spec.key}),
    )
    .priority(spec.priority)
    .max_attempts(spec.max_attempts);
    if let Some(d) = spec.delay_micros {
        job = job.run_at(now + Duration::from_micros(u64::from(d)));
    }
    if let Some(k) = spec.key {
        job = job.idempotency_key(format!("key-{k}"));
    }
    job
}

/// Applies one op to a store; the answer as text (Debug of the typed result)
/// so a mismatch prints both sides readably.
async fn apply(s: &dyn Storage, op: &Op, now: Timestamp, leases: &[(JobId, Epoch)]) -> String {
    let pick = |l: &Lease| match l {
        Lease::Known(i) if !leases.is_empty() => leases[i.index(leases.len())],
        Lease::Known(_) => (JobId(1), Epoch(1)),
        Lease::Made { job, epoch } => (JobId(*job), Epoch(*epoch)),
    };
    match op {
        Op::Insert(spec) => format!("{:?}", s.job_insert(new_job(spec, now)).await),
        Op::InsertMany(specs) => format!(
            "{:?}",
            s.job_insert_many(specs.iter().map(|x| new_job(x, now)).collect())
                .await
        ),
        Op::Claim {
            worker,
            queues,
            limit,
            lease_micros,
            huge,
        } => {
            let request = ClaimRequest {
                worker_id: WORKERS[*worker].into(),
                queues: queues.iter().map(|q| QUEUES[*q % 2].to_string()).collect(),
                limit: *limit,
                lease: if *huge {
                    Duration::MAX
                } else {
                    Duration::from_micros(u64::from(*lease_micros))
                },
            };
            format!("{:?}", s.job_claim(request).await)
        }
        Op::Heartbeat {
            lease,
            lease_micros,
            progress,
            null_progress,
        } => {
            let (id, epoch) = pick(lease);
            let lease = Duration::from_micros(u64::from(*lease_micros));
            let progress = if *null_progress {
                Some(json!(null))
            } else {
                progress.map(|p| json!({"pct": p}))
            };
            format!("{:?}", s.job_heartbeat(id, epoch, lease, progress).await)
        }
        Op::InsertAt { micros } => {
            let job = NewJob::new("default", "kind", json!(null)).run_at(Timestamp::from_micros(*micros));
            format!("{:?}", s.job_insert(job).await)
        }
        Op::Complete(lease) => {
            let (id, epoch) = pick(lease);
            format!("{:?}", s.job_complete(id, epoch).await)
        }
        Op::CompleteMany(ls) => format!("{:?}", s.job_complete_many(ls.iter().map(pick).collect()).await),
        Op::Fail {
            lease,
            retry_micros,
            long_error,
        } => {
            let (id, epoch) = pick(lease);
            let error = if *long_error {
                "ü\0".repeat(3000)
            } else {
                format!("failed at {now}")
            };
            let request = FailRequest {
                error,
                retry_after: retry_micros.map(|m| Duration::from_micros(u64::from(m))),
            };
            format!("{:?}", s.job_fail(id, epoch, request).await)
        }
        Op::Release(lease) => {
            let (id, epoch) = pick(lease);
            format!("{:?}", s.job_release(id, epoch).await)
        }
        Op::Reap { limit } => format!("{:?}", s.job_reap_expired(*limit).await),
        Op::Cancel { job } => format!("{:?}", s.job_cancel(JobId(*job)).await),
        Op::Requeue { job, force } => format!("{:?}", s.job_requeue(JobId(*job), *force).await),
        Op::Get { job } => format!("{:?}", s.job_get(JobId(*job)).await),
        Op::Events { job } => format!("{:?}", s.job_events(JobId(*job)).await),
        Op::Advance { .. } => String::new(),
        Op::Register { worker, concurrency } => {
            let registration = WorkerRegistration {
                id: WORKERS[*worker].into(),
                queues: vec!["default".into()],
                concurrency: *concurrency,
                metadata: json!({"pid": worker}),
            };
            format!("{:?}", s.worker_register(registration).await)
        }
        Op::WorkerHeartbeat { worker, in_flight } => {
            format!("{:?}", s.worker_heartbeat(WORKERS[*worker], *in_flight).await)
        }
        Op::Deregister { worker } => format!("{:?}", s.worker_deregister(WORKERS[*worker]).await),
        Op::Stats => format!("{:?}", s.queue_stats().await),
        Op::Now => format!("{:?}", s.storage_now().await),
    }
}

/// Everything observable about a store, for the final comparison.
async fn snapshot(s: &dyn Storage) -> Vec<String> {
    let mut out = Vec::new();
    for id in 0..=MAX_JOB * 3 {
        out.push(format!("job {id}: {:?}", s.job_get(JobId(id)).await));
        out.push(format!("events {id}: {:?}", s.job_events(JobId(id)).await));
    }
    out.push(format!("workers: {:?}", s.worker_list().await));
    out.push(format!("stats: {:?}", s.queue_stats().await));
    out.push(format!("now: {:?}", s.storage_now().await));
    out
}

async fn run_case(pg: &PgStorage, ops: &[Op], happy: bool) -> Result<(), TestCaseError> {
    sqlx::query("truncate stuckless.jobs, stuckless.job_events, stuckless.workers restart identity cascade")
        .execute(pg.pool())
        .await
        .map_err(|e| TestCaseError::fail(format!("truncate: {e}")))?;
    let clock: ManualClock = manual_clock();
    let mem = MemStore::new(clock.clone()).with_happy_path_events(happy);
    let pg = pg
        .clone()
        .with_pinned_clock(Arc::new(clock.clone()))
        .with_happy_path_events(happy);
    let mut leases: Vec<(JobId, Epoch)> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        if let Op::Advance { micros } = op {
            clock.advance(Duration::from_micros(u64::from(*micros)));
            continue;
        }
        let now = stuckless_core::Clock::now(&clock);
        let expected = apply(&mem, op, now, &leases).await;
        let actual = apply(&pg, op, now, &leases).await;
        if expected != actual {
            // Both stores' jobs after the step, for the diagnosis.
            let mem_jobs = mem.jobs();
            let pg_jobs = pg.jobs_page(JobId(0), 1000).await;
            prop_assert_eq!(
                &expected,
                &actual,
                "step {} {:?}: MemStore (left) vs Postgres (right)\nMemStore jobs: {:#?}\nPostgres jobs: {:#?}",
                step,
                op,
                mem_jobs,
                pg_jobs
            );
        }
        if let Op::Claim { .. } = op {
            // Record the leases the model handed out (the same as Postgres's, just checked).
            let claimed: Vec<(JobId, Epoch)> = mem
                .jobs()
                .into_iter()
                .filter(|j| j.status == stuckless_core::JobStatus::Running && j.claimed_at == Some(now))
                .map(|j| (j.id, j.epoch))
                .collect();
            for lease in claimed {
                if !leases.contains(&lease) {
                    leases.push(lease);
                }
            }
        }
    }
    let (expected, actual) = (snapshot(&mem).await, snapshot(&pg).await);
    for (e, a) in expected.iter().zip(&actual) {
        prop_assert_eq!(e, a, "final state: MemStore (left) vs Postgres (right)");
    }
    Ok(())
}

#[test]
fn memstore_and_postgres_agree_on_random_operation_sequences() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(db) = rt.block_on(TestDb::new_or_skip(
        "memstore_and_postgres_agree_on_random_operation_sequences",
    )) else {
        return;
    };
    let pg = db.storage();
    let cases: u32 = std::env::var("STUCKLESS_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let started = std::time::Instant::now();
    let ops_run = std::cell::Cell::new(0usize);
    let result = runner.run(
        &(proptest::collection::vec(op(), 1..60), any::<bool>()),
        |(ops, happy)| {
            ops_run.set(ops_run.get() + ops.len());
            rt.block_on(run_case(&pg, &ops, happy))
        },
    );
    println!(
        "differential: {cases} cases, {} operations (shrinking included) in {:?}",
        ops_run.get(),
        started.elapsed()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    drop(db);
}

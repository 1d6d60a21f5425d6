//! The proptest strategies that draw [`Step`]s: mostly valid input,
//! weighted towards inserts, claims and time, with invalid and made-up
//! input mixed in.

use proptest::prelude::*;
use proptest::sample::{Index, SizeRange};

use super::{JobSpec, LeaseRef, Step, KINDS, MAX_JOB, WORKERS};

/// A random job to insert: mostly valid queues, sometimes the invalid one.
pub fn job_spec() -> impl Strategy<Value = JobSpec> {
    (
        prop_oneof![8 => 0..2usize, 1 => Just(2usize)],
        -1i16..=1,
        proptest::option::weighted(0.3, 0u32..3_000_000),
        1i32..=3,
        proptest::option::weighted(0.3, 0u8..4),
        0..KINDS.len(),
        proptest::option::weighted(0.2, prop_oneof![1 => Just(0u32), 8 => 1u32..100_000_000]),
    )
        .prop_map(
            |(queue, priority, delay_micros, max_attempts, key, kind, timeout_micros)| JobSpec {
                queue,
                priority,
                delay_micros,
                max_attempts,
                key,
                kind,
                timeout_micros,
            },
        )
}

/// A random lease: mostly one handed out earlier, sometimes a made-up one.
pub fn lease_ref() -> impl Strategy<Value = LeaseRef> {
    prop_oneof![
        6 => any::<Index>().prop_map(LeaseRef::Known),
        1 => (0..MAX_JOB, 0i64..4).prop_map(|(job, epoch)| LeaseRef::Made { job, epoch }),
    ]
}

/// A random insert step.
pub fn insert_step() -> BoxedStrategy<Step> {
    job_spec().prop_map(Step::Insert).boxed()
}

/// A random step of any kind, weighted towards inserts, claims and time.
pub fn step() -> BoxedStrategy<Step> {
    let claim = (
        0..WORKERS.len(),
        proptest::collection::vec(0..3usize, 0..3),
        0u32..4,
        1u32..40_000_000,
        proptest::bool::weighted(0.03),
        proptest::option::of(proptest::collection::vec(0..KINDS.len(), 0..3)),
    )
        .prop_map(|(worker, queues, limit, lease_micros, huge, kinds)| Step::Claim {
            worker,
            queues,
            limit,
            lease_micros,
            huge,
            kinds,
        });
    let heartbeat = (
        lease_ref(),
        1u32..40_000_000,
        proptest::option::of(any::<u8>()),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(lease, lease_micros, progress, null_progress)| Step::Heartbeat {
            lease,
            lease_micros,
            progress,
            null_progress,
        });
    let checkpoint = (
        lease_ref(),
        any::<u8>(),
        proptest::bool::weighted(0.1),
        proptest::bool::weighted(0.03),
    )
        .prop_map(|(lease, section, null, huge)| Step::Checkpoint {
            lease,
            section,
            null,
            huge,
        });
    let out_of_range = prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(-62_135_596_800_000_001i64),
        Just(253_402_300_800_000_000i64),
    ];
    let fail = (
        lease_ref(),
        proptest::option::weighted(0.7, 0u32..5_000_000),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(lease, retry_micros, long_error)| Step::Fail {
            lease,
            retry_micros,
            long_error,
        });
    let advance = prop_oneof![
        5 => 0u32..2_000_000,
        5 => 25_000_000u32..45_000_000,
        1 => 60_000_000u32..300_000_000,
    ];
    let worker = 0..WORKERS.len();
    prop_oneof![
        6 => insert_step(),
        1 => proptest::collection::vec(job_spec(), 0..5).prop_map(Step::InsertMany),
        6 => claim,
        3 => heartbeat,
        2 => checkpoint,
        1 => out_of_range.prop_map(|micros| Step::InsertAt { micros }),
        4 => lease_ref().prop_map(Step::Complete),
        1 => proptest::collection::vec(lease_ref(), 0..4).prop_map(Step::CompleteMany),
        3 => fail,
        2 => lease_ref().prop_map(Step::Release),
        3 => prop_oneof![4 => 0u32..4, 1 => Just(1000u32)].prop_map(|limit| Step::Reap { limit }),
        1 => (0..MAX_JOB).prop_map(|job| Step::Cancel { job }),
        1 => (0..MAX_JOB, any::<bool>()).prop_map(|(job, force)| Step::Requeue { job, force }),
        1 => (0..MAX_JOB).prop_map(|job| Step::Get { job }),
        1 => (0..MAX_JOB).prop_map(|job| Step::Events { job }),
        5 => advance.prop_map(|micros| Step::Advance { micros }),
        1 => (worker.clone(), 0u32..20).prop_map(|(worker, concurrency)| Step::Register { worker, concurrency }),
        1 => (worker.clone(), 0u32..20).prop_map(|(worker, in_flight)| Step::WorkerHeartbeat { worker, in_flight }),
        1 => worker.prop_map(|worker| Step::Deregister { worker }),
        1 => (0u32..120_000_000, 0u32..240_000_000, 0u32..4)
            .prop_map(|(finished_micros, dead_micros, limit)| Step::Prune { finished_micros, dead_micros, limit }),
        1 => Just(Step::Kinds),
        1 => Just(Step::Stats),
        1 => Just(Step::Now),
    ]
    .boxed()
}

/// A random sequence of `len` steps.
pub fn steps(len: impl Into<SizeRange>) -> BoxedStrategy<Vec<Step>> {
    proptest::collection::vec(step(), len).boxed()
}

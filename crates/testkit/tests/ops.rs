//! The generator's session: leases resolve against earlier claims, time steps
//! move the clock, invalid input is refused with the same typed error every
//! storage gives, and a generated sequence replays identically.

use std::sync::Arc;

use proptest::arbitrary::any;
use proptest::sample::Index;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use stuckless_core::driver::{JobHeartbeat, Op, Reply, Storage};
use stuckless_core::{Epoch, JobId, MemStore, StorageError};
use stuckless_testkit::ops::{self, Call, JobSpec, LeaseRef, Session, Step};

fn spec(queue: usize) -> JobSpec {
    JobSpec {
        queue,
        priority: 0,
        delay_micros: None,
        max_attempts: 3,
        key: None,
        kind: 0,
        timeout_micros: None,
    }
}

fn claim(worker: usize) -> Step {
    Step::Claim {
        worker,
        queues: vec![0],
        limit: 1,
        lease_micros: 30_000_000,
        huge: false,
        kinds: None,
    }
}

async fn run(session: &mut Session, store: &Arc<dyn Storage>, step: &Step) -> Option<Reply> {
    let call = session.prepare(step)?;
    let reply = call.apply(store).await;
    session.record(&reply);
    Some(reply)
}

fn invalid_field(reply: &Reply) -> &'static str {
    match reply.error() {
        Some(StorageError::Invalid(v)) => v.field,
        other => panic!("expected a validation error, got {other:?} in {reply:?}"),
    }
}

#[tokio::test]
async fn leases_resolve_against_earlier_claims() {
    let mut session = Session::new(stuckless_testkit::manual_clock());
    let store: Arc<dyn Storage> = Arc::new(MemStore::new(session.clock().clone()));
    let index: Index = any::<Index>()
        .new_tree(&mut TestRunner::deterministic())
        .unwrap()
        .current();
    let known = LeaseRef::Known(index);
    assert_eq!(session.lease(&known), (JobId(1), Epoch(1)), "before any claim");
    for _ in 0..2 {
        run(&mut session, &store, &Step::Insert(spec(0))).await;
    }
    run(&mut session, &store, &claim(0)).await;
    run(&mut session, &store, &claim(1)).await;
    assert_eq!(session.leases(), &[(JobId(1), Epoch(1)), (JobId(2), Epoch(1))]);
    assert_eq!(session.max_job_id(), 2);
    assert_eq!(session.lease(&known), *index.get(session.leases()));
    let made = LeaseRef::Made { job: 9, epoch: 3 };
    assert_eq!(session.lease(&made), (JobId(9), Epoch(3)));
    let step = Step::Heartbeat {
        lease: LeaseRef::Made { job: 1, epoch: 1 },
        lease_micros: 5,
        progress: None,
        null_progress: true,
    };
    let expected = Op::JobHeartbeat(JobHeartbeat {
        id: JobId(1),
        epoch: Epoch(1),
        lease: std::time::Duration::from_micros(5),
        progress: Some(serde_json::Value::Null),
    });
    assert_eq!(session.prepare(&step), Some(Call::Op(expected)));
}

#[tokio::test]
async fn time_steps_move_the_clock_and_call_nothing() {
    let mut session = Session::new(stuckless_testkit::manual_clock());
    let before = session.now();
    assert_eq!(session.prepare(&Step::Advance { micros: 7 }), None);
    assert_eq!(session.now().micros_since(before), 7);
}

#[tokio::test]
async fn invalid_input_is_refused_with_the_field_named() {
    let mut session = Session::new(stuckless_testkit::manual_clock());
    let store: Arc<dyn Storage> = Arc::new(MemStore::new(session.clock().clone()));
    let bad_queue = run(&mut session, &store, &Step::Insert(spec(2))).await.unwrap();
    assert_eq!(invalid_field(&bad_queue), "queue");
    let batch = Step::InsertMany(vec![spec(0), spec(2)]);
    assert_eq!(
        invalid_field(&run(&mut session, &store, &batch).await.unwrap()),
        "queue"
    );
    let far = Step::InsertAt { micros: i64::MAX };
    assert_eq!(
        invalid_field(&run(&mut session, &store, &far).await.unwrap()),
        "run_at"
    );
    let huge = Step::Claim {
        worker: 0,
        queues: vec![0],
        limit: 1,
        lease_micros: 1,
        huge: true,
        kinds: None,
    };
    assert_eq!(
        invalid_field(&run(&mut session, &store, &huge).await.unwrap()),
        "lease"
    );
    let no_limit = Step::Insert(JobSpec {
        timeout_micros: Some(0),
        ..spec(0)
    });
    assert_eq!(
        invalid_field(&run(&mut session, &store, &no_limit).await.unwrap()),
        "timeout"
    );
    assert_eq!(session.max_job_id(), 0, "nothing was inserted");
    assert!(session.leases().is_empty());
}

async fn replay(steps: &[Step]) -> Vec<String> {
    let mut session = Session::new(stuckless_testkit::manual_clock());
    let store: Arc<dyn Storage> = Arc::new(MemStore::new(session.clock().clone()));
    let mut replies = Vec::new();
    for step in steps {
        if let Some(reply) = run(&mut session, &store, step).await {
            replies.push(format!("{reply:?}"));
        }
    }
    replies.extend(ops::snapshot(&*store, session.max_job_id()).await);
    replies
}

#[tokio::test]
async fn a_generated_sequence_replays_identically() {
    let steps = ops::steps(40..60)
        .new_tree(&mut TestRunner::deterministic())
        .unwrap()
        .current();
    assert!(steps.len() >= 40);
    let first = replay(&steps).await;
    assert_eq!(first, replay(&steps).await);
    assert!(first.iter().any(|r| r.starts_with("JobInsert")), "{first:#?}");
}

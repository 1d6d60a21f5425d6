//! Conformance cases about jobs: inserting them here, leases in [`lease`],
//! recovery and operator actions in [`recovery`], kinds and time limits in
//! [`kinds`], retention in [`retention`], checkpoints in [`checkpoint`].

mod checkpoint;
mod kinds;
mod lease;
mod recovery;
mod retention;

use std::time::Duration;

use serde_json::json;
use stuckless_core::driver::{JobEvents, JobGet, JobInsertMany};
use stuckless_core::{Client, Epoch, JobId, JobStatus, NewJob, Timestamp};

use crate::case::{assert_invalid, insert, job, kit_case, Case, Ctx};

/// The job cases, in the order they are run.
pub(crate) fn cases() -> Vec<Case> {
    let mut all = vec![
        kit_case!("job", insert_sets_every_field_and_ids_increase),
        kit_case!(
            "job",
            idempotency_key_returns_the_existing_job_without_burning_an_id
        ),
        kit_case!(
            "job",
            insert_many_is_atomic_and_in_order_with_keys_repeated_in_the_batch
        ),
        kit_case!("job", json_and_timestamps_round_trip_exactly),
    ];
    all.extend(lease::cases());
    all.extend(recovery::cases());
    all.extend(kinds::cases());
    all.extend(retention::cases());
    all.extend(checkpoint::cases());
    all
}

async fn insert_sets_every_field_and_ids_increase(c: &Ctx) {
    let s = c.store();
    let now = c.now();
    let out = s
        .job_insert(insert(
            NewJob::new("default", "report", json!({"a": [1, 2]}))
                .priority(3)
                .max_attempts(7),
        ))
        .await
        .unwrap();
    assert!(out.inserted);
    let j = &out.job;
    assert_eq!(j.id, JobId(1));
    assert_eq!((j.queue.as_str(), j.kind.as_str()), ("default", "report"));
    assert_eq!(j.payload, json!({"a": [1, 2]}));
    assert_eq!(
        (j.priority, j.max_attempts, j.attempt, j.epoch),
        (3, 7, 0, Epoch(0))
    );
    assert_eq!(j.status, JobStatus::Queued);
    assert_eq!((j.run_at, j.created_at, j.updated_at), (now, now, now));
    assert_eq!(
        (&j.lease_owner, j.lease_expires_at, j.claimed_at, j.heartbeat_at),
        (&None, None, None, None)
    );
    assert_eq!(
        (&j.progress, &j.last_error, &j.idempotency_key, j.finished_at),
        (&None, &None, &None, None)
    );
    assert_eq!(s.job_get(JobGet { id: j.id }).await.unwrap().as_ref(), Some(j));
    let later = now + Duration::from_secs(3600);
    let second = s
        .job_insert(insert(job("default").run_at(later)))
        .await
        .unwrap()
        .job;
    assert_eq!(second.id, JobId(2));
    assert_eq!(second.run_at, later);
    assert_eq!(s.job_get(JobGet { id: JobId(3) }).await.unwrap(), None);
    // Happy-path logging is off: no events at all.
    assert!(s.job_events(JobEvents { id: j.id }).await.unwrap().is_empty());
}

async fn idempotency_key_returns_the_existing_job_without_burning_an_id(c: &Ctx) {
    let s = c.store();
    let first = s
        .job_insert(insert(
            NewJob::new("default", "a", json!(1)).idempotency_key("order-42"),
        ))
        .await
        .unwrap();
    assert!(first.inserted);
    c.advance(Duration::from_secs(5));
    let again = s
        .job_insert(insert(
            NewJob::new("other", "b", json!(2)).idempotency_key("order-42"),
        ))
        .await
        .unwrap();
    assert!(!again.inserted);
    assert_eq!(again.job, first.job, "the existing job, unchanged");
    let next = s.job_insert(insert(job("default"))).await.unwrap().job;
    assert_eq!(next.id, JobId(2), "a duplicate key must not consume an id");
}

async fn insert_many_is_atomic_and_in_order_with_keys_repeated_in_the_batch(c: &Ctx) {
    let s = c.store();
    // One bad job and none is inserted: the client validates the batch first.
    let err = Client::new(s.clone())
        .enqueue_many(vec![job("default"), NewJob::new("", "k", json!(null))])
        .await
        .unwrap_err();
    assert_invalid(&err, "queue");
    assert_eq!(
        s.job_get(JobGet { id: JobId(1) }).await.unwrap(),
        None,
        "nothing inserted"
    );
    let batch = JobInsertMany::new(vec![
        job("a").idempotency_key("k1"),
        job("b"),
        job("c").idempotency_key("k1"),
        job("d").idempotency_key("k2"),
    ])
    .unwrap();
    let out = s.job_insert_many(batch).await.unwrap();
    let ids: Vec<(i64, bool)> = out.iter().map(|o| (o.job.id.0, o.inserted)).collect();
    assert_eq!(ids, vec![(1, true), (2, true), (1, false), (3, true)]);
    assert_eq!(out[2].job.queue, "a");
    // The keyless fast path: many at once, ids in input order.
    let many: Vec<NewJob> = (0..50).map(|i| job("bulk").priority(i % 3)).collect();
    let out = s
        .job_insert_many(JobInsertMany::new(many).unwrap())
        .await
        .unwrap();
    let ids: Vec<i64> = out.iter().map(|o| o.job.id.0).collect();
    assert_eq!(ids, (4..54).collect::<Vec<_>>());
    assert_eq!(out[7].job.priority, 1);
    assert!(s
        .job_insert_many(JobInsertMany { jobs: vec![] })
        .await
        .unwrap()
        .is_empty());
}

async fn json_and_timestamps_round_trip_exactly(c: &Ctx) {
    let s = c.store();
    let payloads = vec![
        json!(null),
        json!(true),
        json!(-0.0),
        json!(1.5e300),
        json!(0.1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!("quotes ' \" ; -- drop table stuckless.jobs; émoji 🎉 \\ back"),
        json!({"b": [1, {"z": null, "a": []}], "a": {}, "": "empty key"}),
        json!([[], [[]], "\u{7f}\u{1}"]),
    ];
    let times = [
        Timestamp::from_micros(-1_500_001),
        Timestamp::UNIX_EPOCH,
        Timestamp::from_micros(1),
        Timestamp::from_micros(253_402_300_799_999_999), // 9999-12-31T23:59:59.999999Z
    ];
    for (i, payload) in payloads.iter().enumerate() {
        let at = times[i % times.len()];
        let j = s
            .job_insert(insert(NewJob::new("default", "k", payload.clone()).run_at(at)))
            .await
            .unwrap()
            .job;
        let back = s.job_get(JobGet { id: j.id }).await.unwrap().unwrap();
        assert_eq!(&back.payload, payload);
        assert_eq!(back.run_at, at);
        assert_eq!(back, j);
    }
}

//! Conformance cases about what a worker may take: only the kinds it runs,
//! and each job's own time limit carried to it.

use std::time::Duration;

use serde_json::json;
use stuckless_core::driver::{JobClaim, JobGet, JobInsertMany, QueueKindsGet};
use stuckless_core::{JobId, JobStatus, NewJob, StorageError};

use crate::case::{claim_req, insert, kit_case, Case, Ctx};

/// The kind and time-limit cases, in the order they are run.
pub(crate) fn cases() -> Vec<Case> {
    vec![
        kit_case!("job", claim_takes_only_the_kinds_asked_for),
        kit_case!("job", a_jobs_time_limit_round_trips),
        kit_case!("queue", queue_kinds_counts_only_unfinished_jobs_per_kind),
    ]
}

fn of_kind(kind: &str) -> NewJob {
    NewJob::new("default", kind, json!({}))
}

fn claim_kinds(worker: &str, kinds: Option<&[&str]>, limit: u32) -> JobClaim {
    JobClaim {
        kinds: kinds.map(|k| k.iter().map(|s| s.to_string()).collect()),
        ..claim_req(worker, &["default"], limit)
    }
}

async fn claim_takes_only_the_kinds_asked_for(c: &Ctx) {
    let s = c.store();
    s.job_insert(insert(of_kind("email"))).await.unwrap(); // 1
    s.job_insert(insert(of_kind("report").priority(5))).await.unwrap(); // 2
    s.job_insert(insert(of_kind("email"))).await.unwrap(); // 3
    s.job_insert(insert(of_kind("added_in_v2").priority(9)))
        .await
        .unwrap(); // 4
    let ids = |claimed: Vec<stuckless_core::ClaimedJob>| claimed.iter().map(|j| j.id().0).collect::<Vec<_>>();

    let none = s.job_claim(claim_kinds("w", Some(&[]), 10)).await.unwrap();
    assert!(none.is_empty(), "an empty list of kinds claims nothing");
    let reports = s
        .job_claim(claim_kinds("w", Some(&["report"]), 10))
        .await
        .unwrap();
    assert_eq!(ids(reports), [2]);
    let old_worker = s
        .job_claim(claim_kinds("w", Some(&["email", "report"]), 10))
        .await
        .unwrap();
    assert_eq!(ids(old_worker), [1, 3], "claim order among the kinds asked for");
    let waiting = s.job_get(JobGet { id: JobId(4) }).await.unwrap().unwrap();
    assert_eq!(
        (waiting.status, waiting.attempt),
        (JobStatus::Queued, 0),
        "a kind nobody asked for waits untouched"
    );
    let any = s.job_claim(claim_kinds("w", None, 10)).await.unwrap();
    assert_eq!(ids(any), [4], "no list: any kind");

    let bad = s.job_claim(claim_kinds("w", Some(&["bad kind"]), 1)).await;
    assert!(
        matches!(&bad, Err(StorageError::Invalid(e)) if e.field == "kind"),
        "{bad:?}"
    );
}

async fn a_jobs_time_limit_round_trips(c: &Ctx) {
    let s = c.store();
    let ninety = Duration::from_secs(90);
    let tiny = Duration::from_micros(1);
    let week = Duration::from_secs(7 * 86_400);
    let one = s
        .job_insert(insert(of_kind("k").timeout(ninety)))
        .await
        .unwrap()
        .job;
    assert_eq!(one.timeout, Some(ninety));
    let many = JobInsertMany::new(vec![
        of_kind("k").timeout(tiny),
        of_kind("k"),
        of_kind("k").timeout(week),
    ])
    .expect("valid");
    let limits: Vec<_> = s
        .job_insert_many(many)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.job.timeout)
        .collect();
    assert_eq!(limits, [Some(tiny), None, Some(week)]);
    let claimed = s.job_claim(claim_req("w", &["default"], 4)).await.unwrap();
    let limits: Vec<_> = claimed.iter().map(|j| j.job.timeout).collect();
    assert_eq!(
        limits,
        [Some(ninety), Some(tiny), None, Some(week)],
        "the worker sees the job's limit"
    );
    let read = s.job_get(JobGet { id: JobId(1) }).await.unwrap().unwrap();
    assert_eq!(read.timeout, Some(ninety));
    for refused in [Duration::ZERO, week + Duration::from_micros(1)] {
        let err = of_kind("k").timeout(refused).validate().unwrap_err();
        assert_eq!(err.field, "timeout", "{refused:?}");
    }
}

async fn queue_kinds_counts_only_unfinished_jobs_per_kind(c: &Ctx) {
    let s = c.store();
    let t0 = c.now();
    s.job_insert(insert(of_kind("report"))).await.unwrap(); // 1 due, oldest
    c.advance(Duration::from_secs(3));
    s.job_insert(insert(of_kind("report"))).await.unwrap(); // 2 due
    s.job_insert(insert(of_kind("report").run_at(t0 + Duration::from_secs(60))))
        .await
        .unwrap(); // 3 scheduled
    s.job_insert(insert(of_kind("email").priority(1))).await.unwrap(); // 4 running
    s.job_insert(insert(NewJob::new("Mail", "email", json!({}))))
        .await
        .unwrap(); // 5 due, another queue
    s.job_insert(insert(of_kind("done").priority(2))).await.unwrap(); // 6 succeeded: absent
    let claimed = s.job_claim(claim_req("w", &["default"], 2)).await.unwrap();
    assert_eq!((claimed[0].id(), claimed[1].id()), (JobId(6), JobId(4)));
    let six = stuckless_core::driver::JobComplete {
        id: claimed[0].id(),
        epoch: claimed[0].epoch(),
    };
    s.job_complete(six).await.unwrap();
    c.advance(Duration::from_secs(1));
    let stats = s.queue_kinds_get(QueueKindsGet {}).await.unwrap();
    let rows: Vec<_> = stats
        .iter()
        .map(|k| (k.queue.as_str(), k.kind.as_str(), k.due, k.scheduled, k.running))
        .collect();
    assert_eq!(
        rows,
        [
            ("Mail", "email", 1, 0, 0),
            ("default", "email", 0, 0, 1),
            ("default", "report", 2, 1, 0),
        ],
        "byte order of (queue, kind); finished jobs are not counted"
    );
    assert_eq!(stats[2].oldest_due_age, Some(Duration::from_secs(4)));
    assert_eq!(stats[1].oldest_due_age, None);
}

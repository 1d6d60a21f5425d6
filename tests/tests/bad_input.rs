//! Bad and hostile input: each refused with a clear typed error naming the
//! field, nothing half-written, nothing executed as SQL. Run against
//! `MemStore` and `PgStorage` alike (they must refuse identically), plus the
//! Postgres-only entry points (SQL functions, raw text payloads).
//!
//! Invalid jobs never reach a storage (its insert takes only a `ValidJob`):
//! `Client` refuses them through `NewJob::validate`. Other bad parameters
//! (claim, heartbeat, fail, registration) are refused by each storage.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use stuckless_core::driver::{
    JobClaim, JobComplete, JobFail, JobGet, JobHeartbeat, QueueStatsGet, Storage, WorkerDeregister,
    WorkerHeartbeat, WorkerList, WorkerRegister,
};
use stuckless_core::{limits, Client, Epoch, JobId, MemStore, NewJob, StorageError, Timestamp, ValidJob};
use stuckless_tests::{manual_clock, TestDb};

const HOSTILE: &[&str] = &[
    "x'; drop table stuckless.jobs; --",
    "\"; select pg_sleep(10); --",
    "$1 $$ \\ \\0 %s %n",
    "Robert'); DELETE FROM stuckless.job_events;--",
    "ünïcödé 🎉 \u{202e}rtl",
    "tab\tnewline\nret\r",
];

fn field_of(e: &StorageError) -> Option<&'static str> {
    match e {
        StorageError::Invalid(v) => Some(v.field),
        _ => None,
    }
}

/// Every refusal bad input must get, through the client and the driver, on one store.
async fn refuses_bad_input(s: Arc<dyn Storage>) {
    let client = Client::new(s.clone());
    let ok = || NewJob::new("default", "kind", json!({"ok": true}));
    let big = json!({"blob": "x".repeat(limits::MAX_PAYLOAD_BYTES)});
    let mut cases: Vec<(NewJob, &str)> = vec![
        (NewJob::new("", "k", json!(1)), "queue"),
        (
            NewJob::new("q".repeat(limits::MAX_NAME_BYTES + 1), "k", json!(1)),
            "queue",
        ),
        (NewJob::new("q", "", json!(1)), "kind"),
        (
            NewJob::new("q", "k".repeat(limits::MAX_NAME_BYTES + 1), json!(1)),
            "kind",
        ),
        (NewJob::new("q", "k", big), "payload"),
        (NewJob::new("q", "k", json!({"a": "nul \u{0} inside"})), "payload"),
        (NewJob::new("q", "k", json!({"nul\u{0}key": 1})), "payload"),
        (ok().max_attempts(0), "max_attempts"),
        (ok().max_attempts(limits::MAX_MAX_ATTEMPTS + 1), "max_attempts"),
        (ok().idempotency_key(""), "idempotency_key"),
        (ok().idempotency_key("k".repeat(256)), "idempotency_key"),
        (ok().idempotency_key("nul\u{0}"), "idempotency_key"),
        (ok().run_at(Timestamp::from_micros(i64::MAX)), "run_at"),
        (ok().run_at(Timestamp::from_micros(i64::MIN)), "run_at"),
    ];
    for hostile in HOSTILE {
        cases.push((NewJob::new(*hostile, "k", json!(1)), "queue"));
        cases.push((NewJob::new("q", *hostile, json!(1)), "kind"));
    }
    for (job, field) in cases {
        let shown = format!("{:.80?}", format!("{job:?}"));
        let invalid = job.check().unwrap_err();
        assert_eq!(invalid.field, field, "{shown}: {invalid}");
        // Nor can one reach a storage from the wire: a `ValidJob` is checked
        // again when deserialized.
        let wire = serde_json::to_value(&job).unwrap();
        assert!(serde_json::from_value::<ValidJob>(wire).is_err(), "{shown}");
        let err = client.enqueue_job(job.clone()).await.unwrap_err();
        assert_eq!(field_of(&err), Some(field), "{shown}: {err}");
        assert!(
            err.to_string().contains(field),
            "the message names the field: {err}"
        );
        // In a batch, one bad job refuses the whole batch.
        let err = client.enqueue_many(vec![ok(), job, ok()]).await.unwrap_err();
        assert_eq!(field_of(&err), Some(field), "{shown} in a batch: {err}");
    }
    assert_eq!(client.get(JobId(1)).await.unwrap(), None, "nothing was written");
    assert!(s.queue_stats(QueueStatsGet {}).await.unwrap().is_empty());

    // Hostile strings where they are data are stored verbatim, not executed.
    let mut ids = Vec::new();
    for (i, hostile) in HOSTILE.iter().enumerate() {
        let job = NewJob::new("default", "kind", json!({"text": hostile, *hostile: [hostile]}))
            .idempotency_key(format!("{hostile}-{i}"));
        let out = client.enqueue_job(job.clone()).await.unwrap();
        assert_eq!(out.job.payload, job.payload);
        assert_eq!(out.job.idempotency_key, job.idempotency_key);
        ids.push(out.job.id);
    }
    for (i, hostile) in HOSTILE.iter().enumerate() {
        let again = client
            .enqueue_job(ok().idempotency_key(format!("{hostile}-{i}")))
            .await
            .unwrap();
        assert_eq!((again.inserted, again.job.id), (false, ids[i]));
    }

    // Claims, heartbeats, failures and registrations refuse bad input too.
    let claim = |worker: &str, queue: &str, lease: Duration| JobClaim {
        worker_id: worker.into(),
        queues: vec![queue.into()],
        limit: 1,
        lease,
        kinds: None,
    };
    let err = s
        .job_claim(claim(HOSTILE[0], "default", Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert_eq!(field_of(&err), Some("worker_id"), "{err}");
    let err = s
        .job_claim(claim("w1", HOSTILE[1], Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert_eq!(field_of(&err), Some("queue"), "{err}");
    let err = s
        .job_claim(claim("w1", "default", Duration::MAX))
        .await
        .unwrap_err();
    assert_eq!(field_of(&err), Some("lease"), "{err}");
    let claimed = s
        .job_claim(claim("w1", "default", Duration::from_secs(30)))
        .await
        .unwrap();
    let (id, epoch) = (claimed[0].id(), claimed[0].epoch());
    let heartbeat = |lease: Duration, progress: Option<Value>| JobHeartbeat {
        id,
        epoch,
        lease,
        progress,
    };
    let err = s
        .job_heartbeat(heartbeat(Duration::from_secs(30), Some(json!("\u{0}"))))
        .await
        .unwrap_err();
    assert_eq!(field_of(&err), Some("progress"), "{err}");
    let err = s.job_heartbeat(heartbeat(Duration::MAX, None)).await.unwrap_err();
    assert_eq!(field_of(&err), Some("lease"), "{err}");
    let never = JobFail {
        id,
        epoch,
        error: "x".into(),
        retry_after: Some(Duration::MAX),
    };
    let err = s.job_fail(never).await.unwrap_err();
    assert_eq!(field_of(&err), Some("retry_after"), "{err}");
    let job = s.job_get(JobGet { id }).await.unwrap().unwrap();
    assert_eq!(
        job.lease_expires_at, claimed[0].job.lease_expires_at,
        "refused writes changed nothing"
    );
    // A hostile error message is data: stored (NUL stripped), never executed.
    let fail = JobFail {
        id,
        epoch,
        error: format!("{} \u{0} {}", HOSTILE[0], HOSTILE[3]),
        retry_after: None,
    };
    s.job_fail(fail).await.unwrap();
    let job = s.job_get(JobGet { id }).await.unwrap().unwrap();
    assert_eq!(job.last_error, Some(format!("{}  {}", HOSTILE[0], HOSTILE[3])));

    let registration = |id: &str, queue: &str, metadata: Value| WorkerRegister {
        id: id.into(),
        queues: vec![queue.into()],
        concurrency: 1,
        metadata,
        kinds: Vec::new(),
    };
    let err = s
        .worker_register(registration("", "default", json!({})))
        .await
        .unwrap_err();
    assert_eq!(field_of(&err), Some("worker_id"), "{err}");
    let err = s
        .worker_register(registration("w1", "bad queue", json!({})))
        .await
        .unwrap_err();
    assert_eq!(field_of(&err), Some("queue"), "{err}");
    let err = s
        .worker_register(registration("w1", "default", json!({"host": "a\u{0}b"})))
        .await
        .unwrap_err();
    assert_eq!(field_of(&err), Some("metadata"), "{err}");
    let huge = json!("m".repeat(limits::MAX_PROGRESS_BYTES));
    let err = s
        .worker_register(registration("w1", "default", huge))
        .await
        .unwrap_err();
    assert_eq!(field_of(&err), Some("metadata"), "{err}");
    assert!(
        s.worker_list(WorkerList {}).await.unwrap().is_empty(),
        "no worker registered"
    );
    // Ids Postgres could not even store are simply unknown.
    let err = s
        .worker_heartbeat(WorkerHeartbeat {
            id: "nul\u{0}".into(),
            in_flight: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::WorkerNotFound("nul\u{0}".into()));
    s.worker_deregister(WorkerDeregister {
        id: "nul\u{0}".into(),
    })
    .await
    .unwrap();
    s.worker_register(registration(
        HOSTILE[0].split('\'').next().unwrap(),
        "default",
        json!({"x": HOSTILE}),
    ))
    .await
    .unwrap();
    assert_eq!(
        s.worker_list(WorkerList {}).await.unwrap()[0].metadata,
        json!({"x": HOSTILE})
    );
    // Ids out of any range are just not found.
    for id in [i64::MIN, -1, 0, i64::MAX] {
        assert_eq!(s.job_get(JobGet { id: JobId(id) }).await.unwrap(), None);
        let complete = JobComplete {
            id: JobId(id),
            epoch: Epoch(i64::MAX),
        };
        assert_eq!(
            s.job_complete(complete).await.unwrap_err(),
            StorageError::NotFound(JobId(id))
        );
    }
}

#[tokio::test]
async fn memstore_refuses_bad_input() {
    refuses_bad_input(Arc::new(MemStore::new(manual_clock()))).await;
}

#[tokio::test]
async fn postgres_refuses_bad_input_and_the_schema_is_intact() {
    let db = stuckless_tests::test_db!("postgres_refuses_bad_input_and_the_schema_is_intact");
    refuses_bad_input(Arc::new(db.pinned_storage(Arc::new(manual_clock())))).await;
    // Nothing hostile was executed: the tables are all there, with exactly
    // what the valid calls wrote.
    let tables: Vec<String> = sqlx::query_scalar(
        "select table_name::text from information_schema.tables where table_schema = 'stuckless' order by 1",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        tables,
        vec!["_sqlx_migrations", "job_events", "jobs", "stuck_jobs", "workers"]
    );
    let jobs: i64 = sqlx::query_scalar("select count(*) from stuckless.jobs")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(jobs, HOSTILE.len() as i64);
}

/// The error `enqueue` (an SQL API call taking one text parameter) gives
/// for `text`; it must fail.
async fn enqueue_error(db: &TestDb, enqueue: &'static str, text: &str) -> sqlx::Error {
    let result = sqlx::query(enqueue).bind(text).execute(db.pool()).await;
    result.expect_err("the enqueue must be refused")
}

#[tokio::test]
async fn postgres_refuses_payload_text_that_is_not_json() {
    let db = stuckless_tests::test_db!("postgres_refuses_payload_text_that_is_not_json");
    // Text from another language that is not JSON: refused by the jsonb cast
    // (22P02) before stuckless.enqueue runs; nothing written.
    for text in [
        "{not json",
        "",
        "{'single': 'quotes'}",
        "[1, 2",
        "\"\\u0000\"",
        "NaN",
    ] {
        let err = enqueue_error(
            &db,
            "select stuckless.enqueue('default', 'k', $1::text::jsonb)",
            text,
        )
        .await;
        let code = stuckless_tests::sqlstate(&err);
        assert!(
            matches!(code.as_deref(), Some("22P02") | Some("22P05")),
            "{text:?}: {err}"
        );
    }
    // Hostile names through the SQL API: a typed refusal, never SQL.
    for hostile in HOSTILE {
        let err = enqueue_error(&db, "select stuckless.enqueue($1, 'k')", hostile).await;
        let code = stuckless_tests::sqlstate(&err);
        assert_eq!(code.as_deref(), Some("22023"), "{hostile:?}: {err}");
    }
    let jobs: i64 = sqlx::query_scalar("select count(*) from stuckless.jobs")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(jobs, 0);
    // The same text parsed on the Rust side is a typed serde error before any
    // NewJob exists.
    assert!(serde_json::from_str::<Value>("{not json").is_err());
}

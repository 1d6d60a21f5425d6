//! Conformance cases about the worker registry.

use std::time::Duration;

use serde_json::json;
use stuckless_core::driver::Storage;
use stuckless_core::driver::{WorkerDeregister, WorkerHeartbeat, WorkerList, WorkerRecord, WorkerRegister};
use stuckless_core::StorageError;

use crate::case::{assert_invalid, kit_case, Case, Ctx};

/// The worker cases, in the order they are run.
pub(crate) fn cases() -> Vec<Case> {
    vec![kit_case!("worker", worker_registry)]
}

fn reg(id: &str) -> WorkerRegister {
    WorkerRegister {
        id: id.into(),
        queues: vec!["default".into(), "mail".into()],
        concurrency: 10,
        metadata: json!({"host": "h1", "pid": 7}),
        kinds: vec!["email".into(), "report".into()],
    }
}

async fn find(s: &dyn Storage, id: &str) -> WorkerRecord {
    s.worker_list(WorkerList {})
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.id == id)
        .unwrap()
}

async fn worker_registry(c: &Ctx) {
    let s = c.store();
    let t0 = c.now();
    s.worker_register(reg("b-worker")).await.unwrap();
    s.worker_register(reg("B-worker")).await.unwrap();
    s.worker_register(reg("a-worker")).await.unwrap();
    let ids: Vec<String> = s
        .worker_list(WorkerList {})
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(
        ids,
        vec!["B-worker", "a-worker", "b-worker"],
        "byte order, like Rust's"
    );
    c.advance(Duration::from_secs(5));
    let beat = WorkerHeartbeat {
        id: "a-worker".into(),
        in_flight: 3,
    };
    s.worker_heartbeat(beat).await.unwrap();
    let a = find(&*s, "a-worker").await;
    assert_eq!(
        (a.started_at, a.last_heartbeat_at, a.in_flight),
        (t0, t0 + Duration::from_secs(5), 3)
    );
    assert_eq!(
        (a.concurrency, a.metadata.clone()),
        (10, json!({"host": "h1", "pid": 7}))
    );
    assert_eq!(a.queues, vec!["default".to_string(), "mail".to_string()]);
    assert_eq!(a.kinds, vec!["email".to_string(), "report".to_string()]);
    assert!(a.serves("mail", "report") && !a.serves("mail", "sms") && !a.serves("other", "email"));
    let older = WorkerRecord {
        kinds: Vec::new(),
        ..a.clone()
    };
    assert!(
        older.serves("mail", "sms"),
        "a worker that recorded no kinds claims every kind"
    );
    c.advance(Duration::from_secs(5));
    let mut again = reg("a-worker");
    again.concurrency = 2;
    again.kinds = vec!["sms".into()];
    s.worker_register(again).await.unwrap();
    let a = find(&*s, "a-worker").await;
    assert_eq!(
        (a.started_at, a.in_flight, a.concurrency),
        (c.now(), 0, 2),
        "re-register replaces"
    );
    assert_eq!(
        a.kinds,
        vec!["sms".to_string()],
        "a new deploy's kinds replace the old"
    );
    let ghost = WorkerHeartbeat {
        id: "ghost".into(),
        in_flight: 1,
    };
    assert_eq!(
        s.worker_heartbeat(ghost).await.unwrap_err(),
        StorageError::WorkerNotFound("ghost".into())
    );
    for id in ["a-worker", "never-was"] {
        s.worker_deregister(WorkerDeregister { id: id.into() })
            .await
            .unwrap();
    }
    assert_eq!(s.worker_list(WorkerList {}).await.unwrap().len(), 2);
    let err = s.worker_register(reg("")).await.unwrap_err();
    assert_invalid(&err, "worker_id");
}

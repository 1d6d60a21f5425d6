//! # stuckless-core
//!
//! The queue core of stuckless, a Postgres-backed job queue that never leaves
//! a job stuck. Claim, heartbeat, lease expiry, reap, retry and graceful
//! shutdown are written once here, against two traits:
//!
//! - [`Storage`]: the jobs table. [`MemStore`] is the in-memory model the
//!   simulator runs; `stuckless-pg` is Postgres. Both pass one conformance suite.
//! - [`Clock`]: time and sleeping. [`TokioClock`] in production (it follows
//!   paused and simulated tokio time too), [`ManualClock`] to pin a store's time.
//!
//! Nothing here knows Postgres, turmoil or HTTP exist, and nothing reads the
//! system clock except [`TokioClock::system`].
//!
//! ```
//! use std::sync::Arc;
//! use stuckless_core::{ClaimRequest, ManualClock, MemStore, NewJob, Storage, Timestamp};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let clock = ManualClock::new(Timestamp::from_secs(0));
//! let store = MemStore::new(clock.clone());
//! let job = store.job_insert(NewJob::new("default", "report", serde_json::json!({}))).await.unwrap().job;
//! let claim = ClaimRequest { worker_id: "w1".into(), queues: vec!["default".into()], limit: 1, lease: Duration::from_secs(30) };
//! let claimed = store.job_claim(claim.clone()).await.unwrap();
//! assert_eq!(claimed[0].epoch().0, 1);
//!
//! // The worker dies. Once its lease is over, any reaper takes the job back...
//! clock.advance(Duration::from_secs(31));
//! assert_eq!(store.job_reap_expired(100).await.unwrap().requeued, vec![job.id]);
//! // ...and the dead worker's late completion is refused after the next claim.
//! store.job_claim(ClaimRequest { worker_id: "w2".into(), ..claim }).await.unwrap();
//! assert!(store.job_complete(job.id, claimed[0].epoch()).await.is_err());
//! # }
//! ```

pub mod clock;
pub mod error;
pub mod handler;
pub mod job;
pub mod mem;
pub mod observer;
pub mod retry;
pub mod storage;
pub mod time;
pub mod waker;
pub mod worker;

pub use clock::{Clock, ManualClock, SkewedClock, TokioClock};
pub use error::{JobError, StorageError, ValidationError, WorkerError};
pub use handler::{CancelReason, Handler, JobContext};
pub use job::{ClaimedJob, Epoch, Job, JobEvent, JobEventKind, JobId, JobStatus, NewJob};
pub use mem::MemStore;
pub use observer::{AttemptRef, NoObserver, Observer, WorkerEvent};
pub use retry::RetryPolicy;
pub use storage::{
    ClaimRequest, CompleteOutcome, FailOutcome, FailRequest, InsertOutcome, QueueStats, ReapOutcome, Storage,
    StorageResult, WorkerRecord, WorkerRegistration,
};
pub use time::Timestamp;
pub use waker::{NotifyWaker, PollOnly, Waker};
pub use worker::{RunReport, ShutdownHandle, Worker, WorkerBuilder};

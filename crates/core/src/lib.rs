//! # stuckless-core
//!
//! The queue core of stuckless, a Postgres-backed job queue that never leaves
//! a job stuck. Claim, heartbeat, lease expiry, reap, retry and graceful
//! shutdown are written once here, against two traits:
//!
//! - [`driver::Storage`]: the jobs table, for storage authors. [`MemStore`] is
//!   the in-memory model the simulator runs; `stuckless-pg` is Postgres. Both
//!   pass one conformance suite (`stuckless-testkit`).
//! - [`Clock`]: time and sleeping. [`TokioClock`] in production (it follows
//!   paused and simulated tokio time too), [`ManualClock`] to pin a store's time.
//!
//! Applications use [`Client`] to enqueue and manage jobs, and [`Worker`] to
//! run them; a job kind is a [`JobArgs`] type with a [`JobHandler`].
//! Nothing here knows Postgres, turmoil or HTTP exist, and nothing reads the
//! system clock except [`TokioClock::system`].
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use stuckless_core::driver::{JobClaim, JobComplete, JobReapExpired, Storage};
//! use stuckless_core::{Client, JobArgs, ManualClock, MemStore, Timestamp};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Report { id: i64 }
//! impl JobArgs for Report { const KIND: &'static str = "report"; }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let clock = ManualClock::new(Timestamp::from_secs(0));
//! let store = Arc::new(MemStore::new(clock.clone()));
//! let job = Client::new(store.clone()).enqueue(Report { id: 7 }).await.unwrap().job;
//! let claim = JobClaim { worker_id: "w1".into(), queues: vec!["default".into()], limit: 1, lease: Duration::from_secs(30), kinds: None };
//! let claimed = store.job_claim(claim.clone()).await.unwrap();
//! assert_eq!(claimed[0].epoch().0, 1);
//!
//! // The worker dies. Once its lease is over, any reaper takes the job back...
//! clock.advance(Duration::from_secs(31));
//! assert_eq!(store.job_reap_expired(JobReapExpired { limit: 100 }).await.unwrap().requeued, vec![job.id]);
//! // ...and the dead worker's late completion is refused after the next claim.
//! store.job_claim(JobClaim { worker_id: "w2".into(), ..claim }).await.unwrap();
//! assert!(store.job_complete(JobComplete { id: job.id, epoch: claimed[0].epoch() }).await.is_err());
//! # }
//! ```

mod args;
pub mod checkpoint;
mod client;
pub mod clock;
pub mod driver;
pub mod error;
pub mod handler;
pub mod job;
pub mod mem;
pub mod observer;
pub mod retry;
pub mod time;
mod validate;
pub mod waker;
pub mod worker;

pub use args::{JobArgs, JobHandler};
pub use checkpoint::CheckpointError;
pub use client::Client;
pub use clock::{Clock, ManualClock, SkewedClock, TokioClock};
pub use driver::InsertOutcome;
pub use error::{JobError, StorageError, ValidationError, WorkerError};
pub use handler::{CancelReason, Handler, JobContext};
pub use job::{limits, ClaimedJob, Epoch, Job, JobEvent, JobEventKind, JobId, JobStatus, NewJob, ValidJob};
pub use mem::MemStore;
pub use observer::{AttemptRef, NoObserver, Observer, WorkerEvent};
pub use retry::RetryPolicy;
pub use time::Timestamp;
pub use validate::{validate_duration, validate_json, validate_lease, validate_name, validate_timeout};
pub use waker::{NotifyWaker, PollOnly, Waker};
pub use worker::{
    Config as WorkerConfig, HealthHandle, Retention, RunReport, ShutdownHandle, Worker, WorkerBuilder,
    DEFAULT_TIMEOUT,
};

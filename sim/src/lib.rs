//! # stuckless-sim
//!
//! The deterministic simulator that proves stuckless never leaves a job
//! stuck. A seed decides a turmoil world — a db host serving the in-memory
//! store over simulated TCP, worker hosts running the real worker runtime, an
//! API host standing in for OpenAI, a producer — and a fault plan. The run has
//! a chaos phase, a heal and a liveness phase. The hosts and the driver emit
//! [`observe::Observation`]s without knowing who listens; the [`oracle`]
//! drains them into the [`recorder`] (trace, histories, timeline facts) and
//! the [`check`]ers (fencing, lifecycle, liveness), which judge safety on
//! every operation and liveness after the heal.
//!
//! ```no_run
//! let outcome = stuckless_sim::SimBuilder::small().seed(7).run();
//! assert!(outcome.passed(), "{}", outcome.failure_report());
//! ```

pub mod api;
pub mod batch;
pub mod catch;
pub mod check;
pub mod clock;
pub mod config;
pub mod deploy;
pub mod fixture;
mod host;
pub mod model;
pub mod net_store;
pub mod observe;
pub mod oracle;
pub mod outcome;
pub mod plan;
pub mod processes;
pub mod recorder;
pub mod report;
pub mod sections;
pub mod timeline;
pub mod variants;
pub mod wire;
pub mod workers;
pub mod workload;
pub mod world;

pub use check::{Invariant, Violation};
pub use config::SimBuilder;
pub use fixture::{Expect, Fixture};
pub use observe::Observation;
pub use outcome::RunOutcome;
pub use plan::{Fault, FaultPlan, TimedFault};
pub use report::Summary;
pub use variants::Variant;

//! # stuckless-sim
//!
//! The deterministic simulator that proves stuckless never leaves a job
//! stuck. A seed decides a turmoil world — a db host serving the in-memory
//! store over simulated TCP, worker hosts running the real worker runtime, an
//! API host standing in for OpenAI, a producer — and a fault plan. The run has
//! a chaos phase, a heal and a liveness phase; the [`oracle`] checks safety on
//! every operation and liveness after the heal.
//!
//! ```no_run
//! let outcome = stuckless_sim::SimBuilder::small().seed(7).run();
//! assert!(outcome.passed(), "{}", outcome.failure_report());
//! ```

pub mod api;
pub mod clock;
pub mod config;
pub mod fixture;
pub mod net_store;
pub mod oracle;
pub mod plan;
pub mod report;
pub mod timeline;
pub mod variants;
pub mod wire;
pub mod workload;
pub mod world;

pub use config::SimBuilder;
pub use fixture::{Expect, Fixture};
pub use oracle::{Invariant, Violation};
pub use plan::{Fault, FaultPlan, TimedFault};
pub use report::{RunOutcome, Summary};
pub use variants::Variant;

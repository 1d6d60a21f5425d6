//! # stuckless-timeline
//!
//! Draws one run of the queue — simulated (`make sim SEED=n`) or real
//! (`stuckless timeline --since …`) — as a self-contained SVG: one lane per
//! worker, a bar per attempt coloured by outcome, crashes, pauses, partitions
//! and restarts marked, reaps and stale-write rejections flagged, and a lane
//! of waits showing where due jobs sat unclaimed and why. Every element has a
//! tooltip. No scripts, fonts or external references.
//!
//! Where a run's attempts and waits come from is one reconstructor,
//! [`reconstruct`]: each front end maps what it recorded into a neutral
//! stream of [`TimelineEvent`]s, and the same rules draw both.
//!
//! ```
//! use stuckless_timeline::{render_svg, Attempt, Outcome, Timeline};
//!
//! let timeline = Timeline {
//!     title: "one job".into(),
//!     start: 0,
//!     end: 10_000_000,
//!     lanes: vec!["w1".into()],
//!     attempts: vec![Attempt {
//!         lane: "w1".into(), job_id: 1, epoch: 1, attempt: 1,
//!         start: 1_000_000, end: 4_000_000, outcome: Outcome::Succeeded, note: None,
//!     }],
//!     ..Timeline::default()
//! };
//! let svg = render_svg(&timeline);
//! assert!(svg.starts_with("<svg") && svg.contains(r#"class="bar succeeded""#));
//! ```

mod event;
mod model;
mod reconstruct;
mod render;

pub use event::{Finish, Frame, TimelineEvent};
pub use model::{Attempt, Mark, MarkKind, Micros, Outcome, Timeline, Wait};
pub use reconstruct::{reconstruct, CLAIM_NOT_LOGGED, MIN_WAIT, UNKNOWN_LANE};
pub use render::{escape, render_svg};

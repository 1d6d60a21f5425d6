//! Which queues and kinds the live workers claim: what tells an operator that
//! a due job waits for a handler nobody runs (`stats`, `diagnose`, the
//! `stuckless_queue_unhandled` gauge).

use std::collections::BTreeSet;
use std::time::Duration;

use stuckless_core::driver::WorkerRecord;
use stuckless_core::Timestamp;

/// Whether a registry heartbeat `age` old still counts as alive.
pub fn is_alive(age: Duration, stale_after: Duration) -> bool {
    age <= stale_after
}

/// The live workers' queues and kinds, as of one instant.
#[derive(Clone, Debug, Default)]
pub struct Coverage {
    live: Vec<Served>,
}

#[derive(Clone, Debug)]
struct Served {
    queues: Vec<String>,
    /// Empty: registered by a stuckless older than kind-filtered claims,
    /// which claims every kind.
    kinds: Vec<String>,
}

impl Coverage {
    /// The workers of `registry` whose heartbeat is at most `stale_after`
    /// old at `now`.
    pub fn of_live(registry: &[WorkerRecord], now: Timestamp, stale_after: Duration) -> Coverage {
        Coverage {
            live: registry
                .iter()
                .filter(|w| is_alive(now.saturating_since(w.last_heartbeat_at), stale_after))
                .map(|w| Served {
                    queues: w.queues.clone(),
                    kinds: w.kinds.clone(),
                })
                .collect(),
        }
    }

    /// Coverage from live workers' `(queues, kinds)` (already judged alive).
    pub fn from_live(live: impl IntoIterator<Item = (Vec<String>, Vec<String>)>) -> Coverage {
        Coverage {
            live: live
                .into_iter()
                .map(|(queues, kinds)| Served { queues, kinds })
                .collect(),
        }
    }

    /// Whether some live worker claims jobs of `kind` on `queue`.
    ///
    /// A worker that recorded no kinds predates kind-filtered claims and
    /// claims every kind; counting it as a handler keeps a rolling upgrade
    /// from raising false alarms (its claims are what they always were).
    pub fn handles(&self, queue: &str, kind: &str) -> bool {
        self.live.iter().any(|w| {
            w.queues.iter().any(|q| q == queue) && (w.kinds.is_empty() || w.kinds.iter().any(|k| k == kind))
        })
    }

    /// Whether some live worker serves `queue` at all.
    pub fn serves_queue(&self, queue: &str) -> bool {
        self.live.iter().any(|w| w.queues.iter().any(|q| q == queue))
    }

    /// The kinds live workers on `queue` have handlers for, in byte order.
    pub fn kinds_on(&self, queue: &str) -> Vec<String> {
        let kinds: BTreeSet<&String> = self
            .live
            .iter()
            .filter(|w| w.queues.iter().any(|q| q == queue))
            .flat_map(|w| &w.kinds)
            .collect();
        kinds.into_iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(id: &str, queues: &[&str], kinds: &[&str], heartbeat_secs: i64) -> WorkerRecord {
        WorkerRecord {
            id: id.into(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
            concurrency: 1,
            metadata: json!(null),
            started_at: Timestamp::from_secs(0),
            last_heartbeat_at: Timestamp::from_secs(heartbeat_secs),
            in_flight: 0,
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
        }
    }

    #[test]
    fn only_live_workers_on_the_queue_with_the_kind_handle_it() {
        let registry = [
            record("new", &["default"], &["noop", "sleep"], 1000),
            record("mail", &["mail"], &["send"], 1000),
            record("stale", &["default"], &["report"], 800),
        ];
        let c = Coverage::of_live(&registry, Timestamp::from_secs(1030), Duration::from_secs(90));
        assert!(c.handles("default", "noop"));
        assert!(!c.handles("default", "report"), "only a stale worker handles it");
        assert!(!c.handles("default", "send"), "handled, but on another queue");
        assert!(c.handles("mail", "send"));
        assert!(!c.handles("reports", "noop"));
        assert!(c.serves_queue("default") && !c.serves_queue("reports"));
        assert_eq!(c.kinds_on("default"), ["noop", "sleep"]);
        // The threshold is inclusive, as `workers` judges it.
        let edge = Coverage::of_live(&registry, Timestamp::from_secs(890), Duration::from_secs(90));
        assert!(edge.handles("default", "report"));
    }

    #[test]
    fn a_worker_without_recorded_kinds_claims_every_kind() {
        let c = Coverage::from_live([(vec!["default".to_owned()], vec![])]);
        assert!(c.handles("default", "anything"));
        assert!(!c.handles("other", "anything"));
        assert!(c.kinds_on("default").is_empty());
    }
}

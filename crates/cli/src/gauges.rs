//! The queue gauges of /metrics: depths per queue and the due jobs of kinds
//! no live worker handles, read from the database at scrape time (through
//! [`crate::observability`], never the worker's own connections).

use std::collections::BTreeMap;

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::coverage::Coverage;

/// One queue's jobs that are not finished, plus its dead ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    /// Queue name.
    pub queue: String,
    /// Queued and due.
    pub due: u64,
    /// Queued, due later.
    pub scheduled: u64,
    /// Running with a live lease.
    pub running: u64,
    /// Running with an expired lease, waiting for a reaper.
    pub running_expired: u64,
    /// Running on a live worker past the attempt's time limit (as
    /// `stuckless.time_limit` judges it): the worker should have cancelled
    /// it. Read on Postgres only; 0 from other storages.
    pub running_over_time_limit: u64,
    /// Dead (until retention deletes them).
    pub dead: u64,
}

/// Due jobs of one kind on one queue that no live worker handles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unhandled {
    /// Queue name.
    pub queue: String,
    /// The kind nobody alive has a handler for.
    pub kind: String,
    /// How many are due.
    pub due: u64,
}

/// Everything /metrics reads from the database, read at one time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueueSnapshot {
    /// Per queue, in byte order.
    pub queues: Vec<QueueDepth>,
    /// Per (queue, kind) with due jobs and no live handler, in byte order.
    pub unhandled: Vec<Unhandled>,
}

impl QueueSnapshot {
    /// Merges per-queue counts (a queue may come in several parts, e.g. one
    /// per status) and the due jobs per (queue, kind), judged against the
    /// live workers in `coverage`.
    pub fn new(
        parts: impl IntoIterator<Item = QueueDepth>,
        due_by_kind: impl IntoIterator<Item = (String, String, u64)>,
        coverage: &Coverage,
    ) -> QueueSnapshot {
        let mut queues: BTreeMap<String, QueueDepth> = BTreeMap::new();
        for part in parts {
            let q = queues.entry(part.queue.clone()).or_insert_with(|| QueueDepth {
                queue: part.queue.clone(),
                ..Default::default()
            });
            q.due += part.due;
            q.scheduled += part.scheduled;
            q.running += part.running;
            q.running_expired += part.running_expired;
            q.running_over_time_limit += part.running_over_time_limit;
            q.dead += part.dead;
        }
        let mut unhandled: Vec<Unhandled> = due_by_kind
            .into_iter()
            .filter(|(queue, kind, due)| *due > 0 && !coverage.handles(queue, kind))
            .map(|(queue, kind, due)| Unhandled { queue, kind, due })
            .collect();
        unhandled.sort_by(|a, b| (&a.queue, &a.kind).cmp(&(&b.queue, &b.kind)));
        QueueSnapshot {
            queues: queues.into_values().collect(),
            unhandled,
        }
    }

    /// Appends the gauges in the Prometheus text format. They go into a
    /// registry built for this call, so concurrent scrapes never see each
    /// other's values.
    pub fn encode(&self, out: &mut String) {
        let mut scrape = Registry::default();
        for (name, help, field) in QUEUE_GAUGES {
            let family = Family::<QueueLabel, Gauge>::default();
            for q in &self.queues {
                family
                    .get_or_create(&QueueLabel {
                        queue: q.queue.clone(),
                    })
                    .set(as_gauge(field(q)));
            }
            scrape.register(*name, *help, family);
        }
        let unhandled = Family::<KindLabel, Gauge>::default();
        for u in &self.unhandled {
            unhandled
                .get_or_create(&KindLabel {
                    queue: u.queue.clone(),
                    kind: u.kind.clone(),
                })
                .set(as_gauge(u.due));
        }
        scrape.register(UNHANDLED.0, UNHANDLED.1, unhandled);
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(out, &scrape);
    }
}

fn as_gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    queue: String,
    kind: String,
}

/// A queue-depth gauge: name, help, and the field it shows.
type QueueGauge = (&'static str, &'static str, fn(&QueueDepth) -> u64);

const QUEUE_GAUGES: &[QueueGauge] = &[
    ("stuckless_queue_due", "Queued jobs that are due now", |q| q.due),
    ("stuckless_queue_scheduled", "Queued jobs due later", |q| {
        q.scheduled
    }),
    ("stuckless_queue_running", "Running jobs with a live lease", |q| {
        q.running
    }),
    (
        "stuckless_queue_running_expired",
        "Running jobs whose lease expired (waiting for a reaper)",
        |q| q.running_expired,
    ),
    (
        "stuckless_queue_running_over_time_limit",
        "Running jobs on a live worker past their attempt's time limit (the handler hangs where it cannot be cancelled)",
        |q| q.running_over_time_limit,
    ),
    (
        "stuckless_queue_dead",
        "Dead jobs not yet deleted by retention",
        |q| q.dead,
    ),
];

const UNHANDLED: (&str, &str) = (
    "stuckless_queue_unhandled",
    "Due jobs of a kind no live worker has a handler for: they wait until one that does starts",
);

#[cfg(test)]
mod tests {
    use super::*;

    fn part(queue: &str, due: u64, running: u64, dead: u64) -> QueueDepth {
        QueueDepth {
            queue: queue.into(),
            due,
            running,
            dead,
            ..Default::default()
        }
    }

    #[test]
    fn parts_add_up_per_queue_and_unhandled_kinds_are_singled_out() {
        let coverage = Coverage::from_live([(vec!["default".to_owned()], vec!["noop".to_owned()])]);
        let s = QueueSnapshot::new(
            [
                part("mail", 1, 0, 0),
                part("default", 3, 0, 0),
                part("default", 0, 2, 4),
            ],
            [
                ("default".into(), "noop".into(), 2),
                ("default".into(), "report".into(), 1),
                ("default".into(), "later".into(), 0),
                ("mail".into(), "send".into(), 1),
            ],
            &coverage,
        );
        assert_eq!(
            s.queues,
            [
                QueueDepth {
                    queue: "default".into(),
                    due: 3,
                    running: 2,
                    dead: 4,
                    ..Default::default()
                },
                part("mail", 1, 0, 0)
            ]
        );
        let unhandled: Vec<(&str, &str, u64)> = s
            .unhandled
            .iter()
            .map(|u| (u.queue.as_str(), u.kind.as_str(), u.due))
            .collect();
        assert_eq!(unhandled, [("default", "report", 1), ("mail", "send", 1)]);
        let mut text = String::new();
        s.encode(&mut text);
        assert!(
            text.contains("stuckless_queue_due{queue=\"default\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("stuckless_queue_unhandled{queue=\"default\",kind=\"report\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("kind=\"later\""), "{text}");
    }
}

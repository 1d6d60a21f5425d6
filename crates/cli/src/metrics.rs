//! Prometheus metrics, fed by the worker's `Observer` events and encoded by
//! `prometheus-client` in the Prometheus text format (version 0.0.4).
//!
//! `prometheus-client` appends `_total` to counter names itself, so counters
//! are registered without it (`stuckless_jobs_claimed` is exposed as
//! `stuckless_jobs_claimed_total`); it also ends each help text with a period.

use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use stuckless_core::{Observer, WorkerEvent};

use crate::gauges::QueueSnapshot;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Histogram bucket bounds, in seconds.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// The operations whose failures the core reports, each exposed at zero
/// from the start so `rate()` and alerts work before the first failure.
const OPERATIONS: [&str; 3] = ["job_claim", "job_reap_expired", "job_prune"];

/// The label of per-operation series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: String,
}

/// The one label of per-queue series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

impl QueueLabel {
    fn of(queue: &str) -> Self {
        QueueLabel {
            queue: queue.to_owned(),
        }
    }
}

type PerQueue = Family<QueueLabel, Counter>;
type PerQueueHistogram = Family<QueueLabel, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS.iter().copied())
}

/// The worker's metrics.
pub struct Metrics {
    registry: Registry,
    claimed: PerQueue,
    completed: PerQueue,
    failed: PerQueue,
    retried: PerQueue,
    dead: PerQueue,
    released: PerQueue,
    lease_lost: PerQueue,
    stale_write_rejected: PerQueue,
    panicked: PerQueue,
    reaped: Counter,
    pruned: Counter,
    call_failed: Family<OperationLabel, Counter>,
    storage_unavailable: Counter,
    pickup: PerQueueHistogram,
    run_time: PerQueueHistogram,
    /// Handlers running now.
    pub in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let mut per_queue = |name: &str, help: &str| {
            let family = PerQueue::default();
            registry.register(format!("stuckless_jobs_{name}"), help, family.clone());
            family
        };
        let claimed = per_queue("claimed", "Jobs claimed by this worker");
        let completed = per_queue("completed", "Completions the storage accepted");
        let failed = per_queue("failed", "Attempts that failed (retried or dead)");
        let retried = per_queue("retried", "Attempts that failed and will be retried");
        let dead = per_queue("dead", "Attempts that failed into dead");
        let released = per_queue("released", "Jobs released at shutdown without costing an attempt");
        let lease_lost = per_queue(
            "lease_lost",
            "Handlers cancelled because the lease was lost or presumed lost",
        );
        let stale_write_rejected = per_queue(
            "stale_write_rejected",
            "Writes the storage refused as stale (fencing)",
        );
        let panicked = per_queue("panicked", "Handlers that panicked");
        let reaped = Counter::default();
        registry.register(
            "stuckless_jobs_reaped",
            "Expired leases this worker's reaper took back (all queues)",
            reaped.clone(),
        );
        let pruned = Counter::default();
        registry.register(
            "stuckless_jobs_pruned",
            "Finished jobs this worker's pruner deleted past their retention (all queues)",
            pruned.clone(),
        );
        let call_failed = Family::<OperationLabel, Counter>::default();
        registry.register(
            "stuckless_call_failed",
            "Claims, reaps and prunes that failed, by operation; a rising rate means the worker cannot do its work",
            call_failed.clone(),
        );
        let storage_unavailable = Counter::default();
        registry.register(
            "stuckless_storage_unavailable",
            "Storage calls that failed transiently",
            storage_unavailable.clone(),
        );
        let pickup = PerQueueHistogram::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "stuckless_pickup_latency_seconds",
            "Time from due (run_at) to claim, storage clock",
            pickup.clone(),
        );
        let run_time = PerQueueHistogram::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "stuckless_run_time_seconds",
            "Handler run time of completed jobs",
            run_time.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "stuckless_in_flight",
            "Handlers running now in this worker",
            in_flight.clone(),
        );
        Metrics {
            registry,
            claimed,
            completed,
            failed,
            retried,
            dead,
            released,
            lease_lost,
            stale_write_rejected,
            panicked,
            reaped,
            pruned,
            call_failed,
            storage_unavailable,
            pickup,
            run_time,
            in_flight,
        }
    }
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self::default())
    }

    /// Metrics whose per-queue series for `queues` exist from the start at
    /// zero, so a scrape shows them (and `rate()` works) before the first job.
    pub fn for_queues(queues: &[String]) -> std::sync::Arc<Self> {
        let m = Self::default();
        for operation in OPERATIONS {
            drop(m.call_failed.get_or_create(&OperationLabel {
                operation: operation.to_owned(),
            }));
        }
        for queue in queues {
            let label = QueueLabel::of(queue);
            for family in m.per_queue_counters() {
                drop(family.get_or_create(&label));
            }
            drop(m.pickup.get_or_create(&label));
            drop(m.run_time.get_or_create(&label));
        }
        std::sync::Arc::new(m)
    }

    fn per_queue_counters(&self) -> [&PerQueue; 9] {
        [
            &self.claimed,
            &self.completed,
            &self.failed,
            &self.retried,
            &self.dead,
            &self.released,
            &self.lease_lost,
            &self.stale_write_rejected,
            &self.panicked,
        ]
    }

    /// The text exposition, with the queue gauges of `queues` when given.
    pub fn render(&self, queues: Option<&QueueSnapshot>) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        if let Some(queues) = queues {
            queues.encode(&mut out);
        }
        out
    }

    fn count(family: &PerQueue, queue: &str) {
        family.get_or_create(&QueueLabel::of(queue)).inc();
    }

    fn observe(family: &PerQueueHistogram, queue: &str, d: Duration) {
        family
            .get_or_create(&QueueLabel::of(queue))
            .observe(d.as_secs_f64());
    }
}

impl Observer for Metrics {
    fn on_event(&self, event: &WorkerEvent) {
        match event {
            WorkerEvent::Claimed {
                attempt,
                pickup_latency,
            } => {
                Self::count(&self.claimed, &attempt.queue);
                Self::observe(&self.pickup, &attempt.queue, *pickup_latency);
            }
            WorkerEvent::Completed { attempt, run_time } => {
                Self::count(&self.completed, &attempt.queue);
                Self::observe(&self.run_time, &attempt.queue, *run_time);
            }
            WorkerEvent::Retried { attempt, .. } => {
                Self::count(&self.retried, &attempt.queue);
                Self::count(&self.failed, &attempt.queue);
            }
            WorkerEvent::Dead { attempt, .. } => {
                Self::count(&self.dead, &attempt.queue);
                Self::count(&self.failed, &attempt.queue);
            }
            WorkerEvent::Released { attempt } => Self::count(&self.released, &attempt.queue),
            WorkerEvent::LeaseLost { attempt, .. } => Self::count(&self.lease_lost, &attempt.queue),
            WorkerEvent::StaleWriteRejected { attempt, .. } => {
                Self::count(&self.stale_write_rejected, &attempt.queue)
            }
            WorkerEvent::Panicked { attempt } => Self::count(&self.panicked, &attempt.queue),
            WorkerEvent::Reaped { outcome } => {
                self.reaped.inc_by(outcome.len() as u64);
            }
            WorkerEvent::Pruned { outcome } => {
                self.pruned.inc_by(outcome.total());
            }
            WorkerEvent::CallFailed { operation, .. } => {
                self.call_failed
                    .get_or_create(&OperationLabel {
                        operation: (*operation).to_owned(),
                    })
                    .inc();
            }
            WorkerEvent::StorageUnavailable { .. } => {
                self.storage_unavailable.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    use crate::gauges::{QueueDepth, Unhandled};
    use prometheus_parse::{LineInfo, Scrape, Value};
    use stuckless_core::driver::{PruneOutcome, ReapOutcome};
    use stuckless_core::{AttemptRef, Epoch, JobId};

    /// Every family the README lists, with its exposed name and type.
    const DOCUMENTED: &[(&str, &str)] = &[
        ("stuckless_jobs_claimed_total", "counter"),
        ("stuckless_jobs_completed_total", "counter"),
        ("stuckless_jobs_failed_total", "counter"),
        ("stuckless_jobs_retried_total", "counter"),
        ("stuckless_jobs_dead_total", "counter"),
        ("stuckless_jobs_released_total", "counter"),
        ("stuckless_jobs_lease_lost_total", "counter"),
        ("stuckless_jobs_stale_write_rejected_total", "counter"),
        ("stuckless_jobs_panicked_total", "counter"),
        ("stuckless_jobs_reaped_total", "counter"),
        ("stuckless_jobs_pruned_total", "counter"),
        ("stuckless_call_failed_total", "counter"),
        ("stuckless_storage_unavailable_total", "counter"),
        ("stuckless_pickup_latency_seconds", "histogram"),
        ("stuckless_run_time_seconds", "histogram"),
        ("stuckless_in_flight", "gauge"),
        ("stuckless_queue_due", "gauge"),
        ("stuckless_queue_scheduled", "gauge"),
        ("stuckless_queue_running", "gauge"),
        ("stuckless_queue_running_expired", "gauge"),
        ("stuckless_queue_running_over_time_limit", "gauge"),
        ("stuckless_queue_dead", "gauge"),
        ("stuckless_queue_unhandled", "gauge"),
    ];

    fn attempt(queue: &str) -> AttemptRef {
        AttemptRef {
            job_id: JobId(1),
            queue: queue.into(),
            kind: "k".into(),
            epoch: Epoch(1),
            attempt: 1,
        }
    }

    /// Parses `text` with `prometheus-parse`, refusing any line it ignores.
    fn parse(text: &str) -> Scrape {
        for line in text.lines() {
            assert_ne!(
                LineInfo::parse(line),
                LineInfo::Ignored,
                "a line the parser does not understand: {line:?}"
            );
        }
        Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses")
    }

    /// (exposed family name → type) from the `# TYPE` lines.
    fn types(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| {
                let (name, kind) = l.split_once(' ').expect("name and type");
                (name.to_owned(), kind.to_owned())
            })
            .collect()
    }

    fn value(scrape: &Scrape, metric: &str, queue: Option<&str>) -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && s.labels.get("queue") == queue)
            .unwrap_or_else(|| panic!("no {metric} for {queue:?}"));
        match &sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{metric} is not a number: {other:?}"),
        }
    }

    fn buckets(scrape: &Scrape, metric: &str, queue: &str) -> Vec<(f64, f64)> {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && s.labels.get("queue") == Some(queue))
            .unwrap_or_else(|| panic!("no {metric} for {queue}"));
        match &sample.value {
            Value::Histogram(b) => b.iter().map(|b| (b.less_than, b.count)).collect(),
            other => panic!("{metric} is not a histogram: {other:?}"),
        }
    }

    #[test]
    fn every_documented_name_is_exposed_with_its_type_and_no_other() {
        let stats = QueueSnapshot {
            queues: vec![QueueDepth {
                queue: "default".into(),
                ..Default::default()
            }],
            unhandled: vec![Unhandled {
                queue: "default".into(),
                kind: "report".into(),
                due: 1,
            }],
        };
        let text = Metrics::for_queues(&["default".into()]).render(Some(&stats));
        let expected: BTreeMap<String, String> = DOCUMENTED
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        assert_eq!(types(&text), expected, "{text}");
        let scrape = parse(&text);
        let helped: BTreeSet<&str> = scrape.docs.keys().map(String::as_str).collect();
        let names: BTreeSet<&str> = DOCUMENTED.iter().map(|(n, _)| *n).collect();
        assert_eq!(helped, names, "every family has its # HELP");
        assert!(!text.contains("_total_total"), "{text}");
        assert!(!text.contains(".."), "one period per help text: {text}");
        // Every per-queue series is there at zero before the first job.
        assert_eq!(
            value(&scrape, "stuckless_jobs_panicked_total", Some("default")),
            0.0
        );
        let run = buckets(&scrape, "stuckless_run_time_seconds", "default");
        assert!(run.iter().all(|(_, n)| *n == 0.0), "{run:?}");
        for operation in OPERATIONS {
            assert!(
                text.contains(&format!(
                    "stuckless_call_failed_total{{operation=\"{operation}\"}} 0\n"
                )),
                "{operation} at zero: {text}"
            );
        }
    }

    #[test]
    fn events_become_series_with_the_queue_label() {
        let m = Metrics::new();
        m.on_event(&WorkerEvent::Claimed {
            attempt: attempt("default"),
            pickup_latency: Duration::from_millis(20),
        });
        m.on_event(&WorkerEvent::Completed {
            attempt: attempt("default"),
            run_time: Duration::from_secs(2),
        });
        m.on_event(&WorkerEvent::Retried {
            attempt: attempt("default"),
            error: "x".into(),
        });
        m.on_event(&WorkerEvent::Dead {
            attempt: attempt("mail"),
            error: "y".into(),
        });
        m.on_event(&WorkerEvent::Reaped {
            outcome: ReapOutcome {
                requeued: vec![JobId(3)],
                dead: vec![JobId(4)],
            },
        });
        m.in_flight.inc();
        m.on_event(&WorkerEvent::CallFailed {
            operation: "job_claim",
            error: "boom".into(),
            consecutive: 1,
        });
        m.on_event(&WorkerEvent::Pruned {
            outcome: PruneOutcome {
                succeeded: 5,
                cancelled: 1,
                dead: 0,
            },
        });
        let stats = QueueSnapshot {
            queues: vec![
                QueueDepth {
                    queue: "default".into(),
                    due: 7,
                    running_expired: 2,
                    ..Default::default()
                },
                QueueDepth {
                    queue: "mail".into(),
                    dead: 1,
                    ..Default::default()
                },
            ],
            unhandled: vec![],
        };
        let scrape = parse(&m.render(Some(&stats)));
        let v = |metric: &str, queue: Option<&str>| value(&scrape, metric, queue);
        assert_eq!(v("stuckless_jobs_claimed_total", Some("default")), 1.0);
        assert_eq!(v("stuckless_jobs_completed_total", Some("default")), 1.0);
        assert_eq!(v("stuckless_jobs_retried_total", Some("default")), 1.0);
        assert_eq!(v("stuckless_jobs_failed_total", Some("default")), 1.0);
        assert_eq!(v("stuckless_jobs_failed_total", Some("mail")), 1.0);
        assert_eq!(v("stuckless_jobs_dead_total", Some("mail")), 1.0);
        assert_eq!(v("stuckless_jobs_reaped_total", None), 2.0);
        assert_eq!(v("stuckless_in_flight", None), 1.0);
        assert_eq!(v("stuckless_queue_due", Some("default")), 7.0);
        assert_eq!(v("stuckless_queue_running_expired", Some("default")), 2.0);
        assert_eq!(v("stuckless_queue_dead", Some("mail")), 1.0);
        assert_eq!(v("stuckless_queue_due", Some("mail")), 0.0);
        assert_eq!(v("stuckless_jobs_pruned_total", None), 6.0);
        let claim_failures = scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "stuckless_call_failed_total" && s.labels.get("operation") == Some("job_claim")
            })
            .map(|s| s.value.clone());
        assert_eq!(claim_failures, Some(Value::Counter(1.0)));

        let pickup = buckets(&scrape, "stuckless_pickup_latency_seconds", "default");
        let bounds: Vec<f64> = pickup.iter().map(|(le, _)| *le).collect();
        let mut expected = BUCKETS.to_vec();
        expected.push(f64::INFINITY);
        assert_eq!(bounds, expected, "every bucket, then +Inf");
        let count = |le: f64| pickup.iter().find(|(b, _)| *b == le).unwrap().1;
        assert_eq!((count(0.01), count(0.05), count(f64::INFINITY)), (0.0, 1.0, 1.0));
        let run = buckets(&scrape, "stuckless_run_time_seconds", "default");
        assert_eq!(run.iter().find(|(b, _)| *b == 1.0).unwrap().1, 0.0);
        assert_eq!(run.iter().find(|(b, _)| *b == 5.0).unwrap().1, 1.0);
    }

    #[test]
    fn without_queue_stats_the_queue_gauges_are_left_out() {
        let text = Metrics::new().render(None);
        assert!(!text.contains("stuckless_queue_"), "{text}");
        assert!(text.contains("# TYPE stuckless_in_flight gauge"), "{text}");
    }
}

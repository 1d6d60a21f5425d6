//! Prometheus metrics, fed by the worker's `Observer` events and written in
//! the text exposition format by hand (a dozen series do not need a crate).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stuckless_core::driver::QueueStats;
use stuckless_core::{Observer, WorkerEvent};

/// Counter names and help, in output order.
const COUNTERS: &[(&str, &str)] = &[
    ("claimed", "Jobs claimed by this worker."),
    ("completed", "Completions the storage accepted."),
    ("failed", "Attempts that failed (retried or dead)."),
    ("retried", "Attempts that failed and will be retried."),
    ("dead", "Attempts that failed into dead."),
    (
        "released",
        "Jobs released at shutdown without costing an attempt.",
    ),
    (
        "lease_lost",
        "Handlers cancelled because the lease was lost or presumed lost.",
    ),
    (
        "stale_write_rejected",
        "Writes the storage refused as stale (fencing).",
    ),
    ("panicked", "Handlers that panicked."),
];

/// Histogram bucket bounds, in seconds.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        let v = d.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if v <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Default)]
struct State {
    /// (counter, queue) → count.
    counters: BTreeMap<(&'static str, String), u64>,
    reaped: u64,
    storage_unavailable: u64,
    pickup: BTreeMap<String, Histogram>,
    run_time: BTreeMap<String, Histogram>,
}

/// The worker's metrics.
#[derive(Default)]
pub struct Metrics {
    state: Mutex<State>,
    /// Handlers running now.
    pub in_flight: Arc<AtomicI64>,
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn bump(state: &mut State, name: &'static str, queue: &str) {
        *state.counters.entry((name, queue.to_owned())).or_default() += 1;
    }

    /// The text exposition, with queue-depth gauges from `queues` when given.
    pub fn render(&self, queues: Option<&[QueueStats]>) -> String {
        let s = self.state.lock().expect("metrics lock");
        let mut o = String::new();
        for (name, help) in COUNTERS {
            let _ = writeln!(o, "# HELP stuckless_jobs_{name}_total {help}");
            let _ = writeln!(o, "# TYPE stuckless_jobs_{name}_total counter");
            for ((n, queue), v) in &s.counters {
                if n == name {
                    let _ = writeln!(
                        o,
                        "stuckless_jobs_{name}_total{{queue=\"{}\"}} {v}",
                        escape(queue)
                    );
                }
            }
        }
        let _ = writeln!(
            o,
            "# HELP stuckless_jobs_reaped_total Expired leases this worker's reaper took back (all queues)."
        );
        let _ = writeln!(o, "# TYPE stuckless_jobs_reaped_total counter");
        let _ = writeln!(o, "stuckless_jobs_reaped_total {}", s.reaped);
        let _ = writeln!(
            o,
            "# HELP stuckless_storage_unavailable_total Storage calls that failed transiently."
        );
        let _ = writeln!(o, "# TYPE stuckless_storage_unavailable_total counter");
        let _ = writeln!(o, "stuckless_storage_unavailable_total {}", s.storage_unavailable);
        for (name, help, map) in [
            (
                "stuckless_pickup_latency_seconds",
                "Time from due (run_at) to claim, storage clock.",
                &s.pickup,
            ),
            (
                "stuckless_run_time_seconds",
                "Handler run time of completed jobs.",
                &s.run_time,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}");
            let _ = writeln!(o, "# TYPE {name} histogram");
            for (queue, h) in map {
                let q = escape(queue);
                for (bound, c) in BUCKETS.iter().zip(&h.counts) {
                    let _ = writeln!(o, "{name}_bucket{{queue=\"{q}\",le=\"{bound}\"}} {c}");
                }
                let _ = writeln!(o, "{name}_bucket{{queue=\"{q}\",le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(o, "{name}_sum{{queue=\"{q}\"}} {}", h.sum);
                let _ = writeln!(o, "{name}_count{{queue=\"{q}\"}} {}", h.count);
            }
        }
        let _ = writeln!(
            o,
            "# HELP stuckless_in_flight Handlers running now in this worker."
        );
        let _ = writeln!(o, "# TYPE stuckless_in_flight gauge");
        let _ = writeln!(o, "stuckless_in_flight {}", self.in_flight.load(Ordering::SeqCst));
        if let Some(queues) = queues {
            for (name, help, get) in [
                (
                    "stuckless_queue_due",
                    "Queued jobs that are due now.",
                    (|q: &QueueStats| q.due) as fn(&QueueStats) -> u64,
                ),
                ("stuckless_queue_scheduled", "Queued jobs due later.", |q| {
                    q.scheduled
                }),
                (
                    "stuckless_queue_running",
                    "Running jobs with a live lease.",
                    |q| q.running,
                ),
                (
                    "stuckless_queue_running_expired",
                    "Running jobs whose lease expired (waiting for a reaper).",
                    |q| q.running_expired,
                ),
                ("stuckless_queue_dead", "Dead jobs.", |q| q.dead),
            ] {
                let _ = writeln!(o, "# HELP {name} {help}");
                let _ = writeln!(o, "# TYPE {name} gauge");
                for q in queues {
                    let _ = writeln!(o, "{name}{{queue=\"{}\"}} {}", escape(&q.queue), get(q));
                }
            }
        }
        o
    }
}

/// Escapes a label value (queue names are restricted, but be safe).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Observer for Metrics {
    fn on_event(&self, event: &WorkerEvent) {
        let mut s = self.state.lock().expect("metrics lock");
        match event {
            WorkerEvent::Claimed {
                attempt,
                pickup_latency,
            } => {
                Self::bump(&mut s, "claimed", &attempt.queue);
                s.pickup
                    .entry(attempt.queue.clone())
                    .or_default()
                    .observe(*pickup_latency);
            }
            WorkerEvent::Completed { attempt, run_time } => {
                Self::bump(&mut s, "completed", &attempt.queue);
                s.run_time
                    .entry(attempt.queue.clone())
                    .or_default()
                    .observe(*run_time);
            }
            WorkerEvent::Retried { attempt, .. } => {
                Self::bump(&mut s, "retried", &attempt.queue);
                Self::bump(&mut s, "failed", &attempt.queue);
            }
            WorkerEvent::Dead { attempt, .. } => {
                Self::bump(&mut s, "dead", &attempt.queue);
                Self::bump(&mut s, "failed", &attempt.queue);
            }
            WorkerEvent::Released { attempt } => Self::bump(&mut s, "released", &attempt.queue),
            WorkerEvent::LeaseLost { attempt, .. } => Self::bump(&mut s, "lease_lost", &attempt.queue),
            WorkerEvent::StaleWriteRejected { attempt, .. } => {
                Self::bump(&mut s, "stale_write_rejected", &attempt.queue)
            }
            WorkerEvent::Panicked { attempt } => Self::bump(&mut s, "panicked", &attempt.queue),
            WorkerEvent::Reaped { outcome } => s.reaped += outcome.len() as u64,
            WorkerEvent::StorageUnavailable { .. } => s.storage_unavailable += 1,
        }
    }
}

/// Parses the text exposition into (series with labels, value), checking each
/// line's shape; used by tests and handy for scripts.
pub fn parse_exposition(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("line {}: no value: {line:?}", n + 1))?;
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(format!("line {}: bad metric name {name:?}", n + 1));
        }
        if name_end < series.len() && !series.ends_with('}') {
            return Err(format!("line {}: unterminated labels", n + 1));
        }
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .map_err(|_| format!("line {}: bad value {value:?}", n + 1))?,
        };
        if out.insert(series.to_owned(), v).is_some() {
            return Err(format!("line {}: duplicate series {series}", n + 1));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stuckless_core::driver::ReapOutcome;
    use stuckless_core::{AttemptRef, Epoch, JobId};

    #[test]
    fn events_become_parseable_series() {
        let m = Metrics::new();
        let a = AttemptRef {
            job_id: JobId(1),
            queue: "default".into(),
            kind: "k".into(),
            epoch: Epoch(1),
            attempt: 1,
        };
        m.on_event(&WorkerEvent::Claimed {
            attempt: a.clone(),
            pickup_latency: Duration::from_millis(20),
        });
        m.on_event(&WorkerEvent::Completed {
            attempt: a.clone(),
            run_time: Duration::from_secs(2),
        });
        m.on_event(&WorkerEvent::Retried {
            attempt: a.clone(),
            error: "x".into(),
        });
        m.on_event(&WorkerEvent::Reaped {
            outcome: ReapOutcome {
                requeued: vec![JobId(3)],
                dead: vec![JobId(4)],
            },
        });
        let stats = [QueueStats {
            queue: "default".into(),
            due: 7,
            ..Default::default()
        }];
        let series = parse_exposition(&m.render(Some(&stats))).unwrap();
        assert_eq!(series["stuckless_jobs_claimed_total{queue=\"default\"}"], 1.0);
        assert_eq!(series["stuckless_jobs_failed_total{queue=\"default\"}"], 1.0);
        assert_eq!(series["stuckless_jobs_reaped_total"], 2.0);
        assert_eq!(
            series["stuckless_pickup_latency_seconds_bucket{queue=\"default\",le=\"0.05\"}"],
            1.0
        );
        assert_eq!(
            series["stuckless_pickup_latency_seconds_bucket{queue=\"default\",le=\"0.01\"}"],
            0.0
        );
        assert_eq!(series["stuckless_run_time_seconds_count{queue=\"default\"}"], 1.0);
        assert_eq!(series["stuckless_queue_due{queue=\"default\"}"], 7.0);
        assert!(parse_exposition("bad line").is_err());
    }
}

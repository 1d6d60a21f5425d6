//! Operator commands, written against `Client` and the `Storage` trait so they
//! run (and are unit-tested) on the in-memory store as well as on Postgres.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use stuckless_core::driver::{
    JobReapExpired, KindStats, QueueKindsGet, QueueStats, QueueStatsGet, ReapOutcome, Storage, StorageNow,
    WorkerList, WorkerRecord,
};
use stuckless_core::{Client, Job, JobId, NewJob, StorageError, Timestamp};

use crate::coverage::{is_alive, Coverage};
use crate::util::human_duration;

/// Output of a command: a human rendering and a JSON one.
pub trait Report: Serialize {
    /// The human-readable text, ending in a newline.
    fn human(&self) -> String;

    /// The text to print: JSON when `json`, else human.
    fn render(&self, json: bool) -> String {
        if json {
            let mut s =
                serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            s.push('\n');
            s
        } else {
            self.human()
        }
    }
}

/// Turns a user-typed id into a `JobId`, refusing ids no job can have.
pub fn job_id(raw: i64) -> anyhow::Result<JobId> {
    if raw <= 0 {
        bail!("invalid job id {raw}: job ids are positive integers");
    }
    Ok(JobId(raw))
}

/// Adds the operator's view to a storage error ("no job 42" rather than a trace).
fn explain(error: StorageError, what: &str) -> anyhow::Error {
    match error {
        StorageError::NotFound(id) => anyhow::anyhow!("no job with id {id}"),
        StorageError::Unavailable(e) => anyhow::anyhow!("{what}: database unavailable: {e}"),
        other => anyhow::Error::new(other).context(what.to_owned()),
    }
}

/// A job after an operator command changed it.
#[derive(Debug, Serialize)]
pub struct JobChanged {
    /// What was done, in words.
    pub action: String,
    /// The job as it stands now.
    pub job: Job,
}

impl Report for JobChanged {
    fn human(&self) -> String {
        let j = &self.job;
        format!(
            "{}: job {} (queue {}, kind {}) is now {}, attempt {} of {}, epoch {}\n",
            self.action, j.id, j.queue, j.kind, j.status, j.attempt, j.max_attempts, j.epoch
        )
    }
}

/// Parses the payload text as JSON, naming the problem if it is not.
pub fn parse_payload(text: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(text.trim()).with_context(|| {
        let shown: String = text.chars().take(80).collect();
        format!("the payload is not valid JSON: {shown:?}")
    })
}

/// `enqueue`: inserts `job`.
pub async fn enqueue(client: &Client, job: NewJob) -> anyhow::Result<JobChanged> {
    let outcome = client
        .enqueue_job(job)
        .await
        .map_err(|e| explain(e, "could not enqueue"))?;
    Ok(JobChanged {
        action: if outcome.inserted {
            "enqueued"
        } else {
            "already enqueued (same idempotency key)"
        }
        .into(),
        job: outcome.job,
    })
}

/// `cancel`: cancels a queued or running job.
pub async fn cancel(client: &Client, id: JobId) -> anyhow::Result<JobChanged> {
    let job = client
        .cancel(id)
        .await
        .map_err(|e| explain(e, &format!("could not cancel job {id}")))?;
    Ok(JobChanged {
        action: "cancelled".into(),
        job,
    })
}

/// `requeue`: a dead or lease-expired job back to queued; `force` revokes a live lease.
pub async fn requeue(client: &Client, id: JobId, force: bool) -> anyhow::Result<JobChanged> {
    let job = client.requeue(id, force).await.map_err(|e| match e {
        StorageError::WrongStatus { status: stuckless_core::JobStatus::Running, .. } => anyhow::anyhow!(
            "job {id} is running with a live lease: its worker may still be working on it. \
             Check `stuckless diagnose {id}`; to revoke the lease anyway run `stuckless requeue {id} --force` \
             (the holder's later writes will be refused)"
        ),
        other => explain(other, &format!("could not requeue job {id}")),
    })?;
    Ok(JobChanged {
        action: "requeued".into(),
        job,
    })
}

/// What `reap` did.
#[derive(Debug, Serialize)]
pub struct Reaped {
    /// The storage's outcome.
    pub outcome: ReapOutcome,
}

impl Report for Reaped {
    fn human(&self) -> String {
        let o = &self.outcome;
        let ids = |v: &[JobId]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
        if o.is_empty() {
            return "no expired leases: nothing to reap\n".into();
        }
        format!(
            "reaped {} job(s): requeued [{}], dead (attempts used up) [{}]\n",
            o.len(),
            ids(&o.requeued),
            ids(&o.dead)
        )
    }
}

/// `reap`: one pass of the reaper.
pub async fn reap(storage: &dyn Storage, limit: u32) -> anyhow::Result<Reaped> {
    if limit == 0 {
        bail!("--limit must be at least 1");
    }
    let outcome = storage
        .job_reap_expired(JobReapExpired { limit })
        .await
        .map_err(|e| explain(e, "could not reap"))?;
    Ok(Reaped { outcome })
}

/// A worker and whether it is alive.
#[derive(Debug, Serialize)]
pub struct WorkerView {
    /// The registry row.
    #[serde(flatten)]
    pub record: WorkerRecord,
    /// Whether its registry heartbeat is recent.
    pub alive: bool,
    /// Time since its last registry heartbeat, in seconds.
    pub heartbeat_age_secs: f64,
}

/// Judges a registry record against `now`.
pub fn worker_view(record: WorkerRecord, now: Timestamp, stale_after: Duration) -> WorkerView {
    let age = now.saturating_since(record.last_heartbeat_at);
    WorkerView {
        alive: is_alive(age, stale_after),
        heartbeat_age_secs: age.as_secs_f64(),
        record,
    }
}

/// `workers`: the registry.
#[derive(Debug, Serialize)]
pub struct Workers {
    /// The storage's time the liveness was judged at.
    pub now: Timestamp,
    /// Threshold in seconds.
    pub stale_after_secs: f64,
    /// Every registered worker.
    pub workers: Vec<WorkerView>,
}

impl Report for Workers {
    fn human(&self) -> String {
        if self.workers.is_empty() {
            return "no registered workers\n".into();
        }
        let mut out = format!(
            "{:<32} {:<6} {:<20} {:>11} {:>9} {:>14}  {}\n",
            "WORKER", "STATE", "QUEUES", "CONCURRENCY", "IN FLIGHT", "LAST HEARTBEAT", "KINDS"
        );
        for w in &self.workers {
            let _ = writeln!(
                out,
                "{:<32} {:<6} {:<20} {:>11} {:>9} {:>14}  {}",
                w.record.id,
                if w.alive { "alive" } else { "stale" },
                w.record.queues.join(","),
                w.record.concurrency,
                w.record.in_flight,
                format!(
                    "{} ago",
                    human_duration(Duration::from_secs_f64(w.heartbeat_age_secs))
                ),
                if w.record.kinds.is_empty() {
                    "(not recorded: claims every kind)".to_owned()
                } else {
                    w.record.kinds.join(",")
                }
            );
        }
        out
    }
}

/// `workers`: lists the registry with liveness.
pub async fn workers(storage: &dyn Storage, stale_after: Duration) -> anyhow::Result<Workers> {
    let now = storage
        .storage_now(StorageNow {})
        .await
        .map_err(|e| explain(e, "could not read the database clock"))?;
    let list = storage
        .worker_list(WorkerList {})
        .await
        .map_err(|e| explain(e, "could not list workers"))?;
    Ok(Workers {
        now,
        stale_after_secs: stale_after.as_secs_f64(),
        workers: list
            .into_iter()
            .map(|r| worker_view(r, now, stale_after))
            .collect(),
    })
}

/// Non-terminal jobs of one kind, and whether a live worker handles it.
#[derive(Debug, Serialize)]
pub struct KindView {
    /// The counts.
    #[serde(flatten)]
    pub stats: KindStats,
    /// Whether a live worker serving the queue has a handler for the kind;
    /// if not, its due jobs wait until one starts.
    pub handled: bool,
}

/// `stats`: queues and workers.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// The storage's time.
    pub now: Timestamp,
    /// Per queue, ascending name.
    pub queues: Vec<QueueStats>,
    /// Per queue and kind, non-terminal jobs only, ascending names.
    pub kinds: Vec<KindView>,
    /// Due jobs of kinds no live worker handles.
    pub unhandled_due: u64,
    /// Workers with a recent registry heartbeat.
    pub workers_alive: usize,
    /// Registered workers whose heartbeat is stale.
    pub workers_stale: usize,
}

impl Report for Stats {
    fn human(&self) -> String {
        let mut out = format!(
            "{:<20} {:>7} {:>9} {:>7} {:>14} {:>6} {:>9} {:>9} {:>10}\n",
            "QUEUE",
            "DUE",
            "SCHEDULED",
            "RUNNING",
            "LEASE EXPIRED",
            "DEAD",
            "SUCCEEDED",
            "CANCELLED",
            "OLDEST DUE"
        );
        for q in &self.queues {
            let _ = writeln!(
                out,
                "{:<20} {:>7} {:>9} {:>7} {:>14} {:>6} {:>9} {:>9} {:>10}",
                q.queue,
                q.due,
                q.scheduled,
                q.running,
                q.running_expired,
                q.dead,
                q.succeeded,
                q.cancelled,
                q.oldest_due_age.map(human_duration).unwrap_or_else(|| "-".into())
            );
        }
        if self.queues.is_empty() {
            out.push_str("(no jobs)\n");
        }
        if !self.kinds.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<20} {:<24} {:>7} {:>9} {:>7} {:>10}  HANDLED BY A LIVE WORKER",
                "QUEUE", "KIND", "DUE", "SCHEDULED", "RUNNING", "OLDEST DUE"
            );
        }
        for k in &self.kinds {
            let s = &k.stats;
            let _ = writeln!(
                out,
                "{:<20} {:<24} {:>7} {:>9} {:>7} {:>10}  {}",
                s.queue,
                s.kind,
                s.due,
                s.scheduled,
                s.running,
                s.oldest_due_age.map(human_duration).unwrap_or_else(|| "-".into()),
                if k.handled { "yes" } else { "NO" }
            );
        }
        let unhandled: Vec<String> = self
            .kinds
            .iter()
            .filter(|k| !k.handled && k.stats.due > 0)
            .map(|k| format!("{} ({})", k.stats.kind, k.stats.queue))
            .collect();
        if !unhandled.is_empty() {
            let _ = writeln!(
                out,
                "\nwarning: {} due job(s) wait for kinds no live worker handles: {}. \
                 Start a worker with a handler for them (`stuckless workers` lists what each handles).",
                self.unhandled_due,
                unhandled.join(", ")
            );
        }
        let _ = writeln!(
            out,
            "workers: {} alive, {} stale",
            self.workers_alive, self.workers_stale
        );
        out
    }
}

/// `stats`: per-queue counts and worker liveness.
pub async fn stats(storage: &dyn Storage, stale_after: Duration) -> anyhow::Result<Stats> {
    let queues = storage
        .queue_stats(QueueStatsGet {})
        .await
        .map_err(|e| explain(e, "could not read queue stats"))?;
    let per_kind = storage
        .queue_kinds_get(QueueKindsGet {})
        .await
        .map_err(|e| explain(e, "could not read per-kind counts"))?;
    let w = workers(storage, stale_after).await?;
    let alive = w.workers.iter().filter(|w| w.alive).count();
    let registry: Vec<WorkerRecord> = w.workers.iter().map(|v| v.record.clone()).collect();
    let coverage = Coverage::of_live(&registry, w.now, stale_after);
    let kinds: Vec<KindView> = per_kind
        .into_iter()
        .map(|stats| KindView {
            handled: coverage.handles(&stats.queue, &stats.kind),
            stats,
        })
        .collect();
    Ok(Stats {
        now: w.now,
        queues,
        unhandled_due: kinds.iter().filter(|k| !k.handled).map(|k| k.stats.due).sum(),
        kinds,
        workers_alive: alive,
        workers_stale: w.workers.len() - alive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;
    use stuckless_core::driver::{JobClaim, WorkerRegister};
    use stuckless_core::{JobStatus, ManualClock, MemStore};

    fn store() -> (ManualClock, Arc<MemStore>, Client) {
        let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
        let s = Arc::new(MemStore::new(clock.clone()));
        (clock, s.clone(), Client::new(s))
    }

    fn claim(worker: &str) -> JobClaim {
        JobClaim {
            worker_id: worker.into(),
            queues: vec!["default".into()],
            limit: 10,
            lease: Duration::from_secs(30),
            kinds: None,
        }
    }

    #[tokio::test]
    async fn requeue_refuses_a_live_lease_unless_forced() {
        let (clock, s, c) = store();
        let out = enqueue(&c, NewJob::new("default", "k", json!({}))).await.unwrap();
        let id = out.job.id;
        s.job_claim(claim("w1")).await.unwrap();
        let err = requeue(&c, id, false).await.unwrap_err().to_string();
        assert!(err.contains("live lease") && err.contains("--force"), "{err}");
        clock.advance(Duration::from_secs(31));
        let done = requeue(&c, id, false).await.unwrap();
        assert_eq!(done.job.status, JobStatus::Queued);
        assert!(done.human().starts_with("requeued: job 1"), "{}", done.human());
    }

    #[tokio::test]
    async fn unknown_ids_and_bad_input_are_clear_errors() {
        let (_, s, c) = store();
        for err in [
            cancel(&c, JobId(99)).await.unwrap_err(),
            requeue(&c, JobId(99), true).await.unwrap_err(),
        ] {
            assert_eq!(err.to_string(), "no job with id 99");
        }
        assert!(job_id(0).unwrap_err().to_string().contains("positive"));
        assert!(parse_payload("{nope")
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
        let bad = enqueue(&c, NewJob::new("bad queue!", "k", json!({})))
            .await
            .unwrap_err();
        assert!(format!("{bad:#}").contains("invalid queue"), "{bad:#}");
        assert!(reap(&*s, 0).await.is_err());
    }

    #[tokio::test]
    async fn stats_and_workers_judge_liveness_by_the_storage_clock() {
        let (clock, s, c) = store();
        enqueue(&c, NewJob::new("default", "k", json!({}))).await.unwrap();
        enqueue(&c, NewJob::new("default", "k", json!({}))).await.unwrap();
        for id in ["old", "new"] {
            s.worker_register(WorkerRegister {
                id: id.into(),
                queues: vec!["default".into()],
                concurrency: 2,
                metadata: json!(null),
                kinds: vec!["k".into()],
            })
            .await
            .unwrap();
            clock.advance(Duration::from_secs(100));
        }
        s.job_claim(JobClaim {
            limit: 1,
            ..claim("new")
        })
        .await
        .unwrap();
        clock.advance(Duration::from_secs(40));
        let st = stats(&*s, Duration::from_secs(150)).await.unwrap();
        assert_eq!((st.workers_alive, st.workers_stale), (1, 1));
        assert_eq!(st.queues[0].due, 1);
        assert_eq!(st.queues[0].running_expired, 1);
        let text = st.human();
        assert!(text.contains("workers: 1 alive, 1 stale"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&st.render(true)).unwrap();
        assert_eq!(json["queues"][0]["running_expired"], 1);
        let w = workers(&*s, Duration::from_secs(150)).await.unwrap();
        assert_eq!(
            w.workers.iter().map(|w| w.alive).collect::<Vec<_>>(),
            vec![true, false]
        );
        assert!(w.human().contains("stale"));
        let r = reap(&*s, 10).await.unwrap();
        assert_eq!(r.outcome.requeued.len(), 1);
        assert!(r.human().contains("requeued [1]"), "{}", r.human());
    }

    #[tokio::test]
    async fn stats_flag_due_kinds_no_live_worker_handles() {
        let (clock, s, c) = store();
        for kind in ["report", "report", "noop"] {
            enqueue(&c, NewJob::new("default", kind, json!({})))
                .await
                .unwrap();
        }
        let register = |id: &str, kinds: &[&str]| WorkerRegister {
            id: id.into(),
            queues: vec!["default".into()],
            concurrency: 1,
            metadata: json!(null),
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
        };
        s.worker_register(register("old", &["report"])).await.unwrap();
        clock.advance(Duration::from_secs(100));
        s.worker_register(register("new", &["noop"])).await.unwrap();
        let st = stats(&*s, Duration::from_secs(90)).await.unwrap();
        let handled: Vec<(&str, u64, bool)> = st
            .kinds
            .iter()
            .map(|k| (k.stats.kind.as_str(), k.stats.due, k.handled))
            .collect();
        assert_eq!(
            handled,
            [("noop", 1, true), ("report", 2, false)],
            "only a stale worker handles report"
        );
        assert_eq!(st.unhandled_due, 2);
        let text = st.human();
        assert!(
            text.contains("warning: 2 due job(s) wait for kinds no live worker handles: report (default)"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&st.render(true)).unwrap();
        assert_eq!(json["kinds"][1]["kind"], "report");
        assert_eq!(json["kinds"][1]["handled"], false);
        assert_eq!(json["unhandled_due"], 2);
        s.worker_register(register("old", &["report"])).await.unwrap();
        let st = stats(&*s, Duration::from_secs(90)).await.unwrap();
        assert_eq!(st.unhandled_due, 0);
        assert!(!st.human().contains("warning"), "{}", st.human());
        let w = workers(&*s, Duration::from_secs(90)).await.unwrap().human();
        assert!(w.lines().next().unwrap().ends_with("KINDS"), "{w}");
        assert!(w.contains("  report\n") && w.contains("  noop\n"), "{w}");
    }
}

//! The producer: the web app that enqueues jobs over time (some scheduled
//! for later, some with idempotency keys and sent twice, some cancelled,
//! some of the kind a rolling deploy adds), and once writes a poison row
//! past the storage's checks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stuckless_core::{Client, Clock, JobId, MemStore, NewJob, Timestamp};

use crate::clock::{SimClock, BASE};
use crate::deploy::NEW_KIND;
use crate::net_store::NetStore;
use crate::observe::{Observation, Sink};
use crate::sections::MAX_SECTIONS;

/// The kind every job has: one call to the external API.
pub const KIND: &str = "report";

/// One enqueue the producer will make.
#[derive(Clone, Debug)]
pub struct Enqueue {
    /// When, from the start of the run.
    pub at: Duration,
    /// The job.
    pub job: NewJob,
    /// Send the same insert twice (a retried HTTP request).
    pub twice: bool,
    /// Cancel the job this long after enqueueing it.
    pub cancel_after: Option<Duration>,
    /// Then overwrite its `run_at` with [`POISON_RUN_AT`] through the raw path.
    pub poison: bool,
    /// A quick job of a fan-out: inserted in one statement with the other
    /// fan-out jobs that share its moment ([`FanOuts`]).
    pub fan_out: bool,
}

/// The `run_at` of the poison row: Postgres's `-infinity`, which a
/// `timestamptz` column held before the schema refused it and which no claim
/// can convert to microseconds.
pub const POISON_RUN_AT: Timestamp = Timestamp::from_micros(i64::MIN);

/// How far ahead the poison job is scheduled when it is enqueued, so no
/// worker claims it before the raw write makes it unreadable.
const POISON_LEAD: Duration = Duration::from_secs(3_600);

/// What the workload holds besides the plain jobs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Extras {
    /// From this moment on, 30 % of the jobs are of [`NEW_KIND`] (the rolling
    /// deploy's start); `None`: none are.
    pub new_kind_from: Option<Duration>,
    /// Write one poison row: enqueue a job at a seeded moment between 10 %
    /// and 70 % of the chaos phase, then make its `run_at` unreadable.
    pub poison_row: bool,
}

/// The schedule a seed stands for: `jobs` enqueues over the first 80 % of
/// `chaos`; 20 % scheduled up to a minute ahead, 30 % with an idempotency key
/// (a third of those sent twice), 5 % cancelled within 30 s, a third written
/// in 2 to [`MAX_SECTIONS`] checkpointed sections; every job with the shipped
/// number of attempts, arriving steadily or in [`Bursts`]. In some seeds a
/// share of them are quick jobs enqueued in [`FanOuts`] instead. Plus the
/// [`Extras`].
pub fn schedule(seed: u64, jobs: usize, chaos: Duration, extras: Extras) -> Vec<Enqueue> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x574f_524b_4c4f_4144);
    // Kinds come from their own stream, so the rest of the schedule is the
    // same with or without a deploy.
    let mut kinds = ChaCha8Rng::seed_from_u64(seed ^ 0x4b49_4e44);
    // Sections too: a third of the jobs are resumable reports.
    let mut sections = ChaCha8Rng::seed_from_u64(seed ^ 0x5345_4354);
    let span = (chaos.as_millis() as u64 * 8 / 10).max(1);
    let mut bursts = Bursts::draw(seed, span);
    let mut fan_outs = FanOuts::draw(seed, span);
    let mut out: Vec<Enqueue> = (0..jobs)
        .map(|n| {
            let at = Duration::from_millis(rng.random_range(0..span));
            let at = bursts.place(at);
            let fan_out = fan_outs.join();
            let at = fan_out.unwrap_or(at);
            let new_kind = extras.new_kind_from.is_some_and(|from| at >= from) && kinds.random_bool(0.3);
            let kind = if new_kind { NEW_KIND } else { KIND };
            // Every draw is made whether the job is quick or not, so the
            // other jobs are what they would be without fan-outs.
            let total = sections
                .random_bool(1.0 / 3.0)
                .then(|| sections.random_range(2..=MAX_SECTIONS));
            let payload = match (fan_out, total) {
                (Some(_), _) => serde_json::json!({ "n": n, "quick": true }),
                (None, Some(total)) => serde_json::json!({ "n": n, "sections": total }),
                (None, None) => serde_json::json!({ "n": n }),
            };
            let mut job = NewJob::new("default", kind, payload).priority(rng.random_range(0..3));
            if rng.random_bool(0.2) {
                let ahead = Duration::from_millis(rng.random_range(0..60_000));
                if fan_out.is_none() {
                    job = job.run_at(BASE + at + ahead);
                }
            }
            // A fan-out's insert is retried whole after a lost reply, so
            // its jobs are keyed.
            let keyed = rng.random_bool(0.3);
            if keyed || fan_out.is_some() {
                job = job.idempotency_key(format!("report-{n}"));
            }
            Enqueue {
                at,
                job,
                twice: keyed && rng.random_bool(0.33) && fan_out.is_none(),
                cancel_after: rng
                    .random_bool(0.05)
                    .then(|| Duration::from_millis(rng.random_range(0..30_000))),
                poison: false,
                fan_out: fan_out.is_some(),
            }
        })
        .collect();
    if extras.poison_row {
        let chaos_ms = chaos.as_millis() as u64;
        let at = Duration::from_millis(kinds.random_range(chaos_ms / 10..=chaos_ms * 7 / 10));
        // Keyed: an insert retried after a lost reply must not leave a
        // second, readable copy scheduled an hour ahead.
        let job = NewJob::new("default", KIND, serde_json::json!({ "n": jobs, "poison": true }))
            .run_at(BASE + at + POISON_LEAD)
            .idempotency_key("poison-row");
        out.push(Enqueue {
            at,
            job,
            twice: false,
            cancel_after: None,
            poison: true,
            fan_out: false,
        });
    }
    out.sort_by_key(|e| e.at);
    out
}

/// How the enqueues are spread over time, drawn per seed (swarm style): in
/// half the seeds steadily over the span, in the other half in 2 to 8 bursts
/// of a couple of seconds each (a cron fan-out, a batch import), at seeded
/// moments. A burst fills every worker at once: completions arrive
/// together and are written in batches, many leases are held when a fault
/// strikes, and a due job can wait for a slot; a steady stream keeps the
/// workers part idle.
#[derive(Clone, Debug)]
struct Bursts {
    /// Each burst's start, ms from the start of the run; empty: steady.
    starts: Vec<u64>,
    /// Bursts' draws of which burst a job joins and where in it.
    rng: ChaCha8Rng,
}

/// How long one burst of enqueues lasts.
const BURST_MS: u64 = 2_000;

impl Bursts {
    fn draw(seed: u64, span_ms: u64) -> Bursts {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4255_5253_5453);
        let starts = if rng.random_bool(0.5) {
            Vec::new()
        } else {
            let n = rng.random_range(2..=8);
            (0..n)
                .map(|_| rng.random_range(0..span_ms.saturating_sub(BURST_MS).max(1)))
                .collect()
        };
        Bursts { starts, rng }
    }

    /// When a job drawn for `steady` in a steady stream is enqueued.
    fn place(&mut self, steady: Duration) -> Duration {
        if self.starts.is_empty() {
            return steady;
        }
        let start = self.starts[self.rng.random_range(0..self.starts.len())];
        Duration::from_millis(start + self.rng.random_range(0..BURST_MS))
    }
}

/// Fan-outs of quick jobs, drawn per seed (swarm style): none in half the
/// seeds; in the other half, 2 to 6 seeded moments at which the web app
/// enqueues a batch of quick jobs in one insert (a cron fanning out small
/// lookups), a fifth to a half of the jobs joining one. Every worker with
/// room claims up to its free slots of them at once, their calls answer
/// within a few steps, and the completions queue together: the completer
/// writes them in batches of several, which a worker writing a few
/// completions a minute rarely does.
#[derive(Clone, Debug)]
struct FanOuts {
    /// Each fan-out's moment; empty: none.
    at: Vec<Duration>,
    /// The chance a job joins one.
    share: f64,
    /// Draws which jobs join which fan-out.
    rng: ChaCha8Rng,
}

impl FanOuts {
    fn draw(seed: u64, span_ms: u64) -> FanOuts {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4641_4e4f_5554);
        let at = if rng.random_bool(0.5) {
            Vec::new()
        } else {
            let n = rng.random_range(2..=6);
            (0..n)
                .map(|_| Duration::from_millis(rng.random_range(0..span_ms)))
                .collect()
        };
        let share = rng.random_range(0.2..0.5);
        FanOuts { at, share, rng }
    }

    /// The moment of the fan-out the next job joins, if it joins one.
    fn join(&mut self) -> Option<Duration> {
        if self.at.is_empty() || !self.rng.random_bool(self.share) {
            return None;
        }
        Some(self.at[self.rng.random_range(0..self.at.len())])
    }
}

/// The raw path to the db's rows, past every check the storage makes: what
/// a SQL session allowed to write the table directly can do.
#[derive(Clone)]
pub struct RawPath {
    /// The db's rows.
    pub store: Arc<MemStore>,
    /// Where the raw write is reported.
    pub observer: Sink,
}

impl RawPath {
    /// Overwrites `id`'s `run_at` with [`POISON_RUN_AT`] and says so.
    fn poison(&self, id: JobId, at: Timestamp) {
        if self.store.unchecked_update(id, |j| j.run_at = POISON_RUN_AT) {
            self.observer.push(Observation::PoisonWritten {
                at,
                by: "producer".to_owned(),
                job: id,
                run_at: POISON_RUN_AT,
            });
        }
    }
}

/// The producer host's software: enqueue on schedule, retrying while the db
/// is unreachable; sets `done` once every job was enqueued.
pub async fn produce(
    schedule: Arc<Vec<Enqueue>>,
    clock: SimClock,
    done: Arc<AtomicBool>,
    raw: RawPath,
) -> turmoil::Result {
    let client = Client::new(Arc::new(NetStore::remote("producer", "db")));
    let mut next = 0;
    while let Some(item) = schedule.get(next) {
        let wait = item.at.saturating_sub(clock.elapsed());
        tokio::time::sleep(wait).await;
        if item.fan_out {
            let fan_out: Vec<&Enqueue> = schedule[next..]
                .iter()
                .take_while(|e| e.fan_out && e.at == item.at)
                .collect();
            next += fan_out.len();
            let ids = insert_many(&client, fan_out.iter().map(|e| e.job.clone()).collect()).await;
            for (e, id) in fan_out.iter().zip(ids) {
                if let Some(after) = e.cancel_after {
                    cancel_later(&client, after, id);
                }
            }
            continue;
        }
        next += 1;
        let sends = if item.twice { 2 } else { 1 };
        let mut id = None;
        for _ in 0..sends {
            id = Some(insert(&client, item.job.clone()).await);
        }
        if let (true, Some(id)) = (item.poison, id) {
            raw.poison(id, clock.now());
        }
        if let (Some(after), Some(id)) = (item.cancel_after, id) {
            cancel_later(&client, after, id);
        }
    }
    done.store(true, Ordering::SeqCst);
    std::future::pending::<()>().await;
    Ok(())
}

/// Cancels `id` `after` from now, in a task of its own, retrying a few
/// times while the db is unreachable.
fn cancel_later(client: &Client, after: Duration, id: JobId) {
    let client = client.clone();
    tokio::task::spawn_local(async move {
        tokio::time::sleep(after).await;
        for _ in 0..3 {
            match client.cancel(id).await {
                Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_secs(1)).await,
                _ => return,
            }
        }
    });
}

/// Inserts `jobs` in one statement, retrying until the db answers.
async fn insert_many(client: &Client, jobs: Vec<NewJob>) -> Vec<JobId> {
    loop {
        match client.enqueue_many(jobs.clone()).await {
            Ok(outcomes) => return outcomes.into_iter().map(|o| o.job.id).collect(),
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

async fn insert(client: &Client, job: NewJob) -> JobId {
    loop {
        match client.enqueue_job(job.clone()).await {
            Ok(outcome) => return outcome.job.id,
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

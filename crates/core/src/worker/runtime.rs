//! The worker's main loop and its background tasks.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::claim_loop;
use super::completer;
use super::shared::{RunReport, Shared};
use super::shutdown::Phase;
use super::Worker;
use crate::clock::Clock;
use crate::driver::{JobPrune, JobReapExpired, Storage, WorkerDeregister, WorkerHeartbeat, WorkerRegister};
use crate::error::{StorageError, WorkerError};
use crate::observer::WorkerEvent;

pub(crate) async fn run(worker: Worker) -> Result<RunReport, WorkerError> {
    let Worker {
        storage,
        clock,
        config,
        handlers,
        waker,
        observer,
        shutdown,
        health,
    } = worker;
    let span = tracing::info_span!("worker", worker_id = %config.worker_id);
    let (completion_tx, completion_rx) =
        mpsc::channel(config.complete_batch.max(config.concurrency as usize) * 2);
    let shared = Arc::new(Shared {
        storage,
        clock,
        handlers,
        observer,
        report: Mutex::new(RunReport::default()),
        rng: Mutex::new(ChaCha8Rng::seed_from_u64(config.rng_seed)),
        release_now: CancellationToken::new(),
        release_buffered: CancellationToken::new(),
        slots: Arc::new(Semaphore::new(config.concurrency as usize)),
        kick: Notify::new(),
        completions: completion_tx,
        in_flight: AtomicU32::new(0),
        health,
        retries_due: Mutex::new(Default::default()),
        config,
    });
    async move {
        let mut phase = shutdown.subscribe();
        if !register(&shared, &mut phase).await? {
            return Ok(take_report(&shared));
        }
        info!(queues = ?shared.config.queues, concurrency = shared.config.concurrency, "worker started");

        let stop_background = CancellationToken::new();
        let mut background = JoinSet::new();
        background.spawn(reaper(shared.clone(), stop_background.clone()).in_current_span());
        background.spawn(registry_heartbeat(shared.clone(), stop_background.clone()).in_current_span());
        if shared.config.retention.is_some() {
            background.spawn(pruner(shared.clone(), stop_background.clone()).in_current_span());
        }
        let stop_completer = CancellationToken::new();
        let completer = tokio::spawn(
            completer::run(shared.clone(), completion_rx, stop_completer.clone()).in_current_span(),
        );
        // Aborts the completer if this future is dropped (a crash).
        let mut completer = AbortOnDrop(completer);

        let mut attempts: JoinSet<()> = JoinSet::new();
        claim_loop::claim_loop(&shared, &mut phase, &mut attempts, waker.as_ref()).await;
        shared.release_buffered.cancel();

        drain(&shared, &mut phase, &mut attempts).await;
        stop_background.cancel();
        while background.join_next().await.is_some() {}
        // Completions queued by the last attempts are written before the
        // worker says goodbye, for one storage timeout at most: past it the
        // reaper reruns whatever was not confirmed.
        stop_completer.cancel();
        tokio::select! {
            biased;
            _ = &mut completer.0 => {}
            _ = shared.clock.sleep(shared.config.storage_timeout) => {
                warn!("completions still unconfirmed at shutdown; the reaper will rerun those jobs");
            }
        }
        drop(completer);
        let deregistered = shared
            .bounded(
                "worker_deregister",
                shared.config.storage_timeout,
                shared.storage.worker_deregister(WorkerDeregister {
                    id: shared.config.worker_id.clone(),
                }),
            )
            .await;
        if let Err(error) = deregistered {
            warn!(%error, "could not deregister; the registry entry will go stale");
        }
        let report = take_report(&shared);
        info!(?report, "worker stopped");
        Ok(report)
    }
    .instrument(span)
    .await
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn take_report(shared: &Shared) -> RunReport {
    shared.report.lock().expect("report lock").clone()
}

fn registration(shared: &Shared) -> WorkerRegister {
    WorkerRegister {
        id: shared.config.worker_id.clone(),
        queues: shared.config.queues.clone(),
        concurrency: shared.config.concurrency,
        metadata: shared.config.metadata.clone(),
        kinds: shared.handlers.keys().cloned().collect(),
    }
}

/// Registers, retrying while the storage is unavailable. Returns false if a
/// shutdown came first.
async fn register(
    shared: &Shared,
    phase: &mut tokio::sync::watch::Receiver<Phase>,
) -> Result<bool, WorkerError> {
    let mut delay = Duration::from_millis(100);
    loop {
        if *phase.borrow() != Phase::Running {
            return Ok(false);
        }
        let call = shared.storage.worker_register(registration(shared));
        match shared
            .bounded("worker_register", shared.config.storage_timeout, call)
            .await
        {
            Ok(()) => return Ok(true),
            Err(error) if error.is_transient() => {
                warn!(%error, retry_in = ?delay, "storage unavailable at start; retrying");
                tokio::select! {
                    biased;
                    _ = phase.changed() => {}
                    _ = shared.clock.sleep(delay) => {}
                }
                delay = (delay * 2).min(shared.config.poll_interval);
            }
            Err(error) => return Err(WorkerError::Register(error)),
        }
    }
}

/// Lets in-flight attempts finish within the grace period, then has the rest
/// release their jobs, and waits for all of them.
async fn drain(shared: &Shared, phase: &mut tokio::sync::watch::Receiver<Phase>, attempts: &mut JoinSet<()>) {
    if !attempts.is_empty() {
        info!(in_flight = attempts.len(), grace = ?shared.config.shutdown_grace, "draining");
    }
    let grace_end = shared.now() + shared.config.shutdown_grace;
    while !attempts.is_empty() && *phase.borrow() == Phase::Graceful {
        let left = grace_end.saturating_since(shared.now());
        if left.is_zero() {
            break;
        }
        tokio::select! {
            biased;
            _ = phase.changed() => {}
            _ = attempts.join_next() => {}
            _ = shared.clock.sleep(left) => {}
        }
    }
    shared.release_now.cancel();
    while attempts.join_next().await.is_some() {}
}

/// A random start within `interval`, so many workers started together do
/// not run their background passes in lockstep.
fn random_offset(shared: &Shared, interval: Duration) -> Duration {
    let mut rng = shared.rng.lock().expect("rng lock");
    Duration::from_micros(rng.random_range(0..=interval.as_micros() as u64))
}

/// Sleeps `wait`; false if `stop` fired first.
async fn sleep_unless_stopped(shared: &Shared, stop: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        _ = shared.clock.sleep(wait) => true,
    }
}

/// Takes back expired leases every reap interval, from a random offset so
/// many workers do not reap in lockstep.
async fn reaper(shared: Arc<Shared>, stop: CancellationToken) {
    let interval = shared.config.reap_interval;
    let mut wait = random_offset(&shared, interval);
    loop {
        if !sleep_unless_stopped(&shared, &stop, wait).await {
            return;
        }
        wait = interval;
        let call = shared.storage.job_reap_expired(JobReapExpired {
            limit: shared.config.reap_batch,
        });
        let outcome = match shared
            .bounded("job_reap_expired", shared.config.storage_timeout, call)
            .await
        {
            Ok(outcome) => {
                shared.health.succeeded("job_reap_expired");
                outcome
            }
            Err(error) => {
                shared.call_failed("job_reap_expired", &error);
                continue;
            }
        };
        {
            if !outcome.is_empty() {
                info!(requeued = ?outcome.requeued, dead = ?outcome.dead, "reaped expired leases");
                if outcome.len() as u32 >= shared.config.reap_batch {
                    wait = Duration::ZERO;
                }
                if !outcome.requeued.is_empty() {
                    shared.kick.notify_one();
                }
                shared.emit(WorkerEvent::Reaped { outcome });
            }
        }
    }
}

/// Deletes finished jobs past their retention every prune interval, from a
/// random offset, in batches; leaderless like the reaper, since a delete of
/// a row another worker already deleted is a no-op.
async fn pruner(shared: Arc<Shared>, stop: CancellationToken) {
    let Some(retention) = shared.config.retention else {
        return;
    };
    let interval = shared.config.prune_interval;
    let mut wait = random_offset(&shared, interval);
    loop {
        if !sleep_unless_stopped(&shared, &stop, wait).await {
            return;
        }
        wait = interval;
        let call = shared.storage.job_prune(JobPrune {
            succeeded_after: retention.succeeded,
            cancelled_after: retention.cancelled,
            dead_after: retention.dead,
            limit: shared.config.prune_batch,
        });
        match shared
            .bounded("job_prune", shared.config.storage_timeout, call)
            .await
        {
            Ok(outcome) => {
                shared.health.succeeded("job_prune");
                if outcome.total() > 0 {
                    debug!(?outcome, "pruned finished jobs");
                    if outcome.total() >= u64::from(shared.config.prune_batch) {
                        wait = Duration::ZERO;
                    }
                    shared.emit(WorkerEvent::Pruned { outcome });
                }
            }
            Err(error) => shared.call_failed("job_prune", &error),
        }
    }
}

/// Tells the registry this worker is alive; re-registers if it was forgotten.
async fn registry_heartbeat(shared: Arc<Shared>, stop: CancellationToken) {
    let config = &shared.config;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = shared.clock.sleep(config.registry_heartbeat_interval) => {}
        }
        let in_flight = shared.in_flight.load(Ordering::SeqCst);
        let call = shared.storage.worker_heartbeat(WorkerHeartbeat {
            id: config.worker_id.clone(),
            in_flight,
        });
        match shared
            .bounded("worker_heartbeat", config.storage_timeout, call)
            .await
        {
            Err(StorageError::WorkerNotFound(_)) => {
                let call = shared.storage.worker_register(registration(&shared));
                if let Err(error) = shared
                    .bounded("worker_register", config.storage_timeout, call)
                    .await
                {
                    warn!(%error, "could not re-register");
                }
            }
            Err(error) if !error.is_transient() => warn!(%error, "registry heartbeat failed"),
            _ => {}
        }
    }
}

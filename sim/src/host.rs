//! A worker host's software: the real worker runtime over the simulated
//! network, built from the shipped defaults ([`crate::workers`]) with the
//! handlers of the release the host runs ([`crate::deploy`]).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use stuckless_core::{Clock, JobContext, NotifyWaker, ShutdownHandle, WorkerEvent};

use crate::api;
use crate::clock::{DriverTime, SimClock};
use crate::config::Config;
use crate::deploy::Release;
use crate::net_store::{listen, NetStore};
use crate::observe::{from_worker_event, Observation, Sink};
use crate::sections;

/// The db host's name.
pub const DB: &str = "db";

/// State a worker host keeps across restarts, shared with the driver.
#[derive(Clone)]
pub struct WorkerHost {
    /// Its index among the workers.
    pub index: usize,
    /// Its name, which is also its worker id.
    pub name: String,
    /// The world's settings.
    pub config: Arc<Config>,
    /// Its clock's offset from true time, µs.
    pub skew: Arc<AtomicI64>,
    /// True simulated time.
    pub driver: DriverTime,
    /// Where its worker's events and its handlers' starts go.
    pub observer: Sink,
    /// Its worker's shutdown handle, while one runs.
    pub shutdown: Arc<Mutex<Option<ShutdownHandle>>>,
    /// Rung at SIGTERM.
    pub sigterm: Arc<tokio::sync::Notify>,
    /// Set by the host when its worker finished a shutdown.
    pub exited: Arc<AtomicBool>,
    /// The release it runs from its next start on.
    pub release: Arc<Mutex<Release>>,
    /// Raised when it writes a completion to the db (cleared by the driver).
    pub completion_written: Arc<AtomicBool>,
}

impl WorkerHost {
    /// A host for worker `index`, on the old release.
    pub fn new(index: usize, name: String, config: Arc<Config>, driver: DriverTime, observer: Sink) -> Self {
        WorkerHost {
            index,
            name,
            config,
            skew: Arc::new(AtomicI64::new(0)),
            driver,
            observer,
            shutdown: Arc::new(Mutex::new(None)),
            sigterm: Arc::new(tokio::sync::Notify::new()),
            exited: Arc::new(AtomicBool::new(false)),
            release: Arc::new(Mutex::new(Release::Old)),
            completion_written: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The release it runs.
    pub fn release(&self) -> Release {
        *self.release.lock().expect("release lock")
    }

    /// The software: build the worker, run it until it stops.
    pub async fn run(self) -> turmoil::Result {
        let clock = Arc::new(SimClock::new(self.skew.clone(), self.driver.clone()));
        let transport =
            NetStore::new(self.name.clone(), DB).flag_completions(self.completion_written.clone());
        let storage = Arc::new(stuckless_core::driver::Remote::new(transport));
        let waker = NotifyWaker::new();
        tokio::task::spawn_local(listen(self.name.clone(), DB.to_owned(), waker.clone()));
        let observer = self.observer.clone();
        let name = self.name.clone();
        // True simulated time (no skew) for the timeline's facts.
        let event_clock = SimClock::exact(self.driver.clone());
        let mut builder = self
            .config
            .worker_builder(self.index, storage)
            .clock(clock)
            .waker(Arc::new(waker))
            .observer(Arc::new(move |event: &WorkerEvent| {
                if let Some(observation) = from_worker_event(event_clock.now(), &name, event) {
                    observer.push(observation);
                }
            }));
        for kind in self.release().kinds() {
            builder = builder.handler(*kind, self.handler());
        }
        let worker = builder.build()?;
        *self.shutdown.lock().expect("shutdown lock") = Some(worker.shutdown_handle());
        if self.config.variant.drops_jobs_on_shutdown() {
            // The broken shutdown: exit at SIGTERM, whatever is in flight.
            tokio::select! {
                biased;
                _ = self.sigterm.notified() => {}
                _ = worker.run() => {}
            }
        } else {
            let _ = worker.run().await;
        }
        self.exited.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The API-calling handler, saying when it starts: an attempt failed
    /// without a handler start was failed by something else.
    fn handler(&self) -> impl Fn(JobContext) -> api::HandlerFuture + Send + Sync + 'static {
        let (observer, worker) = (self.observer.clone(), self.name.clone());
        let clock = SimClock::exact(self.driver.clone());
        move |ctx: JobContext| {
            observer.push(Observation::HandlerStarted {
                at: clock.now(),
                worker: worker.clone(),
                job: ctx.id(),
                epoch: ctx.epoch(),
            });
            match sections::sections(&ctx) {
                Some(total) => Box::pin(sections::handler(
                    ctx,
                    total,
                    observer.clone(),
                    worker.clone(),
                    clock.clone(),
                )),
                None => Box::pin(api::handler(ctx)),
            }
        }
    }
}

//! The turmoil world: a db host, worker hosts, the API host and a producer,
//! driven step by step through a fault plan, a heal and a liveness phase.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use stuckless_core::{Job, JobId, JobStatus, MemStore, Timestamp};

use crate::api::{self, ApiMode, ApiState, SharedApi};
use crate::check::Limits;
use crate::clock::{DriverTime, SimClock, BASE};
use crate::config::{worker_name, Config, SimBuilder};
use crate::deploy::{Release, RollingDeploy};
use crate::host::{WorkerHost, DB};
use crate::net_store::DbHost;
use crate::observe::{JobRow, Observation, Sink, UpWorker};
use crate::oracle::Oracle;
use crate::outcome::RunOutcome;
use crate::plan::{Direction, Fault, FaultPlan, Swarm, TimedFault};
use crate::workers;
use crate::workload::{self, Extras, RawPath};

mod inject;

const API: &str = "api";

/// How the store words the error of a row it buried because no claim could
/// read it.
const BURIED: &str = "unreadable row";

/// What the driver does at a time: a planned fault, or its self-heal.
#[derive(Clone, Debug)]
enum Action {
    Fault(TimedFault),
    Restart(usize),
    Resume(usize),
    Repair(usize, Direction),
    StopLoss(usize),
    StopDelay(usize),
    DbUp,
    ApiNormal,
    /// The rolling deploy replaces this worker.
    Deploy(usize),
}

struct Driver {
    config: Arc<Config>,
    sim: turmoil::Sim<'static>,
    driver: DriverTime,
    /// Where the hosts and the driver put what they observe.
    observer: Sink,
    /// Drains `observer`: records and judges.
    oracle: Oracle,
    store: Arc<MemStore>,
    api: SharedApi,
    loss: Arc<Mutex<f64>>,
    hosts: Vec<WorkerHost>,
    names: Vec<String>,
    /// Per worker: when a SIGTERM was sent, until its worker exits.
    terminating: BTreeMap<usize, Timestamp>,
    actions: BTreeMap<(u64, u64), Action>,
    next_action: u64,
    injected: BTreeMap<&'static str, u64>,
    producer_done: Arc<AtomicBool>,
    /// Workers the deploy stopped, to start again on the new release as
    /// soon as they have drained.
    deploying: BTreeSet<usize>,
    /// Jobs whose burial was already reported.
    buried: BTreeSet<JobId>,
    /// Per worker, a pause waiting for its next completion write (the first
    /// armed; a second one on the same worker before it fires is dropped).
    armed: BTreeMap<usize, Fault>,
    /// Raised by the db host as a reap reaches it.
    reap_arrived: Arc<AtomicBool>,
    /// Per paused worker whose pause ends at a reap: whether it held an
    /// expired lease at the last look (see [`Driver::end_pauses_at_reaps`]).
    until_reaped: BTreeMap<usize, bool>,
}

impl Driver {
    fn now(&self) -> Timestamp {
        BASE + self.sim.elapsed()
    }

    fn schedule(&mut self, at_ms: u64, action: Action) {
        self.next_action += 1;
        self.actions.insert((at_ms, self.next_action), action);
    }

    fn observe(&self, observation: Observation) {
        self.observer.push(observation);
    }

    /// Hands everything observed so far to the oracle, in order.
    fn drain(&mut self) {
        self.oracle.observe_all(self.observer.drain());
    }

    fn window(&self, who: &str, length: Duration) {
        let now = self.now();
        self.observe(Observation::FaultWindow {
            who: who.to_owned(),
            from: now,
            until: now + length,
        });
    }

    fn rows(&self) -> Vec<JobRow> {
        self.store.jobs().iter().map(JobRow::from).collect()
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Fault(TimedFault {
                fault:
                    fault @ Fault::Pause {
                        worker,
                        on_completion: true,
                        ..
                    },
                ..
            }) => {
                // Only a write from now on fires it.
                self.hosts[worker]
                    .completion_written
                    .store(false, Ordering::SeqCst);
                self.armed.entry(worker).or_insert(fault);
            }
            Action::Fault(TimedFault { fault, .. }) => self.inject(fault),
            Action::Restart(worker) => self.restart(worker),
            Action::Resume(worker) => {
                self.until_reaped.remove(&worker);
                let w = self.names[worker].clone();
                self.sim.release(w.as_str(), DB);
                self.sim.release(w.as_str(), API);
            }
            Action::Repair(worker, direction) => {
                let w = self.names[worker].as_str();
                match direction {
                    Direction::Both => self.sim.repair(w, DB),
                    Direction::ToDb => self.sim.repair_oneway(w, DB),
                    Direction::FromDb => self.sim.repair_oneway(DB, w),
                }
            }
            Action::StopLoss(worker) => {
                let w = self.names[worker].clone();
                self.sim.set_link_fail_rate(w.as_str(), DB, 0.0);
            }
            Action::StopDelay(worker) => {
                let w = self.names[worker].as_str();
                self.sim.set_link_latency(w, DB, self.config.min_latency);
                self.sim
                    .set_link_max_message_latency(w, DB, self.config.max_latency);
            }
            Action::DbUp => {
                if !self.sim.is_host_running(DB) {
                    self.sim.bounce(DB);
                }
            }
            Action::ApiNormal => self.api.lock().expect("api lock").mode = ApiMode::Normal,
            Action::Deploy(worker) => self.deploy(worker),
        }
    }

    /// Moves `worker` to the new release: a running worker is stopped with
    /// SIGTERM and started again once drained ([`Driver::check_exits`]); one
    /// that is down, or already stopping, comes back on it at its restart.
    fn deploy(&mut self, worker: usize) {
        let host = &self.hosts[worker];
        *host.release.lock().expect("release lock") = Release::New;
        let name = self.names[worker].clone();
        self.observe(Observation::Deployed {
            at: self.now(),
            worker: name.clone(),
            kinds: Release::New.kinds().iter().map(|k| (*k).to_owned()).collect(),
        });
        if self.sim.is_host_running(name.as_str()) && !self.terminating.contains_key(&worker) {
            self.terminating.insert(worker, self.now());
            self.deploying.insert(worker);
            if let Some(handle) = host.shutdown.lock().expect("shutdown lock").as_ref() {
                handle.graceful();
            }
            host.sigterm.notify_one();
        }
    }

    fn restart(&mut self, worker: usize) {
        let name = self.names[worker].clone();
        if !self.sim.is_host_running(name.as_str()) {
            self.hosts[worker].exited.store(false, Ordering::SeqCst);
            self.terminating.remove(&worker);
            self.deploying.remove(&worker);
            self.observe(Observation::Restarted {
                at: self.now(),
                worker: name.clone(),
            });
            self.sim.bounce(name.as_str());
        }
    }

    /// Ends every fault: links repaired and released, hosts restarted, the
    /// API normal, wake-ups reliable; clocks keep their offsets but stop
    /// changing.
    fn heal(&mut self) {
        self.actions.clear();
        self.armed.clear();
        self.until_reaped.clear();
        self.observe(Observation::Healed { at: self.now() });
        *self.loss.lock().expect("loss lock") = 0.0;
        self.api.lock().expect("api lock").mode = ApiMode::Normal;
        if !self.sim.is_host_running(DB) {
            self.sim.bounce(DB);
        }
        for worker in 0..self.names.len() {
            let w = self.names[worker].clone();
            self.sim.release(w.as_str(), DB);
            self.sim.release(w.as_str(), API);
            self.sim.repair(w.as_str(), DB);
            self.sim.set_link_fail_rate(w.as_str(), DB, 0.0);
            self.sim.set_link_latency(w.as_str(), DB, self.config.min_latency);
            self.sim
                .set_link_max_message_latency(w.as_str(), DB, self.config.max_latency);
            self.restart(worker);
        }
    }

    /// Checks workers that finished a graceful shutdown (invariant 8) when
    /// nothing disturbed their drain.
    fn check_exits(&mut self) {
        for worker in 0..self.hosts.len() {
            if !self.hosts[worker].exited.swap(false, Ordering::SeqCst) {
                continue;
            }
            let now = self.now();
            let Some(since) = self.terminating.remove(&worker) else {
                continue;
            };
            self.observe(Observation::ShutdownFinished {
                at: now,
                worker: self.names[worker].clone(),
                since,
                jobs: self.rows(),
            });
            if self.deploying.contains(&worker) {
                // The new release starts once the old one has stopped.
                self.restart(worker);
            }
        }
    }

    /// Reports rows the store buried since the last look: a claim moved a
    /// row no claim can read to dead, as Postgres's event log would say.
    fn report_burials<'a>(&mut self, jobs: impl Iterator<Item = &'a Job>) {
        let buried: Vec<(JobId, String)> = jobs.filter_map(buried_by_the_claim).collect();
        self.observe_burials(buried);
    }

    fn observe_burials(&mut self, buried: Vec<(JobId, String)>) {
        for (job, error) in buried {
            if self.buried.insert(job) {
                self.observe(Observation::Buried {
                    at: self.now(),
                    job,
                    error,
                });
            }
        }
    }

    fn sample(&mut self) -> bool {
        // Read in place: cloning every job after every step was a seventh of
        // a run's instructions (callgrind).
        let (rows, buried, running, all_terminal) = self.store.with_jobs(|jobs| {
            let mut rows = Vec::new();
            let mut buried = Vec::new();
            let mut running: BTreeMap<String, u32> = BTreeMap::new();
            let mut all_terminal = true;
            for job in jobs {
                rows.push(JobRow::from(job));
                buried.extend(buried_by_the_claim(job));
                all_terminal &= job.status.is_terminal();
                if job.status == JobStatus::Running {
                    if let Some(owner) = job.lease_owner.as_deref() {
                        *running.entry(owner.to_owned()).or_insert(0) += 1;
                    }
                }
            }
            (rows, buried, running, all_terminal)
        });
        self.observe_burials(buried);
        let concurrency = self.config.timing().concurrency;
        let mut up = Vec::new();
        for worker in 0..self.names.len() {
            let name = self.names[worker].clone();
            if self.sim.is_host_running(name.as_str()) && !self.terminating.contains_key(&worker) {
                up.push(UpWorker {
                    room: running.get(name.as_str()).copied().unwrap_or(0) < concurrency,
                    kinds: self.hosts[worker]
                        .release()
                        .kinds()
                        .iter()
                        .map(|k| (*k).to_owned())
                        .collect(),
                    name,
                });
            }
        }
        self.observe(Observation::Sampled {
            at: self.now(),
            jobs: rows,
            free_capacity: up.iter().any(|w| w.room),
            up,
        });
        all_terminal
    }

    fn step(&mut self) -> Result<(), String> {
        self.sim.step().map_err(|e| e.to_string())?;
        self.driver.set(self.sim.elapsed());
        Ok(())
    }
}

/// A dead job the claim buried as unreadable, with the reason.
fn buried_by_the_claim(job: &Job) -> Option<(JobId, String)> {
    let error = job.last_error.as_deref().filter(|e| e.starts_with(BURIED))?;
    (job.status == JobStatus::Dead).then(|| (job.id, error.to_owned()))
}

/// Runs one world to its end and judges it.
pub(crate) fn run(config: Config) -> RunOutcome {
    let config = Arc::new(config);
    let seed = config.seed;
    let (swarm, plan): (Option<Swarm>, FaultPlan) = match &config.plan {
        Some(plan) => (None, plan.clone()),
        None if config.faults => {
            let (swarm, plan) = FaultPlan::from_seed(seed, config.workers, config.chaos);
            (Some(swarm), plan)
        }
        None => (None, FaultPlan::default()),
    };
    let sim = turmoil::Builder::new()
        .tick_duration(config.tick)
        .simulation_duration(Duration::from_secs(100 * 86_400))
        .min_message_latency(config.min_latency)
        .max_message_latency(config.max_latency)
        .tcp_capacity(4096)
        .rng_seed(seed)
        .build();
    let driver = DriverTime::default();
    let store = Arc::new(MemStore::with_clock(Arc::new(SimClock::exact(driver.clone()))));
    let timing = config.timing();
    confirm_timing(&config, &store);
    let mut oracle = Oracle::new(Limits {
        lease: timing.lease,
        reap_interval: timing.reap_interval,
        poll_interval: timing.poll_interval,
        slack: crate::check::SLACK,
    });
    if config.keep_timeline {
        oracle.recorder.keep_facts();
    }
    let observer = Sink::default();
    let api = ApiState::new(ChaCha8Rng::seed_from_u64(seed ^ 0x4150_4900));
    let loss = Arc::new(Mutex::new(plan.notification_loss_probability));
    let mut d = Driver {
        config: config.clone(),
        sim,
        driver: driver.clone(),
        observer: observer.clone(),
        oracle,
        store: store.clone(),
        api: api.clone(),
        loss: loss.clone(),
        hosts: Vec::new(),
        names: (0..config.workers).map(worker_name).collect(),
        terminating: BTreeMap::new(),
        actions: BTreeMap::new(),
        next_action: 0,
        injected: BTreeMap::new(),
        producer_done: Arc::new(AtomicBool::new(false)),
        deploying: BTreeSet::new(),
        buried: BTreeSet::new(),
        armed: BTreeMap::new(),
        reap_arrived: Arc::new(AtomicBool::new(false)),
        until_reaped: BTreeMap::new(),
    };

    let db = DbHost {
        storage: Arc::new(config.variant.storage(store.clone())),
        clock: Arc::new(SimClock::exact(driver.clone())),
        observer: observer.clone(),
        notification_loss: loss,
        rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed ^ 0x4e4f_5449_4659))),
        reap_arrived: d.reap_arrived.clone(),
    };
    d.sim.host(DB, move || db.clone().serve());
    let api_state = api.clone();
    d.sim.host(API, move || api::serve(api_state.clone()));
    for worker in 0..config.workers {
        let host = WorkerHost::new(
            worker,
            d.names[worker].clone(),
            config.clone(),
            driver.clone(),
            observer.clone(),
        );
        d.hosts.push(host.clone());
        d.sim.host(d.names[worker].as_str(), move || host.clone().run());
    }
    let deploy = config
        .rolling_deploy
        .then(|| RollingDeploy::from_seed(seed, config.workers, config.chaos));
    let extras = Extras {
        new_kind_from: deploy.as_ref().map(|d| d.start),
        poison_row: config.poison_row,
    };
    let schedule = Arc::new(workload::schedule(seed, config.jobs, config.chaos, extras));
    let (producer_clock, done) = (SimClock::exact(driver.clone()), d.producer_done.clone());
    let raw = RawPath {
        store: store.clone(),
        observer: observer.clone(),
    };
    d.sim.host("producer", move || {
        workload::produce(
            schedule.clone(),
            producer_clock.clone(),
            done.clone(),
            raw.clone(),
        )
    });
    for (at, worker) in deploy.map(|d| d.upgrades).unwrap_or_default() {
        d.schedule(at.as_millis() as u64, Action::Deploy(worker));
    }
    for fault in &plan.faults {
        d.schedule(fault.at_ms, Action::Fault(fault.clone()));
    }

    let chaos_end = config.chaos;
    let end = chaos_end + config.liveness_bound();
    let mut next_sample = Duration::ZERO;
    let mut healed: Option<Timestamp> = None;
    let mut error = None;
    let mut finished_early = false;
    // Ended at its first violation: the end-of-run check would judge a run
    // that did not reach its end.
    let mut stopped = false;
    while d.sim.elapsed() < end {
        let now_ms = d.sim.elapsed().as_millis() as u64;
        while let Some(entry) = d.actions.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let action = entry.remove();
            d.apply(action);
        }
        if healed.is_none() && d.sim.elapsed() >= chaos_end {
            d.heal();
            healed = Some(d.now());
        }
        if let Err(e) = d.step() {
            error = Some(e);
            break;
        }
        d.check_exits();
        d.fire_armed();
        d.end_pauses_at_reaps();
        if d.sim.elapsed() >= next_sample {
            next_sample = d.sim.elapsed() + config.sample_every;
            let all_terminal = d.sample();
            if healed.is_some() && all_terminal && d.producer_done.load(Ordering::SeqCst) {
                finished_early = true;
                break;
            }
        }
        d.drain();
        if config.stop_on_violation && !d.oracle.violations().is_empty() {
            stopped = true;
            break;
        }
    }
    let now = d.now();
    let jobs = store.jobs();
    d.report_burials(jobs.iter());
    if healed.is_some() && !finished_early && error.is_none() && !stopped {
        d.observe(Observation::Ended {
            at: now,
            jobs: jobs.iter().map(JobRow::from).collect(),
        });
    }
    d.drain();
    RunOutcome::build(
        &config,
        swarm,
        plan,
        d.sim.elapsed(),
        d.injected,
        &jobs,
        &store,
        &d.oracle,
        &api,
        error,
    )
}

/// Stops the run unless the simulator's [`workers::Timing`] is what its
/// workers really run, and unless the run ends before any finished job is
/// old enough to be pruned: then a job missing from the store is lost, never
/// pruned, and the checkers need not tell the two apart.
fn confirm_timing(config: &Config, store: &Arc<MemStore>) {
    let timing = config.timing();
    let make = || {
        workers::builder(
            &worker_name(0),
            store.clone(),
            workers::rng_seed(config.seed, 0),
            &config.overrides,
        )
    };
    if let Err(e) = timing.confirm(&make(), make()) {
        panic!("{e}");
    }
    if let Some(retention) = timing.shortest_retention() {
        assert!(
            config.longest_run() < retention,
            "a run of up to {:?} outlives the shortest retention ({retention:?}): pruned jobs would look lost",
            config.longest_run()
        );
    }
}

impl SimBuilder {
    /// Runs the world to its end.
    pub fn run(self) -> RunOutcome {
        run(self.config)
    }
}

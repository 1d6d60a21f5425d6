//! The driver's fault injection: a planned fault applied to the world now,
//! its self-heal scheduled, pauses armed on a completion write fired, and
//! pauses that end at a reap ended.

use super::*;

impl Driver {
    /// Injects one fault now and schedules its self-heal.
    pub(super) fn inject(&mut self, fault: Fault) {
        let now_ms = self.sim.elapsed().as_millis() as u64;
        *self.injected.entry(fault.kind()).or_insert(0) += 1;
        let length = fault.duration();
        let end = now_ms + length.as_millis() as u64;
        let name = fault.worker().map(|w| self.names[w].clone());
        // Only faults that took effect go into the picture: a crash of
        // a host that is down, or a second SIGTERM, changes nothing.
        let effective = match &fault {
            Fault::Crash { worker, .. } => self.sim.is_host_running(self.names[*worker].as_str()),
            Fault::Sigterm { worker, .. } => {
                self.sim.is_host_running(self.names[*worker].as_str())
                    && !self.terminating.contains_key(worker)
            }
            Fault::DbRestart { .. } => self.sim.is_host_running(DB),
            _ => true,
        };
        self.observe(Observation::FaultInjected {
            at: self.now(),
            fault: fault.clone(),
            took_effect: effective,
        });
        // A SIGTERM is not a fault to the checkers: a worker must
        // drain cleanly, and invariant 8 checks that it did.
        if let (Some(name), false) = (&name, matches!(fault, Fault::Sigterm { .. })) {
            self.window(name, length);
        }
        match fault {
            Fault::Crash { worker, .. } => {
                if self.sim.is_host_running(self.names[worker].as_str()) {
                    self.sim.crash(self.names[worker].as_str());
                    self.terminating.remove(&worker);
                }
                self.schedule(end, Action::Restart(worker));
            }
            Fault::Pause {
                worker, until_reaped, ..
            } => {
                if until_reaped {
                    self.until_reaped.insert(worker, false);
                }
                let w = self.names[worker].clone();
                self.sim.hold(w.as_str(), DB);
                self.sim.hold(w.as_str(), API);
                self.schedule(end, Action::Resume(worker));
            }
            Fault::Partition {
                worker, direction, ..
            } => {
                let w = self.names[worker].as_str();
                match direction {
                    Direction::Both => self.sim.partition(w, DB),
                    Direction::ToDb => self.sim.partition_oneway(w, DB),
                    Direction::FromDb => self.sim.partition_oneway(DB, w),
                }
                self.schedule(end, Action::Repair(worker, direction));
            }
            Fault::LoseMessages {
                worker, probability, ..
            } => {
                let w = self.names[worker].clone();
                self.sim
                    .set_link_fail_rate(w.as_str(), DB, probability.clamp(0.0, 1.0));
                self.schedule(end, Action::StopLoss(worker));
            }
            Fault::Delay {
                worker, latency_ms, ..
            } => {
                let w = self.names[worker].as_str();
                self.sim
                    .set_link_latency(w, DB, Duration::from_millis(latency_ms));
                self.schedule(end, Action::StopDelay(worker));
            }
            Fault::DbRestart { .. } => {
                self.window("*", length);
                if self.sim.is_host_running(DB) {
                    self.sim.crash(DB);
                }
                self.schedule(end, Action::DbUp);
            }
            Fault::Api { mode, .. } => {
                self.api.lock().expect("api lock").mode = mode;
                self.schedule(end, Action::ApiNormal);
            }
            Fault::Skew { worker, offset_ms } => {
                self.hosts[worker].skew.store(offset_ms * 1000, Ordering::SeqCst);
            }
            Fault::Sigterm { worker, .. } => {
                if self.sim.is_host_running(self.names[worker].as_str())
                    && !self.terminating.contains_key(&worker)
                {
                    self.terminating.insert(worker, self.now());
                    let host = &self.hosts[worker];
                    if let Some(handle) = host.shutdown.lock().expect("shutdown lock").as_ref() {
                        handle.graceful();
                    }
                    host.sigterm.notify_one();
                }
                self.schedule(end, Action::Restart(worker));
            }
        }
    }

    /// Fires each armed pause whose worker wrote a completion in the last
    /// step: the write is still on the wire (a message is delivered at the
    /// earliest one step after it is sent), so the pause holds it.
    pub(super) fn fire_armed(&mut self) {
        let fired: Vec<usize> = self
            .armed
            .keys()
            .copied()
            .filter(|w| self.hosts[*w].completion_written.swap(false, Ordering::SeqCst))
            .collect();
        for worker in fired {
            if let Some(fault) = self.armed.remove(&worker) {
                self.inject(fault);
            }
        }
    }

    /// Ends each pause waiting for a reap if a reap reached the db in the
    /// last step while the paused worker held an expired lease: its held
    /// messages arrive in the next step, while the reap that takes its lease
    /// may still be under way. Then notes which paused workers hold a lease
    /// that will have expired by the next step.
    pub(super) fn end_pauses_at_reaps(&mut self) {
        let reaped = self.reap_arrived.swap(false, Ordering::SeqCst);
        if self.until_reaped.is_empty() {
            return;
        }
        let ending: Vec<usize> = self
            .until_reaped
            .iter()
            .filter(|(_, expired)| reaped && **expired)
            .map(|(worker, _)| *worker)
            .collect();
        for worker in ending {
            self.apply(Action::Resume(worker));
        }
        let soon = self.now() + self.config.tick;
        let expired: BTreeSet<String> = self.store.with_jobs(|jobs| {
            jobs.filter(|j| j.status == JobStatus::Running && j.lease_expires_at.is_some_and(|e| e <= soon))
                .filter_map(|j| j.lease_owner.clone())
                .collect()
        });
        for (worker, held) in self.until_reaped.iter_mut() {
            *held = expired.contains(&self.names[*worker]);
        }
    }
}

//! The test kit's conformance cases, run on the simulator's networked store:
//! every operation crosses turmoil's TCP as core's `Op`/`Reply` to a db host
//! serving a `MemStore` pinned to the case's clock. One fresh world per case.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use stuckless_core::driver::{JobHeartbeat, Op};
use stuckless_core::{Epoch, JobId, MemStore};
use stuckless_sim::net_store::{DbHost, NetStore};
use stuckless_sim::observe::Sink;
use stuckless_testkit::{cases, manual_clock, Case};

/// Runs `case` in a world of its own: a db host and one client host.
fn run_over_the_network(case: Case) {
    let clock = manual_clock();
    let store = MemStore::new(clock.clone()).with_happy_path_events(case.happy_path_events);
    let db = DbHost {
        storage: Arc::new(store),
        clock: Arc::new(clock.clone()),
        // Collects the exchanges' observations; nobody drains or judges
        // them (the case moves time by hand).
        observer: Sink::default(),
        notification_loss: Arc::new(Mutex::new(0.0)),
        rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(0))),
        reap_arrived: Default::default(),
    };
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(3_600))
        .rng_seed(1)
        .build();
    sim.host("db", move || db.clone().serve());
    sim.client("client", async move {
        case.run(Arc::new(NetStore::remote("client", "db")), clock).await;
        Ok(())
    });
    sim.run()
        .unwrap_or_else(|e| panic!("{}::{} over the network: {e}", case.noun, case.name));
}

#[test]
fn every_kit_case_passes_over_the_simulated_network() {
    let all = cases();
    assert!(!all.is_empty(), "the kit has no cases");
    let mut failed = Vec::new();
    for case in &all {
        let result = std::panic::catch_unwind(|| run_over_the_network(*case));
        if let Err(panic) = result {
            failed.push(format!("{}::{}: {}", case.noun, case.name, message(&*panic)));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} conformance cases failed over the network:\n  {}",
        failed.len(),
        all.len(),
        failed.join("\n  ")
    );
}

/// Guards the gap this test found: serde read a JSON-null progress as `None`,
/// so over any wire a heartbeat storing a JSON null kept the old progress.
#[test]
fn a_json_null_progress_survives_the_wire() {
    let op = Op::JobHeartbeat(JobHeartbeat {
        id: JobId(1),
        epoch: Epoch(1),
        lease: Duration::from_secs(30),
        progress: Some(Value::Null),
    });
    let back: Op = serde_json::from_str(&serde_json::to_string(&op).unwrap()).unwrap();
    let Op::JobHeartbeat(back) = back else {
        panic!("a heartbeat came back as {back:?}")
    };
    assert_eq!(back.progress, Some(Value::Null));
}

fn message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "(a panic without a message)".to_owned(),
    }
}

//! Prints each broken variant's catch rate over a batch of standard seeds:
//! `cargo run --release -p stuckless-sim --example catch_rates -- [SEEDS] [THREADS] [VARIANT…]`.

use std::time::Instant;

use anyhow::Context;
use stuckless_sim::catch::measure;
use stuckless_sim::{SimBuilder, Variant};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seeds: u64 = args.next().map_or(Ok(100), |s| s.parse()).context("SEEDS")?;
    let threads: usize = args.next().map_or(Ok(1), |s| s.parse()).context("THREADS")?;
    let named: Vec<Variant> = args
        .map(|name| Variant::parse(&name).with_context(|| format!("unknown variant {name:?}")))
        .collect::<anyhow::Result<_>>()?;
    let variants = if named.is_empty() {
        Variant::BROKEN.to_vec()
    } else {
        named
    };
    let seeds: Vec<u64> = (0..seeds).collect();
    for variant in variants {
        // Wall time only reports how long the measurement took.
        let started = Instant::now();
        let rate = measure(variant, &seeds, threads, |seed| SimBuilder::new().seed(seed));
        println!("{}  ({:.0}s)", rate.line(), started.elapsed().as_secs_f64());
        if std::env::var_os("CATCH_SEEDS").is_some() {
            println!("  caught: {:?}", rate.caught);
        }
    }
    Ok(())
}

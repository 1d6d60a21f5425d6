//! `make sim`: run a randomized batch of seeds and print a summary, or replay
//! one seed verbosely.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use stuckless_sim::batch::{self, Flow, Shard};
use stuckless_sim::processes::{self, SeedRecord};
use stuckless_sim::{FaultPlan, SimBuilder, Summary, Variant};

/// Deterministic simulation of stuckless.
#[derive(Parser, Debug)]
#[command(name = "stuckless-sim")]
struct Args {
    /// Run this many seeds, starting at --first-seed.
    #[arg(long, default_value_t = 200)]
    seeds: u64,
    /// First seed of a batch.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Replay one seed (with --verbose: print its trace).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the trace and the outcome of each run.
    #[arg(long)]
    verbose: bool,
    /// Broken variant to run (no_reaper, unfenced_complete, claim_read_then_write,
    /// no_heartbeat, shutdown_drops_jobs, reaper_ignores_completion, no_time_limit,
    /// kind_blind_claims, poison_row, batch_acks_unwritten, claim_wipes_checkpoint).
    #[arg(long, default_value = "stuckless")]
    variant: String,
    /// With --scenario seed_document: run stuckless itself on that scenario.
    #[arg(long)]
    stuckless: bool,
    /// Scenario: standard (4 workers, 200 jobs, 10 min), small, seed_document.
    #[arg(long, default_value = "standard")]
    scenario: String,
    /// Chaos phase length in simulated seconds (overrides the scenario's).
    #[arg(long)]
    chaos_secs: Option<u64>,
    /// Jobs (overrides the scenario's).
    #[arg(long)]
    jobs: Option<usize>,
    /// Run this fault plan (JSON, or a fixture with a "plan" field) instead of the seed's.
    #[arg(long)]
    plan: Option<PathBuf>,
    /// Write the (single) run as a regression fixture to this file, expecting
    /// what it showed: pass or violation.
    #[arg(long)]
    save_fixture: Option<PathBuf>,
    /// Why the fixture is kept (with --save-fixture).
    #[arg(long, default_value = "")]
    why: String,
    /// Stop the batch at the first failing seed.
    #[arg(long)]
    fail_fast: bool,
    /// Draw the (single) run as an SVG timeline to this file: one lane per
    /// worker, a bar per attempt, faults marked, waits shown. Needs --seed.
    #[arg(long, requires = "seed")]
    timeline: Option<PathBuf>,
    /// Threads running seeds at once. Default 1: worlds on several threads
    /// share tokio's task-id counter, so a seed's run can differ by a few
    /// operations from its run alone (see docs/simulator.md, Determinism);
    /// more threads are faster and print in the same order.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Child processes running seeds at once, each a single-threaded run of
    /// its share: results identical to one thread's, printed in seed order.
    /// Default: one per core. A single seed, --verbose, --timeline,
    /// --save-fixture and --threads above 1 run in this process.
    #[arg(long)]
    processes: Option<usize>,
    /// Internal: run as child k of n of a multi-process batch and print one
    /// JSON record per seed (see `stuckless_sim::processes`).
    #[arg(long, value_parser = Shard::parse, hide = true)]
    child: Option<Shard>,
    /// Run only this machine's part of the batch, k of n (e.g. 2/4): seeds at
    /// positions k-1, k-1+n, … Merge the shards' --summary-json files with --merge.
    #[arg(long, value_parser = Shard::parse, default_value = "1/1")]
    shard: Shard,
    /// Print one line per seed (seed, verdict, storage ops, trace hash), in
    /// seed order: two batches can be diffed seed by seed.
    #[arg(long)]
    per_seed: bool,
    /// Also write the summary as JSON to this file (for --merge).
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Print the summary of these --summary-json files (one per shard) and
    /// run nothing.
    #[arg(long, num_args = 1.., conflicts_with_all = ["seed", "verbose", "timeline", "save_fixture"])]
    merge: Vec<PathBuf>,
}

fn builder(args: &Args, seed: u64) -> anyhow::Result<SimBuilder> {
    let variant =
        Variant::parse(&args.variant).with_context(|| format!("unknown variant {:?}", args.variant))?;
    let mut b = match args.scenario.as_str() {
        "standard" => SimBuilder::new(),
        "small" => SimBuilder::small(),
        "seed_document" => SimBuilder::seed_document(),
        other => bail!("unknown scenario {other:?}"),
    };
    // The seed document's scenario runs its own broken design unless a
    // variant is named.
    if args.scenario != "seed_document" || args.variant != "stuckless" || args.stuckless {
        b = b.variant(variant);
    }
    if let Some(s) = args.chaos_secs {
        b = b.chaos(Duration::from_secs(s));
    }
    if let Some(j) = args.jobs {
        b = b.jobs(j);
    }
    if let Some(path) = &args.plan {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)?;
        let plan: FaultPlan = serde_json::from_value(value.get("plan").cloned().unwrap_or(value))?;
        b = b.plan(plan);
    }
    Ok(b.seed(seed)
        .keep_trace(args.verbose)
        .keep_timeline(args.timeline.is_some()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.merge.is_empty() {
        return merge(&args.merge);
    }
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => args
            .shard
            .of(&(args.first_seed..args.first_seed + args.seeds).collect::<Vec<_>>()),
    };
    // Check the arguments once, before any thread starts.
    builder(&args, seeds.first().copied().unwrap_or(0))?;
    if let Some(child) = args.child {
        return run_child(&args, &seeds, child);
    }
    let threads = args.threads;
    let processes = args
        .processes
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let in_children = processes > 1
        && seeds.len() > 1
        && threads == 1
        && !args.verbose
        && args.timeline.is_none()
        && args.save_fixture.is_none();
    let progress = std::io::stderr().is_terminal() && seeds.len() > 1;
    let mut failed = 0;
    let mut done = 0;
    let mut error = None;
    // Wall time only measures the runner's speed (seeds/s, simulated/wall);
    // nothing inside a simulated run reads it.
    let started = Instant::now();
    let mut each = |record: &SeedRecord| {
        done += 1;
        if args.per_seed {
            println!(
                "seed {} {} ops {} trace {:016x} owed expired {:.1}s/{:.0}s due {:.1}s/{:.0}s",
                record.seed,
                if record.passed { "pass" } else { "FAIL" },
                record.ops,
                record.trace_hash,
                record.owed.expired.as_secs_f64(),
                record.owed.expired_bound.as_secs_f64(),
                record.owed.due.as_secs_f64(),
                record.owed.due_bound.as_secs_f64()
            );
        }
        if let Some(report) = &record.failure_report {
            failed += 1;
            if progress {
                eprintln!();
            }
            eprint!("{report}");
        }
        if progress {
            let width = 40;
            let filled = done * width / seeds.len();
            eprint!(
                "\r[{}{}] {done}/{} seeds, {failed} failed",
                "#".repeat(filled),
                " ".repeat(width - filled),
                seeds.len(),
            );
        }
        if args.fail_fast && !record.passed {
            Flow::Stop
        } else {
            Flow::Continue
        }
    };
    let summary = if in_children {
        let exe = std::env::current_exe().context("finding this binary to start child processes")?;
        let passed_on: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        processes::run(&exe, &passed_on, seeds.len(), processes, &mut each)?
    } else {
        let mut position = 0;
        batch::run(
            &seeds,
            threads,
            |seed| builder(&args, seed).expect("checked before the batch"),
            |outcome| {
                if let Err(e) = report_one(&args, outcome) {
                    error = Some(e);
                    return Flow::Stop;
                }
                position += 1;
                each(&SeedRecord::of(position - 1, outcome))
            },
        )
    };
    if progress {
        eprintln!();
    }
    if let Some(e) = error {
        return Err(e);
    }
    if let Some(path) = &args.summary_json {
        std::fs::write(path, serde_json::to_string(&summary)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{}", summary.render(Some(started.elapsed())));
    println!(
        "runners          {}, shard {}/{}",
        if in_children {
            format!("{} processes", processes.min(seeds.len()))
        } else {
            format!("{threads} thread(s)")
        },
        args.shard.index,
        args.shard.count
    );
    fail_if_any(&summary)
}

/// Runs this child's share of the batch on one thread and prints a
/// [`SeedRecord`] per seed. A failing seed is reported, not an error: the
/// parent decides what it means.
fn run_child(args: &Args, seeds: &[u64], child: Shard) -> anyhow::Result<()> {
    let positions: Vec<usize> = (0..seeds.len())
        .filter(|p| *p as u64 % child.count == child.index - 1)
        .collect();
    let mine: Vec<u64> = positions.iter().map(|p| seeds[*p]).collect();
    let mut out = std::io::stdout().lock();
    let mut next = positions.iter();
    let mut error = None;
    batch::run(
        &mine,
        1,
        |seed| builder(args, seed).expect("checked before the batch"),
        |outcome| {
            let position = *next.next().expect("one position per seed");
            match SeedRecord::of(position, outcome).write_line(&mut out) {
                Ok(()) => Flow::Continue,
                Err(e) => {
                    error = Some(e);
                    Flow::Stop
                }
            }
        },
    );
    match error {
        // The parent stopped reading (it was told to stop at a failure).
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Some(e) => Err(e).context("writing a seed record"),
        None => Ok(()),
    }
}

/// Prints one outcome's trace, timeline and fixture as asked.
fn report_one(args: &Args, outcome: &stuckless_sim::RunOutcome) -> anyhow::Result<()> {
    if args.verbose {
        if let Some(trace) = &outcome.trace {
            print!("{trace}");
        }
        println!("{}", serde_json::to_string_pretty(&outcome.plan)?);
        println!(
            "seed {} simulated {:.0}s jobs {} status {:?} ops {} trace {:016x}",
            outcome.seed,
            outcome.simulated.as_secs_f64(),
            outcome.jobs,
            outcome.by_status,
            outcome.ops,
            outcome.trace_hash
        );
    }
    if let (Some(path), Some(timeline)) = (&args.timeline, &outcome.timeline) {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, stuckless_timeline::render_svg(timeline))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "timeline: {} ({} attempts, {} marks, {} waits)",
            path.display(),
            timeline.attempts.len(),
            timeline.marks.len(),
            timeline.waits.len()
        );
    }
    if let Some(path) = &args.save_fixture {
        let fixture = stuckless_sim::Fixture {
            why: args.why.clone(),
            scenario: outcome.scenario.clone(),
            seed: outcome.seed,
            variant: outcome.variant,
            expect: if outcome.passed() {
                stuckless_sim::Expect::Pass
            } else {
                stuckless_sim::Expect::Violation
            },
            plan: outcome.plan.clone(),
        };
        std::fs::write(path, serde_json::to_string_pretty(&fixture)? + "\n")?;
    }
    Ok(())
}

/// Prints the merged summary of shards' --summary-json files.
fn merge(paths: &[PathBuf]) -> anyhow::Result<()> {
    let mut summary = Summary::default();
    for path in paths {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let shard: Summary = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a --summary-json file", path.display()))?;
        summary.merge(&shard);
    }
    print!("{}", summary.render(None));
    fail_if_any(&summary)
}

fn fail_if_any(summary: &Summary) -> anyhow::Result<()> {
    if !summary.failed_seeds.is_empty() {
        bail!(
            "{} seed(s) failed: {:?}",
            summary.failed_seeds.len(),
            summary.failed_seeds
        );
    }
    Ok(())
}

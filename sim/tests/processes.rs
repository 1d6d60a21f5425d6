//! `make sim` on every core: a batch dealt to child processes prints exactly
//! what one thread prints, seed by seed, in the same order.

use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stuckless-sim"))
        .args(args)
        .output()
        .expect("running stuckless-sim")
}

/// The lines of a batch's output that must not depend on how it was run:
/// everything but the speed and runner lines.
fn verdicts(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.starts_with("speed") && !l.starts_with("runners"))
        .map(str::to_string)
        .collect()
}

/// Seeds 236–243 include seed 240, whose run once depended on the tokio
/// task ids earlier worlds in the same process had used (`align_task_ids`).
#[test]
fn three_processes_print_what_one_thread_prints() {
    let batch = ["--first-seed", "236", "--seeds", "8", "--per-seed"];
    let one = sim(&[&batch[..], &["--processes", "1"]].concat());
    let three = sim(&[&batch[..], &["--processes", "3"]].concat());
    assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
    assert!(
        three.status.success(),
        "{}",
        String::from_utf8_lossy(&three.stderr)
    );
    let (one_lines, three_lines) = (verdicts(&one), verdicts(&three));
    let per_seed = one_lines.iter().filter(|l| l.starts_with("seed ")).count();
    assert_eq!(per_seed, 8, "one line per seed:\n{}", one_lines.join("\n"));
    assert_eq!(one_lines, three_lines);
    assert!(String::from_utf8_lossy(&three.stdout).contains("runners          3 processes"));
}

#[test]
fn a_failing_seed_in_a_child_fails_the_batch_with_its_replay_command() {
    let out = sim(&[
        "--variant",
        "no_reaper",
        "--seeds",
        "4",
        "--processes",
        "2",
        "--fail-fast",
    ]);
    assert!(!out.status.success(), "a broken variant must fail the batch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("replay: make sim SEED="), "{stderr}");
}

//! Every subcommand, given bad arguments, an unknown job id or an unreachable
//! database, says what is wrong and exits non-zero.

mod common;

use common::*;
use stuckless_tests::TestDb;

fn fails_with(o: &std::process::Output, needle: &str, what: &str) {
    assert!(!o.status.success(), "{what}: must fail; stdout:\n{}", stdout(o));
    let err = stderr(o);
    assert!(
        err.contains(needle),
        "{what}: stderr must mention {needle:?}:\n{err}"
    );
}

#[test]
fn bad_arguments_are_refused_before_anything_happens() {
    let cases: &[(&[&str], &str)] = &[
        (&["requeue", "abc"], "invalid value 'abc'"),
        (&["cancel"], "required"),
        (&["diagnose", "0"], "job ids are positive"),
        (&["diagnose", "-5"], "unexpected argument"),
        (&["diagnose", "1", "--now", "yesterday"], "invalid --now"),
        (&["enqueue", "{}"], "--kind"),
        (&["enqueue", "--kind", "k", "{not json"], "not valid JSON"),
        (&["enqueue", "--kind", "bad kind!", "{}"], "invalid kind"),
        (
            &["enqueue", "--kind", "k", "--max-attempts", "0", "{}"],
            "max_attempts",
        ),
        (&["reap", "--limit", "lots"], "invalid value"),
        (&["stats", "--stale-after", "5 parsecs"], "invalid duration"),
        (&["workers", "--stale-after", "x"], "invalid duration"),
        (&["worker", "--lease", "forever"], "invalid duration"),
        (
            &["worker", "--lease", "2400h"],
            "invalid lease: must be at most 24h",
        ),
        (&["worker", "--lease", "2d"], "invalid lease: must be at most 24h"),
        (&["worker", "--default-timeout", "8d"], "between 1µs and 7d"),
        (&["worker", "--default-timeout", "never"], "invalid duration"),
        (&["worker", "--kind-timeout", "report=0s"], "invalid kind timeout"),
        (&["worker", "--retention-dead", "1mo"], "invalid duration"),
        (
            &["worker", "--no-prune", "--retention-succeeded", "2d"],
            "cannot be used with",
        ),
        (
            &["enqueue", "--kind", "k", "--timeout", "8d", "{}"],
            "invalid timeout",
        ),
        (
            &["enqueue", "--kind", "k", "--timeout", "soon", "{}"],
            "invalid duration",
        ),
        (&["prune", "--limit", "0"], "--limit must be at least 1"),
        (&["prune", "--retention-dead", "x"], "invalid duration"),
        (&["worker", "--handler", "report=teleport"], "unknown handler"),
        (
            &["worker", "--concurrency", "0"],
            "concurrency must be at least 1",
        ),
        (
            &["worker", "--lease", "5s", "--heartbeat-interval", "10s"],
            "shorter than the lease",
        ),
        (&["worker", "--queues", "bad queue"], "invalid queue"),
        (&["worker", "--kind-timeout", "report"], "KIND=VALUE"),
        (&["migrate", "--frobnicate"], "unexpected argument"),
        (&["bench", "--jobs", "many"], "invalid value"),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, needle) in cases {
        // Against a dead URL: argument errors must come first.
        fails_with(&run(DEAD_URL, args), needle, &format!("{args:?}"));
    }
    let o = std::process::Command::new(BIN)
        .args(["stats"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    fails_with(&o, "set DATABASE_URL", "no database configured");
}

#[test]
fn an_unreachable_database_is_named_with_host_and_port() {
    let commands: &[&[&str]] = &[
        &["migrate"],
        &["enqueue", "--kind", "k", "{}"],
        &["diagnose", "1"],
        &["reap"],
        &["prune"],
        &["requeue", "1"],
        &["cancel", "1"],
        &["stats"],
        &["workers"],
        &["worker", "--port", "0"],
        &["bench", "--jobs", "1"],
    ];
    for args in commands {
        fails_with(
            &run(DEAD_URL, args),
            "cannot reach Postgres at 127.0.0.1:1",
            &format!("{args:?}"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_job_ids_are_reported_as_such() {
    let db = TestDb::new().await;
    let url = db.url().to_owned();
    for cmd in ["diagnose", "requeue", "cancel"] {
        let o = tokio::task::spawn_blocking({
            let url = url.clone();
            move || run(&url, &[cmd, "424242"])
        })
        .await
        .unwrap();
        fails_with(&o, "no job with id 424242", cmd);
    }
}

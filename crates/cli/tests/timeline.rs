//! `stuckless timeline` against a real database: jobs set up in known states
//! with SQL, the binary run, the SVG's structure checked.

mod common;

use common::*;
use stuckless_tests::TestDb;

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Four jobs, times relative to the database's now():
/// 1. succeeded on w-a (one bar, from the row);
/// 2. reaped from w-b, then claimed again by w-a and still running (two bars,
///    the first with an unlogged claim; a reap mark on w-b);
/// 3. queued, due, never claimed (a wait, no bar);
/// 4. failed once on w-c, now in backoff (one bar, no wait: not due).
const SETUP: &str = r#"
insert into stuckless.jobs (id, queue, kind, payload, run_at, status, attempt, max_attempts, epoch,
    lease_owner, lease_expires_at, claimed_at, heartbeat_at, created_at, updated_at, finished_at)
overriding system value values
 (1, 'default', 'noop', '{}', now() - interval '60 s', 'succeeded', 1, 5, 1,
  'w-a', null, now() - interval '50 s', now() - interval '45 s', now() - interval '60 s', now() - interval '40 s', now() - interval '40 s'),
 (2, 'default', 'noop', '{}', now() - interval '30 s', 'running', 2, 5, 2,
  'w-a', now() + interval '60 s', now() - interval '20 s', now() - interval '5 s', now() - interval '90 s', now() - interval '5 s', null),
 (3, 'default', 'noop', '{}', now() - interval '10 s', 'queued', 0, 5, 0,
  null, null, null, null, now() - interval '12 s', now() - interval '12 s', null),
 (4, 'default', 'noop', '{}', now() + interval '100 s', 'queued', 1, 5, 1,
  'w-c', null, now() - interval '35 s', null, now() - interval '40 s', now() - interval '25 s', null);
insert into stuckless.job_events (job_id, at, kind, epoch, attempt, worker_id, detail) values
 (2, now() - interval '30 s', 'reaped', 1, 1, 'w-b',
  'lease expired at ' || to_char((now() - interval '35 s') at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || ' (owner w-b)'),
 (4, now() - interval '25 s', 'retried', 1, 1, 'w-c', 'boom');
"#;

#[test]
fn timeline_draws_lanes_bars_reaps_and_waits_from_the_database() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(TestDb::new());
    rt.block_on(sqlx::raw_sql(SETUP).execute(db.pool())).unwrap();
    let out = std::env::temp_dir().join(format!("stuckless-timeline-{}.svg", std::process::id()));
    let o = run(
        db.url(),
        &[
            "timeline",
            "--since",
            "5m",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let svg = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);

    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    // Lanes: the workers seen as lease owners or in events, and only those.
    assert_eq!(count(&svg, "data-lane="), 3, "{svg}");
    for w in ["w-a", "w-b", "w-c"] {
        assert!(svg.contains(&format!(r#"data-lane="{w}""#)), "lane {w}");
    }
    // Bars: 1 (job 1) + 2 (job 2) + 1 (job 4).
    assert_eq!(count(&svg, r#"class="bar "#), 4);
    assert_eq!(report["attempts"], 4);
    assert_eq!(count(&svg, r#"class="bar succeeded" data-job="1""#), 1);
    assert_eq!(
        count(&svg, r#"class="bar reaped" data-job="2" data-epoch="1""#),
        1
    );
    assert_eq!(
        count(&svg, r#"class="bar unfinished" data-job="2" data-epoch="2""#),
        1
    );
    assert_eq!(count(&svg, r#"class="bar retried" data-job="4""#), 1);
    // The reaped attempt's claim was not logged, and the picture says so.
    assert_eq!(report["inferred_starts"], 1);
    assert!(svg.contains("claim not logged"));
    // One reap, marked.
    assert_eq!(count(&svg, r#"class="mark reap""#), 1);
    // Waits: job 2 before the reap and before its new claim, job 3 since due;
    // job 4's backoff is not a wait.
    assert_eq!(count(&svg, r#"class="wait" data-job="2""#), 2, "{svg}");
    assert_eq!(count(&svg, r#"class="wait" data-job="3""#), 1);
    assert_eq!(count(&svg, r#"class="wait" data-job="4""#), 0);
    assert!(svg.contains("reaped, waiting for a claim"));
    assert!(svg.contains("waiting for the reaper"));
    for tag in ["svg", "g", "text", "title"] {
        let opened = count(&svg, &format!("<{tag} ")) + count(&svg, &format!("<{tag}>"));
        assert_eq!(opened, count(&svg, &format!("</{tag}>")), "<{tag}> balanced");
    }
    rt.block_on(db.cleanup());
}

#[test]
fn a_bad_since_is_refused_before_connecting() {
    for (args, needle) in [
        (&["timeline", "--since", "yesterday"][..], "invalid --since"),
        (
            &["timeline", "--since", "2026-13-01T00:00:00Z"][..],
            "invalid --since",
        ),
        (
            &["timeline", "--since", "5m", "--until", "soon"][..],
            "invalid --until",
        ),
        (&["timeline"][..], "--since"),
    ] {
        // A dead URL: the refusal must come before any connection attempt.
        let o = run(DEAD_URL, args);
        assert!(!o.status.success(), "{args:?} must fail");
        let err = stderr(&o);
        assert!(
            err.contains(needle),
            "{args:?}: stderr must mention {needle:?}:\n{err}"
        );
        assert!(!err.contains("connect"), "{args:?} tried the database:\n{err}");
    }
}

#[test]
fn since_after_until_is_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(TestDb::new());
    let o = run(
        db.url(),
        &["timeline", "--since", "1m", "--until", "5m", "--out", "/dev/null"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("must be before --until"), "{}", stderr(&o));
    rt.block_on(db.cleanup());
}

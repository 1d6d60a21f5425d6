//! The rendered SVG's structure for a fixed run covering every element kind.

use stuckless_timeline::{render_svg, Attempt, Mark, MarkKind, Outcome, Timeline, Wait};

const S: i64 = 1_000_000;

fn fixed_run() -> Timeline {
    let attempt = |lane: &str, job, epoch, start, end, outcome| Attempt {
        lane: lane.into(),
        job_id: job,
        epoch,
        attempt: epoch as i32,
        start: start * S,
        end: end * S,
        outcome,
        note: None,
    };
    let mark = |lane: Option<&str>, kind, at, end: Option<i64>, note: Option<&str>| Mark {
        lane: lane.map(Into::into),
        kind,
        at: at * S,
        end: end.map(|e| e * S),
        note: note.map(Into::into),
    };
    Timeline {
        title: "seed 7 <fixed>".into(),
        start: 0,
        end: 100 * S,
        lanes: vec!["worker-1".into(), "worker-2".into()],
        attempts: vec![
            attempt("worker-1", 1, 1, 2, 40, Outcome::Reaped),
            attempt("worker-1", 2, 1, 3, 9, Outcome::Succeeded),
            attempt("worker-2", 1, 2, 47, 60, Outcome::Succeeded),
            attempt("worker-2", 3, 1, 50, 70, Outcome::Retried),
            attempt("worker-2", 3, 2, 75, 100, Outcome::Unfinished),
        ],
        marks: vec![
            mark(Some("worker-1"), MarkKind::Crash, 10, None, Some("SIGKILL")),
            mark(Some("worker-1"), MarkKind::Pause, 20, Some(35), None),
            mark(None, MarkKind::DatabaseRestart, 55, None, None),
            mark(None, MarkKind::Reap, 45, None, Some("job 1")),
            mark(Some("worker-2"), MarkKind::StaleWriteRejected, 61, None, None),
        ],
        waits: vec![Wait {
            job_id: 1,
            start: 40 * S,
            end: 47 * S,
            reason: "reaped, waiting for a claim".into(),
        }],
    }
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn every_attempt_mark_and_wait_is_drawn_with_a_tooltip() {
    let svg = render_svg(&fixed_run());
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(count(&svg, r#"class="bar "#), 5);
    assert_eq!(count(&svg, r#"class="bar succeeded""#), 2);
    assert_eq!(count(&svg, r#"class="bar reaped""#), 1);
    assert_eq!(count(&svg, r#"class="mark "#), 5);
    assert_eq!(count(&svg, r#"class="wait""#), 1);
    assert_eq!(count(&svg, r#"data-lane="#), 2);
    // Every bar, mark and wait explains itself on hover.
    assert_eq!(count(&svg, "<title>"), 5 + 5 + 1);
    // The title was escaped, not injected.
    assert!(svg.contains("seed 7 &lt;fixed&gt;"));
}

#[test]
fn tags_balance() {
    let svg = render_svg(&fixed_run());
    for tag in ["g", "text", "title", "rect"] {
        let opened = count(&svg, &format!("<{tag} ")) + count(&svg, &format!("<{tag}>"));
        let self_closed = svg
            .split(&format!("<{tag} "))
            .skip(1)
            .filter(|rest| rest.split('>').next().is_some_and(|t| t.ends_with('/')))
            .count();
        let closed = count(&svg, &format!("</{tag}>"));
        assert_eq!(opened - self_closed, closed, "<{tag}> is unbalanced");
    }
}

#[test]
fn overlapping_attempts_on_one_worker_get_separate_rows() {
    let svg = render_svg(&fixed_run());
    let ys: Vec<&str> = svg
        .lines()
        .filter(|l| {
            l.contains(r#"data-job="1" data-epoch="1""#) || l.contains(r#"data-job="2" data-epoch="1""#)
        })
        .map(|l| l.split(" y=\"").nth(1).unwrap().split('"').next().unwrap())
        .collect();
    assert_eq!(ys.len(), 2);
    assert_ne!(ys[0], ys[1], "concurrent attempts must not overdraw each other");
}

#[test]
fn same_input_same_bytes() {
    assert_eq!(render_svg(&fixed_run()), render_svg(&fixed_run()));
    insta::assert_snapshot!(render_svg(&fixed_run()));
}

//! The timeline picture of a fixed small seed: its structure matches what
//! the oracle saw, its faults are marked, and it is deterministic.

use stuckless_sim::SimBuilder;
use stuckless_timeline::render_svg;

/// Seed 13 of the small scenario injects db restarts, partitions, pauses and
/// SIGTERMs (see `make sim SEED=13 SIM_ARGS="--scenario small"`).
const SEED: u64 = 13;

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn a_fixed_seed_draws_a_well_formed_timeline() {
    let outcome = SimBuilder::small().seed(SEED).keep_timeline(true).run();
    assert!(outcome.passed(), "{}", outcome.failure_report());
    let timeline = outcome.timeline.as_ref().expect("timeline kept");
    let svg = render_svg(timeline);

    assert!(
        svg.starts_with("<svg"),
        "not an svg: {}",
        &svg[..40.min(svg.len())]
    );
    assert!(svg.trim_end().ends_with("</svg>"));
    // One lane per worker host of the small scenario (3).
    assert_eq!(count(&svg, "data-lane="), 3);
    for w in ["w1", "w2", "w3"] {
        assert!(svg.contains(&format!(r#"data-lane="{w}""#)), "lane {w} missing");
    }
    // One bar per claim the db answered.
    assert!(
        outcome.claims >= 40,
        "every one of 40 jobs is claimed at least once"
    );
    assert_eq!(count(&svg, r#"class="bar "#), outcome.claims);
    assert_eq!(timeline.attempts.len(), outcome.claims);
    // A passed run ends with every job terminal: no bar is left unfinished,
    // and each job has exactly one successful, dead or cancelled attempt at most.
    assert_eq!(count(&svg, r#"class="bar unfinished""#), 0);
    assert!(count(&svg, r#"class="bar succeeded""#) > 0);

    // The plan's faults are marked.
    let kinds: Vec<&str> = outcome.plan.faults.iter().map(|f| f.fault.kind()).collect();
    assert!(kinds.contains(&"db_restart") && kinds.contains(&"partition"));
    assert!(svg.contains(r#"class="mark database_restart""#));
    assert!(svg.contains(r#"class="mark partition""#));
    assert!(svg.contains(r#"class="mark pause""#));
    assert!(svg.contains(r#"class="mark sigterm""#));
    // Every worker a SIGTERM or crash took down comes back: restarts drawn.
    assert!(svg.contains(r#"class="mark restart""#));

    // Tags balance: every opened element is closed or self-closing.
    for tag in ["svg", "g", "text", "title", "style"] {
        let opened = count(&svg, &format!("<{tag} ")) + count(&svg, &format!("<{tag}>"));
        let closed = count(&svg, &format!("</{tag}>"));
        assert_eq!(opened, closed, "<{tag}> opened {opened} closed {closed}");
    }
    let rects = count(&svg, "<rect ");
    assert_eq!(
        rects,
        count(&svg, "</rect>")
            + svg
                .split("<rect ")
                .skip(1)
                .filter(|r| r.split('>').next().unwrap_or("").ends_with('/'))
                .count(),
        "every rect closes"
    );
    // Waits are due spans only, inside the run.
    for wait in &timeline.waits {
        assert!(wait.start < wait.end && wait.start >= timeline.start && wait.end <= timeline.end);
    }
}

#[test]
fn the_same_seed_draws_the_same_bytes() {
    let a = SimBuilder::small().seed(SEED).keep_timeline(true).run();
    let b = SimBuilder::small().seed(SEED).keep_timeline(true).run();
    let (a, b) = (
        render_svg(a.timeline.as_ref().unwrap()),
        render_svg(b.timeline.as_ref().unwrap()),
    );
    assert!(a.len() > 5_000, "picture too small to mean anything");
    assert!(a == b, "seed {SEED}: pictures differ");
}

#[test]
fn keeping_the_timeline_does_not_change_the_run() {
    let plain = SimBuilder::small().seed(SEED).run();
    let drawn = SimBuilder::small().seed(SEED).keep_timeline(true).run();
    assert!(plain.timeline.is_none());
    assert_eq!(plain.trace_hash, drawn.trace_hash);
}

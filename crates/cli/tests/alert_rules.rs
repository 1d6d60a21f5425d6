//! `docs/alerts/stuckless-rules.yml`: valid YAML in Prometheus's rule-file
//! shape, every expression naming only metric families the worker really
//! exports (read from a rendered /metrics with every family present), and,
//! when `promtool` is installed, accepted by `promtool check rules`.
//!
//! Without promtool this test says so on stderr and checks the YAML only;
//! with `STUCKLESS_REQUIRE_PROMTOOL=1` a missing promtool fails it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use stuckless_cli::gauges::{QueueDepth, QueueSnapshot, Unhandled};
use stuckless_cli::metrics::Metrics;
use yaml_rust2::{Yaml, YamlLoader};

fn rules_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/alerts/stuckless-rules.yml")
}

/// Every sample name /metrics can show, with histogram and counter suffixes.
fn exported() -> BTreeSet<String> {
    let metrics = Metrics::for_queues(&["default".to_owned()]);
    let snapshot = QueueSnapshot {
        queues: vec![QueueDepth {
            queue: "default".into(),
            ..Default::default()
        }],
        unhandled: vec![Unhandled {
            queue: "default".into(),
            kind: "report".into(),
            due: 1,
        }],
    };
    let text = metrics.render(Some(&snapshot));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

/// The `stuckless_*` names in a PromQL expression.
fn names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("stuckless_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_rule_names_exported_metrics_and_promtool_accepts_the_file() {
    let text = std::fs::read_to_string(rules_path()).unwrap();
    let docs = YamlLoader::load_from_str(&text).expect("valid YAML");
    let groups = docs[0]["groups"].as_vec().expect("a groups list");
    let exported = exported();
    let mut alerts = Vec::new();
    for group in groups {
        assert!(group["name"].as_str().is_some(), "every group has a name");
        for rule in group["rules"].as_vec().expect("a rules list") {
            let alert = rule["alert"].as_str().expect("alerting rules only").to_owned();
            let expr = rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{alert}: no expr"));
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{alert}: no summary"
            );
            assert!(matches!(rule["for"], Yaml::String(_)), "{alert}: no `for`");
            let names = names_in(expr);
            assert!(!names.is_empty(), "{alert} names no stuckless metric: {expr}");
            for name in names {
                assert!(
                    exported.contains(&name),
                    "{alert} uses {name}, which /metrics does not export; it exports {exported:?}"
                );
            }
            alerts.push(alert);
        }
    }
    for needed in [
        "StucklessExpiredLeasesNotReaped",
        "StucklessAttemptsRunFarTooLong",
        "StucklessDueJobsNotClaimed",
    ] {
        assert!(alerts.iter().any(|a| a == needed), "{needed} missing: {alerts:?}");
    }

    let promtool = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(rules_path())
        .output();
    match promtool {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules refused the file:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("STUCKLESS_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
                "STUCKLESS_REQUIRE_PROMTOOL=1 but promtool is not on PATH (Debian: apt-get install prometheus)"
            );
            eprintln!(
                "NOTE alert_rules: promtool is not on PATH, so only the YAML and metric-name checks ran \
                 (Debian: apt-get install prometheus; STUCKLESS_REQUIRE_PROMTOOL=1 makes this an error)"
            );
        }
        Err(e) => panic!("running promtool: {e}"),
    }
}

#[test]
fn metric_names_are_read_out_of_expressions() {
    assert_eq!(
        names_in("max by (queue) (stuckless_queue_due) > 0 unless rate(stuckless_jobs_claimed_total[5m])"),
        ["stuckless_queue_due", "stuckless_jobs_claimed_total"]
    );
}

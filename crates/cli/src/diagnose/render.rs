//! `diagnose`'s human output: the job's facts in rows, its history, the
//! diagnosis and the fix.

use std::fmt::Write as _;
use std::time::Duration;

use super::{ago, Case, Diagnosis};
use crate::ops::Report;
use crate::util::human_duration;

impl Report for Diagnosis {
    fn human(&self) -> String {
        let j = &self.job;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "job {} (queue {}, kind {}): {}",
            j.id,
            j.queue,
            j.kind,
            self.case.headline()
        );
        let _ = writeln!(o);
        let row = |o: &mut String, k: &str, v: String| {
            let _ = writeln!(o, "  {k:<14}{v}");
        };
        row(&mut o, "now", format!("{} (database clock)", self.now));
        row(
            &mut o,
            "status",
            format!(
                "{}, attempt {} of {}, epoch {}",
                j.status, j.attempt, j.max_attempts, j.epoch
            ),
        );
        if let Some(l) = &self.lease {
            let when = if l.expired {
                format!("EXPIRED {}", ago(Duration::from_secs_f64(l.expired_for_secs)))
            } else {
                format!(
                    "valid for {}",
                    human_duration(Duration::from_secs_f64(-l.expired_for_secs))
                )
            };
            row(
                &mut o,
                "lease",
                format!(
                    "held by {}, expires {} ({when})",
                    l.owner.as_deref().unwrap_or("?"),
                    l.expires_at
                ),
            );
            let w = match &self.lease_worker {
                Some(w) => format!(
                    "{}, last registry heartbeat {}",
                    if w.alive { "alive" } else { "STALE" },
                    ago(Duration::from_secs_f64(w.heartbeat_age_secs))
                ),
                None => "NOT REGISTERED".into(),
            };
            row(&mut o, "worker", w);
        }
        if let Some(at) = j.heartbeat_at {
            row(
                &mut o,
                "heartbeat",
                format!("{at} ({})", ago(self.now.saturating_since(at))),
            );
        }
        if let Some(p) = &j.progress {
            row(&mut o, "progress", p.to_string());
        }
        if let Some(c) = &j.checkpoint {
            let saved = match j.checkpointed_at {
                Some(at) => format!(", saved {at} ({})", ago(self.now.saturating_since(at))),
                None => String::new(),
            };
            row(&mut o, "checkpoint", format!("{}{saved}", shorten_json(c)));
        }
        row(&mut o, "run at", j.run_at.to_string());
        if let Some(at) = j.claimed_at {
            row(&mut o, "claimed at", at.to_string());
        }
        if let Some(limit) = &self.time_limit {
            row(&mut o, "time limit", limit.describe(&j.kind, self.now));
        }
        if let Some(e) = &j.last_error {
            row(&mut o, "last error", e.clone());
        }
        row(
            &mut o,
            "live workers",
            if self.live_workers_for_queue.is_empty() {
                format!("none serving queue {}", j.queue)
            } else {
                self.live_workers_for_queue.join(", ")
            },
        );
        if self.case == Case::UnhandledKind {
            row(
                &mut o,
                "live kinds",
                format!("{} (not {})", self.live_kinds_for_queue.join(", "), j.kind),
            );
        }
        let _ = writeln!(o);
        let _ = writeln!(o, "history (job_events, oldest first):");
        if self.events.is_empty() {
            let _ = writeln!(o, "  (no abnormal transitions recorded)");
        }
        for e in &self.events {
            let _ = writeln!(
                o,
                "  {}  {:<10} epoch {} attempt {}{}{}",
                e.at,
                e.kind.as_str(),
                e.epoch,
                e.attempt,
                e.worker_id
                    .as_ref()
                    .map(|w| format!(" worker {w}"))
                    .unwrap_or_default(),
                e.detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
            );
        }
        let _ = writeln!(o);
        let _ = writeln!(o, "diagnosis:");
        let _ = writeln!(o, "  {}", self.explanation);
        let _ = writeln!(o);
        match &self.fix {
            Some(fix) => {
                let _ = writeln!(o, "fix:");
                let _ = writeln!(o, "  {fix}");
            }
            None => {
                let _ = writeln!(o, "fix: none needed");
            }
        }
        if let Some(note) = &self.fix_note {
            let _ = writeln!(o, "  {note}");
        }
        o
    }
}

/// Longest JSON value `diagnose` prints in full, in bytes; a checkpoint may
/// hold up to 1 MiB, which would bury the rest of the answer.
const MAX_SHOWN_JSON_BYTES: usize = 200;

/// `value` as compact JSON, cut at [`MAX_SHOWN_JSON_BYTES`] (on a char
/// boundary) with its full size said, so a large checkpoint stays one line.
pub(crate) fn shorten_json(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.len() <= MAX_SHOWN_JSON_BYTES {
        return text;
    }
    let mut end = MAX_SHOWN_JSON_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

#[cfg(test)]
mod shorten_tests {
    use super::shorten_json;
    use serde_json::json;

    #[test]
    fn a_large_checkpoint_is_cut_and_sized() {
        assert_eq!(shorten_json(&json!({"section": 3})), r#"{"section":3}"#);
        let big = json!("é".repeat(1000));
        let shown = shorten_json(&big);
        assert!(shown.ends_with("… (2002 bytes in all)"), "{shown}");
        assert!(shown.len() < 240, "{shown}");
    }
}

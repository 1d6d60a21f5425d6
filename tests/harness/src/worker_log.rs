//! What a worker's own log says it gave up, for the graceful-shutdown check.
//!
//! A worker cancels a handler when its local lease deadline passes without an
//! acknowledged heartbeat (its database calls stuck behind a fault). The
//! heartbeat it had sent may still execute later and extend the lease in the
//! database, so the row keeps the worker's name with a recent heartbeat. Only
//! the worker knows it let go: the core logs "handler cancelled; its result
//! will not be written" inside the attempt's `job{job_id=… epoch=…}` span. The
//! orchestrator notes the log's length when it sends SIGTERM, so exactly the
//! lines written before the signal count.

use std::path::Path;

/// The core's message when an attempt is given up for a lost lease.
pub const GAVE_UP: &str = "handler cancelled; its result will not be written";

/// The log's length in bytes now (0 if it does not exist yet).
pub fn length(log: &Path) -> u64 {
    std::fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

/// Whether the first `upto` bytes of `log` say the worker gave up `job_id` at
/// `epoch`.
pub fn gave_up_before(log: &Path, upto: u64, job_id: i64, epoch: i64) -> bool {
    let Ok(bytes) = std::fs::read(log) else {
        return false;
    };
    let end = (upto as usize).min(bytes.len());
    let text = strip_ansi(&String::from_utf8_lossy(&bytes[..end]));
    gave_up_in(&text, job_id, epoch)
}

/// Whether `text` (log lines, no colour codes) has a give-up line for the job at `epoch`.
pub fn gave_up_in(text: &str, job_id: i64, epoch: i64) -> bool {
    let id = format!("job_id={job_id} ");
    let ep = format!("epoch={epoch} ");
    let json_id = format!("\"job_id\":\"{job_id}\"");
    let json_ep = format!("\"epoch\":\"{epoch}\"");
    text.lines()
        .filter(|l| l.contains(GAVE_UP))
        .any(|l| (l.contains(&id) && l.contains(&ep)) || (l.contains(&json_id) && l.contains(&json_ep)))
}

/// `s` without ANSI escape sequences (tracing colours its output by default).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_give_up_line_is_found_for_its_job_and_epoch_only() {
        let line = "2026-12-01T04:00:00.1Z  WARN job{job_id=42 epoch=3 attempt=2 kind=chaos}: \
                    stuckless_core::worker::attempt: handler cancelled; its result will not be written reason=LeaseDeadline";
        assert!(gave_up_in(line, 42, 3));
        assert!(!gave_up_in(line, 42, 4));
        assert!(!gave_up_in(line, 4, 3));
        let other = line.replace(GAVE_UP, "heartbeat failed");
        assert!(!gave_up_in(&other, 42, 3));
        let coloured = "\u{1b}[3mjob_id\u{1b}[0m\u{1b}[2m=\u{1b}[0m42 \u{1b}[3mepoch\u{1b}[0m\u{1b}[2m=\u{1b}[0m3 x: handler cancelled; its result will not be written";
        assert!(gave_up_in(&strip_ansi(coloured), 42, 3));
    }

    #[test]
    fn only_lines_before_the_offset_count() {
        let dir = std::env::temp_dir().join(format!("stuckless-worker-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("w.log");
        let before = "a\n";
        let line = format!("WARN job{{job_id=7 epoch=1 attempt=1 kind=chaos}}: x: {GAVE_UP}\n");
        std::fs::write(&log, format!("{before}{line}")).unwrap();
        assert!(!gave_up_before(&log, before.len() as u64, 7, 1));
        assert!(gave_up_before(&log, length(&log), 7, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

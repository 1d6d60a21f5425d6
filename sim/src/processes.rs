//! A batch on every core with exactly the results of one thread: the seeds
//! are dealt to child processes, each a single-threaded run of its share, and
//! their answers are put back in seed order.
//!
//! Threads in one process cannot give that guarantee: worlds on several
//! threads draw tokio task ids from one process-wide counter at the same time,
//! and a crashed host's tasks shut down in an order that depends on those ids
//! (see [`crate::batch::align_task_ids`]). A child process owns its counter,
//! so each of its seeds runs as it would alone.
//!
//! The protocol is one JSON line per seed on the child's stdout
//! ([`SeedRecord`]); anything else a child prints goes to stderr. The parent
//! never reads a clock or a child's timing into a result: the order of the
//! records it hands on is the order of the seeds.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};

use crate::batch::{Flow, Shard};
use crate::check::liveness::Owed;
use crate::outcome::RunOutcome;
use crate::report::Summary;

/// The hidden flag that makes the binary a child: `--child k/n` runs the
/// seeds at positions k-1, k-1+n, … of its batch and prints [`SeedRecord`]s.
pub const CHILD_FLAG: &str = "--child";

/// What a child reports of one seed: all the parent prints and sums.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedRecord {
    /// Position of the seed in the batch (after any `--shard`).
    pub position: usize,
    /// The seed.
    pub seed: u64,
    /// No violation and no error.
    pub passed: bool,
    /// Storage operations the run made.
    pub ops: u64,
    /// Hash of the run's trace: equal hashes, equal runs.
    pub trace_hash: u64,
    /// The worst liveness waits live workers owed, with their bounds.
    pub owed: Owed,
    /// The failure report (with its replay command), when the seed failed.
    pub failure_report: Option<String>,
    /// The seed's contribution to the batch summary.
    pub summary: Summary,
}

impl SeedRecord {
    /// The record of `outcome`, the seed at `position` of its batch.
    pub fn of(position: usize, outcome: &RunOutcome) -> SeedRecord {
        let mut summary = Summary::default();
        summary.add(outcome);
        SeedRecord {
            position,
            seed: outcome.seed,
            passed: outcome.passed(),
            ops: outcome.ops,
            trace_hash: outcome.trace_hash,
            owed: outcome.owed,
            failure_report: (!outcome.passed()).then(|| outcome.failure_report()),
            summary,
        }
    }

    /// Writes the record as the one line a child prints for a seed.
    pub fn write_line(&self, out: &mut impl Write) -> std::io::Result<()> {
        let line = serde_json::to_string(self).map_err(std::io::Error::other)?;
        writeln!(out, "{line}")?;
        out.flush()
    }
}

/// Why a multi-process batch could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A child could not be started.
    #[error("starting child process {shard}: {source}")]
    Spawn {
        /// Which child.
        shard: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A child printed a line that is not a seed record.
    #[error("child process {shard} printed something that is not a seed record: {line:?} ({source})")]
    Garbled {
        /// Which child.
        shard: String,
        /// What it printed.
        line: String,
        /// Why it does not parse.
        source: serde_json::Error,
    },
    /// A child ended before reporting all its seeds.
    #[error("child process {shard} exited ({status}) before reporting every seed; its stderr is above")]
    Died {
        /// Which child.
        shard: String,
        /// How it ended.
        status: String,
    },
}

/// Runs a batch of `seeds` seeds in `count` children of `exe` (this binary),
/// each started with `args` plus `--child k/count`, and hands every record
/// to `each` in seed order. Returns the summary of the records handed on.
///
/// A [`Flow::Stop`] from `each` kills the children and ends the batch.
pub fn run(
    exe: &Path,
    args: &[OsString],
    seeds: usize,
    count: usize,
    mut each: impl FnMut(&SeedRecord) -> Flow,
) -> Result<Summary, ProcessError> {
    let count = count.clamp(1, seeds.max(1));
    let (tx, rx) = mpsc::channel::<Result<SeedRecord, ProcessError>>();
    let mut children: Vec<(String, Child)> = Vec::new();
    let mut readers = Vec::new();
    for index in 1..=count {
        let shard = Shard {
            index: index as u64,
            count: count as u64,
        };
        let name = format!("{}/{}", shard.index, shard.count);
        let mut child = Command::new(exe)
            .args(args)
            .arg(CHILD_FLAG)
            .arg(&name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                shard: name.clone(),
                source,
            })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let tx = tx.clone();
        let reader_name = name.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let parsed =
                    serde_json::from_str::<SeedRecord>(&line).map_err(|source| ProcessError::Garbled {
                        shard: reader_name.clone(),
                        line: line.clone(),
                        source,
                    });
                if tx.send(parsed).is_err() {
                    return;
                }
            }
        }));
        children.push((name, child));
    }
    drop(tx);

    let mut summary = Summary::default();
    let mut waiting: BTreeMap<usize, SeedRecord> = BTreeMap::new();
    let mut due = 0;
    let mut stopped = false;
    let mut result = Ok(());
    'records: for record in rx.iter() {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        waiting.insert(record.position, record);
        while let Some(record) = waiting.remove(&due) {
            due += 1;
            summary.merge(&record.summary);
            if each(&record) == Flow::Stop {
                stopped = true;
                break 'records;
            }
        }
    }
    if stopped || result.is_err() {
        for (_, child) in &mut children {
            let _ = child.kill();
        }
    }
    for (name, mut child) in children {
        let status = child.wait();
        let clean = matches!(&status, Ok(s) if s.success());
        // A child that found a failing seed exits non-zero by design; only
        // one that left seeds unreported is an error.
        if !clean && !stopped && result.is_ok() && due < seeds {
            result = Err(ProcessError::Died {
                shard: name,
                status: status.map_or_else(|e| e.to_string(), |s| s.to_string()),
            });
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
    if result.is_ok() && !stopped && due < seeds {
        result = Err(ProcessError::Died {
            shard: "?".into(),
            status: format!("{due} of {seeds} seeds reported"),
        });
    }
    result.map(|()| summary)
}

//! Hand-made SQL mutants: `PgStorage` with one fencing, expiry or reap
//! condition of its SQL broken on purpose, so the test suites can show they
//! would notice (`tests/tests/sql_mutants.rs`). cargo-mutants mutates Rust,
//! not the text of a statement; these are the SQL half of the mutation score
//! (docs/mutants.md).
//!
//! A mutant is an edit of the real statement text (`from` replaced by `to`),
//! so it follows whatever the statements become; an edit whose `from` is no
//! longer in its statement is an error ([`MutantError::NoLongerApplies`]),
//! never a silently unmutated run. Statement mutants live in the one
//! `PgStorage` value; reap mutants rewrite `stuckless.reap_at` in the
//! storage's database, so every storage on that database runs them.

use std::sync::Mutex;

use crate::sql;
use crate::storage::PgStorage;

/// One deliberate defect in the SQL `PgStorage` runs. Not API: for the
/// mutation tests only.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SqlMutant {
    /// Heartbeat without `epoch = $3`: a zombie renews the new holder's lease.
    HeartbeatIgnoresEpoch,
    /// Heartbeat without `status = 'running'`: renews a reaped (queued) job.
    HeartbeatIgnoresStatus,
    /// Checkpoint without `epoch = $3`: a zombie overwrites the checkpoint.
    CheckpointIgnoresEpoch,
    /// Complete without `epoch = $3`: a zombie completes the new attempt.
    CompleteIgnoresEpoch,
    /// Complete without `status = 'running'`: completes a reaped job, and a
    /// repeated completion writes again instead of answering "already".
    CompleteIgnoresStatus,
    /// Batched complete without `epoch = f.epoch`.
    CompleteManyIgnoresEpoch,
    /// Batched complete without `status = 'running'`.
    CompleteManyIgnoresStatus,
    /// Fail without `epoch = $3`: a zombie's failure retries the new attempt.
    FailIgnoresEpoch,
    /// Fail retries while `attempt <= max_attempts`: one attempt too many.
    FailRetriesPastMaxAttempts,
    /// Release without `epoch = $3`: a zombie hands back the new attempt.
    ReleaseIgnoresEpoch,
    /// Claim keeps the epoch: a reclaimed job's old holder is not fenced.
    ClaimKeepsEpoch,
    /// Claim takes `run_at < now`: a job due exactly now waits a tick.
    ClaimRunAtStrictlyBefore,
    /// Claim without `skip locked`: claimers wait on each other's rows.
    ClaimWaitsOnLockedRows,
    /// Reap takes `lease_expires_at < as_of`: a lease ending now is not reaped.
    ReapExpiryStrictlyBefore,
    /// Reap without the expiry predicate: live leases are taken back.
    ReapIgnoresExpiry,
    /// Reap without `skip locked`: waits on a row a completion holds.
    ReapWaitsOnLockedRows,
    /// Reap kills on `attempt > max_attempts`: the last attempt is requeued.
    ReapKillsOneAttemptLate,
}

/// The function the reap mutants rewrite, as `regprocedure` reads it.
const REAP_FUNCTION: &str = "stuckless.reap_at(timestamptz,integer)";

/// Where an edit applies: a statement `PgStorage` runs, or a SQL function in
/// the database.
#[derive(Clone, Copy, Debug)]
enum Target {
    Statement(&'static str),
    Function(&'static str),
}

/// One textual edit: every `from` in the target becomes `to`.
#[derive(Clone, Copy, Debug)]
struct Edit {
    target: Target,
    from: &'static str,
    to: &'static str,
}

const fn stmt(statement: &'static str, from: &'static str, to: &'static str) -> Edit {
    Edit {
        target: Target::Statement(statement),
        from,
        to,
    }
}

const fn reap(from: &'static str, to: &'static str) -> Edit {
    Edit {
        target: Target::Function(REAP_FUNCTION),
        from,
        to,
    }
}

/// The fence every single-job write carries, and its two weakenings.
const FENCE: &str = "and j.epoch = $3 and j.status = 'running'";
const FENCE_NO_EPOCH: &str = "and j.status = 'running'";
const FENCE_NO_STATUS: &str = "and j.epoch = $3";

/// Why a mutant could not be set up.
#[doc(hidden)]
#[derive(Debug, thiserror::Error)]
pub enum MutantError {
    /// The statement or function no longer holds the text the mutant edits:
    /// the SQL changed, and the mutant in `crates/pg/src/mutant.rs` must follow.
    #[error("{mutant:?} no longer applies: {target} does not contain {from:?}")]
    NoLongerApplies {
        /// The mutant.
        mutant: SqlMutant,
        /// The statement's first line or the function's name.
        target: String,
        /// The text it looked for.
        from: &'static str,
    },
    /// Reading or replacing the function failed.
    #[error("installing a SQL mutant: {0}")]
    Database(#[from] sqlx::Error),
}

impl SqlMutant {
    /// Every mutant, in declaration order.
    pub const ALL: [SqlMutant; 17] = [
        SqlMutant::HeartbeatIgnoresEpoch,
        SqlMutant::HeartbeatIgnoresStatus,
        SqlMutant::CheckpointIgnoresEpoch,
        SqlMutant::CompleteIgnoresEpoch,
        SqlMutant::CompleteIgnoresStatus,
        SqlMutant::CompleteManyIgnoresEpoch,
        SqlMutant::CompleteManyIgnoresStatus,
        SqlMutant::FailIgnoresEpoch,
        SqlMutant::FailRetriesPastMaxAttempts,
        SqlMutant::ReleaseIgnoresEpoch,
        SqlMutant::ClaimKeepsEpoch,
        SqlMutant::ClaimRunAtStrictlyBefore,
        SqlMutant::ClaimWaitsOnLockedRows,
        SqlMutant::ReapExpiryStrictlyBefore,
        SqlMutant::ReapIgnoresExpiry,
        SqlMutant::ReapWaitsOnLockedRows,
        SqlMutant::ReapKillsOneAttemptLate,
    ];

    /// The edits that make this mutant (claim mutants edit both claim statements).
    fn edits(self) -> Vec<Edit> {
        use SqlMutant::*;
        match self {
            HeartbeatIgnoresEpoch => vec![stmt(sql::HEARTBEAT, FENCE, FENCE_NO_EPOCH)],
            HeartbeatIgnoresStatus => vec![stmt(sql::HEARTBEAT, FENCE, FENCE_NO_STATUS)],
            CheckpointIgnoresEpoch => vec![stmt(sql::CHECKPOINT, FENCE, FENCE_NO_EPOCH)],
            CompleteIgnoresEpoch => vec![stmt(sql::COMPLETE, FENCE, FENCE_NO_EPOCH)],
            CompleteIgnoresStatus => vec![stmt(sql::COMPLETE, FENCE, FENCE_NO_STATUS)],
            CompleteManyIgnoresEpoch => vec![stmt(
                sql::COMPLETE_MANY,
                "and j.epoch = f.epoch and j.status = 'running'",
                "and j.status = 'running'",
            )],
            CompleteManyIgnoresStatus => vec![stmt(
                sql::COMPLETE_MANY,
                "and j.epoch = f.epoch and j.status = 'running'",
                "and j.epoch = f.epoch",
            )],
            FailIgnoresEpoch => vec![stmt(sql::FAIL, FENCE, FENCE_NO_EPOCH)],
            FailRetriesPastMaxAttempts => vec![stmt(
                sql::FAIL,
                "j.attempt < j.max_attempts",
                "j.attempt <= j.max_attempts",
            )],
            ReleaseIgnoresEpoch => vec![stmt(sql::RELEASE, FENCE, FENCE_NO_EPOCH)],
            ClaimKeepsEpoch => vec![
                stmt(sql::CLAIM, "epoch = j.epoch + 1", "epoch = j.epoch"),
                stmt(sql::CLAIM_ONE_QUEUE, "epoch = j.epoch + 1", "epoch = j.epoch"),
            ],
            ClaimRunAtStrictlyBefore => vec![
                stmt(
                    sql::CLAIM,
                    "j.run_at <= (select t from now_)",
                    "j.run_at < (select t from now_)",
                ),
                stmt(
                    sql::CLAIM_ONE_QUEUE,
                    "j.run_at <= (select t from now_)",
                    "j.run_at < (select t from now_)",
                ),
            ],
            ClaimWaitsOnLockedRows => vec![
                stmt(sql::CLAIM, "for update of j skip locked", "for update of j"),
                stmt(
                    sql::CLAIM_ONE_QUEUE,
                    "for update of j skip locked",
                    "for update of j",
                ),
            ],
            ReapExpiryStrictlyBefore => vec![reap(
                "j.lease_expires_at <= reap_at.as_of",
                "j.lease_expires_at < reap_at.as_of",
            )],
            ReapIgnoresExpiry => vec![reap("and j.lease_expires_at <= reap_at.as_of", "")],
            ReapWaitsOnLockedRows => vec![reap("for update of j skip locked", "for update of j")],
            ReapKillsOneAttemptLate => vec![reap(
                "j.attempt >= j.max_attempts as dead",
                "j.attempt > j.max_attempts as dead",
            )],
        }
    }

    /// The mutated text of `statement`, or `None` when this mutant leaves it alone.
    fn mutate_statement(self, statement: &str) -> Result<Option<String>, MutantError> {
        let mut out: Option<String> = None;
        for edit in &self.edits() {
            if let Target::Statement(target) = edit.target {
                if target == statement {
                    let current = out.take().unwrap_or_else(|| statement.to_owned());
                    out = Some(self.apply(edit, &current, first_line(statement))?);
                }
            }
        }
        Ok(out)
    }

    /// `text` with the edit applied; an error if `from` is not in it.
    fn apply(self, edit: &Edit, text: &str, target: &str) -> Result<String, MutantError> {
        if !text.contains(edit.from) {
            return Err(MutantError::NoLongerApplies {
                mutant: self,
                target: target.to_owned(),
                from: edit.from,
            });
        }
        Ok(text.replace(edit.from, edit.to))
    }

    /// Checks that every statement edit still applies (function edits are
    /// checked when installed, against the database's own definition).
    pub fn check_statements(self) -> Result<(), MutantError> {
        for edit in &self.edits() {
            if let Target::Statement(statement) = edit.target {
                self.apply(edit, statement, first_line(statement))?;
            }
        }
        Ok(())
    }

    /// Whether this mutant rewrites a function in the database.
    pub fn edits_the_database(self) -> bool {
        self.edits()
            .iter()
            .any(|e| matches!(e.target, Target::Function(_)))
    }

    /// Rewrites the functions this mutant edits in `pool`'s database (a
    /// no-op for statement mutants). Undo it with a fresh database.
    pub async fn install(self, pool: &sqlx::PgPool) -> Result<(), MutantError> {
        for edit in self.edits() {
            let Target::Function(function) = edit.target else {
                continue;
            };
            let definition: String = sqlx::query_scalar("select pg_get_functiondef($1::regprocedure)")
                .bind(function)
                .fetch_one(pool)
                .await?;
            let mutated = self.apply(&edit, &definition, function)?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(mutated)).execute(pool).await?;
        }
        Ok(())
    }
}

/// A statement's first non-blank line, to name it in an error.
fn first_line(statement: &str) -> &str {
    statement
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// Mutated statement texts made so far: sqlx wants `'static` SQL, so each
/// (mutant, statement) pair is leaked once and reused.
type Cache = Vec<(SqlMutant, &'static str, &'static str)>;
static MUTATED: Mutex<Cache> = Mutex::new(Vec::new());

impl PgStorage {
    /// This storage running `mutant`'s statements (test only). Reap mutants
    /// also need [`SqlMutant::install`] on the storage's database.
    #[doc(hidden)]
    pub fn with_sql_mutant(mut self, mutant: SqlMutant) -> Result<Self, MutantError> {
        mutant.check_statements()?;
        self.mutant = Some(mutant);
        Ok(self)
    }

    /// The text to run for `statement`: itself, unless this storage runs a
    /// mutant of it.
    pub(crate) fn sql(&self, statement: &'static str) -> &'static str {
        let Some(mutant) = self.mutant else {
            return statement;
        };
        let mut cache = MUTATED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, text)) = cache
            .iter()
            .find(|(m, original, _)| *m == mutant && *original == statement)
        {
            return text;
        }
        // Checked in with_sql_mutant, so an edit that no longer applies never gets here.
        let text = match mutant.mutate_statement(statement) {
            Ok(Some(text)) => &*Box::leak(text.into_boxed_str()),
            Ok(None) | Err(_) => statement,
        };
        cache.push((mutant, statement, text));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_mutant_still_applies_and_changes_its_statement() {
        for mutant in SqlMutant::ALL {
            mutant.check_statements().unwrap();
            for edit in mutant.edits() {
                if let Target::Statement(statement) = edit.target {
                    let mutated = mutant.mutate_statement(statement).unwrap().unwrap();
                    assert_ne!(mutated, statement, "{mutant:?}");
                    assert!(!mutated.contains(edit.from), "{mutant:?}");
                }
            }
        }
    }

    #[test]
    fn all_lists_every_mutant_once() {
        let mut all = SqlMutant::ALL.to_vec();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), SqlMutant::ALL.len());
        assert!(SqlMutant::ReapIgnoresExpiry.edits_the_database());
        assert!(!SqlMutant::ClaimKeepsEpoch.edits_the_database());
    }

    #[test]
    fn an_edit_that_no_longer_applies_is_an_error() {
        let edit = stmt(sql::NOW, "no such text", "");
        let err = SqlMutant::ClaimKeepsEpoch
            .apply(&edit, sql::NOW, "now")
            .unwrap_err();
        assert!(matches!(err, MutantError::NoLongerApplies { .. }), "{err}");
    }
}

//! Whether a worker's claims, reaps and prunes are getting through: what
//! `/readyz` answers and what an operator is warned about.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Failures in a row of one operation before the worker calls itself
/// unhealthy: one failure is a blip (a reconnect), three are a cause.
pub const FAILURES_BEFORE_UNHEALTHY: u32 = 3;

/// A cheap, cloneable view of a worker's health; ask it from any thread.
#[derive(Clone, Debug, Default)]
pub struct HealthHandle(Arc<Mutex<BTreeMap<&'static str, Failing>>>);

#[derive(Clone, Debug)]
struct Failing {
    consecutive: u32,
    last_error: String,
}

impl HealthHandle {
    /// Why the worker cannot do its work, if it cannot: the operation that
    /// failed [`FAILURES_BEFORE_UNHEALTHY`] times or more in a row and its
    /// latest error. `None` while every operation gets through.
    pub fn problem(&self) -> Option<String> {
        let failing = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let reasons: Vec<String> = failing
            .iter()
            .filter(|(_, f)| f.consecutive >= FAILURES_BEFORE_UNHEALTHY)
            .map(|(operation, f)| {
                format!(
                    "{operation} failed {} times in a row: {}",
                    f.consecutive, f.last_error
                )
            })
            .collect();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    /// Records a success of `operation`, which ends its run of failures.
    pub(crate) fn succeeded(&self, operation: &'static str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(operation);
    }

    /// Records a failure of `operation`; returns how many in a row.
    pub(crate) fn failed(&self, operation: &'static str, error: &str) -> u32 {
        let mut failing = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = failing.entry(operation).or_insert(Failing {
            consecutive: 0,
            last_error: String::new(),
        });
        entry.consecutive += 1;
        entry.last_error = error.to_owned();
        entry.consecutive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_failures_in_a_row_make_a_problem_and_one_success_ends_it() {
        let health = HealthHandle::default();
        assert_eq!(health.failed("job_claim", "boom"), 1);
        assert_eq!(health.failed("job_claim", "boom"), 2);
        assert_eq!(health.problem(), None, "two failures are still a blip");
        assert_eq!(health.failed("job_claim", "cannot convert infinity to bigint"), 3);
        let problem = health.problem().expect("three in a row");
        assert!(problem.contains("job_claim failed 3 times"), "{problem}");
        assert!(problem.contains("infinity"), "the cause is named: {problem}");
        health.succeeded("job_claim");
        assert_eq!(health.problem(), None);
    }
}

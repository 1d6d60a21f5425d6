//! `stuckless prune`: deletes finished jobs (and their events) past their
//! retention now, as every worker does every `--prune-interval`.

use serde::Serialize;
use stuckless_core::driver::{JobPrune, PruneOutcome, Storage};
use stuckless_core::{Retention, StorageError};

use crate::ops::Report;
use crate::util::human_duration;

/// What `prune` did.
#[derive(Debug, Serialize)]
pub struct Pruned {
    /// Jobs deleted, by the status they had.
    pub deleted: PruneOutcome,
    /// Delete statements run.
    pub statements: u32,
    /// Ages past which jobs were deleted, in seconds.
    pub succeeded_after_secs: u64,
    /// See `succeeded_after_secs`.
    pub cancelled_after_secs: u64,
    /// See `succeeded_after_secs`.
    pub dead_after_secs: u64,
    #[serde(skip)]
    ages: Retention,
}

impl Report for Pruned {
    fn human(&self) -> String {
        let a = &self.ages;
        let ages = format!(
            "succeeded after {}, cancelled after {}, dead after {}",
            human_duration(a.succeeded),
            human_duration(a.cancelled),
            human_duration(a.dead)
        );
        let d = &self.deleted;
        if d.total() == 0 {
            return format!("nothing to prune: no finished job is past its retention ({ages})\n");
        }
        format!(
            "deleted {} finished job(s) in {} statement(s): {} succeeded, {} cancelled, {} dead ({ages})\n",
            d.total(),
            self.statements,
            d.succeeded,
            d.cancelled,
            d.dead
        )
    }
}

/// Deletes up to `limit` finished jobs past `ages` per statement, repeating
/// until a statement deletes fewer than `limit` (all done, or other pruners
/// hold the rest), or once when `once`.
pub async fn prune(storage: &dyn Storage, ages: Retention, limit: u32, once: bool) -> anyhow::Result<Pruned> {
    anyhow::ensure!(limit > 0, "--limit must be at least 1");
    let request = JobPrune {
        succeeded_after: ages.succeeded,
        cancelled_after: ages.cancelled,
        dead_after: ages.dead,
        limit,
    };
    let mut deleted = PruneOutcome::default();
    let mut statements = 0;
    loop {
        let pass = storage.job_prune(request).await.map_err(|e| match e {
            StorageError::Unavailable(e) => anyhow::anyhow!("could not prune: database unavailable: {e}"),
            other => anyhow::Error::new(other).context("could not prune"),
        })?;
        statements += 1;
        deleted.succeeded += pass.succeeded;
        deleted.cancelled += pass.cancelled;
        deleted.dead += pass.dead;
        if once || pass.total() < u64::from(limit) {
            break;
        }
    }
    Ok(Pruned {
        deleted,
        statements,
        succeeded_after_secs: ages.succeeded.as_secs(),
        cancelled_after_secs: ages.cancelled.as_secs(),
        dead_after_secs: ages.dead.as_secs(),
        ages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;
    use std::time::Duration;
    use stuckless_core::driver::{JobClaim, JobComplete};
    use stuckless_core::{Client, ManualClock, MemStore, NewJob, Timestamp};

    const HOUR: Duration = Duration::from_secs(3600);

    /// `n` succeeded jobs, finished at the clock's time.
    async fn succeed(store: &Arc<MemStore>, n: u32) {
        let client = Client::new(store.clone());
        for _ in 0..n {
            client
                .enqueue_job(NewJob::new("default", "k", json!({})))
                .await
                .unwrap();
        }
        let claim = JobClaim {
            worker_id: "w".into(),
            queues: vec!["default".into()],
            limit: n,
            lease: Duration::from_secs(30),
            kinds: None,
        };
        for job in store.job_claim(claim).await.unwrap() {
            let done = JobComplete {
                id: job.id(),
                epoch: job.epoch(),
            };
            store.job_complete(done).await.unwrap();
        }
    }

    #[tokio::test]
    async fn repeats_until_everything_past_its_age_is_gone_and_keeps_the_rest() {
        let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
        let store = Arc::new(MemStore::new(clock.clone()));
        succeed(&store, 5).await;
        clock.advance(HOUR * 30);
        succeed(&store, 2).await;
        clock.advance(HOUR);
        let ages = Retention::default();
        let all = prune(&*store, ages, 2, false).await.unwrap();
        assert_eq!(all.deleted.succeeded, 5, "the day-old ones, not the hour-old");
        assert_eq!(all.statements, 3, "2 + 2 + 1: the short statement ends it");
        let text = all.human();
        assert!(
            text.starts_with("deleted 5 finished job(s) in 3 statement(s): 5 succeeded"),
            "{text}"
        );
        assert!(text.contains("succeeded after 1d"), "{text}");
        let again = prune(&*store, ages, 2, false).await.unwrap();
        assert_eq!((again.deleted.total(), again.statements), (0, 1));
        assert!(again.human().starts_with("nothing to prune"), "{}", again.human());
        let shorter = Retention {
            succeeded: HOUR / 2,
            ..ages
        };
        let once = prune(&*store, shorter, 1, true).await.unwrap();
        assert_eq!(
            (once.deleted.succeeded, once.statements),
            (1, 1),
            "--once: one statement"
        );
        let json: serde_json::Value = serde_json::from_str(&once.render(true)).unwrap();
        assert_eq!(json["deleted"]["succeeded"], 1);
        assert_eq!(json["succeeded_after_secs"], 1800);
        assert!(prune(&*store, ages, 0, false).await.is_err());
    }
}

//! The graceful-shutdown check: what a SIGTERMed worker left `running`.

use anyhow::Context;

use super::Run;

impl Run<'_> {
    /// After a graceful exit: jobs still `running` under the worker's name.
    /// Shutdown must finish or release what the worker holds, so each is a
    /// violation, except:
    /// - one the worker had given up before SIGTERM: its log says so (its
    ///   local lease deadline passed with its calls stuck behind a fault; a
    ///   heartbeat it had sent may still have landed and extended the lease
    ///   in the database, so the row's heartbeat can be recent). It waits for
    ///   the reaper like any abandoned lease: a note ([`crate::worker_log`]);
    /// - one it could not release because the database was down (an outage
    ///   overlapped its shutdown): a note; the reaper takes it back.
    pub(super) async fn check_left_running(
        &mut self,
        worker_id: &str,
        term_at: i64,
        log_len: u64,
    ) -> anyhow::Result<()> {
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "select id, epoch, stuckless.to_micros(heartbeat_at) from stuckless.jobs
             where status = 'running' and lease_owner = $1 order by id",
        )
        .bind(worker_id)
        .fetch_all(self.db.pool())
        .await
        .context("listing jobs left running")?;
        let log = self.config.log_dir.join(format!("{worker_id}.log"));
        let now = self.db_now().await?;
        let grace = (self.config.shutdown_grace + self.config.storage_timeout * 2).as_micros() as i64;
        let outage_during = self
            .outages
            .iter()
            .any(|o| o.from_us <= now && o.back_us + grace >= term_at);
        for (id, epoch, heartbeat_at) in rows {
            let ago_ms = (term_at - heartbeat_at) / 1000;
            if crate::worker_log::gave_up_before(&log, log_len, id, epoch) {
                self.notes.push(format!(
                    "{worker_id} exited with job {id} (epoch {epoch}) still running under its name: it had given \
                     it up before SIGTERM (lease deadline; last heartbeat landed {ago_ms} ms before SIGTERM); the reaper takes it back"
                ));
            } else if outage_during {
                self.notes.push(format!(
                    "{worker_id} exited with job {id} still running under its name: the database was down during \
                     its shutdown; the reaper takes it back"
                ));
            } else {
                self.violations.push(format!(
                    "graceful shutdown: {worker_id} left job {id} (epoch {epoch}) running (last heartbeat {ago_ms} ms before SIGTERM)"
                ));
            }
        }
        Ok(())
    }
}

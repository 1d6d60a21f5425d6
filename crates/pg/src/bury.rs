//! The second line behind the schema's CHECKs: a claimed row this code
//! cannot read goes dead with the reason instead of failing the whole claim,
//! so one bad row never stalls the jobs of others.

use sqlx::postgres::PgRow;
use sqlx::Row;
use stuckless_core::driver::StorageResult;
use stuckless_core::job::clamp_error;
use stuckless_core::StorageError;
use tracing::warn;

use crate::error::storage_error;
use crate::rows::now_cte;
use crate::storage::PgStorage;

/// Dead with the decode error, fenced by the claim's epoch. $2 id, $3
/// epoch, $4 error.
const BURY: &str = concat!(
    "with ",
    now_cte!(),
    ", upd as (
        update stuckless.jobs j
        set status = 'dead', last_error = $4, lease_expires_at = null, updated_at = now_.t,
            finished_at = now_.t
        from now_
        where j.id = $2 and j.epoch = $3 and j.status = 'running'
        returning j.*
    )
    insert into stuckless.job_events (job_id, at, kind, epoch, attempt, worker_id, detail)
    select id, updated_at, 'dead', epoch, attempt, lease_owner, last_error from upd"
);

impl PgStorage {
    /// Moves a just-claimed row that failed to decode to dead, naming why.
    pub(crate) async fn bury_unreadable(&self, row: &PgRow, error: &StorageError) -> StorageResult<()> {
        let id: i64 = row.try_get("id").map_err(storage_error)?;
        let epoch: i64 = row.try_get("epoch").map_err(storage_error)?;
        let reason = clamp_error(&format!(
            "unreadable row: {error}; fix the row and requeue the job"
        ));
        warn!(job_id = id, %error, "claimed a row this worker cannot read; it is now dead");
        sqlx::query(BURY)
            .bind(self.pinned_now())
            .bind(id)
            .bind(epoch)
            .bind(reason)
            .execute(&self.pool)
            .await
            .map_err(storage_error)?;
        Ok(())
    }
}

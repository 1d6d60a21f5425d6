//! `stuckless import`: moves the rows of a jobs table shaped like the
//! incident's (UUID `id`, upper-case `status`, `payload`, `locked_by`,
//! `lock_expires_at`, `attempts`, `created_at`) into stuckless in one
//! transaction, keeping the old id as the job's `external_id`, so `diagnose`
//! and `stuckless.job_verdict()` accept it and a second run skips what the
//! first moved. Also: resolving a job reference that is an external id.

use anyhow::{bail, Context};
use serde::Serialize;
use sqlx::{PgPool, Row};
use stuckless_core::JobId;

use crate::ops::Report;

/// Where imported jobs get their kind.
#[derive(Clone, Debug)]
pub enum KindFrom {
    /// Every job gets this kind.
    Fixed(String),
    /// Each job's kind is this column of its row.
    Column(String),
}

/// What `import` moved, or would move with `--dry-run`.
#[derive(Debug, Default, Serialize)]
pub struct Imported {
    /// Whether nothing was written.
    pub dry_run: bool,
    /// The table read.
    pub table: String,
    /// Rows read.
    pub rows: u64,
    /// Jobs created, by stuckless status.
    pub queued: u64,
    /// See `queued`.
    pub succeeded: u64,
    /// See `queued`.
    pub dead: u64,
    /// RUNNING rows that came over as due jobs (their old worker's lock is
    /// not carried over); of those, how many had a lock still live.
    pub running_requeued: u64,
    /// See `running_requeued`.
    pub running_with_live_lock: u64,
    /// Rows skipped because a job already has their id as external id.
    pub already_imported: u64,
}

impl Report for Imported {
    fn human(&self) -> String {
        let verb = if self.dry_run { "would import" } else { "imported" };
        let mut out = format!(
            "{verb} {} of {} row(s) from {}: {} queued, {} succeeded, {} dead; {} already imported (skipped)\n",
            self.queued + self.succeeded + self.dead,
            self.rows,
            self.table,
            self.queued,
            self.succeeded,
            self.dead,
            self.already_imported
        );
        if self.running_requeued > 0 {
            out.push_str(&format!(
                "{} RUNNING row(s) come over as due jobs: their locks belong to the old system's workers, which \
                 stuckless cannot fence. {} still had a live lock: stop the old workers before starting stuckless \
                 workers, or that work may run twice.\n",
                self.running_requeued, self.running_with_live_lock
            ));
        }
        out
    }
}

/// Checks that `name` is a plain or schema-qualified SQL identifier and
/// returns it quoted, so it can be put into a statement.
fn quoted_identifier(name: &str, what: &str) -> anyhow::Result<String> {
    let parts: Vec<&str> = name.split('.').collect();
    let plain = |p: &&str| {
        !p.is_empty()
            && p.len() <= 63
            && p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if parts.len() > 2 || !parts.iter().all(plain) {
        bail!("invalid {what} {name:?}: expected a name such as jobs or public.jobs (letters, digits, _)");
    }
    Ok(parts
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join("."))
}

/// The old table's columns that the import reads, present or not.
struct Columns {
    names: Vec<String>,
}

impl Columns {
    fn has(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// `o.<name>` when the column exists, else `fallback`.
    fn or(&self, name: &str, fallback: &str) -> String {
        if self.has(name) {
            format!("o.\"{name}\"")
        } else {
            fallback.to_owned()
        }
    }
}

/// Moves (or with `dry_run` counts) the rows of `table` into queue `queue`.
pub async fn import(
    pool: &PgPool,
    table: &str,
    queue: &str,
    kind: KindFrom,
    dry_run: bool,
) -> anyhow::Result<Imported> {
    let quoted = quoted_identifier(table, "--table")?;
    let kind_expr = match &kind {
        KindFrom::Fixed(k) => {
            stuckless_core::NewJob::new(queue, k.as_str(), serde_json::json!({}))
                .check()
                .context("invalid --kind or --queue")?;
            "$2::text".to_owned()
        }
        KindFrom::Column(c) => {
            stuckless_core::NewJob::new(queue, "k", serde_json::json!({}))
                .check()
                .context("invalid --queue")?;
            // $2 is NULL here; naming it keeps its type known to Postgres.
            format!(
                "coalesce(o.{}::text, $2::text)",
                quoted_identifier(c, "--kind-column")?
            )
        }
    };
    let mut tx = pool
        .begin()
        .await
        .context("cannot start the import's transaction")?;
    let exists: Option<String> = sqlx::query_scalar("select to_regclass($1)::text")
        .bind(table)
        .fetch_one(&mut *tx)
        .await
        .context("looking up --table")?;
    if exists.is_none() {
        bail!(
            "no table {table:?} in this database (give it as schema.table if it is not on the search path)"
        );
    }
    let names: Vec<String> = sqlx::query_scalar(
        "select attname::text from pg_attribute where attrelid = $1::regclass and attnum > 0 and not attisdropped",
    )
    .bind(table)
    .fetch_all(&mut *tx)
    .await
    .context("reading --table's columns")?;
    let cols = Columns { names };
    for required in ["id", "status", "payload", "created_at"] {
        if !cols.has(required) {
            bail!(
                "table {table} has no column {required:?}; import needs id, status, payload and created_at"
            );
        }
    }
    if let KindFrom::Column(c) = &kind {
        if !cols.has(c) {
            bail!("table {table} has no column {c:?} (--kind-column)");
        }
    }

    // One statement shapes every row; refusals are checked before writing.
    let finished_at = cols.or("updated_at", "o.created_at");
    let source = format!(
        "select o.id::text as external_id, {kind_expr} as kind, o.payload::jsonb as payload,
                upper(o.status) as old_status,
                {locked_by} as locked_by, {lock_expires_at} as lock_expires_at,
                coalesce({scheduled_at}, o.created_at) as run_at, o.created_at,
                {finished_at} as finished_at, {attempts} as attempts, {last_error} as last_error
         from {quoted} o",
        locked_by = cols.or("locked_by", "null::text"),
        lock_expires_at = cols.or("lock_expires_at", "null::timestamptz"),
        scheduled_at = cols.or("scheduled_at", "null::timestamptz"),
        attempts = cols.or("attempts", "0"),
        last_error = cols.or("last_error", "null::text"),
    );
    let bad: Option<(String, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "with s as ({source}) select external_id, coalesce(kind, 'NULL'), old_status from s
         where old_status not in ('QUEUED', 'PENDING', 'RUNNING', 'COMPLETED', 'FAILED')
            or kind is null or kind !~ '^[A-Za-z0-9_.:-]{{1,128}}$' or external_id is null
            or $1::text is null
         order by created_at limit 1"
    )))
    .bind(queue)
    .bind(kind_name(&kind))
    .fetch_optional(&mut *tx)
    .await
    .context("reading --table")?;
    if let Some((id, kind, status)) = bad {
        bail!(
            "row {id} cannot be imported: status {status:?} (expected QUEUED, PENDING, RUNNING, COMPLETED or FAILED) \
             and kind {kind:?} (1 to 128 of A-Z a-z 0-9 _ . : -); nothing was imported"
        );
    }
    let statement = format!(
        "with s as ({source}),
         fresh as (
             select s.* from s
             where not exists (select 1 from stuckless.jobs j where j.external_id = s.external_id)
         ), ins as (
             insert into stuckless.jobs
                 (queue, kind, payload, run_at, status, attempt, max_attempts, last_error,
                  created_at, updated_at, finished_at, external_id)
             select $1, f.kind, f.payload,
                    case when f.old_status = 'RUNNING' then now() else f.run_at end,
                    case f.old_status when 'COMPLETED' then 'succeeded' when 'FAILED' then 'dead' else 'queued' end,
                    case when f.old_status in ('COMPLETED', 'FAILED') then least(greatest(f.attempts, 0), 1000) else 0 end,
                    greatest(5, least(greatest(f.attempts, 1), 1000)),
                    case when f.old_status = 'FAILED' then coalesce(f.last_error, 'failed in the old system') end,
                    f.created_at, now(),
                    case when f.old_status in ('COMPLETED', 'FAILED') then f.finished_at end,
                    f.external_id
             from fresh f
             where not $3
             order by f.created_at, f.external_id
             on conflict (external_id) where external_id is not null do nothing
             returning id, external_id, status
         ), ev as (
             insert into stuckless.job_events (job_id, at, kind, epoch, attempt, detail)
             select i.id, now(), 'inserted', 0, 0,
                    format('imported from %s row %s (status %s%s, %s attempt(s) there)', $4::text, f.external_id,
                           f.old_status, coalesce(', locked by ' || f.locked_by, ''), f.attempts)
             from ins i join fresh f on f.external_id = i.external_id
         )
         select (select count(*) from s) as rows,
                (select count(*) from s) - (select count(*) from fresh) as already,
                count(*) filter (where f.old_status in ('QUEUED', 'PENDING', 'RUNNING')) as queued,
                count(*) filter (where f.old_status = 'COMPLETED') as succeeded,
                count(*) filter (where f.old_status = 'FAILED') as dead,
                count(*) filter (where f.old_status = 'RUNNING') as running,
                count(*) filter (where f.old_status = 'RUNNING' and f.lock_expires_at > now()) as running_live,
                (select count(*) from ins) as inserted
         from fresh f"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(statement))
        .bind(queue)
        .bind(kind_name(&kind))
        .bind(dry_run)
        .bind(table)
        .fetch_one(&mut *tx)
        .await
        .with_context(|| format!("importing from {table}"))?;
    let n = |col: &str| row.try_get::<i64, _>(col).map(|v| v as u64);
    let out = Imported {
        dry_run,
        table: table.to_owned(),
        rows: n("rows")?,
        already_imported: n("already")?,
        queued: n("queued")?,
        succeeded: n("succeeded")?,
        dead: n("dead")?,
        running_requeued: n("running")?,
        running_with_live_lock: n("running_live")?,
    };
    let inserted = n("inserted")?;
    if dry_run {
        tx.rollback().await.context("ending the dry run")?;
    } else {
        anyhow::ensure!(
            inserted == out.queued + out.succeeded + out.dead,
            "another import of the same rows ran at the same time ({inserted} inserted here); nothing was imported"
        );
        tx.commit().await.context("committing the import")?;
    }
    Ok(out)
}

fn kind_name(kind: &KindFrom) -> Option<&str> {
    match kind {
        KindFrom::Fixed(k) => Some(k),
        KindFrom::Column(_) => None,
    }
}

/// A job as an operator names it: a stuckless id, or any other text, taken
/// as an external id (an imported job's old UUID).
pub fn parse_job_ref(raw: &str) -> anyhow::Result<Result<JobId, String>> {
    if raw.chars().all(|c| c.is_ascii_digit()) && !raw.is_empty() {
        let id: i64 = raw
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid job id {raw}: too large"))?;
        return crate::ops::job_id(id).map(Ok);
    }
    if raw.is_empty() || raw.len() > 255 {
        bail!("invalid job id {raw:?}: give a job id or an external id of 1 to 255 bytes");
    }
    Ok(Err(raw.to_owned()))
}

/// The id of the job whose external id is `external`.
pub async fn resolve_external(pool: &PgPool, external: &str) -> anyhow::Result<JobId> {
    let id: Option<i64> = sqlx::query_scalar("select id from stuckless.jobs where external_id = $1")
        .bind(external)
        .fetch_optional(pool)
        .await
        .context("looking up the external id")?;
    id.map(JobId)
        .ok_or_else(|| anyhow::anyhow!("no job with id or external id {external:?}"))
}

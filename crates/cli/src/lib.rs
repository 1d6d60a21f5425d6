//! # stuckless-cli
//!
//! The `stuckless` binary as a library, so its pieces (operator commands,
//! diagnose, handlers, metrics, the HTTP endpoints) are unit-tested on the
//! in-memory store and reused by the examples. `main.rs` only calls [`main`].

pub mod bench;
pub mod cli;
pub mod coverage;
pub mod dashboard;
pub mod diagnose;
pub mod gauges;
pub mod handlers;
pub mod http;
pub mod import;
pub mod logging;
pub mod metrics;
pub mod observability;
pub mod ops;
pub mod prune;
pub mod single_flight;
pub mod timeline;
pub mod util;
pub mod wake;
pub mod worker;

use std::io::{IsTerminal, Read};
use std::sync::Arc;

use anyhow::Context;
use stuckless_core::driver::{Storage, StorageNow};
use stuckless_core::{Client, Clock, ManualClock, NewJob};
use stuckless_pg::PgStorage;

use crate::cli::{Cli, Command};
use crate::ops::Report;

/// Connects to the database named by `--database-url` / `DATABASE_URL`.
async fn connect(url: Option<&str>) -> anyhow::Result<PgStorage> {
    let url = url.context(
        "no database given: set DATABASE_URL or pass --database-url, e.g. postgres://postgres@127.0.0.1:5432/postgres",
    )?;
    PgStorage::connect(url)
        .await
        .context("cannot connect to the database")
}

/// Runs the parsed command line; the binary's whole behaviour.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json;
    let url = cli.database_url.as_deref();
    let print = |r: &dyn ErasedReport| print!("{}", r.render_erased(json));
    match cli.command {
        Command::Worker(args) => {
            let plan = worker::plan(&args)?;
            let storage = connect(url).await?;
            worker::run(*args, plan, storage).await?;
        }
        Command::Migrate => {
            let storage = connect(url).await?;
            stuckless_pg::migrate(storage.pool())
                .await
                .context("applying migrations")?;
            if json {
                println!("{{\"migrated\": true}}");
            } else {
                println!("migrations applied");
            }
        }
        Command::Enqueue(args) => {
            let text = match args.payload.as_deref() {
                Some(p) if p != "-" => p.to_owned(),
                _ => {
                    if std::io::stdin().is_terminal() {
                        eprintln!("reading the JSON payload from stdin (end with Ctrl-D)…");
                    }
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("reading the payload from stdin")?;
                    s
                }
            };
            let payload = ops::parse_payload(&text)?;
            let mut job = NewJob::new(args.queue, args.kind, payload)
                .priority(args.priority)
                .max_attempts(args.max_attempts);
            if let Some(key) = args.idempotency_key {
                job = job.idempotency_key(key);
            }
            if let Some(limit) = args.timeout {
                job = job.timeout(limit);
            }
            // Validate before connecting, so bad input is reported as such
            // even when the database is down.
            job.check().context("invalid job")?;
            let storage = connect(url).await?;
            if let Some(delay) = args.delay {
                let now = storage
                    .storage_now(StorageNow {})
                    .await
                    .context("reading the database clock")?;
                job = job.run_at(now + delay);
            }
            print(&ops::enqueue(&Client::new(Arc::new(storage)), job).await?);
        }
        Command::Diagnose(args) => {
            let reference = import::parse_job_ref(&args.job_id)?;
            let pinned = args
                .now
                .as_deref()
                .map(util::parse_timestamp)
                .transpose()
                .context("invalid --now")?;
            let mut storage = connect(url).await?;
            if let Some(now) = pinned {
                let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(now));
                storage = storage.with_pinned_clock(clock);
            }
            let id = match reference {
                Ok(id) => id,
                Err(external) => import::resolve_external(storage.pool(), &external).await?,
            };
            print(&diagnose::diagnose(&storage, id, args.stale.stale_after).await?);
        }
        Command::Reap(args) => {
            let storage = connect(url).await?;
            print(&ops::reap(&storage, args.limit).await?);
        }
        Command::Prune(args) => {
            anyhow::ensure!(args.limit > 0, "--limit must be at least 1");
            let storage = connect(url).await?;
            print(&prune::prune(&storage, args.retention.resolve(), args.limit, args.once).await?);
        }
        Command::Requeue(args) => {
            let id = ops::job_id(args.job_id)?;
            let client = Client::new(Arc::new(connect(url).await?));
            print(&ops::requeue(&client, id, args.force).await?);
        }
        Command::Cancel(args) => {
            let id = ops::job_id(args.job_id)?;
            let client = Client::new(Arc::new(connect(url).await?));
            print(&ops::cancel(&client, id).await?);
        }
        Command::Stats(args) => {
            let storage = connect(url).await?;
            print(&ops::stats(&storage, args.stale_after).await?);
        }
        Command::Workers(args) => {
            let storage = connect(url).await?;
            print(&ops::workers(&storage, args.stale_after).await?);
        }
        Command::Bench(args) => {
            let storage = connect(url).await?;
            print(&bench::run(Arc::new(storage), args.jobs, args.concurrency).await?);
        }
        Command::Timeline(args) => {
            // Refuse a bad --since/--until before connecting: a typo is not
            // a database problem.
            timeline::validate_instant(&args.since).context("invalid --since")?;
            if let Some(until) = &args.until {
                timeline::validate_instant(until).context("invalid --until")?;
            }
            anyhow::ensure!(args.limit > 0, "--limit must be at least 1");
            let storage = connect(url).await?;
            print(
                &timeline::run(
                    &storage,
                    &args.since,
                    args.until.as_deref(),
                    &args.out,
                    args.limit,
                )
                .await?,
            );
        }
        Command::Dashboard(args) => {
            let token = args.admin.resolve()?;
            let storage = connect(url).await?;
            dashboard::serve::run(&storage, &args.bind, args.port, token, args.stale.stale_after).await?;
        }
        Command::Import(args) => {
            let kind = match (args.kind, args.kind_column) {
                (Some(kind), _) => import::KindFrom::Fixed(kind),
                (None, Some(column)) => import::KindFrom::Column(column),
                (None, None) => anyhow::bail!("give --kind or --kind-column"),
            };
            let storage = connect(url).await?;
            print(&import::import(storage.pool(), &args.table, &args.queue, kind, args.dry_run).await?);
        }
    }
    Ok(())
}

/// `Report` is generic over serde, so printing goes through this object-safe view.
trait ErasedReport {
    fn render_erased(&self, json: bool) -> String;
}

impl<T: Report> ErasedReport for T {
    fn render_erased(&self, json: bool) -> String {
        self.render(json)
    }
}

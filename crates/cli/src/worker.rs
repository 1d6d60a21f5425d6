//! `stuckless worker`: the core `Worker` on Postgres, with signals, the HTTP
//! endpoints and metrics.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use stuckless_core::driver::Storage;
use stuckless_core::time::duration_micros;
use stuckless_core::{Handler, Worker, WorkerBuilder};
use stuckless_pg::{PgStorage, PgWaker};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::WorkerArgs;
use crate::handlers::{self, Counted, HandlerSpec, HttpHandler};
use crate::http::{self, Endpoints};
use crate::metrics::Metrics;
use crate::observability::{self, Observed, PgReads};
use crate::util::{human_duration, parse_duration, parse_pair};
use crate::wake::WakeSecret;

/// `<hostname>-<pid>`, restricted to the characters a worker id may hold.
pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_else(|| "worker".into());
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':') {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    format!(
        "{}-{}",
        if host.is_empty() { "worker" } else { &host },
        std::process::id()
    )
}

/// The worker's configuration checked before anything connects, so a typo is
/// reported as such even when the database is down.
pub struct Plan {
    /// Handlers by kind.
    pub handlers: Vec<(String, HandlerSpec)>,
    /// Per-kind attempt limits.
    pub kind_timeouts: Vec<(String, Duration)>,
}

/// Parses and checks the handler and timeout flags.
pub fn plan(args: &WorkerArgs) -> anyhow::Result<Plan> {
    let handlers = handlers::parse_handlers(&args.handlers)?;
    let mut kind_timeouts = Vec::new();
    for entry in args.kind_timeouts.iter().filter(|e| !e.trim().is_empty()) {
        let (kind, d) = parse_pair(entry).context("invalid --kind-timeout")?;
        kind_timeouts.push((kind, parse_duration(&d).context("invalid --kind-timeout")?));
    }
    let plan = Plan {
        handlers,
        kind_timeouts,
    };
    // Dry run of the core's own validation (worker id, queues, heartbeat
    // shorter than the lease, non-zero intervals, kind names, time limits)
    // on a throwaway in-memory store, so those mistakes too are reported
    // before connecting.
    let id = args.worker_id.clone().unwrap_or_else(default_worker_id);
    let clock = stuckless_core::ManualClock::new(stuckless_core::Timestamp::UNIX_EPOCH);
    let store = Arc::new(stuckless_core::MemStore::new(clock.clone()));
    let mut dry = configure(Worker::builder(id, store).clock(Arc::new(clock)), args, &plan);
    for (kind, _) in &plan.handlers {
        dry = dry.handler(kind.clone(), handlers::noop);
    }
    dry.build().context("invalid worker configuration")?;
    Ok(plan)
}

/// Applies the flags to a builder (the real one and the dry run). A flag
/// not given leaves the core's default: with no flags at all the settings
/// are exactly `Worker::builder`'s, the ones the simulator checks.
pub fn configure(builder: WorkerBuilder, args: &WorkerArgs, plan: &Plan) -> WorkerBuilder {
    let mut b = builder.queues(args.queues.clone());
    if let Some(n) = args.concurrency {
        b = b.concurrency(n);
    }
    if let Some(n) = args.prefetch {
        b = b.prefetch(n);
    }
    if let Some(d) = args.lease {
        b = b.lease(d);
    }
    if let Some(d) = args.heartbeat_interval {
        b = b.heartbeat_interval(d);
    }
    if let Some(d) = args.reap_interval {
        b = b.reap_interval(d);
    }
    if let Some(d) = args.poll_interval {
        b = b.poll_interval(d);
    }
    if let Some(d) = args.registry_heartbeat_interval {
        b = b.registry_heartbeat_interval(d);
    }
    if let Some(d) = args.shutdown_grace {
        b = b.shutdown_grace(d);
    }
    if let Some(limit) = args.default_timeout {
        b = b.default_timeout(limit.as_option());
    }
    for (kind, timeout) in &plan.kind_timeouts {
        b = b.kind_timeout(kind.clone(), *timeout);
    }
    b = if args.no_prune {
        b.retention(None)
    } else {
        b.retention(Some(args.retention.resolve()))
    };
    if let Some(d) = args.prune_interval {
        b = b.prune_interval(d);
    }
    b
}

/// The limits on one attempt this worker applies, for its registry entry:
/// `diagnose` reads them back to say when a running job will be cancelled.
/// Microseconds, like the jobs' own `timeout_us`; `default_us` null: no limit.
pub fn time_limits_metadata(args: &WorkerArgs, plan: &Plan) -> serde_json::Value {
    let default = match args.default_timeout {
        Some(limit) => limit.as_option(),
        None => Some(stuckless_core::DEFAULT_TIMEOUT),
    };
    let kinds: serde_json::Map<String, serde_json::Value> = plan
        .kind_timeouts
        .iter()
        .map(|(kind, d)| (kind.clone(), json!(duration_micros(*d))))
        .collect();
    json!({
        "default_us": default.map(duration_micros),
        "kinds_us": kinds,
    })
}

/// Probes LISTEN/NOTIFY once; when wake-ups would not arrive, warns and
/// returns the poll interval to use instead (`--poll-interval-without-notify`,
/// unless `--poll-interval` is already shorter).
async fn notify_fallback(storage: &PgStorage, args: &WorkerArgs) -> Option<Duration> {
    let fallback = match args.poll_interval {
        Some(poll) if poll < args.poll_interval_without_notify => poll,
        _ => args.poll_interval_without_notify,
    };
    let advice = "workers need a direct connection (port 5432) or a session pooler; a transaction pooler \
                  (pgbouncer in transaction mode, Supabase's Supavisor on port 6543) drops LISTEN/NOTIFY, and \
                  errors such as `prepared statement \"sqlx_s_1\" already exists` mean one is in the way";
    match stuckless_pg::probe_notify(storage.pool(), stuckless_pg::PROBE_WAIT).await {
        Ok(stuckless_pg::NotifyProbe::Delivered) => {
            info!("LISTEN/NOTIFY works on this connection: wake-ups on");
            None
        }
        Ok(stuckless_pg::NotifyProbe::NotDelivered { waited }) => {
            warn!(
                "a test notification did not arrive within {}: {advice}. Polling every {} instead \
                 (--poll-interval-without-notify)",
                human_duration(waited),
                human_duration(fallback)
            );
            Some(fallback)
        }
        Err(e) => {
            warn!(
                "could not test LISTEN/NOTIFY ({e}): {advice}. Polling every {} until it is fixed \
                 (--poll-interval-without-notify)",
                human_duration(fallback)
            );
            Some(fallback)
        }
    }
}

/// Runs the worker until SIGTERM/SIGINT (twice: at once) and returns its exit.
pub async fn run(args: WorkerArgs, plan: Plan, storage: PgStorage) -> anyhow::Result<()> {
    let worker_id = args.worker_id.clone().unwrap_or_else(default_worker_id);
    crate::logging::set_worker_id(&worker_id);
    let specs = plan.handlers.clone();
    if args.migrate {
        stuckless_pg::migrate(storage.pool())
            .await
            .context("applying migrations")?;
        info!("migrations applied");
    }
    // Bind before starting the worker: a taken port is a configuration error
    // worth failing on, not a worker silently running without probes.
    let addr = format!("{}:{}", args.bind, args.port);
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (set PORT / --port to a free port)"))?;
    let local = listener.local_addr()?;

    let notify_fallback = notify_fallback(&storage, &args).await;
    let metrics = Metrics::for_queues(&args.queues);
    let storage_arc: Arc<dyn Storage> = Arc::new(storage.clone());
    let waker = PgWaker::start(storage.pool().clone(), args.queues.clone());
    let mut builder = configure(
        Worker::builder(worker_id.clone(), storage_arc.clone()),
        &args,
        &plan,
    )
    .waker(waker.clone())
    .observer(metrics.clone())
    .metadata(json!({
        "pid": std::process::id(),
        "version": env!("CARGO_PKG_VERSION"),
        "http": local.to_string(),
        "time_limits": time_limits_metadata(&args, &plan),
    }));
    if let Some(poll) = notify_fallback {
        builder = builder.poll_interval(poll);
    }
    for (kind, spec) in &specs {
        let inner: Arc<dyn Handler> = match spec {
            HandlerSpec::Noop => Arc::new(handlers::noop),
            HandlerSpec::Sleep => Arc::new(handlers::sleep),
            HandlerSpec::Http(url) => Arc::new(HttpHandler::new(
                url.clone(),
                args.http_timeout,
                args.http_token.clone(),
            )?),
        };
        builder = builder.handler_arc(
            kind.clone(),
            Arc::new(Counted {
                inner,
                in_flight: metrics.in_flight.clone(),
            }),
        );
    }
    let worker = builder.build().context("invalid worker configuration")?;
    let shutdown = worker.shutdown_handle();
    let health = worker.health_handle();

    let wake_secret = WakeSecret::from_flag(args.wake_secret.as_deref());
    if let Some(warning) = wake_secret.warning {
        warn!("{warning}");
    }
    // The endpoints read through a pool of their own, so no scrape storm can
    // hold a connection a heartbeat needs.
    let reads = PgReads {
        pool: observability::pool_beside(storage.pool()),
        stale_after: args.stale.stale_after,
    };
    let endpoints = Arc::new(Endpoints {
        observed: Arc::new(Observed::new(Arc::new(reads))),
        listener_connected: Box::new({
            let w = waker.clone();
            move || w.is_connected()
        }),
        problem: Box::new(move || health.problem()),
        wake: Box::new({
            let w = waker.clone();
            move || w.wake()
        }),
        wake_secret: wake_secret.secret,
        metrics,
    });
    let stop_http = CancellationToken::new();
    let mut app = http::router(endpoints);
    if args.dashboard {
        let board = crate::dashboard::Dashboard::new(
            observability::pool_beside(storage.pool()),
            args.dashboard_admin.resolve()?,
            args.stale.stale_after,
            "/dashboard",
        );
        app = crate::dashboard::mount(app, Arc::new(board));
        info!(url = %format!("http://{local}/dashboard/"), "dashboard mounted");
    }
    let server = tokio::spawn(http::serve_router(listener, app, stop_http.clone()));
    info!(
        worker_id = %worker_id,
        http = %local,
        handlers = ?specs.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        "listening for /healthz /readyz /metrics /wake"
    );

    let signals = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) =
                (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
            else {
                warn!("cannot install signal handlers");
                return;
            };
            loop {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                let first = !shutdown.is_requested();
                if first {
                    info!(
                        signal = name,
                        "shutting down gracefully: no new claims, in-flight jobs get the grace period"
                    );
                } else {
                    warn!(signal = name, "second signal: releasing in-flight jobs now");
                }
                shutdown.escalate();
            }
        }
    });

    let report = worker.run().await.context("the worker failed")?;
    signals.abort();
    stop_http.cancel();
    let _ = server.await;
    info!(
        claimed = report.claimed,
        completed = report.completed,
        released = report.released,
        reaped = report.reaped,
        "worker exited cleanly"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use stuckless_core::{ManualClock, MemStore, Timestamp};

    use crate::cli::{Cli, Command};

    fn args(flags: &[&str]) -> WorkerArgs {
        let argv = ["stuckless", "worker", "--worker-id", "w"].iter().chain(flags);
        match Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{flags:?}: {e}"))
            .command
        {
            Command::Worker(args) => *args,
            other => panic!("{other:?}"),
        }
    }

    fn store() -> Arc<dyn Storage> {
        Arc::new(MemStore::new(ManualClock::new(Timestamp::UNIX_EPOCH)))
    }

    /// The settings a worker started with `flags` gets.
    fn settings_from(flags: &[&str]) -> stuckless_core::WorkerConfig {
        let args = args(flags);
        let plan = plan(&args).unwrap();
        configure(Worker::builder("w", store()), &args, &plan)
            .settings()
            .clone()
    }

    fn core_defaults() -> stuckless_core::WorkerConfig {
        Worker::builder("w", store()).settings().clone()
    }

    #[test]
    fn a_worker_started_without_flags_has_exactly_the_cores_defaults() {
        // The simulator runs `Worker::builder`'s defaults; this closes the
        // chain: the binary's defaults are those, not a copy of them.
        assert_eq!(settings_from(&[]), core_defaults());
        // And the comparison sees a difference when there is one.
        for changed in [
            &["--lease", "45s"][..],
            &["--default-timeout", "off"],
            &["--default-timeout", "16m"],
            &["--no-prune"],
            &["--retention-dead", "8d"],
            &["--prune-interval", "1m"],
            &["--prefetch", "4"],
            &["--kind-timeout", "noop=1m"],
        ] {
            assert_ne!(settings_from(changed), core_defaults(), "{changed:?}");
        }
    }

    /// `(long flag, value)` of every worker flag whose help states a
    /// `[default: …]` of the core's.
    fn stated_defaults() -> Vec<(String, String)> {
        let cli = Cli::command();
        let worker = cli.find_subcommand("worker").expect("worker subcommand");
        worker
            .get_arguments()
            .filter(|a| a.get_id() != "worker_id")
            .filter_map(|a| {
                let help = a.get_long_help().or(a.get_help())?.to_string();
                let (_, rest) = help.split_once("[default: ")?;
                let value = rest.split_once(']')?.0.to_owned();
                Some((format!("--{}", a.get_long()?), value))
            })
            .collect()
    }

    #[test]
    fn every_default_the_help_states_is_the_cores() {
        let stated = stated_defaults();
        let names: Vec<&str> = stated.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(stated.len(), 13, "{names:?}");
        let mut all = Vec::new();
        for (flag, value) in &stated {
            // One at a time, so a wrong one is named...
            assert_eq!(
                settings_from(&[flag, value]),
                core_defaults(),
                "`{flag} {value}`, the stated default, is not the core's"
            );
            all.extend([flag.as_str(), value.as_str()]);
        }
        // ...and all together.
        assert_eq!(settings_from(&all), core_defaults());
    }

    #[test]
    fn the_registry_records_the_limits_diagnose_reads_back() {
        let defaults = args(&[]);
        let m = time_limits_metadata(&defaults, &plan(&defaults).unwrap());
        assert_eq!(
            m,
            json!({"default_us": duration_micros(stuckless_core::DEFAULT_TIMEOUT), "kinds_us": {}})
        );
        let custom = args(&["--default-timeout", "off", "--kind-timeout", "sleep=90s"]);
        let m = time_limits_metadata(&custom, &plan(&custom).unwrap());
        assert_eq!(m, json!({"default_us": null, "kinds_us": {"sleep": 90_000_000}}));
    }

    #[test]
    fn bad_limits_and_leases_are_refused_before_connecting() {
        let refused = |flags: &[&str]| {
            let argv = ["stuckless", "worker"].iter().chain(flags);
            match Cli::try_parse_from(argv) {
                Err(e) => e.to_string(),
                Ok(cli) => match cli.command {
                    Command::Worker(args) => format!("{:#}", plan(&args).err().expect("refused")),
                    other => panic!("{other:?}"),
                },
            }
        };
        assert!(refused(&["--lease", "2400h"]).contains("invalid lease: must be at most 24h"));
        assert!(refused(&["--default-timeout", "8d"]).contains("between 1µs and 7d"));
        assert!(refused(&["--kind-timeout", "noop=8d"]).contains("invalid kind timeout"));
        assert!(refused(&["--no-prune", "--retention-dead", "1d"]).contains("cannot be used with"));
    }
}

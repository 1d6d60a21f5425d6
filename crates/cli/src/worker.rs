//! `stuckless worker`: the core `Worker` on Postgres, with signals, the HTTP
//! endpoints and metrics.

use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use stuckless_core::driver::Storage;
use stuckless_core::{Handler, Worker, WorkerBuilder};
use stuckless_pg::{PgStorage, PgWaker};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::WorkerArgs;
use crate::handlers::{self, Counted, HandlerSpec, HttpHandler};
use crate::http::{self, Endpoints};
use crate::metrics::Metrics;
use crate::util::{parse_duration, parse_pair};

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
    pub kind_timeouts: Vec<(String, std::time::Duration)>,
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
    // shorter than the lease, non-zero intervals, kind names) on a throwaway
    // in-memory store, so those mistakes too are reported before connecting.
    let id = args.worker_id.clone().unwrap_or_else(default_worker_id);
    let clock = stuckless_core::ManualClock::new(stuckless_core::Timestamp::UNIX_EPOCH);
    let store = Arc::new(stuckless_core::MemStore::new(clock.clone()));
    let mut dry = settings(Worker::builder(id, store).clock(Arc::new(clock)), args, &plan);
    for (kind, _) in &plan.handlers {
        dry = dry.handler(kind.clone(), handlers::noop);
    }
    dry.build().context("invalid worker configuration")?;
    Ok(plan)
}

/// Applies the flags' settings to a builder (the real one and the dry run).
fn settings(builder: WorkerBuilder, args: &WorkerArgs, plan: &Plan) -> WorkerBuilder {
    let mut builder = builder
        .queues(args.queues.clone())
        .concurrency(args.concurrency)
        .lease(args.lease)
        .heartbeat_interval(args.heartbeat_interval)
        .reap_interval(args.reap_interval)
        .poll_interval(args.poll_interval)
        .registry_heartbeat_interval(args.registry_heartbeat_interval)
        .shutdown_grace(args.shutdown_grace);
    for (kind, timeout) in &plan.kind_timeouts {
        builder = builder.kind_timeout(kind.clone(), *timeout);
    }
    builder
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

    let metrics = Metrics::for_queues(&args.queues);
    let storage_arc: Arc<dyn Storage> = Arc::new(storage.clone());
    let waker = PgWaker::start(storage.pool().clone(), args.queues.clone());
    let mut builder = settings(
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
    }));
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

    if args.wake_secret.is_none() {
        warn!("WAKE_SECRET is not set: POST /wake refuses every request");
    }
    let endpoints = Arc::new(Endpoints {
        storage: storage_arc,
        listener_connected: Box::new({
            let w = waker.clone();
            move || w.is_connected()
        }),
        wake: Box::new({
            let w = waker.clone();
            move || w.wake()
        }),
        wake_secret: args.wake_secret.clone(),
        metrics,
    });
    let stop_http = CancellationToken::new();
    let server = tokio::spawn(http::serve(listener, endpoints, stop_http.clone()));
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

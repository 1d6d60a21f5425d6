//! `stuckless dashboard`: the dashboard on a port of its own, until Ctrl-C or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::Dashboard;
use crate::{http, observability};

/// Binds `bind:port` and serves the dashboard until Ctrl-C or SIGTERM.
pub async fn run(
    storage: &stuckless_pg::PgStorage,
    bind: &str,
    port: u16,
    admin_token: Option<String>,
    stale_after: Duration,
) -> anyhow::Result<()> {
    let addr = format!("{bind}:{port}");
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (choose another --port)"))?;
    let local = listener.local_addr()?;
    let writable = admin_token.is_some();
    // A pool of its own, like the worker's endpoints: pages cannot take the
    // connections anything else on this process needs.
    let pool = observability::pool_beside(storage.pool());
    let dashboard = Arc::new(Dashboard::new(pool, admin_token, stale_after, ""));
    let stop = CancellationToken::new();
    let server = tokio::spawn(http::serve_router(
        listener,
        super::router(dashboard),
        stop.clone(),
    ));
    info!(
        url = %format!("http://{local}/"),
        actions = if writable { "enabled (admin token set)" } else { "off: read-only" },
        "dashboard listening"
    );
    eprintln!(
        "dashboard on http://{local}/ ({})",
        if writable { "actions enabled" } else { "read-only" }
    );
    shutdown_signal().await;
    stop.cancel();
    server.await.context("the dashboard server failed")?;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

//! A [`Storage`] over simulated TCP (core's [`Remote`] over [`NetStore`]), and
//! the db host that serves the in-memory store to it.
//!
//! Each call takes an idle connection from a small pool (or opens one), sends
//! one frame and waits for one frame. A call that fails or times out drops its
//! connection, so a reply that arrives late can never be read by a later call.
//! The store lives outside the host's software, so a db restart drops every
//! connection while committed data survives, as in Postgres.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use stuckless_core::driver::{Op, Remote, Reply, Storage, Transport};
use stuckless_core::{Clock, NotifyWaker, StorageError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;
use turmoil::net::{TcpListener, TcpStream};

use crate::observe::{observations, Sink};
use crate::wire::{read_frame, write_frame, Envelope, Request};

/// Port the db host listens on.
pub const DB_PORT: u16 = 5432;

/// How long a client waits for one reply. Shorter than the worker's storage
/// timeout (10 s), so a connection stalled by a lost segment is replaced by a
/// fresh one while the worker still retries.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A LISTEN connection that has heard nothing for this long (not even a
/// keepalive) is presumed dead and reopened.
const LISTEN_SILENCE: Duration = Duration::from_secs(30);

/// Keepalive period on LISTEN connections.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// A server connection idle this long is closed, so connections whose client
/// vanished do not pile up.
const SERVER_IDLE: Duration = Duration::from_secs(120);

/// A pooled connection idle this long is not reused: the server may have
/// closed it. Like sqlx's idle timeout, it is shorter than the server's, so
/// a call never spends itself on a connection the server already dropped.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// The client side of the db connection: a [`Transport`] that carries each
/// [`Op`] to the db host over simulated TCP. [`NetStore::remote`] makes it a
/// full [`Storage`].
pub struct NetStore {
    from: String,
    db: String,
    /// Idle connections with the time they were last used.
    pool: Mutex<Vec<(TcpStream, Duration)>>,
    /// Raised as a completion is written to the wire, for a pause that
    /// waits for one ([`crate::plan::Fault::Pause`]).
    completion_written: Option<Arc<AtomicBool>>,
}

impl NetStore {
    /// A transport calling the db host `db` on behalf of host `from`.
    pub fn new(from: impl Into<String>, db: impl Into<String>) -> Self {
        NetStore {
            from: from.into(),
            db: db.into(),
            pool: Mutex::new(Vec::new()),
            completion_written: None,
        }
    }

    /// This transport, raising `flag` each time it writes a completion.
    pub fn flag_completions(mut self, flag: Arc<AtomicBool>) -> Self {
        self.completion_written = Some(flag);
        self
    }

    /// A [`Storage`] calling the db host `db` on behalf of host `from`.
    pub fn remote(from: impl Into<String>, db: impl Into<String>) -> Remote<NetStore> {
        Remote::new(Self::new(from, db))
    }
}

#[async_trait]
impl Transport for NetStore {
    async fn send(&self, op: Op) -> Result<Reply, StorageError> {
        let completes = matches!(op, Op::JobComplete(_) | Op::JobCompleteMany(_));
        let envelope = Envelope {
            from: self.from.clone(),
            request: Request::Op(op),
        };
        let exchange = async {
            let now = turmoil::sim_elapsed().unwrap_or_default();
            let pooled = {
                let mut pool = self.pool.lock().expect("pool lock");
                pool.retain(|(_, used)| now.saturating_sub(*used) < POOL_IDLE);
                pool.pop().map(|(conn, _)| conn)
            };
            let mut conn = match pooled {
                Some(conn) => conn,
                None => TcpStream::connect((self.db.as_str(), DB_PORT)).await?,
            };
            if let (true, Some(flag)) = (completes, &self.completion_written) {
                flag.store(true, Ordering::SeqCst);
            }
            write_frame(&mut conn, &envelope).await?;
            let reply: Reply = read_frame(&mut conn).await?;
            let used = turmoil::sim_elapsed().unwrap_or_default();
            self.pool.lock().expect("pool lock").push((conn, used));
            Ok::<_, std::io::Error>(reply)
        };
        match tokio::time::timeout(CALL_TIMEOUT, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(io)) => Err(StorageError::Unavailable(format!("db connection: {io}"))),
            Err(_) => Err(StorageError::Unavailable(format!(
                "no reply within {CALL_TIMEOUT:?}"
            ))),
        }
    }
}

/// Keeps a LISTEN connection to the db host open and turns each wake-up byte
/// into a [`NotifyWaker::wake`]; reopens it when it breaks or goes silent.
pub async fn listen(from: String, db: String, waker: NotifyWaker) {
    let envelope = Envelope {
        from,
        request: Request::Listen,
    };
    loop {
        if let Ok(Ok(mut conn)) =
            tokio::time::timeout(CALL_TIMEOUT, TcpStream::connect((db.as_str(), DB_PORT))).await
        {
            if write_frame(&mut conn, &envelope).await.is_ok() {
                // A wake after reconnecting: anything enqueued while the
                // connection was down was not announced.
                waker.wake();
                while let Ok(Ok(byte)) = tokio::time::timeout(LISTEN_SILENCE, conn.read_u8()).await {
                    if byte == 1 {
                        waker.wake();
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Everything the db host serves with; cloned into each (re)start.
#[derive(Clone)]
pub struct DbHost {
    /// What answers each operation: the durable data (it survives db
    /// restarts), through the variant's hook if any.
    pub storage: Arc<dyn Storage>,
    /// The store's clock (the database's own time).
    pub clock: Arc<dyn Clock>,
    /// Where each answered call's observations go; whoever listens.
    pub observer: Sink,
    /// Chance that one wake-up to one listener is lost.
    pub notification_loss: Arc<Mutex<f64>>,
    /// Draws the losses.
    pub rng: Arc<Mutex<ChaCha8Rng>>,
    /// Raised as a reap reaches the db, before it is answered, for a pause
    /// that ends at one ([`crate::plan::Fault::Pause`]).
    pub reap_arrived: Arc<AtomicBool>,
}

impl DbHost {
    /// The db host's software: accept connections and serve them until crashed.
    pub async fn serve(self) -> turmoil::Result {
        let listener = TcpListener::bind(("0.0.0.0", DB_PORT)).await?;
        let (wakes, _) = broadcast::channel::<()>(1024);
        loop {
            let (conn, _) = listener.accept().await?;
            let host = self.clone();
            let wakes = wakes.clone();
            tokio::task::spawn_local(async move { host.connection(conn, wakes).await });
        }
    }

    async fn connection(&self, mut conn: TcpStream, wakes: broadcast::Sender<()>) {
        loop {
            let envelope: Envelope = match tokio::time::timeout(SERVER_IDLE, read_frame(&mut conn)).await {
                Ok(Ok(envelope)) => envelope,
                _ => return,
            };
            let op = match envelope.request {
                Request::Listen => {
                    self.notify_loop(conn, wakes.subscribe()).await;
                    return;
                }
                Request::Op(op) => op,
            };
            if matches!(op, Op::JobReapExpired(_)) {
                self.reap_arrived.store(true, Ordering::SeqCst);
            }
            let inserted = matches!(op, Op::JobInsert(_) | Op::JobInsertMany(_));
            let reply = self.apply(&envelope.from, op).await;
            if inserted && reply.error().is_none() {
                let _ = wakes.send(());
            }
            if write_frame(&mut conn, &reply).await.is_err() {
                return;
            }
        }
    }

    async fn notify_loop(&self, mut conn: TcpStream, mut wakes: broadcast::Receiver<()>) {
        loop {
            let byte = tokio::select! {
                biased;
                wake = wakes.recv() => match wake {
                    Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        let p = *self.notification_loss.lock().expect("loss lock");
                        if p > 0.0 && self.rng.lock().expect("rng lock").random_bool(p.min(1.0)) {
                            continue;
                        }
                        1u8
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep(KEEPALIVE) => 0u8,
            };
            if conn.write_u8(byte).await.is_err() || conn.flush().await.is_err() {
                return;
            }
        }
    }

    /// Runs one operation on the storage and reports what it observed.
    async fn apply(&self, from: &str, op: Op) -> Reply {
        let reply = op.clone().apply(self.storage.as_ref()).await;
        let now = self.clock.now();
        self.observer.extend(observations(now, from, &op, &reply));
        reply
    }
}

//! A [`Storage`] client over simulated TCP, and the db host that serves a
//! [`MemStore`] to it.
//!
//! Each call takes an idle connection from a small pool (or opens one), sends
//! one frame and waits for one frame. A call that fails or times out drops its
//! connection, so a reply that arrives late can never be read by a later call.
//! The store lives outside the host's software, so a db restart drops every
//! connection while committed data survives, as in Postgres.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use stuckless_core::{
    ClaimRequest, ClaimedJob, Clock, CompleteOutcome, Epoch, FailOutcome, FailRequest, InsertOutcome, Job,
    JobEvent, JobId, MemStore, NewJob, NotifyWaker, QueueStats, ReapOutcome, Storage, StorageError,
    StorageResult, Timestamp, WorkerRecord, WorkerRegistration,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;
use turmoil::net::{TcpListener, TcpStream};

use crate::clock::SimClock;
use crate::observe::{observations, Sink};
use crate::variants::Variant;
use crate::wire::{read_frame, write_frame, Envelope, Request, Response, WireError};

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

/// A [`Storage`] that forwards every call to the db host.
pub struct NetStore {
    from: String,
    db: String,
    /// Idle connections with the time they were last used.
    pool: Mutex<Vec<(TcpStream, Duration)>>,
}

impl NetStore {
    /// A client calling the db host `db` on behalf of host `from`.
    pub fn new(from: impl Into<String>, db: impl Into<String>) -> Self {
        NetStore {
            from: from.into(),
            db: db.into(),
            pool: Mutex::new(Vec::new()),
        }
    }

    async fn call(&self, request: Request) -> StorageResult<Response> {
        let envelope = Envelope {
            from: self.from.clone(),
            request,
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
            write_frame(&mut conn, &envelope).await?;
            let response: Response = read_frame(&mut conn).await?;
            let used = turmoil::sim_elapsed().unwrap_or_default();
            self.pool.lock().expect("pool lock").push((conn, used));
            Ok::<_, std::io::Error>(response)
        };
        match tokio::time::timeout(CALL_TIMEOUT, exchange).await {
            Ok(Ok(Response::Error(e))) => Err(e.into()),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(io)) => Err(StorageError::Unavailable(format!("db connection: {io}"))),
            Err(_) => Err(StorageError::Unavailable(format!(
                "no reply within {CALL_TIMEOUT:?}"
            ))),
        }
    }
}

fn unexpected<T>(response: Response) -> StorageResult<T> {
    Err(StorageError::Other(format!("unexpected reply {response:?}")))
}

macro_rules! expect {
    ($call:expr, $pattern:pat => $value:expr) => {
        match $call.await? {
            $pattern => Ok($value),
            other => unexpected(other),
        }
    };
}

#[async_trait]
impl Storage for NetStore {
    async fn job_insert(&self, job: NewJob) -> StorageResult<InsertOutcome> {
        expect!(self.call(Request::Insert(job)), Response::Inserted(o) => o)
    }
    async fn job_insert_many(&self, jobs: Vec<NewJob>) -> StorageResult<Vec<InsertOutcome>> {
        expect!(self.call(Request::InsertMany(jobs)), Response::InsertedMany(o) => o)
    }
    async fn job_claim(&self, request: ClaimRequest) -> StorageResult<Vec<ClaimedJob>> {
        expect!(self.call(Request::Claim(request)), Response::Claimed(o) => o)
    }
    async fn job_heartbeat(
        &self,
        id: JobId,
        epoch: Epoch,
        lease: Duration,
        progress: Option<Value>,
    ) -> StorageResult<Timestamp> {
        expect!(self.call(Request::Heartbeat { id, epoch, lease, progress }), Response::Time(t) => t)
    }
    async fn job_complete(&self, id: JobId, epoch: Epoch) -> StorageResult<CompleteOutcome> {
        expect!(self.call(Request::Complete { id, epoch }), Response::Completed(o) => o)
    }
    async fn job_complete_many(
        &self,
        jobs: Vec<(JobId, Epoch)>,
    ) -> StorageResult<Vec<StorageResult<CompleteOutcome>>> {
        expect!(self.call(Request::CompleteMany(jobs)),
            Response::CompletedMany(o) => o.into_iter().map(|r| r.map_err(StorageError::from)).collect())
    }
    async fn job_fail(&self, id: JobId, epoch: Epoch, request: FailRequest) -> StorageResult<FailOutcome> {
        expect!(self.call(Request::Fail { id, epoch, request }), Response::Failed(o) => o)
    }
    async fn job_release(&self, id: JobId, epoch: Epoch) -> StorageResult<()> {
        expect!(self.call(Request::Release { id, epoch }), Response::Done => ())
    }
    async fn job_reap_expired(&self, limit: u32) -> StorageResult<ReapOutcome> {
        expect!(self.call(Request::Reap { limit }), Response::Reaped(o) => o)
    }
    async fn job_cancel(&self, id: JobId) -> StorageResult<Job> {
        expect!(self.call(Request::Cancel(id)), Response::Job(j) => j)
    }
    async fn job_requeue(&self, id: JobId, force: bool) -> StorageResult<Job> {
        expect!(self.call(Request::Requeue { id, force }), Response::Job(j) => j)
    }
    async fn job_get(&self, id: JobId) -> StorageResult<Option<Job>> {
        expect!(self.call(Request::Get(id)), Response::MaybeJob(j) => j)
    }
    async fn job_events(&self, id: JobId) -> StorageResult<Vec<JobEvent>> {
        expect!(self.call(Request::Events(id)), Response::Events(e) => e)
    }
    async fn worker_register(&self, worker: WorkerRegistration) -> StorageResult<()> {
        expect!(self.call(Request::Register(worker)), Response::Done => ())
    }
    async fn worker_heartbeat(&self, id: &str, in_flight: u32) -> StorageResult<()> {
        expect!(self.call(Request::WorkerHeartbeat { id: id.to_owned(), in_flight }), Response::Done => ())
    }
    async fn worker_deregister(&self, id: &str) -> StorageResult<()> {
        expect!(self.call(Request::Deregister(id.to_owned())), Response::Done => ())
    }
    async fn worker_list(&self) -> StorageResult<Vec<WorkerRecord>> {
        expect!(self.call(Request::Workers), Response::Workers(w) => w)
    }
    async fn queue_stats(&self) -> StorageResult<Vec<QueueStats>> {
        expect!(self.call(Request::Stats), Response::Stats(s) => s)
    }
    async fn storage_now(&self) -> StorageResult<Timestamp> {
        expect!(self.call(Request::Now), Response::Time(t) => t)
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
    /// The durable data: survives db restarts.
    pub store: Arc<MemStore>,
    /// The store's clock (the database's own time).
    pub clock: SimClock,
    /// Where each answered call's observations go; whoever listens.
    pub observer: Sink,
    /// Which broken behaviour, if any, the db exhibits.
    pub variant: Variant,
    /// Chance that one wake-up to one listener is lost.
    pub notification_loss: Arc<Mutex<f64>>,
    /// Draws the losses.
    pub rng: Arc<Mutex<ChaCha8Rng>>,
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
            if let Request::Listen = envelope.request {
                self.notify_loop(conn, wakes.subscribe()).await;
                return;
            }
            let inserted = matches!(envelope.request, Request::Insert(_) | Request::InsertMany(_));
            let response = self.apply(&envelope).await;
            if inserted && !matches!(response, Response::Error(_)) {
                let _ = wakes.send(());
            }
            if write_frame(&mut conn, &response).await.is_err() {
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

    /// Runs one request against the store (through the variant, if any) and
    /// reports what it observed.
    async fn apply(&self, envelope: &Envelope) -> Response {
        let response = match self.variant.intercept(&self.store, &envelope.request).await {
            Some(response) => response,
            None => dispatch(self.store.as_ref(), envelope.request.clone()).await,
        };
        let now = self.clock.now();
        self.observer
            .extend(observations(now, &envelope.from, &envelope.request, &response));
        response
    }
}

fn reply<T>(result: StorageResult<T>, f: impl FnOnce(T) -> Response) -> Response {
    match result {
        Ok(v) => f(v),
        Err(e) => Response::Error(WireError::from(e)),
    }
}

/// Runs one request against a correct storage.
pub async fn dispatch(store: &dyn Storage, request: Request) -> Response {
    match request {
        Request::Insert(job) => reply(store.job_insert(job).await, Response::Inserted),
        Request::InsertMany(jobs) => reply(store.job_insert_many(jobs).await, Response::InsertedMany),
        Request::Claim(req) => reply(store.job_claim(req).await, Response::Claimed),
        Request::Heartbeat {
            id,
            epoch,
            lease,
            progress,
        } => reply(
            store.job_heartbeat(id, epoch, lease, progress).await,
            Response::Time,
        ),
        Request::Complete { id, epoch } => reply(store.job_complete(id, epoch).await, Response::Completed),
        Request::CompleteMany(jobs) => reply(store.job_complete_many(jobs).await, |rs| {
            Response::CompletedMany(rs.into_iter().map(|r| r.map_err(WireError::from)).collect())
        }),
        Request::Fail { id, epoch, request } => {
            reply(store.job_fail(id, epoch, request).await, Response::Failed)
        }
        Request::Release { id, epoch } => reply(store.job_release(id, epoch).await, |()| Response::Done),
        Request::Reap { limit } => reply(store.job_reap_expired(limit).await, Response::Reaped),
        Request::Cancel(id) => reply(store.job_cancel(id).await, Response::Job),
        Request::Requeue { id, force } => reply(store.job_requeue(id, force).await, Response::Job),
        Request::Get(id) => reply(store.job_get(id).await, Response::MaybeJob),
        Request::Events(id) => reply(store.job_events(id).await, Response::Events),
        Request::Register(w) => reply(store.worker_register(w).await, |()| Response::Done),
        Request::WorkerHeartbeat { id, in_flight } => {
            reply(store.worker_heartbeat(&id, in_flight).await, |()| Response::Done)
        }
        Request::Deregister(id) => reply(store.worker_deregister(&id).await, |()| Response::Done),
        Request::Workers => reply(store.worker_list().await, Response::Workers),
        Request::Stats => reply(store.queue_stats().await, Response::Stats),
        Request::Now => reply(store.storage_now().await, Response::Time),
        Request::Listen => Response::Error(WireError::Other("listen is not a storage call".into())),
    }
}

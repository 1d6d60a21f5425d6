//! A TCP fault proxy between one worker and Postgres.
//!
//! Each worker gets its own [`FaultProxy`]: a listener on 127.0.0.1 that
//! forwards every connection to the upstream Postgres. The orchestrator,
//! in-process, can add latency to every chunk, black-hole the traffic (bytes
//! are accepted and dropped, nothing is forwarded, nothing is answered), or
//! cut every open connection. Healing a black hole cuts the connections too:
//! dropped bytes have broken the protocol stream, so the clients must
//! reconnect, exactly as after a real network partition.
//!
//! The proxy also counts the queries the client sends (simple `Query` and
//! extended-protocol `Sync` messages), which is how the bench measures an
//! idle worker's query rate. That needs a cleartext stream: connect through
//! the proxy with `sslmode=disable`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use anyhow::Context;

/// What the proxy does to traffic right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forward everything at once.
    #[default]
    None,
    /// Hold each chunk this long before forwarding it.
    Latency(Duration),
    /// Accept bytes in both directions and forward none.
    BlackHole,
}

/// Counters of one proxy since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections closed by [`FaultProxy::cut_all`].
    pub cut: u64,
    /// Statements the client sent: simple `Query` plus extended `Execute` messages.
    pub queries: u64,
    /// Round trips the client started: `Query` plus `Sync` messages (a pool's
    /// liveness ping is a bare `Sync`).
    pub round_trips: u64,
    /// Bytes dropped by a black hole.
    pub dropped_bytes: u64,
}

struct State {
    upstream: SocketAddr,
    fault: Mutex<Fault>,
    generation: Mutex<CancellationToken>,
    open: AtomicU64,
    connections: AtomicU64,
    cut: AtomicU64,
    queries: AtomicU64,
    round_trips: AtomicU64,
    dropped_bytes: AtomicU64,
}

/// A fault-injecting TCP proxy; stops (and closes every connection) on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on an ephemeral 127.0.0.1 port forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fault proxy's listener")?;
        let addr = listener.local_addr().context("fault proxy address")?;
        let state = Arc::new(State {
            upstream,
            fault: Mutex::new(Fault::None),
            generation: Mutex::new(CancellationToken::new()),
            open: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            cut: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            round_trips: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(FaultProxy { addr, state, accept })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        *self.state.fault.lock().expect("fault lock")
    }

    /// Sets the fault for all traffic from now on, on open and new connections.
    pub fn set_fault(&self, fault: Fault) {
        *self.state.fault.lock().expect("fault lock") = fault;
    }

    /// Closes every open connection at once (clients see a reset/EOF).
    pub fn cut_all(&self) {
        let old = {
            let mut token = self.state.generation.lock().expect("generation lock");
            std::mem::replace(&mut *token, CancellationToken::new())
        };
        self.state
            .cut
            .fetch_add(self.state.open.load(Ordering::SeqCst), Ordering::SeqCst);
        old.cancel();
    }

    /// Ends a black hole or latency: no fault, and every connection cut so
    /// clients reconnect on a clean protocol stream.
    pub fn heal(&self) {
        self.set_fault(Fault::None);
        self.cut_all();
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> u64 {
        self.state.open.load(Ordering::SeqCst)
    }

    /// The counters so far.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            connections: self.state.connections.load(Ordering::SeqCst),
            cut: self.state.cut.load(Ordering::SeqCst),
            queries: self.state.queries.load(Ordering::SeqCst),
            round_trips: self.state.round_trips.load(Ordering::SeqCst),
            dropped_bytes: self.state.dropped_bytes.load(Ordering::SeqCst),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.generation.lock().expect("generation lock").cancel();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors or similar: back off, keep serving.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let token = state.generation.lock().expect("generation lock").child_token();
        tokio::spawn(serve(client, state.clone(), token));
    }
}

async fn serve(client: TcpStream, state: Arc<State>, token: CancellationToken) {
    let upstream = tokio::select! {
        _ = token.cancelled() => return,
        up = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(state.upstream)) => match up {
            Ok(Ok(up)) => up,
            _ => return,
        },
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    state.open.fetch_add(1, Ordering::SeqCst);
    let (client_read, client_write) = client.into_split();
    let (up_read, up_write) = upstream.into_split();
    let conn = token.child_token();
    let to_server = tokio::spawn(pump(client_read, up_write, state.clone(), conn.clone(), true));
    let to_client = tokio::spawn(pump(up_read, client_write, state.clone(), conn.clone(), false));
    let _ = to_server.await;
    let _ = to_client.await;
    state.open.fetch_sub(1, Ordering::SeqCst);
}

/// Copies one direction until EOF, an error or a cut; ends the other
/// direction too when it stops.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<State>,
    conn: CancellationToken,
    client_to_server: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut framer = Framer::default();
    loop {
        let n = tokio::select! {
            _ = conn.cancelled() => break,
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        let fault = *state.fault.lock().expect("fault lock");
        match fault {
            Fault::BlackHole => {
                state.dropped_bytes.fetch_add(n as u64, Ordering::SeqCst);
                continue;
            }
            Fault::Latency(delay) => {
                tokio::select! {
                    _ = conn.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Fault::None => {}
        }
        if client_to_server {
            let counts = framer.feed(&buf[..n]);
            state.queries.fetch_add(counts.queries, Ordering::SeqCst);
            state.round_trips.fetch_add(counts.round_trips, Ordering::SeqCst);
        }
        let written = tokio::select! {
            _ = conn.cancelled() => break,
            w = to.write_all(&buf[..n]) => w,
        };
        if written.is_err() {
            break;
        }
    }
    conn.cancel();
}

/// What [`Framer::feed`] counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameCounts {
    /// `Q` (simple query) and `E` (Execute) messages.
    pub queries: u64,
    /// `Q` and `S` (Sync) messages.
    pub round_trips: u64,
}

/// Splits the client's byte stream into Postgres protocol messages and counts
/// statements (`Q`, `E`) and round trips (`Q`, `S`).
#[derive(Debug, Default)]
pub struct Framer {
    /// Past the startup message: messages carry a type byte.
    typed: bool,
    /// Header bytes gathered so far (type byte + length, or length alone).
    header: Vec<u8>,
    /// Body bytes of the current message still to skip.
    skip: usize,
}

impl Framer {
    /// Feeds the next bytes; returns what the messages that began in them count.
    pub fn feed(&mut self, mut bytes: &[u8]) -> FrameCounts {
        let mut count = FrameCounts::default();
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let header_len = if self.typed { 5 } else { 8 };
            let need = header_len - self.header.len();
            let n = need.min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() < header_len {
                break;
            }
            if self.typed {
                let kind = self.header[0];
                let len =
                    u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]);
                count.queries += u64::from(kind == b'Q' || kind == b'E');
                count.round_trips += u64::from(kind == b'Q' || kind == b'S');
                self.skip = (len as usize).saturating_sub(4);
            } else {
                let len =
                    u32::from_be_bytes([self.header[0], self.header[1], self.header[2], self.header[3]]);
                let code =
                    u32::from_be_bytes([self.header[4], self.header[5], self.header[6], self.header[7]]);
                // SSLRequest and GSSENCRequest are followed by another untyped
                // startup message; anything else starts the typed stream.
                const SSL_REQUEST: u32 = 80_877_103;
                const GSSENC_REQUEST: u32 = 80_877_104;
                if code != SSL_REQUEST && code != GSSENC_REQUEST {
                    self.typed = true;
                }
                self.skip = (len as usize).saturating_sub(8);
            }
            self.header.clear();
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn framer_counts_queries_across_arbitrary_chunking() {
        let mut stream = Vec::new();
        // SSLRequest, then a startup message with parameters.
        stream.extend_from_slice(&8u32.to_be_bytes());
        stream.extend_from_slice(&80_877_103u32.to_be_bytes());
        let params = b"user\0postgres\0\0";
        stream.extend_from_slice(&((8 + params.len()) as u32).to_be_bytes());
        stream.extend_from_slice(&196_608u32.to_be_bytes());
        stream.extend_from_slice(params);
        stream.extend(typed(b'p', b"password\0"));
        stream.extend(typed(b'Q', b"select 1\0"));
        stream.extend(typed(b'P', b"\0select $1\0\0\0"));
        stream.extend(typed(b'B', b"\0\0\0\0\0\0"));
        stream.extend(typed(b'E', b"\0\0\0\0\0"));
        stream.extend(typed(b'S', b""));
        stream.extend(typed(b'S', b"")); // a pool's ping: a round trip, no statement
        stream.extend(typed(b'Q', b"listen x\0"));
        for chunk in [1usize, 2, 3, 7, 1000] {
            let mut framer = Framer::default();
            let (mut queries, mut trips) = (0, 0);
            for c in stream.chunks(chunk) {
                let counts = framer.feed(c);
                queries += counts.queries;
                trips += counts.round_trips;
            }
            assert_eq!((queries, trips), (3, 4), "chunk size {chunk}");
        }
    }

    #[tokio::test]
    async fn black_hole_forwards_nothing_and_heal_cuts_connections() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = FaultProxy::start(echo_addr).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        proxy.set_fault(Fault::BlackHole);
        c.write_all(b"lost").await.unwrap();
        let read = tokio::time::timeout(Duration::from_millis(300), c.read(&mut buf)).await;
        assert!(read.is_err(), "a black hole must not answer");
        assert!(proxy.stats().dropped_bytes >= 4);

        proxy.heal();
        let mut rest = Vec::new();
        let eof = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await;
        assert!(
            matches!(eof, Ok(Ok(0)) | Ok(Err(_))),
            "healing must cut the connection: {eof:?}"
        );
        assert!(rest.is_empty());

        let mut c2 = TcpStream::connect(proxy.addr()).await.unwrap();
        c2.write_all(b"pong").await.unwrap();
        c2.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        assert_eq!(proxy.stats().connections, 2);
    }
}

//! What crosses the simulated network between storage clients and the db
//! host: one length-prefixed JSON frame per message. The messages are core's
//! own [`Op`]/[`Reply`] pair; only the LISTEN subscription is the sim's.

use std::io;

use serde::{Deserialize, Serialize};
use stuckless_core::driver::Op;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted; anything bigger is a protocol error.
const MAX_FRAME: u32 = 8 * 1024 * 1024;

/// A call from a client, tagged with the calling host. The db host answers an
/// [`Request::Op`] with one [`Reply`](stuckless_core::driver::Reply) frame.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The calling host (worker id or "producer").
    pub from: String,
    /// The call.
    pub request: Request,
}

/// One storage operation, or a subscription to wake-ups.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// A storage operation; answered with its reply.
    Op(Op),
    /// Keep this connection open and send one byte per wake-up (LISTEN).
    Listen,
}

/// Writes one frame: a big-endian u32 length, then JSON.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    w.write_u32(bytes.len() as u32).await?;
    w.write_all(&bytes).await?;
    w.flush().await
}

/// Reads one frame written by [`write_frame`].
pub async fn read_frame<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(r: &mut R) -> io::Result<T> {
    let len = r.read_u32().await?;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut buf = vec![0; len as usize];
    r.read_exact(&mut buf).await?;
    serde_json::from_slice(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

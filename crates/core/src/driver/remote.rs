//! `Remote<T>`: a [`Storage`] on the far side of any transport that carries an
//! [`Op`] there and its [`Reply`] back (the simulator's network, say).

use async_trait::async_trait;

use super::ops::{Op, Operation, Reply, StorageResult};
use crate::error::StorageError;

/// Carries one operation to a storage and brings its reply back.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends `op` and waits for the reply. A lost request or reply is an
    /// error ([`StorageError::Unavailable`]): the operation may or may not
    /// have taken effect.
    async fn send(&self, op: Op) -> Result<Reply, StorageError>;
}

/// A storage reached through a [`Transport`].
pub struct Remote<T> {
    transport: T,
}

impl<T: Transport> Remote<T> {
    /// A storage that sends every operation through `transport`.
    pub fn new(transport: T) -> Self {
        Remote { transport }
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    pub(crate) async fn dispatch<P: Operation>(&self, params: P) -> StorageResult<P::Output> {
        P::from_reply(self.transport.send(params.into_op()).await?)
    }
}

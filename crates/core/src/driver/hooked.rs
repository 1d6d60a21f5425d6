//! `Hooked<S, H>`: a storage wrapped in hooks that see, and may change, every
//! operation — for tests that drop heartbeats, a bench that times claims, or a
//! simulator's deliberately broken variants.

use async_trait::async_trait;

use super::ops::{Op, Operation, Reply, Storage, StorageResult};

/// What [`Hook::before`] decided.
// One lives for one call, on the stack of a test or simulator hook: boxing
// the reply (a `Job` with its checkpoint) would cost an allocation per call
// to save bytes nobody keeps.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Flow {
    /// Run the (possibly changed) operation on the inner storage.
    Continue(Op),
    /// Answer without calling the inner storage.
    Answer(Reply),
}

/// Code that runs around every operation of a [`Hooked`] storage.
///
/// Override [`before`](Hook::before) and [`after`](Hook::after) for the usual
/// cases, or [`call`](Hook::call) to wrap the whole call (timing it, say).
#[async_trait]
pub trait Hook: Send + Sync + 'static {
    /// Runs before the operation; may change it or answer it itself.
    async fn before(&self, op: Op) -> Flow {
        Flow::Continue(op)
    }

    /// Runs after the inner storage answered `name`; may change the reply.
    async fn after(&self, name: &'static str, reply: &mut Reply) {
        let _ = (name, reply);
    }

    /// The whole call: `before`, the inner storage, `after`.
    async fn call(&self, inner: &dyn Storage, op: Op) -> Reply {
        match self.before(op).await {
            Flow::Answer(reply) => reply,
            Flow::Continue(op) => {
                let name = op.name();
                let mut reply = op.apply(inner).await;
                self.after(name, &mut reply).await;
                reply
            }
        }
    }
}

/// A storage whose every operation goes through a [`Hook`].
pub struct Hooked<S, H> {
    inner: S,
    hook: H,
}

impl<S: Storage, H: Hook> Hooked<S, H> {
    /// Wraps `inner` with `hook`.
    pub fn new(inner: S, hook: H) -> Self {
        Hooked { inner, hook }
    }

    /// The wrapped storage.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The hook.
    pub fn hook(&self) -> &H {
        &self.hook
    }

    pub(crate) async fn dispatch<P: Operation>(&self, params: P) -> StorageResult<P::Output> {
        P::from_reply(self.hook.call(&self.inner, params.into_op()).await)
    }
}

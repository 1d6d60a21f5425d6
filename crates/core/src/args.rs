//! Typed job kinds: a [`JobArgs`] type is a kind's payload, and a
//! [`JobHandler`] runs it.

use std::future::Future;
use std::marker::PhantomData;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::JobError;
use crate::handler::{Handler, JobContext};
use crate::job::{limits, NewJob};
use crate::validate::ValidationError;

/// The payload of one job kind, serialised as the job's JSON payload.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use stuckless_core::JobArgs;
///
/// #[derive(Serialize, Deserialize)]
/// struct SendEmail { to: String }
///
/// impl JobArgs for SendEmail {
///     const KIND: &'static str = "send_email";
///     const QUEUE: &'static str = "mail";
/// }
/// let job = stuckless_core::NewJob::from_args(&SendEmail { to: "a@b.c".into() }).unwrap();
/// assert_eq!((job.queue.as_str(), job.kind.as_str()), ("mail", "send_email"));
/// ```
pub trait JobArgs: Serialize + DeserializeOwned + Send + 'static {
    /// The kind name workers route on: 1–128 bytes of `[A-Za-z0-9_.:-]`.
    const KIND: &'static str;
    /// The queue new jobs of this kind go to. Default `"default"`.
    const QUEUE: &'static str = "default";
    /// Attempts before a job of this kind is dead. Default 5.
    const MAX_ATTEMPTS: i32 = limits::DEFAULT_MAX_ATTEMPTS;
    /// Time limit on one attempt of this kind; `None` leaves it to the
    /// worker's default (15 minutes). A job's own limit overrides it.
    const TIMEOUT: Option<std::time::Duration> = None;
}

impl NewJob {
    /// A job of kind `A::KIND` on `A::QUEUE` whose payload is `args` as JSON.
    pub fn from_args<A: JobArgs>(args: &A) -> Result<NewJob, ValidationError> {
        let payload = serde_json::to_value(args)
            .map_err(|e| ValidationError::new("payload", format!("cannot be serialised as JSON: {e}")))?;
        Ok(NewJob::new(A::QUEUE, A::KIND, payload).max_attempts(A::MAX_ATTEMPTS))
    }
}

/// Runs jobs whose payload is `Self`; register it with
/// [`WorkerBuilder::handle`](crate::WorkerBuilder::handle).
///
/// A payload that does not decode as `Self` fails permanently (the job goes
/// dead with the decode error) instead of retrying: no retry can fix it.
pub trait JobHandler: JobArgs + Sized {
    /// Runs one attempt.
    fn run(self, ctx: JobContext) -> impl Future<Output = Result<(), JobError>> + Send;
}

/// Adapts a [`JobHandler`] type to the JSON-level [`Handler`].
pub(crate) struct Typed<A>(PhantomData<fn() -> A>);

impl<A> Typed<A> {
    pub(crate) fn new() -> Self {
        Typed(PhantomData)
    }
}

#[async_trait]
impl<A: JobHandler> Handler for Typed<A> {
    async fn handle(&self, ctx: JobContext) -> Result<(), JobError> {
        let args: A = ctx.payload_as()?;
        args.run(ctx).await
    }
}

//! A value read at most once per period however many ask at once: what
//! keeps 200 concurrent scrapes of /metrics down to one database query.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// The latest value and when it was read; a read older than `ttl` is
/// refreshed by the first caller while the others wait for its answer.
pub struct Cached<T> {
    ttl: Duration,
    latest: Mutex<Option<(Instant, T)>>,
}

impl<T: Clone> Cached<T> {
    /// An empty cache whose reads stay fresh for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Cached {
            ttl,
            latest: Mutex::new(None),
        }
    }

    /// The cached value if it is fresh, else `read()`'s, which is cached.
    ///
    /// The lock is held across `read`, so one read is in flight at a time
    /// and callers arriving meanwhile get its result instead of starting
    /// their own (the lock is fair: they are served in arrival order). A
    /// failed read is cached like a good one, so a database that is down is
    /// not asked again by every caller. `read` must bound its own time:
    /// every caller waits for it.
    pub async fn get<F, Fut>(&self, read: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let mut latest = self.latest.lock().await;
        if let Some((at, value)) = latest.as_ref() {
            if at.elapsed() < self.ttl {
                return value.clone();
            }
        }
        let value = read().await;
        *latest = Some((Instant::now(), value.clone()));
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_read_until_it_goes_stale() {
        let cache = Arc::new(Cached::new(Duration::from_secs(5)));
        let reads = Arc::new(AtomicU32::new(0));
        let read = |reads: Arc<AtomicU32>| async move {
            let n = reads.fetch_add(1, Ordering::SeqCst) + 1;
            // A slow query: every caller arrives while it is in flight.
            tokio::time::sleep(Duration::from_millis(500)).await;
            n
        };
        let callers: Vec<_> = (0..200)
            .map(|_| {
                let (cache, reads) = (cache.clone(), reads.clone());
                tokio::spawn(async move { cache.get(|| read(reads)).await })
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.unwrap(), 1, "every caller got the one read");
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(cache.get(|| read(reads.clone())).await, 1, "still fresh");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cache.get(|| read(reads.clone())).await, 2, "stale: read again");
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_dropped_mid_read_lets_the_next_one_read() {
        let cache = Arc::new(Cached::new(Duration::from_secs(5)));
        let hung = tokio::spawn({
            let cache = cache.clone();
            async move { cache.get(std::future::pending::<u32>).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        hung.abort();
        let _ = hung.await;
        assert_eq!(cache.get(|| async { 7 }).await, 7);
    }
}

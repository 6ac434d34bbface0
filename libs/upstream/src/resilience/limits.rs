//! Per-upstream limits: at most `max_in_flight` requests at once; beyond
//! that up to `max_queued` wait (at most `queue_timeout_ms`) for a slot, and
//! any more are refused at once (503 with `Retry-After`) instead of piling
//! up on a struggling upstream.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub struct Limits {
    slots: Arc<Semaphore>,
    max_queued: usize,
    queued: AtomicUsize,
    queue_timeout: Duration,
}

/// Why a request was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue was full.
    QueueFull,
    /// It waited `queue_timeout` without a slot.
    QueueTimeout,
}

impl Limits {
    pub fn new(max_in_flight: usize, max_queued: usize, queue_timeout: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_in_flight)),
            max_queued,
            queued: AtomicUsize::new(0),
            queue_timeout,
        }
    }

    /// A slot for one request (held until dropped), or why not.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, Refused> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Refused::QueueFull);
        }
        let waited =
            tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Refused::QueueTimeout),
        }
    }

    pub fn in_flight(&self, max_in_flight: usize) -> usize {
        max_in_flight - self.slots.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn beyond_the_slots_requests_queue_then_are_refused() {
        let limits = Limits::new(1, 1, Duration::from_millis(50));
        let held = limits.admit().await.unwrap();
        // The queue has room for one: it waits, and times out.
        assert_eq!(limits.admit().await.unwrap_err(), Refused::QueueTimeout);
        // With one waiting, the next is refused at once.
        let waiting = limits.admit();
        let (first, second) = tokio::join!(waiting, async {
            tokio::task::yield_now().await;
            limits.admit().await
        });
        assert_eq!(second.unwrap_err(), Refused::QueueFull);
        assert_eq!(first.unwrap_err(), Refused::QueueTimeout);
        drop(held);
        assert!(limits.admit().await.is_ok());
    }
}

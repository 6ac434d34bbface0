//! One password check at a time per account: without it, a burst of
//! parallel guesses would all pass the throttle's check before the first
//! failure is counted.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::OwnedMutexGuard;

/// Per-key async locks; an entry lives only while someone holds or waits
/// for it, so the map stays as small as the current concurrency.
#[derive(Debug, Default)]
pub struct PerKey {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while the key's password check runs.
#[derive(Debug)]
pub struct Turn {
    owner: Arc<PerKey>,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl PerKey {
    /// Waits for the key's turn.
    pub async fn turn(self: &Arc<Self>, key: &str) -> Turn {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            locks.entry(key.to_owned()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        Turn {
            owner: Arc::clone(self),
            key: key.to_owned(),
            guard: Some(guard),
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self
            .owner
            .locks
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // Only the map holds it now: nobody waits, forget the key.
        if locks
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_for_one_key_take_turns_and_the_map_empties() {
        let locks = Arc::new(PerKey::default());
        let first = locks.turn("a").await;
        let other_key = tokio::time::timeout(std::time::Duration::from_secs(1), locks.turn("b"))
            .await
            .expect("another key does not wait");
        drop(other_key);
        let waiting = tokio::spawn({
            let locks = locks.clone();
            async move { locks.turn("a").await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the same key waits");
        drop(first);
        drop(waiting.await.unwrap());
        assert!(locks.locks.lock().unwrap().is_empty());
    }
}

//! Where the sign-in throttle's counters live: Redis when configured, so
//! every auth replica counts the same attempts, else this process. A Redis
//! that fails falls back to this process's counters for that call (logged):
//! guessing stays slowed, per replica, rather than unchecked.
//!
//! In Redis, per counter: `…fail:<key>` counts failures (expiring with the
//! window) and `…lock:<key>` holds the lock's end in milliseconds since the
//! epoch (by the service's clock, so tests move it), expiring with the
//! longest lock.

use redis::{AsyncCommands, aio::ConnectionManager};
use time::{Duration, OffsetDateTime};

use crate::domain::throttle::{self, Attempt, Throttle};

/// The counters, here or in Redis.
#[derive(Debug)]
pub enum ThrottleStore {
    Local(Throttle),
    Shared(SharedThrottle),
}

/// Counters in Redis, with this process's as the fallback.
pub struct SharedThrottle {
    redis: ConnectionManager,
    prefix: String,
    fallback: Throttle,
}

impl std::fmt::Debug for SharedThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedThrottle")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn millis(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

impl ThrottleStore {
    /// In Redis when a client is given (keys under `prefix`), else here.
    pub fn new(throttle: Throttle, redis: Option<(redis::Client, String)>) -> Self {
        let Some((client, prefix)) = redis else {
            return Self::Local(throttle);
        };
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_millis(500)))
            .set_response_timeout(Some(std::time::Duration::from_millis(500)))
            .set_number_of_retries(1);
        match ConnectionManager::new_lazy_with_config(client, config) {
            Ok(redis) => Self::Shared(SharedThrottle {
                redis,
                prefix: format!("{prefix}throttle:"),
                fallback: throttle,
            }),
            Err(err) => {
                tracing::warn!(%err, "cannot use Redis for the sign-in throttle; counting in this process");
                Self::Local(throttle)
            }
        }
    }

    /// `Err(seconds)` while the attempt is locked out.
    pub async fn check(&self, attempt: &Attempt<'_>, now: OffsetDateTime) -> Result<(), i64> {
        match self {
            Self::Local(throttle) => throttle.check(attempt, now),
            Self::Shared(shared) => match shared.check(attempt, now).await {
                Ok(outcome) => outcome,
                Err(err) => {
                    tracing::warn!(%err, "Redis throttle unavailable; counting in this process");
                    shared.fallback.check(attempt, now)
                }
            },
        }
    }

    /// Counts a failed attempt.
    pub async fn failed(&self, attempt: &Attempt<'_>, now: OffsetDateTime) {
        match self {
            Self::Local(throttle) => throttle.failed(attempt, now),
            Self::Shared(shared) => {
                if let Err(err) = shared.failed(attempt, now).await {
                    tracing::warn!(%err, "Redis throttle unavailable; counting in this process");
                    shared.fallback.failed(attempt, now);
                }
            }
        }
    }

    /// Counts one use of a rate-limited action (a mail asked for) and
    /// answers as [`Self::check`] does after it: the use past the limit is
    /// already refused. The same counters and lock-outs as failures, so a
    /// limit reads like the sign-in throttle's configuration.
    pub async fn take(&self, attempt: &Attempt<'_>, now: OffsetDateTime) -> Result<(), i64> {
        self.failed(attempt, now).await;
        self.check(attempt, now).await
    }

    /// Clears the owner's account+address counter after a success.
    pub async fn succeeded(&self, attempt: &Attempt<'_>) {
        match self {
            Self::Local(throttle) => throttle.succeeded(attempt),
            Self::Shared(shared) => {
                shared.fallback.succeeded(attempt);
                if let Err(err) = shared.succeeded(attempt).await {
                    tracing::warn!(%err, "Redis throttle unavailable");
                }
            }
        }
    }
}

impl SharedThrottle {
    fn keys(&self, attempt: &Attempt<'_>) -> Vec<(String, throttle::Limit)> {
        throttle::labelled_keys(self.fallback.config(), attempt)
    }

    async fn check(
        &self,
        attempt: &Attempt<'_>,
        now: OffsetDateTime,
    ) -> redis::RedisResult<Result<(), i64>> {
        let locks: Vec<String> = self
            .keys(attempt)
            .iter()
            .map(|(key, _)| format!("{}lock:{key}", self.prefix))
            .collect();
        let mut redis = self.redis.clone();
        let until: Vec<Option<i64>> = redis.mget(&locks).await?;
        let now = millis(now);
        let wait = until
            .into_iter()
            .flatten()
            .filter(|until| *until > now)
            .map(|until| ((until - now + 999) / 1_000).max(1))
            .max();
        Ok(wait.map_or(Ok(()), Err))
    }

    async fn failed(&self, attempt: &Attempt<'_>, now: OffsetDateTime) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        for (key, limit) in self.keys(attempt) {
            let fail_key = format!("{}fail:{key}", self.prefix);
            // One transaction: the counter is created with its expiry or
            // not at all (a lost EXPIRE would make it count forever).
            let (failures,): (u32,) = redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(&fail_key)
                .arg(0)
                .arg("EX")
                .arg(limit.window_secs)
                .arg("NX")
                .ignore()
                .incr(&fail_key, 1)
                .query_async(&mut redis)
                .await?;
            if let Some(lock) = throttle::lock_for(&limit, failures) {
                let until = millis(now + Duration::seconds(lock));
                let lock_key = format!("{}lock:{key}", self.prefix);
                let ttl = u64::try_from(limit.max_lock_secs.max(lock)).unwrap_or(1);
                let _: () = redis.set_ex(&lock_key, until, ttl).await?;
            }
        }
        Ok(())
    }

    async fn succeeded(&self, attempt: &Attempt<'_>) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        let owner: Vec<String> = self
            .keys(attempt)
            .into_iter()
            .filter(|(key, _)| key.starts_with("account-address:"))
            .flat_map(|(key, _)| {
                [
                    format!("{}fail:{key}", self.prefix),
                    format!("{}lock:{key}", self.prefix),
                ]
            })
            .collect();
        if !owner.is_empty() {
            let _: () = redis.del(&owner).await?;
        }
        Ok(())
    }
}

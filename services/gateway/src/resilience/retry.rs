//! When an attempt is tried again. Retries go to a different endpoint (the
//! attempt order never repeats one), only for requests that provably never
//! reached an upstream (connection refused) or whose method is idempotent,
//! at most `max_attempts` in all, after a jittered backoff — and only
//! while the upstream's retry budget allows: retries may add at most
//! `ratio_percent` of its requests, plus `min_per_second`, over a 10 s
//! window (so that retries cannot multiply the load of an outage).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// How long the budget looks back.
const WINDOW_SECS: u64 = 10;

/// `upstreams.<name>.retry_budget`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetPolicy {
    pub ratio_percent: u32,
    pub min_per_second: u32,
}

/// (second, requests, retries).
type Bucket = (u64, u64, u64);

/// Requests and retries per second over the window.
#[derive(Debug)]
pub struct RetryBudget {
    policy: BudgetPolicy,
    buckets: Mutex<(Instant, Vec<Bucket>)>,
}

impl RetryBudget {
    pub fn new(policy: BudgetPolicy) -> Self {
        Self {
            policy,
            buckets: Mutex::new((Instant::now(), Vec::new())),
        }
    }

    fn with_current<T>(&self, change: impl FnOnce(&mut Bucket, u64, u64) -> T) -> Option<T> {
        let mut guard = self.buckets.lock().ok()?;
        let (origin, buckets) = &mut *guard;
        let second = origin.elapsed().as_secs();
        buckets.retain(|(at, _, _)| *at + WINDOW_SECS > second);
        if buckets.last().is_none_or(|(at, _, _)| *at != second) {
            buckets.push((second, 0, 0));
        }
        let (requests, retries) = buckets
            .iter()
            .fold((0, 0), |(r, t), (_, br, bt)| (r + br, t + bt));
        let current = buckets.last_mut()?;
        Some(change(current, requests, retries))
    }

    /// Counts one request (its first attempt).
    pub fn count_request(&self) {
        self.with_current(|bucket, _, _| bucket.1 += 1);
    }

    /// Takes one retry from the budget, if it has one.
    pub fn try_retry(&self) -> bool {
        let policy = self.policy.clone();
        self.with_current(|bucket, requests, retries| {
            let allowed = requests * u64::from(policy.ratio_percent) / 100
                + u64::from(policy.min_per_second) * WINDOW_SECS;
            if retries < allowed {
                bucket.2 += 1;
                true
            } else {
                false
            }
        })
        .unwrap_or(false)
    }
}

/// Full jitter: a random wait up to `base × 2^retry`, capped.
pub fn backoff(retry: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base.saturating_mul(1 << retry.min(16)).min(cap);
    ceiling.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_the_ratio_plus_the_floor() {
        let budget = RetryBudget::new(BudgetPolicy {
            ratio_percent: 20,
            min_per_second: 1,
        });
        for _ in 0..100 {
            budget.count_request();
        }
        let granted = (0..100).filter(|_| budget.try_retry()).count();
        // 20% of 100, plus 1 per second over the 10 s window.
        assert_eq!(granted, 30);
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let (base, cap) = (Duration::from_millis(25), Duration::from_millis(250));
        for retry in 0..10 {
            let wait = backoff(retry, base, cap);
            assert!(wait <= cap.min(base * (1 << retry)), "{wait:?}");
        }
    }
}

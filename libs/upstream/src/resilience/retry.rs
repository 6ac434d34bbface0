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

/// (second, requests, retries); a bucket whose second has left the window
/// counts as empty.
type Bucket = (u64, u64, u64);

/// Requests and retries per second over the window: one fixed slot per
/// second of it, so counting a request allocates nothing and looks at one
/// slot (only a retry sums the window).
#[derive(Debug)]
pub struct RetryBudget {
    policy: BudgetPolicy,
    origin: Instant,
    buckets: Mutex<[Bucket; WINDOW_SECS as usize]>,
}

impl RetryBudget {
    pub fn new(policy: BudgetPolicy) -> Self {
        Self {
            policy,
            origin: Instant::now(),
            buckets: Mutex::new([(0, 0, 0); WINDOW_SECS as usize]),
        }
    }

    /// The current second's slot (emptied if it held an older second).
    fn current(buckets: &mut [Bucket; WINDOW_SECS as usize], second: u64) -> &mut Bucket {
        let slot = &mut buckets[(second % WINDOW_SECS) as usize];
        if slot.0 != second {
            *slot = (second, 0, 0);
        }
        slot
    }

    /// Counts one request (its first attempt).
    pub fn count_request(&self) {
        let second = self.origin.elapsed().as_secs();
        if let Ok(mut buckets) = self.buckets.lock() {
            Self::current(&mut buckets, second).1 += 1;
        }
    }

    /// Takes one retry from the budget, if it has one.
    pub fn try_retry(&self) -> bool {
        let second = self.origin.elapsed().as_secs();
        let Ok(mut buckets) = self.buckets.lock() else {
            return false;
        };
        let (requests, retries) = buckets
            .iter()
            .filter(|(at, _, _)| *at + WINDOW_SECS > second)
            .fold((0, 0), |(r, t), (_, br, bt)| (r + br, t + bt));
        let allowed = requests * u64::from(self.policy.ratio_percent) / 100
            + u64::from(self.policy.min_per_second) * WINDOW_SECS;
        if retries < allowed {
            Self::current(&mut buckets, second).2 += 1;
            true
        } else {
            false
        }
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
        // Jittered: retries at the same step do not all wait alike.
        let waits: std::collections::BTreeSet<Duration> =
            (0..20).map(|_| backoff(3, base, cap)).collect();
        assert!(waits.len() > 1, "{waits:?}");
    }
}

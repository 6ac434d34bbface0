//! GCRA in this process: one theoretical arrival time per key. Used when
//! there is no Redis, and when Redis cannot answer (`on_redis_failure =
//! "local"`): each replica then limits alone.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::{Decision, Limit};

/// Keys kept at most; past it, keys whose bucket is full again are dropped.
const MAX_KEYS: usize = 100_000;

#[derive(Debug)]
pub struct LocalGcra {
    origin: Instant,
    /// Theoretical arrival time per key, since `origin`.
    arrivals: Mutex<HashMap<String, Duration>>,
}

impl Default for LocalGcra {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            arrivals: Mutex::new(HashMap::new()),
        }
    }
}

impl LocalGcra {
    pub fn check(&self, limit: &Limit, key: &str) -> Decision {
        let now = self.origin.elapsed();
        let Ok(mut arrivals) = self.arrivals.lock() else {
            return Decision {
                allowed: true,
                remaining: 0,
                wait: Duration::ZERO,
            };
        };
        if arrivals.len() >= MAX_KEYS {
            arrivals.retain(|_, tat| *tat > now);
        }
        let full_key = format!("{}|{key}", limit.name);
        let tat = arrivals.get(&full_key).copied().unwrap_or(now).max(now);
        let tolerance = limit.emission * limit.burst;
        let next = tat + limit.emission;
        if next > now + tolerance {
            return Decision {
                allowed: false,
                remaining: 0,
                wait: next - tolerance - now,
            };
        }
        arrivals.insert(full_key, next);
        let room = (now + tolerance).saturating_sub(next);
        Decision {
            allowed: true,
            remaining: (room.as_nanos() / limit.emission.as_nanos().max(1)) as u64,
            wait: next - now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::{LimitKey, OnFailure};

    fn limit(rate: u32, burst: u32) -> Limit {
        Limit {
            key: LimitKey::ClientIp,
            emission: Duration::from_secs(1) / rate,
            burst,
            rate,
            period: Duration::from_secs(1),
            on_failure: OnFailure::Local,
            name: "/v1".to_owned(),
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let (gcra, limit) = (LocalGcra::default(), limit(10, 5));
        let allowed = (0..8).filter(|_| gcra.check(&limit, "a").allowed).count();
        assert_eq!(allowed, 5, "the burst");
        let refused = gcra.check(&limit, "a");
        assert!(!refused.allowed);
        assert!(
            refused.wait <= Duration::from_millis(100),
            "{:?}",
            refused.wait
        );
        assert!(gcra.check(&limit, "b").allowed, "keys are apart");
    }

    #[test]
    fn remaining_counts_down_the_burst() {
        let (gcra, limit) = (LocalGcra::default(), limit(10, 3));
        let remaining: Vec<u64> = (0..3).map(|_| gcra.check(&limit, "k").remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
    }
}

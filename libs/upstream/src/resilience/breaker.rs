//! A circuit breaker per endpoint on its error rate over a sliding window:
//! closed (traffic flows, outcomes counted) → open when at least
//! `min_requests` in the window failed `error_percent` or more (no traffic
//! for `open_ms`) → half-open (up to `half_open_requests` probes at once)
//! → closed after a probe succeeds, open again after one fails.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// `upstreams.<name>.breaker`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub error_percent: u32,
    pub min_requests: u32,
    pub window: Duration,
    pub open_for: Duration,
    pub half_open_requests: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probes: u32 },
}

impl State {
    pub fn label(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen { .. } => "half_open",
        }
    }
}

/// Outcomes per second over the window, as (second, requests, errors).
#[derive(Debug)]
struct Inner {
    state: State,
    buckets: Vec<(u64, u32, u32)>,
    origin: Instant,
}

#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                state: State::Closed,
                buckets: Vec::new(),
                origin: Instant::now(),
            }),
        }
    }
}

impl Breaker {
    pub fn state(&self) -> State {
        self.inner.lock().map_or(State::Closed, |inner| inner.state)
    }

    /// Whether a request may go to the endpoint now; a half-open breaker
    /// lets through its probes (each admitted one is counted).
    pub fn admit(&self, policy: &BreakerPolicy) -> bool {
        let Ok(mut inner) = self.inner.lock() else {
            return true;
        };
        match inner.state {
            State::Closed => true,
            State::Open { until } if Instant::now() < until => false,
            State::Open { .. } => {
                inner.state = State::HalfOpen { probes: 1 };
                true
            }
            State::HalfOpen { probes } if probes < policy.half_open_requests => {
                inner.state = State::HalfOpen { probes: probes + 1 };
                true
            }
            State::HalfOpen { .. } => false,
        }
    }

    /// Whether a request could go there now, without taking a probe slot.
    pub fn is_open(&self, policy: &BreakerPolicy) -> bool {
        match self.state() {
            State::Closed => false,
            State::Open { until } => Instant::now() < until,
            State::HalfOpen { probes } => probes >= policy.half_open_requests,
        }
    }

    /// Counts one outcome; returns the new state when it changed.
    pub fn record(&self, policy: &BreakerPolicy, failed: bool) -> Option<State> {
        let mut inner = self.inner.lock().ok()?;
        let now = Instant::now();
        match inner.state {
            State::HalfOpen { .. } => {
                inner.buckets.clear();
                inner.state = if failed {
                    State::Open {
                        until: now + policy.open_for,
                    }
                } else {
                    State::Closed
                };
                return Some(inner.state);
            }
            State::Open { .. } => return None,
            State::Closed => {}
        }
        let second = now.duration_since(inner.origin).as_secs();
        // Seconds that left the window are dropped when a new second
        // starts, not on every outcome.
        if inner.buckets.last().is_none_or(|(at, _, _)| *at != second) {
            let horizon = second.saturating_sub(policy.window.as_secs().max(1) - 1);
            inner.buckets.retain(|(at, _, _)| *at >= horizon);
            inner.buckets.push((second, 0, 0));
        }
        if let Some((_, requests, errors)) = inner.buckets.last_mut() {
            *requests += 1;
            *errors += u32::from(failed);
        }
        let (requests, errors) = inner
            .buckets
            .iter()
            .fold((0, 0), |(r, e), (_, br, be)| (r + br, e + be));
        if requests >= policy.min_requests && errors * 100 >= policy.error_percent * requests {
            inner.state = State::Open {
                until: now + policy.open_for,
            };
            inner.buckets.clear();
            return Some(inner.state);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            error_percent: 50,
            min_requests: 4,
            window: Duration::from_secs(10),
            open_for: Duration::from_millis(50),
            half_open_requests: 1,
        }
    }

    #[test]
    fn opens_on_the_error_rate_then_probes_and_closes() {
        let (breaker, policy) = (Breaker::default(), policy());
        assert_eq!(breaker.record(&policy, true), None);
        assert_eq!(breaker.record(&policy, false), None);
        assert_eq!(breaker.record(&policy, true), None);
        assert!(
            matches!(breaker.record(&policy, true), Some(State::Open { .. })),
            "3 of 4 failed"
        );
        assert!(!breaker.admit(&policy), "open: nothing goes through");
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.admit(&policy), "half-open: one probe");
        assert!(!breaker.admit(&policy), "only one probe at a time");
        assert_eq!(breaker.record(&policy, false), Some(State::Closed));
        assert!(breaker.admit(&policy));
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let (breaker, policy) = (Breaker::default(), policy());
        for _ in 0..4 {
            breaker.record(&policy, true);
        }
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.admit(&policy));
        assert!(matches!(
            breaker.record(&policy, true),
            Some(State::Open { .. })
        ));
        assert!(!breaker.admit(&policy));
    }

    #[test]
    fn too_few_requests_never_open_it() {
        let (breaker, policy) = (Breaker::default(), policy());
        for _ in 0..3 {
            assert_eq!(breaker.record(&policy, true), None);
        }
        assert!(breaker.admit(&policy));
    }
}

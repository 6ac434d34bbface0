//! Passive outlier detection: every attempt's outcome counts. An endpoint
//! is ejected after `consecutive_gateway_failures` connection failures,
//! resets or attempt timeouts in a row, or `consecutive_5xx` 5xx answers in
//! a row; each further ejection lasts longer (base × how many, up to the
//! cap), and no ejection happens that would put more than
//! `max_ejection_percent` of the upstream's endpoints aside at once (an
//! upstream never ejects itself empty).

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::upstream::Endpoint;

/// What one attempt came to, as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with a status under 500.
    Success,
    /// Answered 5xx.
    ServerError,
    /// Refused, reset, or silent past the attempt timeout.
    GatewayFailure,
}

/// An upstream's outlier rules (`upstreams.<name>.outlier`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierPolicy {
    pub consecutive_gateway_failures: u32,
    pub consecutive_5xx: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejection_percent: u32,
}

/// Per-endpoint counters.
#[derive(Debug, Default)]
pub struct OutlierState {
    gateway_failures: AtomicU32,
    server_errors: AtomicU32,
    /// Ejections so far; reset once the endpoint has served well for as
    /// long as the longest ejection.
    ejections: AtomicU32,
}

impl OutlierPolicy {
    /// Records `outcome` for `endpoint`: whether it was ejected now.
    /// `census` gives (the upstream's endpoints set aside at this moment,
    /// all of them); it is asked only when an ejection is due, not on every
    /// attempt.
    pub fn record(
        &self,
        endpoint: &Endpoint,
        outcome: Outcome,
        census: impl FnOnce() -> (usize, usize),
    ) -> Verdict {
        let state = &endpoint.outlier;
        let tripped = match outcome {
            Outcome::Success => {
                state.gateway_failures.store(0, Ordering::Relaxed);
                state.server_errors.store(0, Ordering::Relaxed);
                if endpoint
                    .healthy_since()
                    .is_some_and(|since| since.elapsed() >= self.max_ejection)
                {
                    state.ejections.store(0, Ordering::Relaxed);
                }
                endpoint.restore();
                return Verdict::Kept;
            }
            Outcome::GatewayFailure => {
                state.gateway_failures.fetch_add(1, Ordering::Relaxed) + 1
                    >= self.consecutive_gateway_failures
            }
            Outcome::ServerError => {
                state.server_errors.fetch_add(1, Ordering::Relaxed) + 1 >= self.consecutive_5xx
            }
        };
        if !tripped || endpoint.is_ejected(Instant::now()) {
            return Verdict::Kept;
        }
        let (ejected_now, total) = census();
        let allowed = (total * self.max_ejection_percent as usize / 100).max(1);
        if total <= 1 || ejected_now + 1 > allowed {
            return Verdict::Capped;
        }
        let count = state.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let duration = self
            .base_ejection
            .saturating_mul(count)
            .min(self.max_ejection);
        state.gateway_failures.store(0, Ordering::Relaxed);
        state.server_errors.store(0, Ordering::Relaxed);
        endpoint.eject(duration);
        Verdict::Ejected
    }
}

/// What one outcome did to its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Still in service.
    Kept,
    /// Set aside now.
    Ejected,
    /// Due for ejection, but the upstream has as many set aside as
    /// `max_ejection_percent` allows (or only this one endpoint).
    Capped,
}

impl Verdict {
    pub fn ejected(self) -> bool {
        self == Self::Ejected
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn policy() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_gateway_failures: 1,
            consecutive_5xx: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            max_ejection_percent: 50,
        }
    }

    fn endpoint() -> Arc<Endpoint> {
        Arc::new(Endpoint::parse("http://127.0.0.1:1").unwrap())
    }

    #[test]
    fn a_gateway_failure_ejects_at_once_and_5xx_only_in_a_row() {
        let (policy, a) = (policy(), endpoint());
        assert!(!policy.record(&a, Outcome::ServerError, || (0, 4)).ejected());
        assert!(!policy.record(&a, Outcome::ServerError, || (0, 4)).ejected());
        assert!(!policy.record(&a, Outcome::Success, || (0, 4)).ejected());
        assert!(!policy.record(&a, Outcome::ServerError, || (0, 4)).ejected());
        assert!(!policy.record(&a, Outcome::ServerError, || (0, 4)).ejected());
        assert!(
            policy.record(&a, Outcome::ServerError, || (0, 4)).ejected(),
            "three 5xx in a row"
        );
        let b = endpoint();
        assert!(
            policy
                .record(&b, Outcome::GatewayFailure, || (0, 4))
                .ejected()
        );
    }

    #[test]
    fn repeat_ejections_last_longer_up_to_the_cap() {
        let (policy, a) = (policy(), endpoint());
        let mut lengths = Vec::new();
        for _ in 0..3 {
            a.restore();
            assert!(
                policy
                    .record(&a, Outcome::GatewayFailure, || (0, 4))
                    .ejected()
            );
            lengths.push(a.ejected_for().unwrap().as_secs_f64().round() as u64);
        }
        assert_eq!(lengths, [10, 20, 25]);
    }

    #[test]
    fn no_ejection_beyond_the_share_and_never_the_last_endpoint() {
        let policy = policy();
        // Two of four already out: 50% allows no third.
        assert!(
            !policy
                .record(&endpoint(), Outcome::GatewayFailure, || (2, 4))
                .ejected()
        );
        assert!(
            policy
                .record(&endpoint(), Outcome::GatewayFailure, || (1, 4))
                .ejected()
        );
        // An upstream of one never ejects it.
        assert!(
            !policy
                .record(&endpoint(), Outcome::GatewayFailure, || (0, 1))
                .ejected()
        );
    }
}

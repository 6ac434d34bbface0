//! Endpoint selection: which replica of an upstream the next attempt goes
//! to. One file per policy; a policy only chooses among the candidates it is
//! given (the caller has already set aside ejected and already-tried
//! endpoints), so health and retries stay out of it.

mod least_request;
mod random;
mod round_robin;
mod weighted;

use std::sync::Arc;

use serde::Deserialize;

use crate::upstream::Endpoint;

/// A balancing policy for one upstream.
pub trait Balancer: Send + Sync + std::fmt::Debug {
    /// One of `candidates` (indices into `endpoints`; never empty).
    fn pick(&self, endpoints: &[Arc<Endpoint>], candidates: &[usize]) -> usize;
}

/// `upstreams.<name>.balance`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Each endpoint in turn.
    RoundRobin,
    /// Smooth weighted round robin (nginx's): shares follow
    /// `upstreams.<name>.weights`, interleaved rather than in bursts.
    Weighted,
    /// Power of two choices over requests in flight: of two random
    /// candidates, the less busy one — steers away from a slow replica
    /// without the herd effect of always picking the global minimum.
    #[default]
    LeastRequest,
    /// Uniformly at random.
    Random,
}

impl Policy {
    /// The name as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::Weighted => "weighted",
            Self::LeastRequest => "least_request",
            Self::Random => "random",
        }
    }

    /// The policy's balancer for an upstream of `endpoints` endpoints.
    pub fn balancer(self, endpoints: usize) -> Box<dyn Balancer> {
        match self {
            Self::RoundRobin => Box::new(round_robin::RoundRobin::default()),
            Self::Weighted => Box::new(weighted::SmoothWeighted::new(endpoints)),
            Self::LeastRequest => Box::new(least_request::PowerOfTwoChoices),
            Self::Random => Box::new(random::Random),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use crate::upstream::Endpoint;

    pub fn endpoints(weights: &[u32]) -> Vec<Arc<Endpoint>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, weight)| {
                let mut endpoint =
                    Endpoint::parse(&format!("http://127.0.0.1:{}", 1000 + i)).unwrap();
                endpoint.weight = *weight;
                Arc::new(endpoint)
            })
            .collect()
    }

    /// How many of `picks` picks each endpoint got.
    pub fn shares(
        balancer: &dyn super::Balancer,
        endpoints: &[Arc<Endpoint>],
        picks: usize,
    ) -> Vec<usize> {
        let candidates: Vec<usize> = (0..endpoints.len()).collect();
        let mut counts = vec![0; endpoints.len()];
        for _ in 0..picks {
            counts[balancer.pick(endpoints, &candidates)] += 1;
        }
        counts
    }
}

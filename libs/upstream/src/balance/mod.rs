//! Endpoint selection: which replica of an upstream the next attempt goes
//! to. One file per policy; a policy only chooses among the candidates it is
//! given (the caller has already set aside ejected and already-tried
//! endpoints), so health and retries stay out of it.

mod least_request;
mod random;
mod ring_hash;
mod round_robin;
mod weighted;

use std::sync::Arc;

use serde::Deserialize;

use crate::upstream::Endpoint;

/// A balancing policy for one upstream.
pub trait Balancer: Send + Sync + std::fmt::Debug {
    /// One of `candidates` (indices into `endpoints`; never empty).
    fn pick(
        &self,
        endpoints: &[Arc<Endpoint>],
        candidates: &[usize],
        context: &PickContext,
    ) -> usize;
}

/// What a policy may know of the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickContext {
    /// The request's hash key (`upstreams.<name>.hash_on`), for
    /// `consistent_hash`; `None` when the request has no such key.
    pub hash: Option<u64>,
}

/// `upstreams.<name>.hash_on`: what `consistent_hash` keys on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    Header(http::HeaderName),
    Cookie(String),
    /// The verified token's subject.
    Subject,
    ClientIp,
}

impl HashOn {
    /// `header:<name>`, `cookie:<name>`, `subject` or `client_ip`.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.split_once(':') {
            Some(("header", name)) => http::HeaderName::from_bytes(name.as_bytes())
                .map(Self::Header)
                .map_err(|_| format!("`{name}` is not a header name")),
            Some(("cookie", name)) if !name.is_empty() => Ok(Self::Cookie(name.to_owned())),
            None if value == "subject" => Ok(Self::Subject),
            None if value == "client_ip" => Ok(Self::ClientIp),
            _ => Err(format!(
                "`{value}`: use header:<name>, cookie:<name>, subject or client_ip"
            )),
        }
    }

    /// The request's key, hashed.
    pub fn key(&self, facts: &crate::request_facts::RequestFacts<'_>) -> Option<u64> {
        use crate::request_facts::stable_hash;
        match self {
            Self::Header(name) => facts
                .header(name.as_str())
                .map(|v| stable_hash(v.as_bytes())),
            Self::Cookie(name) => facts.cookie(name).map(|v| stable_hash(v.as_bytes())),
            Self::Subject => facts.subject.map(|s| stable_hash(s.as_bytes())),
            Self::ClientIp => facts
                .client_ip
                .map(|ip| stable_hash(ip.to_string().as_bytes())),
        }
    }
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
    /// Ring hash on `hash_on`: the same key goes to the same endpoint, and
    /// an endpoint joining or leaving moves only about 1/N of the keys.
    ConsistentHash,
}

impl Policy {
    /// The name as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::Weighted => "weighted",
            Self::LeastRequest => "least_request",
            Self::Random => "random",
            Self::ConsistentHash => "consistent_hash",
        }
    }

    /// The policy's balancer for an upstream of `endpoints` endpoints.
    pub fn balancer(self, endpoints: usize) -> Box<dyn Balancer> {
        match self {
            Self::RoundRobin => Box::new(round_robin::RoundRobin::default()),
            Self::Weighted => Box::new(weighted::SmoothWeighted::new(endpoints)),
            Self::LeastRequest => Box::new(least_request::PowerOfTwoChoices),
            Self::Random => Box::new(random::Random),
            Self::ConsistentHash => Box::new(ring_hash::RingHash::default()),
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
            counts[balancer.pick(endpoints, &candidates, &super::PickContext::default())] += 1;
        }
        counts
    }
}

//! `consistent_hash`: a ring of many points per endpoint (ketama-style ring
//! hash); a request goes to the first point at or after its key's hash.
//! An endpoint joining or leaving moves only the keys next to its points,
//! about 1/N of them. A request without a key is placed at random.

use std::sync::{Arc, Mutex};

use super::{Balancer, PickContext};
use crate::{request_facts::stable_hash, upstream::Endpoint};

/// Points per endpoint: enough that shares stay within a few percent.
const POINTS_PER_ENDPOINT: usize = 160;

/// Points as (hash, endpoint index), sorted.
type Ring = Arc<Vec<(u64, usize)>>;

#[derive(Debug, Default)]
pub struct RingHash {
    /// The ring for one endpoint set (by label; rebuilt when it changes).
    ring: Mutex<Option<(Vec<String>, Ring)>>,
}

impl RingHash {
    fn ring(&self, endpoints: &[Arc<Endpoint>]) -> Ring {
        let same = |labels: &[String]| {
            labels.len() == endpoints.len()
                && labels.iter().zip(endpoints).all(|(l, e)| *l == e.label)
        };
        let Ok(mut cached) = self.ring.lock() else {
            let labels: Vec<String> = endpoints.iter().map(|e| e.label.clone()).collect();
            return Arc::new(build(&labels));
        };
        if let Some((for_labels, ring)) = cached.as_ref()
            && same(for_labels)
        {
            return ring.clone();
        }
        let labels: Vec<String> = endpoints.iter().map(|e| e.label.clone()).collect();
        let ring = Arc::new(build(&labels));
        *cached = Some((labels, ring.clone()));
        ring
    }
}

fn build(labels: &[String]) -> Vec<(u64, usize)> {
    let mut ring = Vec::with_capacity(labels.len() * POINTS_PER_ENDPOINT);
    for (index, label) in labels.iter().enumerate() {
        for point in 0..POINTS_PER_ENDPOINT {
            ring.push((stable_hash(format!("{label}#{point}").as_bytes()), index));
        }
    }
    ring.sort_unstable();
    ring
}

impl Balancer for RingHash {
    fn pick(
        &self,
        endpoints: &[Arc<Endpoint>],
        candidates: &[usize],
        context: &PickContext,
    ) -> usize {
        let Some(key) = context.hash else {
            return candidates[fastrand::usize(..candidates.len())];
        };
        let ring = self.ring(endpoints);
        let start = ring.partition_point(|(point, _)| *point < key);
        // The first point after the key whose endpoint may be tried (a
        // tried or unhealthy one passes its keys on to the next).
        (0..ring.len())
            .map(|offset| ring[(start + offset) % ring.len()].1)
            .find(|index| candidates.contains(index))
            .unwrap_or(candidates[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: usize) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| Arc::new(Endpoint::parse(&format!("http://10.0.0.{}:8081", i + 1)).unwrap()))
            .collect()
    }

    fn owner(balancer: &RingHash, endpoints: &[Arc<Endpoint>], key: &str) -> String {
        let candidates: Vec<usize> = (0..endpoints.len()).collect();
        let context = PickContext {
            hash: Some(stable_hash(key.as_bytes())),
        };
        endpoints[balancer.pick(endpoints, &candidates, &context)]
            .label
            .clone()
    }

    #[test]
    fn the_same_key_always_lands_on_the_same_endpoint() {
        let (balancer, endpoints) = (RingHash::default(), endpoints(5));
        let first = owner(&balancer, &endpoints, "user-42");
        assert!((0..20).all(|_| owner(&balancer, &endpoints, "user-42") == first));
    }

    #[test]
    fn adding_an_endpoint_remaps_about_one_in_n_keys() {
        // One balancer per endpoint set, as each set's upstream has.
        let (before, after) = (RingHash::default(), RingHash::default());
        let (ten, eleven) = (endpoints(10), endpoints(11));
        let keys: Vec<String> = (0..20_000).map(|i| format!("subject-{i}")).collect();
        let moved: Vec<&String> = keys
            .iter()
            .filter(|key| owner(&before, &ten, key) != owner(&after, &eleven, key))
            .collect();
        let share = moved.len() as f64 / keys.len() as f64;
        // Ideal: 1/11 ≈ 9.1% move, all to the new endpoint.
        assert!(
            (0.06..0.12).contains(&share),
            "{:.1}% of keys moved",
            share * 100.0
        );
        assert!(
            moved
                .iter()
                .all(|key| owner(&after, &eleven, key) == "http://10.0.0.11:8081"),
            "a key moved between two old endpoints"
        );
    }

    #[test]
    fn shares_are_even_within_a_few_percent() {
        let (balancer, endpoints) = (RingHash::default(), endpoints(4));
        let mut counts = std::collections::HashMap::new();
        for i in 0..20_000 {
            *counts
                .entry(owner(&balancer, &endpoints, &format!("k{i}")))
                .or_insert(0) += 1;
        }
        for count in counts.values() {
            assert!((4_000..6_000).contains(count), "{counts:?}");
        }
    }

    #[test]
    fn a_tried_endpoints_keys_go_to_the_next_one_on_the_ring() {
        let (balancer, endpoints) = (RingHash::default(), endpoints(3));
        let context = PickContext {
            hash: Some(stable_hash(b"user-7")),
        };
        let first = balancer.pick(&endpoints, &[0, 1, 2], &context);
        let rest: Vec<usize> = (0..3).filter(|i| *i != first).collect();
        let second = balancer.pick(&endpoints, &rest, &context);
        assert_ne!(first, second);
    }
}

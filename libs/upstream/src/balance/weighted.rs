//! `weighted`: smooth weighted round robin (nginx's algorithm). Each pick
//! adds every candidate's weight to its running score, takes the highest
//! and subtracts the candidates' total from it: shares follow the weights
//! and a heavy endpoint's turns are spread out, not bunched.

use std::sync::Arc;

use std::sync::Mutex;

use super::{Balancer, PickContext};
use crate::upstream::Endpoint;

#[derive(Debug)]
pub struct SmoothWeighted {
    scores: Mutex<Vec<i64>>,
}

impl SmoothWeighted {
    pub fn new(endpoints: usize) -> Self {
        Self {
            scores: Mutex::new(vec![0; endpoints]),
        }
    }
}

impl Balancer for SmoothWeighted {
    fn pick(
        &self,
        endpoints: &[Arc<Endpoint>],
        candidates: &[usize],
        _context: &PickContext,
    ) -> usize {
        let Ok(mut scores) = self.scores.lock() else {
            return candidates[0];
        };
        if scores.len() != endpoints.len() {
            *scores = vec![0; endpoints.len()];
        }
        let mut total = 0;
        let mut best = candidates[0];
        for &candidate in candidates {
            let weight = i64::from(endpoints[candidate].weight);
            scores[candidate] += weight;
            total += weight;
            if scores[candidate] > scores[best] {
                best = candidate;
            }
        }
        scores[best] -= total;
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing;

    #[test]
    fn shares_follow_the_weights_exactly_over_a_cycle() {
        let endpoints = testing::endpoints(&[5, 1, 1]);
        let balancer = SmoothWeighted::new(3);
        assert_eq!(
            testing::shares(&balancer, &endpoints, 7_000),
            [5_000, 1_000, 1_000]
        );
    }

    #[test]
    fn a_heavy_endpoints_turns_are_spread_out() {
        let endpoints = testing::endpoints(&[5, 1, 1]);
        let balancer = SmoothWeighted::new(3);
        let picks: Vec<usize> = (0..7)
            .map(|_| balancer.pick(&endpoints, &[0, 1, 2], &PickContext::default()))
            .collect();
        // nginx's sequence for 5/1/1: a a b a c a a.
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }
}

//! `round_robin`: each candidate in turn.

use std::sync::Arc;

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Balancer, PickContext};
use crate::upstream::Endpoint;

#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn pick(
        &self,
        _endpoints: &[Arc<Endpoint>],
        candidates: &[usize],
        _context: &PickContext,
    ) -> usize {
        candidates[self.next.fetch_add(1, Ordering::Relaxed) % candidates.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing;

    #[test]
    fn every_endpoint_in_turn() {
        let endpoints = testing::endpoints(&[1, 1, 1]);
        let balancer = RoundRobin::default();
        let picks: Vec<usize> = (0..6)
            .map(|_| balancer.pick(&endpoints, &[0, 1, 2], &PickContext::default()))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }
}

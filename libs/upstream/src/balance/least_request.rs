//! `least_request`: power of two choices over requests in flight (Envoy's
//! and tower's `p2c`): two distinct random candidates, the one with fewer
//! requests in flight wins.

use std::sync::Arc;

use super::{Balancer, PickContext};
use crate::upstream::Endpoint;

#[derive(Debug)]
pub struct PowerOfTwoChoices;

impl Balancer for PowerOfTwoChoices {
    fn pick(
        &self,
        endpoints: &[Arc<Endpoint>],
        candidates: &[usize],
        _context: &PickContext,
    ) -> usize {
        if candidates.len() == 1 {
            return candidates[0];
        }
        let first = fastrand::usize(..candidates.len());
        // A second index drawn from the others, so the two always differ.
        let second = (first + 1 + fastrand::usize(..candidates.len() - 1)) % candidates.len();
        let (a, b) = (candidates[first], candidates[second]);
        if endpoints[b].in_flight() < endpoints[a].in_flight() {
            b
        } else {
            a
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing;

    #[test]
    fn idle_endpoints_share_evenly() {
        let endpoints = testing::endpoints(&[1, 1]);
        let shares = testing::shares(&PowerOfTwoChoices, &endpoints, 10_000);
        assert!((4_500..5_500).contains(&shares[0]), "{shares:?}");
    }

    #[test]
    fn a_busy_endpoint_is_avoided() {
        let endpoints = testing::endpoints(&[1, 1, 1]);
        let _held: Vec<_> = (0..5).map(|_| endpoints[0].start_request()).collect();
        let shares = testing::shares(&PowerOfTwoChoices, &endpoints, 3_000);
        // Picked only when drawn with itself, which p2c never does: never.
        assert_eq!(shares[0], 0, "{shares:?}");
    }
}

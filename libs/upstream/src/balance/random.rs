//! `random`: uniformly at random.

use std::sync::Arc;

use super::{Balancer, PickContext};
use crate::upstream::Endpoint;

#[derive(Debug)]
pub struct Random;

impl Balancer for Random {
    fn pick(
        &self,
        _endpoints: &[Arc<Endpoint>],
        candidates: &[usize],
        _context: &PickContext,
    ) -> usize {
        candidates[fastrand::usize(..candidates.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing;

    #[test]
    fn shares_are_even_within_tolerance() {
        let endpoints = testing::endpoints(&[1, 1, 1, 1]);
        let shares = testing::shares(&Random, &endpoints, 40_000);
        for share in shares {
            assert!((9_000..11_000).contains(&share), "{share} of 40,000");
        }
    }
}

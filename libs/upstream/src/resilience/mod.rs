//! Keeping overload and retry storms at the edge: the retry policy and its
//! budget ([`retry`]), per-upstream limits on requests in flight and queued
//! ([`limits`]), and a circuit breaker per endpoint ([`breaker`]).

pub mod breaker;
pub mod limits;
pub mod retry;

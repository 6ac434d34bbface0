//! Portico's upstream machinery: how a caller finds the replicas of a
//! service, spreads requests over them, notices the sick ones, and keeps
//! retries and overload from making an outage worse. The gateway proxies
//! through it, and the services call each other through it (auth reaches
//! the user service's replicas this way), so both get the same semantics
//! and the same metrics.
//!
//! - [`config::UpstreamConfig`]: one upstream's description, checked whole.
//! - [`upstream::Upstream`]: its endpoints (swapped atomically when
//!   [`discovery`] finds new ones), the balancing policy ([`balance`]),
//!   health ([`health`]: active checks, outlier detection, panic
//!   threshold), limits, retry budget and breakers ([`resilience`]).
//! - [`forward::Transport::send`]: one request's attempts over it, on
//!   each endpoint's own pool of connections ([`connection`]: HTTP/1.1 or
//!   HTTP/2, plain or TLS).
//! - [`split`]: an upstream that is a weighted set of other upstreams
//!   (canary, blue/green), sticky per user.
//!
//! Each policy, discovery source and health check is a trait with one file
//! per implementation.

pub mod balance;
pub mod config;
pub mod connection;
pub mod discovery;
pub mod forward;
pub mod health;
pub mod request_facts;
pub mod resilience;
pub mod split;
pub mod upstream;

use std::{sync::Arc, time::Duration};

pub use config::UpstreamConfig;
pub use connection::pool::UpstreamBody;
pub use forward::{AttemptPolicy, Call, Failure, RequestBody, Transport, TransportSettings};
pub use upstream::Upstream;

/// Brings `upstreams` into service: each discovery source is asked once
/// (all at once, each for at most `first_answer_within`), then followed,
/// with the active checks, for as long as its upstream lives; and their
/// metrics are registered.
pub async fn start(upstreams: &[Arc<Upstream>], first_answer_within: Duration) {
    futures::future::join_all(
        upstreams.iter().map(|upstream| {
            tokio::time::timeout(first_answer_within, discovery::refresh(upstream))
        }),
    )
    .await;
    for upstream in upstreams {
        if upstream.discovery().is_some() {
            tokio::spawn(discovery::follow(Arc::downgrade(upstream)));
        }
        if upstream.health_check().is_some() {
            tokio::spawn(health::follow(Arc::downgrade(upstream)));
        }
    }
}

//! The gateway: the one entry point clients talk to.
//!
//! Resolves routes ([`routing`]) from the running configuration
//! ([`running`], reloaded live), applies the edge policies (authentication,
//! rate limits: [`ratelimit`]) and forwards over pooled keep-alive
//! connections ([`proxy`]) through the upstream machinery it shares with
//! the services' own calls (`portico-upstream`: discovery, balancing,
//! health, retries, limits, breakers, traffic splits). It serves the public
//! OpenAPI document and `/docs` ([`openapi`]). WebSocket upgrades pass
//! through ([`upgrade`]). Every error it produces is a
//! problem+json ([`error`]); every answer carries the security headers of
//! [`edge_headers`].

pub mod app;
pub mod compression;
pub mod config;
pub mod cors;
pub mod edge_headers;
pub mod error;
pub mod grpc;
pub mod openapi;
pub mod proxy;
pub mod ratelimit;
pub mod routing;
pub mod running;
pub mod upgrade;

/// The shared upstream machinery, under the names the gateway's modules use.
pub use portico_upstream::{
    balance, discovery, health, request_facts, resilience, split, upstream,
};

pub use app::{Application, Gateway};
pub use config::Config;

//! The gateway: the one entry point clients talk to.
//!
//! Routes path prefixes to upstreams ([`config`]), balances across replicas
//! by each upstream's policy ([`balance`]) with passive ejection
//! ([`upstream`]), verifies bearer
//! tokens at the edge and forwards over pooled keep-alive connections with
//! per-route timeouts and failover ([`proxy`]), and serves the public
//! OpenAPI document and `/docs` ([`openapi`]). Every error it produces is a
//! problem+json ([`error`]).

pub mod app;
pub mod balance;
pub mod config;
pub mod discovery;
pub mod error;
pub mod health;
pub mod openapi;
pub mod proxy;
pub mod ratelimit;
pub mod request_facts;
pub mod resilience;
pub mod routing;
pub mod running;
pub mod split;
pub mod upstream;

pub use app::{Application, Gateway};
pub use config::Config;

//! Shared plumbing for every Portico service.
//!
//! Nothing in here knows about users, credentials or routes; it is the part
//! that would otherwise be copied three times.
//!
//! Layout:
//! - [`error`] — the RFC 9457 problem type every service renders errors as,
//!   and the JSON extractor whose rejections become problems.
//! - [`config`] — layered typed configuration (defaults → TOML → env).
//! - [`telemetry`] — tracing subscriber, OpenTelemetry, W3C trace context.
//! - [`http`] — the request pipeline (request id, spans, metrics, problem
//!   normalisation, body limits), the API/admin servers with graceful
//!   shutdown, and the outgoing HTTP client.
//! - [`admin`] — `/healthz`, `/readyz` (checks each dependency module
//!   provides), `/metrics`.
//! - [`app`] — the application shell: build, ports, run until stopped.
//! - [`clock`] — time as a dependency, so tests move it instead of sleeping.
//! - [`identity`] — roles and service identities.
//! - [`types`] — value types shared by services (`Email`, `DisplayName`).
//! - [`openapi`] — pieces every OpenAPI document shares.
//! - [`jobs`] — scheduled background jobs under the service's lifecycle
//!   (a metric and a log line per run, woken early when work arrives).
//! - [`webhooks`] — Standard Webhooks signatures: signing deliveries and
//!   verifying them (constant time, timestamp tolerance).
//!
//! Behind Cargo features, so a service compiles only what it uses:
//! - `db` → [`db`]: PostgreSQL/SQLite pools, migrations, storage errors.
//! - `redis` → [`redis`]: the optional Redis client.
//! - `jwt` → [`jwt`]: bearer JWT verification against a cached JWKS, and
//!   [`revocations`]: the revoked sessions followed from auth's feed.

pub mod admin;
pub mod app;
pub mod clock;
pub mod config;
#[cfg(feature = "db")]
pub mod db;
pub mod error;
pub mod http;
pub mod identity;
pub mod jobs;
#[cfg(feature = "jwt")]
pub mod jwt;
pub mod net;
pub mod openapi;
#[cfg(feature = "db")]
pub mod outbox;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "jwt")]
pub mod revocations;
pub mod telemetry;
pub mod timer;
pub mod types;
pub mod webhooks;

pub use error::{FieldError, Problem};

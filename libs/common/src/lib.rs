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
//! - [`admin`] — `/healthz`, `/readyz`, `/metrics`.
//! - [`db`] / [`redis`] — connecting to the stores each service owns.
//! - [`auth`] — bearer JWT verification against a cached JWKS.
//! - [`clock`] — time as a dependency, so tests move it instead of sleeping.
//! - [`types`] — value types shared by services (`Email`, `DisplayName`).
//! - [`openapi`] — pieces every OpenAPI document shares.

pub mod admin;
pub mod auth;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod openapi;
pub mod redis;
pub mod telemetry;
pub mod types;

pub use error::{FieldError, Problem};

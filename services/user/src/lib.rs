//! The user service: owns profiles (email, display name, locale, time
//! zone, status, version) and the events of their changes.
//!
//! Layers: [`http`] (handlers: parse, call, map) → [`accounts`] (flows, one
//! unit of work each) → [`domain`] and [`events`] (rules and event shapes,
//! no I/O) → [`storage`] (SQL on PostgreSQL or SQLite, on the pool or in a
//! unit of work). [`relay`] delivers the events as signed webhooks.
//! [`app`] wires them into a server; [`config`] is the typed
//! configuration.

pub mod accounts;
pub mod app;
pub mod cache;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod http;
pub mod scrubber;
pub mod storage;

pub use app::{Application, UserService};
pub use config::Config;

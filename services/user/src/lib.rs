//! The user service: owns profiles (email, display name, status, version).
//!
//! Layers: [`http`] (handlers: parse, call, map) → [`domain`] (profile rules)
//! → [`storage`] (SQL on PostgreSQL or SQLite). [`app`] wires them into a
//! server; [`config`] is the typed configuration.

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod storage;

pub use app::{Application, UserService};
pub use config::Config;

//! The auth service: credentials, sessions, signing keys and tokens.
//!
//! Layers: [`http`] (handlers: parse, call, map) → [`accounts`] (the flows)
//! → [`domain`] (passwords, keys, tokens; no I/O) and [`storage`] (SQL on
//! PostgreSQL or SQLite) and [`user_directory`] (the user service's internal
//! API). [`app`] wires them into a server.

pub mod accounts;
pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod mailer;
pub mod revocation_broadcast;
pub mod signing_keys;
pub mod storage;
pub mod throttle_store;
pub mod user_directory;

pub use app::{Application, AuthService};
pub use config::Config;

//! Integration tests of the auth service, started in-process on port 0 in
//! front of a real user service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod admin;
mod audit;
mod availability;
mod client_credentials;
mod config;
mod credentials;
mod discovery;
mod email;
mod expiry;
mod export;
mod inbox;
mod keys;
mod login;
mod mfa;
mod outbox;
mod own_sessions;
mod register;
mod rejections;
mod saga;
mod sessions;
mod throttle;

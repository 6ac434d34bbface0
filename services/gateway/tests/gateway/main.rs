//! Integration tests of the gateway, run in-process against recording
//! upstreams (see `support`). One test binary, split by topic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod auth;
mod balancing;
mod body;
mod compression;
mod cors;
mod discovery;
mod docs;
mod grpc;
mod headers;
mod health;
mod protocols;
mod ratelimit;
mod readme_examples;
mod resilience;
mod routing;
mod security_headers;
mod splitting;
mod streaming;
mod support;
mod tls;
mod websocket;

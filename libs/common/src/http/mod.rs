//! HTTP plumbing shared by every service: the request pipeline, the servers
//! with graceful shutdown, and the outgoing client.

pub mod access_log;
pub mod client;
pub mod pipeline;
pub mod query;
pub mod server;
pub mod shutdown;
pub mod tls;
pub mod unparseable;

/// Header carrying the request id end to end.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

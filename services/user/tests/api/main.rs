//! Integration tests of the user service, started in-process on port 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod admin;
mod availability;
mod cache;
mod directory;
mod events;
mod internal_users;
mod profile;
mod rejections;
mod routes;
mod scrubber;
mod shutdown;
mod storage;

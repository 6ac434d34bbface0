//! `portico-auth`: loads config, sets up telemetry, runs until SIGTERM.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    portico_common::app::run::<portico_auth::AuthService>().await
}

/// mimalloc: each password hash allocates `password_hashing.memory_kib`
/// (19 MiB) on whichever blocking thread runs it. glibc malloc kept those
/// blocks in per-thread arenas — 230 MiB resident after 17 sign-ins, 461
/// MiB after a login storm, never given back (docs/benchmarks.md);
/// mimalloc returns them to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

//! `portico-user`: loads config, sets up telemetry, runs until SIGTERM.

/// mimalloc, as in the gateway and auth: a cached profile read spent
/// ≈ 10 % of its CPU in glibc's malloc and free (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    portico_common::app::run::<portico_user::UserService>().await
}

//! `portico-gateway`: loads config, sets up telemetry, runs until SIGTERM.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    portico_common::app::run::<portico_gateway::Gateway>().await
}

/// mimalloc: the proxy path allocates per request, and glibc malloc showed
/// up as ~10% of its CPU profile (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

//! `portico-gateway`: loads config, sets up telemetry, runs until SIGTERM.

use portico_common::{config::ServiceConfig, http::shutdown, telemetry};
use portico_gateway::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load_or_exit();
    let _telemetry = telemetry::init("portico-gateway", &config.telemetry)?;
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown::signal()).await?;
    Ok(())
}

/// mimalloc: the proxy path allocates per request, and glibc malloc showed
/// up as ~10% of its CPU profile (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

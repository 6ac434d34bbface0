//! `portico-auth`: loads config, sets up telemetry, runs until SIGTERM.

use portico_auth::{Application, Config};
use portico_common::{config::ServiceConfig, http::shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load_or_exit();
    let _telemetry = telemetry::init("portico-auth", &config.telemetry)?;
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown::signal()).await?;
    Ok(())
}

//! `portico-user`: loads config, sets up telemetry, runs until SIGTERM.

use portico_common::{config::ServiceConfig, http::shutdown, telemetry};
use portico_user::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load_or_exit();
    let _telemetry = telemetry::init("portico-user", &config.telemetry)?;
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown::signal()).await?;
    Ok(())
}

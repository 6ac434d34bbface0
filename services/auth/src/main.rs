//! `portico-auth`: loads config, sets up telemetry, runs until SIGTERM.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    portico_common::app::run::<portico_auth::AuthService>().await
}

//! Runs a service's API and admin listeners until the stop signal, then
//! drains: readiness turns false, the API stops accepting, in-flight
//! requests finish (bounded by the drain timeout), and only then does the
//! admin listener close.

use std::{future::Future, net::SocketAddr, time::Duration};

use axum::Router;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    admin::{self, Readiness},
    config::{ListenConfig, ShutdownConfig},
};

/// Both listeners, bound before the service is built so tests can use port 0
/// and learn the real ports.
#[derive(Debug)]
pub struct Listeners {
    pub api: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &ListenConfig) -> std::io::Result<Self> {
        let api = TcpListener::bind(config.api).await.map_err(|err| {
            std::io::Error::new(
                err.kind(),
                format!("cannot listen on {}: {err}", config.api),
            )
        })?;
        let admin = TcpListener::bind(config.admin).await.map_err(|err| {
            std::io::Error::new(
                err.kind(),
                format!("cannot listen on {} (admin): {err}", config.admin),
            )
        })?;
        Ok(Self { api, admin })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

/// A service ready to run: its API router plus the standard admin router
/// (`/healthz`, `/readyz`, `/metrics`) on the admin listener.
pub struct Server {
    listeners: Listeners,
    api: Router,
    admin: Router,
    readiness: Readiness,
    drain_timeout: Duration,
}

impl Server {
    pub fn new(
        listeners: Listeners,
        api: Router,
        readiness: Readiness,
        shutdown: &ShutdownConfig,
    ) -> Self {
        Self {
            listeners,
            api,
            admin: admin::router(readiness.clone()),
            readiness,
            drain_timeout: Duration::from_secs(shutdown.drain_timeout_secs),
        }
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.listeners.api_addr()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.listeners.admin_addr()
    }

    /// Serves until `stop` completes, then drains. Returns `Ok` after a clean
    /// drain and also after the drain timeout (the leftover connections are
    /// dropped and logged), so the process exits 0 either way.
    pub async fn run(self, stop: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let api_addr = self.api_addr();
        let admin_addr = self.admin_addr();

        let api = axum::serve(
            self.listeners.api,
            self.api.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped(stop_rx.clone()));
        let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
        let admin = axum::serve(self.listeners.admin, self.admin)
            .with_graceful_shutdown(stopped(admin_stop_rx));
        let mut api_task = tokio::spawn(async move { api.await });
        let admin_task = tokio::spawn(async move { admin.await });
        tracing::info!(%api_addr, %admin_addr, "listening");

        tokio::select! {
            () = stop => {}
            result = &mut api_task => {
                // The API server ended on its own: an accept loop failure.
                let _ = admin_stop_tx.send(true);
                return flatten(result);
            }
        }

        self.readiness.set_draining();
        let _ = stop_tx.send(true);
        tracing::info!(
            timeout_secs = self.drain_timeout.as_secs(),
            "draining in-flight requests"
        );
        let drained = tokio::time::timeout(self.drain_timeout, &mut api_task).await;
        let api_result = match drained {
            Ok(result) => flatten(result),
            Err(_) => {
                tracing::warn!("drain timeout reached; dropping remaining connections");
                api_task.abort();
                Ok(())
            }
        };
        let _ = admin_stop_tx.send(true);
        let _ = admin_task.await;
        tracing::info!("stopped");
        api_result
    }
}

fn flatten(result: Result<std::io::Result<()>, tokio::task::JoinError>) -> std::io::Result<()> {
    result.map_err(std::io::Error::other)?
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = rx.wait_for(|stop| *stop).await;
}

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
    header_read_timeout: Duration,
}

impl Server {
    /// Adds the service's own routes to the admin listener.
    #[must_use]
    pub fn with_admin_routes(mut self, routes: Router) -> Self {
        self.admin = self.admin.merge(routes);
        self
    }

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
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }

    /// How long a client may take to send a request's headers.
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
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

        let api = serve_api(
            self.listeners.api,
            self.api,
            self.header_read_timeout,
            stop_rx.clone(),
        );
        let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
        let admin = axum::serve(self.listeners.admin, self.admin)
            .with_graceful_shutdown(stopped(admin_stop_rx));
        let mut api_task = tokio::spawn(api);
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

/// A client gets this long to send a request's headers (a slowloris bound).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once per listener; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 10_000;

/// Serves the API router like `axum::serve`, plus what that lacks: a
/// header-read timeout, a bound on open connections, and `ConnectInfo`.
/// On stop it stops accepting and lets open connections finish.
async fn serve_api(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    use hyper_util::{
        rt::{TokioExecutor, TokioIo, TokioTimer},
        server::{conn::auto::Builder, graceful::GracefulShutdown},
    };
    use tower::ServiceExt;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let stop = stopped(stop);
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.map_err(std::io::Error::other)?,
            () = &mut stop => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(remote));
                router.clone().oneshot(request)
            });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, %remote, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    // Idle keep-alive connections close now; busy ones after their response.
    graceful.shutdown().await;
    Ok(())
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = rx.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn running_server(header_read_timeout: Duration) -> (SocketAddr, watch::Sender<bool>) {
        let listeners = Listeners::bind(&ListenConfig {
            api: ([127, 0, 0, 1], 0).into(),
            admin: ([127, 0, 0, 1], 0).into(),
        })
        .await
        .unwrap();
        let router = Router::new().route(
            "/who",
            get(|axum::extract::ConnectInfo(remote): axum::extract::ConnectInfo<SocketAddr>| async move {
                remote.ip().to_string()
            }),
        );
        let server = Server::new(
            listeners,
            router,
            Readiness::new(),
            &ShutdownConfig {
                drain_timeout_secs: 5,
            },
        )
        .with_header_read_timeout(header_read_timeout);
        let addr = server.api_addr();
        let (tx, mut rx) = watch::channel(false);
        tokio::spawn(server.run(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }));
        (addr, tx)
    }

    #[tokio::test]
    async fn handlers_see_the_client_address() {
        let (addr, _stop) = running_server(HEADER_READ_TIMEOUT).await;
        let body = reqwest::get(format!("http://{addr}/who"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "127.0.0.1");
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_disconnected() {
        let (addr, _stop) = running_server(Duration::from_millis(200)).await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /who HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();

        // The server closes the connection (EOF, maybe after a 408) well
        // before this test's own bound.
        let mut buffer = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer)).await;
        assert!(read.is_ok(), "connection still open after 5 s");
    }
}

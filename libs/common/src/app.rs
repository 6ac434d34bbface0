//! The application shell every service shares: build from config, learn
//! the bound ports, run until stopped, drain, stop background work.
//!
//! A service supplies what differs — its router, its readiness checks, its
//! background tasks and what tests may reach into — by implementing
//! [`Service`]; [`Application`] does the rest, so the three services do not
//! each carry a copy of it.

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use axum::Router;

use crate::{
    admin::Readiness,
    clock::{SharedClock, SystemClock},
    config::ServiceConfig,
    http::{
        server::{Api, Listeners, Server},
        shutdown,
    },
    telemetry,
};

/// A future a service hands to the shell to run.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What the embedder injects into a service: the real clock in `main`, a
/// manual one in tests that move time.
#[derive(Debug, Clone)]
pub struct Context {
    pub clock: SharedClock,
}

impl Default for Context {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
        }
    }
}

/// A service assembled from its config, not yet serving.
pub struct Assembly<H> {
    /// What answers the API: a router, pipeline included, or a handler
    /// taking every request whole.
    pub api: Api,
    /// What `/readyz` checks.
    pub readiness: Readiness,
    /// What the embedder (tests) may reach into, e.g. the service's store.
    pub handle: H,
    /// Work that runs as long as the service does (refreshers, upkeep);
    /// stopped after the API has drained.
    pub background: Vec<Task>,
    /// Runs once the API has drained and background work stopped (e.g.
    /// closing the database pool).
    pub on_stopped: Option<Task>,
    /// Extra routes on the admin listener (the gateway's running config).
    pub admin: Option<Router>,
    /// TLS on the API listener.
    pub tls: Option<std::sync::Arc<crate::http::tls::ServerTls>>,
}

impl<H> Assembly<H> {
    /// An assembly with no background work and nothing to do on stop.
    pub fn new(api: impl Into<Api>, readiness: Readiness, handle: H) -> Self {
        Self {
            api: api.into(),
            readiness,
            handle,
            background: Vec::new(),
            on_stopped: None,
            admin: None,
            tls: None,
        }
    }
}

/// One Portico service.
pub trait Service: Send + 'static {
    /// Name in logs and traces (`portico-user`).
    const NAME: &'static str;
    type Config: ServiceConfig + Send + 'static;
    /// See [`Assembly::handle`].
    type Handle: Clone + Send + Sync + 'static;

    /// Builds the service's parts from a validated config.
    fn assemble(
        config: Self::Config,
        context: Context,
    ) -> impl Future<Output = anyhow::Result<Assembly<Self::Handle>>> + Send;

    /// Applies the service's pending database migrations, and nothing else:
    /// `<binary> migrate`, for a Kubernetes init container or Job. (The
    /// service also migrates at startup; both take the migrator's lock.)
    /// A service without a database has nothing to do.
    fn migrate(config: &Self::Config) -> impl Future<Output = anyhow::Result<()>> + Send {
        let _ = config;
        async { Ok(()) }
    }
}

/// Background tasks, aborted when the application is dropped or stopped.
struct BackgroundTasks(Vec<tokio::task::JoinHandle<()>>);

impl BackgroundTasks {
    /// Spawns each task; one that ends early (or panics) says so, since
    /// nothing else would notice its work stopping.
    fn spawn(tasks: Vec<Task>) -> Self {
        Self(
            tasks
                .into_iter()
                .map(|task| {
                    tokio::spawn(async move {
                        use futures::FutureExt;
                        match std::panic::AssertUnwindSafe(task).catch_unwind().await {
                            Ok(()) => tracing::warn!("a background task ended"),
                            Err(_) => tracing::error!("a background task panicked"),
                        }
                    })
                })
                .collect(),
        )
    }

    /// Aborts every task and waits until they are gone.
    async fn stop(mut self) {
        let tasks = std::mem::take(&mut self.0);
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A built service, listening but not yet serving.
pub struct Application<S: Service> {
    server: Server,
    handle: S::Handle,
    background: BackgroundTasks,
    on_stopped: Option<Task>,
}

impl<S: Service> Application<S> {
    /// Binds the configured addresses and builds the service.
    pub async fn build(config: S::Config) -> anyhow::Result<Self> {
        let listeners = Listeners::bind(config.listen()).await?;
        Self::build_with(config, listeners, Context::default()).await
    }

    /// Builds the service on listeners the caller bound (tests use port 0).
    pub async fn build_with_listeners(
        config: S::Config,
        listeners: Listeners,
    ) -> anyhow::Result<Self> {
        Self::build_with(config, listeners, Context::default()).await
    }

    /// Builds the service on the caller's listeners with injected
    /// dependencies (a manual clock in tests).
    pub async fn build_with(
        config: S::Config,
        listeners: Listeners,
        context: Context,
    ) -> anyhow::Result<Self> {
        config.validate()?;
        let shutdown = config.shutdown().clone();
        let limits = crate::http::server::ConnectionLimits::from(config.connections());
        // The recorder goes in first: metric handles a service registers
        // while it assembles (per-endpoint gauges) would otherwise be no-ops.
        crate::admin::metrics_handle();
        let assembly = S::assemble(config, context).await?;
        let mut server = Server::new(
            listeners,
            assembly.api,
            assembly.readiness,
            &shutdown,
            limits,
        );
        if let Some(admin) = assembly.admin {
            server = server.with_admin_routes(admin);
        }
        if let Some(tls) = assembly.tls {
            server = server.with_tls(tls);
        }
        let background = BackgroundTasks::spawn(assembly.background);
        Ok(Self {
            server,
            handle: assembly.handle,
            background,
            on_stopped: assembly.on_stopped,
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.server.api_addr()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.server.admin_addr()
    }

    /// See [`Assembly::handle`].
    pub fn handle(&self) -> &S::Handle {
        &self.handle
    }

    /// Serves until `stop` completes, then drains, stops background work
    /// and returns.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            server,
            background,
            on_stopped,
            ..
        } = self;
        let result = server.run(stop).await;
        // Stopped before the pool closes, so none is caught mid-query.
        background.stop().await;
        if let Some(on_stopped) = on_stopped {
            on_stopped.await;
        }
        result
    }
}

/// A service's whole `main`: config (exit 2 with one line when it is bad),
/// telemetry, build, run until SIGTERM or Ctrl-C. `<binary> healthcheck`
/// instead asks the running service's `/readyz` (see [`healthcheck`]);
/// `<binary> check-config` only loads and validates the configuration.
pub async fn run<S: Service>() -> anyhow::Result<()> {
    let config = S::Config::load_or_exit();
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("healthcheck") => std::process::exit(healthcheck(config.listen().admin).await),
        Some("check-config") => {
            println!("{}", check_config_report(S::NAME, config.listen()));
            std::process::exit(0);
        }
        Some("migrate") => {
            let telemetry = telemetry::init(S::NAME, config.telemetry())?;
            let code = match S::migrate(&config).await {
                Ok(()) => {
                    tracing::info!("migrations applied");
                    0
                }
                Err(err) => {
                    tracing::error!(error = %format!("{err:#}"), "migration failed");
                    1
                }
            };
            // `exit` runs no destructors: write the log lines out first.
            drop(telemetry);
            std::process::exit(code);
        }
        Some(other) => {
            eprintln!(
                "{}: unknown argument `{other}` (usage: {0} [healthcheck | check-config | migrate])",
                S::NAME
            );
            std::process::exit(2);
        }
    }
    let _telemetry = telemetry::init(S::NAME, config.telemetry())?;
    raise_open_file_limit();
    let app = Application::<S>::build(config).await?;
    app.run_until_stopped(shutdown::signal()).await?;
    Ok(())
}

/// Every client connection is a file descriptor, and the usual soft limit
/// (1024) is far below what `connections.max` allows: take the hard limit,
/// as nginx's `worker_rlimit_nofile` and Go's runtime do.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    let before = limit.current;
    limit.current = limit.maximum;
    match setrlimit(Resource::Nofile, limit) {
        Ok(()) => tracing::debug!(?before, now = ?limit.current, "open file limit raised"),
        Err(err) => tracing::warn!(%err, ?before, "open file limit could not be raised"),
    }
}

/// What `<binary> check-config` prints once the configuration (file and
/// environment, as the service would see them) loads and validates: one JSON
/// line with the listen addresses, so deployment checks can compare ports and
/// probes with what the service really binds. A bad configuration exits 2
/// with the offending key before this is reached, like `nginx -t`.
fn check_config_report(service: &str, listen: &crate::config::ListenConfig) -> String {
    serde_json::json!({
        "service": service,
        "listen": {"api": listen.api.to_string(), "admin": listen.admin.to_string()},
    })
    .to_string()
}

/// How long `healthcheck` waits for the service's answer.
const HEALTHCHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// `<binary> healthcheck`: asks the service running with this config for
/// its admin `/readyz` and returns the exit code — 0 when it answers 200,
/// 1 otherwise. What a container's health check runs: the image needs no
/// curl and no shell. A listener on all interfaces is asked on loopback.
pub async fn healthcheck(admin: SocketAddr) -> i32 {
    let target = if admin.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if admin.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(loopback, admin.port())
    } else {
        admin
    };
    match tokio::time::timeout(HEALTHCHECK_TIMEOUT, ask_ready(target)).await {
        Ok(Ok(true)) => 0,
        Ok(Ok(false)) => {
            eprintln!("not ready: {target}/readyz did not answer 200");
            1
        }
        Ok(Err(err)) => {
            eprintln!("not ready: {target}: {err}");
            1
        }
        Err(_) => {
            eprintln!("not ready: {target} did not answer within {HEALTHCHECK_TIMEOUT:?}");
            1
        }
    }
}

/// One HTTP/1.0 `GET /readyz`: whether the status line says 200.
async fn ask_ready(target: SocketAddr) -> std::io::Result<bool> {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(target).await?;
    stream
        .write_all(format!("GET /readyz HTTP/1.0\r\nHost: {target}\r\n\r\n").as_bytes())
        .await?;
    let mut status = String::new();
    tokio::io::BufReader::new(stream)
        .read_line(&mut status)
        .await?;
    Ok(status.split_whitespace().nth(1) == Some("200"))
}

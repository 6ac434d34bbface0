//! Runs a service's API and admin listeners until the stop signal, then
//! drains: readiness turns false, the API stops accepting, in-flight
//! requests finish (bounded by the drain timeout), and only then does the
//! admin listener close.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

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

/// Connections the kernel completes and queues for the API listener before
/// it accepts them. The default (128) drops the handshakes of a burst of new
/// clients while the accept loop catches up (each retries only after a
/// second); the kernel caps this at `net.core.somaxconn`.
const API_ACCEPT_BACKLOG: u32 = 4096;

fn bind_api(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // A restarted service binds its port again at once, as `bind` does.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(API_ACCEPT_BACKLOG)
}

impl Listeners {
    pub async fn bind(config: &ListenConfig) -> std::io::Result<Self> {
        let api = bind_api(config.api).map_err(|err| {
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

/// What answers the API's requests: an axum router (the services', with
/// the pipeline in it), or one handler that takes every request whole —
/// the gateway's edge, which routes by itself, so no router's matching,
/// clone and boxed layers sit in front of it on every request.
#[derive(Clone)]
pub enum Api {
    Router(Router),
    Handler(ApiHandler),
}

/// A whole-request handler (see [`Api::Handler`]).
pub type ApiHandler = std::sync::Arc<
    dyn Fn(axum::extract::Request) -> futures::future::BoxFuture<'static, axum::response::Response>
        + Send
        + Sync,
>;

impl From<Router> for Api {
    fn from(router: Router) -> Self {
        Self::Router(router)
    }
}

impl Api {
    /// The answer to `request`, as hyper serves it.
    fn call(
        &self,
        request: http::Request<hyper::body::Incoming>,
    ) -> impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send + use<>
    {
        use futures::FutureExt as _;
        use tower::ServiceExt as _;
        match self {
            Self::Router(router) => router.clone().oneshot(request).left_future(),
            Self::Handler(handler) => handler(request.map(axum::body::Body::new))
                .map(Ok)
                .right_future(),
        }
    }
}

/// A service ready to run: its API router plus the standard admin router
/// (`/healthz`, `/readyz`, `/metrics`) on the admin listener.
pub struct Server {
    listeners: Listeners,
    api: Api,
    admin: Router,
    readiness: Readiness,
    drain_timeout: Duration,
    limits: ConnectionLimits,
    tls: Option<std::sync::Arc<super::tls::ServerTls>>,
}

/// Request extension: the request came over TLS (the listener's).
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// How the API listener treats client connections
/// ([`crate::config::ConnectionsConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max: usize,
    /// 0: none.
    pub max_per_client_ip: usize,
    pub first_byte_timeout: Duration,
    pub header_read_timeout: Duration,
    pub request: RequestLimits,
    /// Threads that each run an event loop of their own (a single-threaded
    /// runtime) serving the connections the acceptor hands them; 0: the
    /// caller's runtime serves.
    pub event_loops: usize,
}

/// Bounds on one request's head, checked by the pipeline (which answers
/// with a problem) on every request the listener reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
}

impl From<&crate::config::ConnectionsConfig> for ConnectionLimits {
    fn from(config: &crate::config::ConnectionsConfig) -> Self {
        Self {
            max: config.max.max(1),
            max_per_client_ip: config.max_per_client_ip,
            first_byte_timeout: Duration::from_millis(config.first_byte_timeout_ms),
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
            request: RequestLimits {
                max_uri_bytes: config.max_uri_bytes,
                max_header_bytes: config.max_header_bytes,
            },
            event_loops: if config.per_core_event_loops {
                // Honours CPU affinity and a cgroup's CPU quota.
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            } else {
                0
            },
        }
    }
}

impl Server {
    /// Serves the API listener over TLS.
    #[must_use]
    pub fn with_tls(mut self, tls: std::sync::Arc<super::tls::ServerTls>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Adds the service's own routes to the admin listener.
    #[must_use]
    pub fn with_admin_routes(mut self, routes: Router) -> Self {
        self.admin = self.admin.merge(routes);
        self
    }

    pub fn new(
        listeners: Listeners,
        api: impl Into<Api>,
        readiness: Readiness,
        shutdown: &ShutdownConfig,
        limits: ConnectionLimits,
    ) -> Self {
        Self {
            listeners,
            api: api.into(),
            admin: admin::router(readiness.clone()),
            readiness,
            drain_timeout: Duration::from_secs(shutdown.drain_timeout_secs),
            limits,
            tls: None,
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

        let tls = self.tls.as_ref().map(|tls| tls.acceptor());
        let mut api_task = if self.limits.event_loops == 0 {
            tokio::spawn(serve_api(
                self.listeners.api,
                self.api,
                self.limits,
                tls,
                stop_rx.clone(),
            ))
        } else {
            tokio::spawn(serve_on_event_loops(
                self.listeners.api,
                self.api,
                self.limits,
                tls,
                stop_rx.clone(),
            ))
        };
        let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
        let admin = axum::serve(self.listeners.admin, self.admin)
            .with_graceful_shutdown(stopped(admin_stop_rx));
        let admin_task = tokio::spawn(async move { admin.await });
        tracing::info!(
            %api_addr,
            %admin_addr,
            event_loops = self.limits.event_loops,
            "listening"
        );

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

/// Open connections per client address, for the per-address bound.
#[derive(Debug, Default)]
struct PerAddress(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One connection counted against its address until dropped.
struct AddressSlot {
    table: std::sync::Arc<PerAddress>,
    address: std::net::IpAddr,
}

impl PerAddress {
    /// A slot for `address`, unless it holds `max` already (0: no bound).
    fn admit(
        self: &std::sync::Arc<Self>,
        address: std::net::IpAddr,
        max: usize,
    ) -> Option<AddressSlot> {
        // A poisoned count is still a count: a panic elsewhere must not
        // turn every client away.
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(address).or_insert(0);
        if max > 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: self.clone(),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .table
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// One admitted connection: its slot in all and for its address, its
/// place in `http_connections_open` and, on an event loop, in its loop's
/// count, all given back when dropped.
struct Admitted {
    _slot: tokio::sync::OwnedSemaphorePermit,
    _address: AddressSlot,
    open: metrics::Gauge,
    on_loop: Option<OnLoop>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.open.decrement(1.0);
        if let Some(on_loop) = &self.on_loop {
            let load = &on_loop.loads[on_loop.index];
            load.open.fetch_sub(1, Ordering::Relaxed);
            if on_loop.http2 {
                load.http2.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// What an event loop serves: its open connections, and how many of them
/// are HTTP/2 (counted apart: one carries a whole client's multiplexed
/// traffic, a gateway's to a replica).
#[derive(Default)]
struct LoopLoad {
    open: AtomicUsize,
    http2: AtomicUsize,
}

/// A connection's place in its event loop's counts.
struct OnLoop {
    loads: Arc<[LoopLoad]>,
    index: usize,
    http2: bool,
}

/// A connection on its way from the acceptor (or another loop) to a loop.
type Handed = (std::net::TcpStream, SocketAddr, Admitted);

/// Where a cleartext HTTP/2 connection is served: the acceptor places
/// connections by their count alone, before a byte is read, so the few
/// HTTP/2 connections of a gateway (one per gateway loop, each carrying a
/// share of all its traffic) could share one loop beside short HTTP/1.1
/// ones and leave the other cores idle. Once its first bytes show the
/// HTTP/2 preface, a connection moves to the loop with the fewest HTTP/2
/// connections (staying where it is on a tie).
#[derive(Clone)]
struct Placement {
    loads: Arc<[LoopLoad]>,
    /// Weak: the loops' channels close when the acceptor drops its senders.
    loops: Arc<[tokio::sync::mpsc::WeakUnboundedSender<Handed>]>,
}

/// The client's first bytes on a cleartext HTTP/2 connection (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Placement {
    /// Counts `on_loop` as HTTP/2 and returns the loop it should move to,
    /// `None` when it stays.
    fn place_http2(&self, on_loop: &mut OnLoop) -> Option<usize> {
        let here = on_loop.index;
        let target = (0..self.loads.len())
            .min_by_key(|&index| {
                (
                    self.loads[index].http2.load(Ordering::Relaxed),
                    index != here,
                )
            })
            .unwrap_or(here);
        self.loads[target].http2.fetch_add(1, Ordering::Relaxed);
        on_loop.http2 = true;
        if target == here {
            return None;
        }
        self.loads[here].open.fetch_sub(1, Ordering::Relaxed);
        self.loads[target].open.fetch_add(1, Ordering::Relaxed);
        on_loop.index = target;
        Some(target)
    }

    /// Moves a connection that just showed the HTTP/2 preface to the loop
    /// with the fewest HTTP/2 connections; gives it back when it stays
    /// here. (A connection whose loop is gone, the service stopping, is
    /// dropped with it, as the acceptor's would be.)
    fn http2_to_its_loop(
        &self,
        stream: tokio::net::TcpStream,
        remote: SocketAddr,
        mut admitted: Admitted,
    ) -> Option<(tokio::net::TcpStream, Admitted)> {
        let Some(on_loop) = admitted.on_loop.as_mut().filter(|on_loop| !on_loop.http2) else {
            return Some((stream, admitted));
        };
        let Some(target) = self.place_http2(on_loop) else {
            return Some((stream, admitted));
        };
        let to = self.loops[target].upgrade()?;
        match stream.into_std() {
            Ok(stream) => {
                let _ = to.send((stream, remote, admitted));
            }
            Err(err) => tracing::warn!(%err, "connection lost moving to another event loop"),
        }
        None
    }
}

/// What admits a connection (the one acceptor's, for every event loop):
/// the bound on open connections in all and per client address.
struct Admission {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    per_address: std::sync::Arc<PerAddress>,
    open: metrics::Gauge,
}

impl Admission {
    fn new(max: usize) -> Self {
        Self {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(max)),
            per_address: std::sync::Arc::new(PerAddress::default()),
            open: metrics::gauge!("http_connections_open"),
        }
    }
}

/// Accepts connections until stop, each within the bounds (at the bound on
/// open connections it stops accepting; over its address's bound a
/// connection is closed at once), and hands each admitted one to `serve`.
async fn accept_until_stopped(
    listener: &TcpListener,
    limits: ConnectionLimits,
    admission: &Admission,
    stop: watch::Receiver<bool>,
    mut serve: impl FnMut(tokio::net::TcpStream, SocketAddr, Admitted),
) -> std::io::Result<()> {
    let stop = stopped(stop);
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = admission.slots.clone().acquire_owned() => slot.map_err(std::io::Error::other)?,
            () = &mut stop => return Ok(()),
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
            () = &mut stop => return Ok(()),
        };
        // Over its address's bound: closed at once, the slot free again.
        let Some(address_slot) = admission
            .per_address
            .admit(remote.ip(), limits.max_per_client_ip)
        else {
            metrics::counter!("http_connections_refused_total", "reason" => "per_client_ip")
                .increment(1);
            drop(stream);
            continue;
        };
        admission.open.increment(1.0);
        let admitted = Admitted {
            _slot: slot,
            _address: address_slot,
            open: admission.open.clone(),
            on_loop: None,
        };
        let _ = stream.set_nodelay(true);
        serve(stream, remote, admitted);
    }
}

/// Serves admitted connections on the runtime it is used on: each its own
/// task, hyper-util's server with a first-byte timeout, `ConnectInfo`, TLS
/// when configured; `drain` lets them finish after a stop.
struct Connections {
    api: Api,
    limits: ConnectionLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: std::sync::Arc<hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>>,
    graceful: hyper_util::server::graceful::GracefulShutdown,
    stop: watch::Receiver<bool>,
    /// On event loops: where an HTTP/2 connection goes.
    placement: Option<Placement>,
}

impl Connections {
    fn new(
        api: Api,
        limits: ConnectionLimits,
        tls: Option<tokio_rustls::TlsAcceptor>,
        stop: watch::Receiver<bool>,
        placement: Option<Placement>,
    ) -> Self {
        use hyper_util::rt::{TokioExecutor, TokioTimer};
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        // RFC 8441: WebSockets over HTTP/2 streams (the gateway passes them on).
        builder.http2().enable_connect_protocol();
        Self {
            api,
            limits,
            tls,
            // Shared by every connection's task.
            builder: std::sync::Arc::new(builder),
            graceful: hyper_util::server::graceful::GracefulShutdown::new(),
            stop,
            placement,
        }
    }

    fn spawn(&self, stream: tokio::net::TcpStream, remote: SocketAddr, admitted: Admitted) {
        use hyper_util::rt::TokioIo;

        use super::unparseable::ProblemsForUnparseable;

        let api = self.api.clone();
        let limits = self.limits;
        let over_tls = self.tls.is_some();
        let service =
            hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                let extensions = request.extensions_mut();
                extensions.insert(axum::extract::ConnectInfo(remote));
                extensions.insert(limits.request);
                if over_tls {
                    extensions.insert(OverTls);
                }
                api.call(request)
            });
        let tls = self.tls.clone();
        let builder = self.builder.clone();
        let watcher = self.graceful.watcher();
        let stop = self.stop.clone();
        // TLS connections stay where they are: their protocol is known
        // only after the handshake.
        let placement = self.placement.clone().filter(|_| tls.is_none());
        tokio::spawn(async move {
            // hyper's header timer starts with the first byte: a connection
            // that never sends one would hold its slot for ever. (A stop
            // does not wait for one either.)
            // The same peek shows whether the connection opens with the
            // HTTP/2 preface (when it came whole in the first segment, as
            // a client writes it).
            let mut start = [0u8; HTTP2_PREFACE.len()];
            let first = tokio::select! {
                first = tokio::time::timeout(limits.first_byte_timeout, stream.peek(&mut start)) => first,
                () = stopped(stop) => return,
            };
            // A byte, or the client's end (hyper then ends it at once).
            let Ok(Ok(peeked)) = first else {
                metrics::counter!("http_connections_refused_total", "reason" => "silent")
                    .increment(1);
                drop(admitted);
                return;
            };
            let http2 = peeked == start.len() && &start == HTTP2_PREFACE;
            let (stream, admitted) = match placement {
                Some(placement) if http2 => {
                    match placement.http2_to_its_loop(stream, remote, admitted) {
                        Some(staying) => staying,
                        None => return,
                    }
                }
                _ => (stream, admitted),
            };
            let ended = match tls {
                None => {
                    let stream = ProblemsForUnparseable::new(stream, remote);
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
                Some(acceptor) => {
                    // The handshake gets the time a request's head gets.
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                            .await;
                    let Ok(Ok(stream)) = handshake else {
                        metrics::counter!("tls_handshake_failures_total").increment(1);
                        drop(admitted);
                        return;
                    };
                    let stream = ProblemsForUnparseable::new(stream, remote);
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
            };
            if let Err(err) = ended {
                tracing::debug!(%err, %remote, "connection ended with an error");
            }
            drop(admitted);
        });
    }

    /// Idle keep-alive connections close now; busy ones after their response.
    async fn drain(self) {
        self.graceful.shutdown().await;
    }
}

thread_local! {
    /// The index of the event loop this thread runs, if it runs one.
    static EVENT_LOOP: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The index of the API event loop the calling thread runs (see
/// [`ConnectionLimits::event_loops`]); `None` on any other thread. Per-thread
/// state (an upstream's idle connections) is kept by it, so that what a
/// loop's tasks made is used by that loop.
pub fn event_loop_index() -> Option<usize> {
    EVENT_LOOP.with(std::cell::Cell::get)
}

/// Makes the calling thread count as event loop `index` (or as none), as
/// the loops' own threads do: for tests of what is kept per loop.
#[cfg(test)]
pub(crate) fn pretend_event_loop(index: Option<usize>) {
    EVENT_LOOP.with(|cell| cell.set(index));
}

/// One `T` per API event loop, and one shared by every other thread: for
/// what a loop's tasks should not share with another loop's — an idle
/// upstream connection, a Redis connection — because the task that drives
/// it runs on the loop that made it, and using it from another loop wakes
/// that loop's thread (an eventfd write, a context switch) twice per use.
/// More loops than slots share slots.
#[derive(Debug)]
pub struct PerEventLoop<T> {
    slots: [T; PER_EVENT_LOOP_SLOTS],
}

const PER_EVENT_LOOP_SLOTS: usize = 16;

/// Which slot of a [`PerEventLoop`] is the calling thread's (to give
/// something back to it later, from wherever).
pub fn event_loop_slot() -> usize {
    event_loop_index().map_or(0, |index| 1 + index % (PER_EVENT_LOOP_SLOTS - 1))
}

impl<T: Default> Default for PerEventLoop<T> {
    fn default() -> Self {
        Self {
            slots: std::array::from_fn(|_| T::default()),
        }
    }
}

impl<T> PerEventLoop<T> {
    /// The calling thread's: its loop's, or the one threads outside the
    /// loops share.
    pub fn own(&self) -> &T {
        &self.slots[event_loop_slot()]
    }

    /// The slot at `index` (from [`event_loop_slot`]).
    pub fn at(&self, index: usize) -> &T {
        &self.slots[index % PER_EVENT_LOOP_SLOTS]
    }

    /// Every slot.
    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.slots.iter()
    }
}

/// Serves the API on `limits.event_loops` threads, each a single-threaded
/// runtime serving the connections it is handed: the listener is accepted
/// from here, under one admission bound for all, and each new connection
/// goes to the loop with the fewest open (a shared listening socket would
/// let one busy burst of connects land on one loop and leave a core idle);
/// a cleartext one that turns out to be HTTP/2 then moves once, to the
/// loop with the fewest HTTP/2 connections ([`Placement`]). A connection
/// and every task it spawns (an upstream connection the
/// gateway dials) then stay on that loop's thread, so a request wakes no
/// other thread. Returns when every loop has drained; dropped (the drain
/// timeout), it ends the loops and their connections at once.
async fn serve_on_event_loops(
    listener: TcpListener,
    api: Api,
    limits: ConnectionLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    use futures::StreamExt;

    /// Ends the loops when the caller stops waiting for them.
    struct EndOnDrop(watch::Sender<bool>);
    impl Drop for EndOnDrop {
        fn drop(&mut self) {
            let _ = self.0.send(true);
        }
    }
    let admission = Admission::new(limits.max);

    let (end_tx, end_rx) = watch::channel(false);
    let end = EndOnDrop(end_tx);
    let loads: Arc<[LoopLoad]> = (0..limits.event_loops)
        .map(|_| LoopLoad::default())
        .collect();
    let (hand_to, receivers): (Vec<_>, Vec<_>) = (0..limits.event_loops)
        .map(|_| tokio::sync::mpsc::unbounded_channel::<Handed>())
        .unzip();
    let placement = Placement {
        loads: loads.clone(),
        loops: hand_to.iter().map(|to| to.downgrade()).collect(),
    };
    let mut loops = futures::stream::FuturesUnordered::new();
    for (index, mut handed) in receivers.into_iter().enumerate() {
        let (api, tls, stop, end) = (api.clone(), tls.clone(), stop.clone(), end_rx.clone());
        let placement = placement.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("event-loop-{index}"))
            .spawn(move || {
                EVENT_LOOP.with(|cell| cell.set(Some(index)));
                let served = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|runtime| {
                        runtime.block_on(async move {
                            let connections =
                                Connections::new(api, limits, tls, stop, Some(placement));
                            let serving = async {
                                // Until the acceptor stops handing any (the
                                // other loops hold weak senders only).
                                while let Some((stream, remote, admitted)) = handed.recv().await {
                                    let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                                        tracing::warn!("connection lost joining its event loop");
                                        continue;
                                    };
                                    connections.spawn(stream, remote, admitted);
                                }
                            };
                            tokio::select! {
                                () = serving => {}
                                () = stopped(end.clone()) => return,
                            }
                            tokio::select! {
                                () = connections.drain() => {}
                                () = stopped(end) => {}
                            }
                        });
                    });
                // The runtime is gone here: its connections with it.
                let _ = done_tx.send(served);
            })?;
        loops.push(done_rx);
    }
    let accepted = accept_until_stopped(
        &listener,
        limits,
        &admission,
        stop,
        |stream, remote, mut admitted| {
            let index = (0..loads.len())
                .min_by_key(|&index| loads[index].open.load(Ordering::Relaxed))
                .unwrap_or(0);
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::warn!(%err, "connection lost leaving the acceptor");
                    return;
                }
            };
            loads[index].open.fetch_add(1, Ordering::Relaxed);
            admitted.on_loop = Some(OnLoop {
                loads: loads.clone(),
                index,
                http2: false,
            });
            // A loop that is gone drops the connection (and its slot) with it.
            let _ = hand_to[index].send((stream, remote, admitted));
        },
    )
    .await;
    drop(listener);
    // No more connections: each loop drains the ones it has.
    drop(hand_to);
    while let Some(ended) = loops.next().await {
        // A loop that failed (or panicked) ends the others: the service
        // stops rather than serve on part of its cores.
        let served = ended.unwrap_or_else(|_| Err(std::io::Error::other("an event loop panicked")));
        if served.is_err() {
            drop(end);
            return served;
        }
    }
    drop(end);
    accepted
}

/// Serves the API like `axum::serve`, plus what that lacks: a bound
/// on open connections (in all and per client address), a timeout for a
/// connection's first byte and for each request's headers (which also
/// closes idle keep-alive connections), and `ConnectInfo`. On stop it stops
/// accepting and lets open connections finish.
async fn serve_api(
    listener: TcpListener,
    api: Api,
    limits: ConnectionLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let admission = Admission::new(limits.max);
    let connections = Connections::new(api, limits, tls, stop.clone(), None);
    let accepted = accept_until_stopped(
        &listener,
        limits,
        &admission,
        stop,
        |stream, remote, admitted| {
            connections.spawn(stream, remote, admitted);
        },
    )
    .await;
    drop(listener);
    connections.drain().await;
    accepted
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

    #[test]
    fn each_event_loop_has_its_own_slot_and_other_threads_share_one() {
        use std::sync::Mutex;
        let per_loop: std::sync::Arc<PerEventLoop<Mutex<Vec<&'static str>>>> = Default::default();
        // What a thread puts in its own slot, as the loops' threads do.
        let put = |index: Option<usize>, what: &'static str| {
            let per_loop = per_loop.clone();
            std::thread::spawn(move || {
                pretend_event_loop(index);
                per_loop.own().lock().unwrap().push(what);
                event_loop_slot()
            })
            .join()
            .unwrap()
        };
        let loop_0 = put(Some(0), "loop 0");
        let loop_1 = put(Some(1), "loop 1");
        let outside = put(None, "outside");
        let outside_too = put(None, "outside too");
        assert_ne!(loop_0, loop_1);
        assert_ne!(loop_0, outside);
        assert_eq!(outside, outside_too);
        assert_eq!(*per_loop.at(loop_0).lock().unwrap(), ["loop 0"]);
        assert_eq!(*per_loop.at(loop_1).lock().unwrap(), ["loop 1"]);
        assert_eq!(*per_loop.own().lock().unwrap(), ["outside", "outside too"]);
        assert_eq!(
            per_loop
                .all()
                .map(|slot| slot.lock().unwrap().len())
                .sum::<usize>(),
            4
        );
    }

    /// Limits no test here reaches unless it lowers one.
    fn roomy() -> ConnectionLimits {
        ConnectionLimits {
            max: 10_000,
            max_per_client_ip: 0,
            first_byte_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            request: RequestLimits {
                max_uri_bytes: 8192,
                max_header_bytes: 64 * 1024,
            },
            event_loops: 0,
        }
    }

    async fn running_server(header_read_timeout: Duration) -> (SocketAddr, watch::Sender<bool>) {
        running_server_with(ConnectionLimits {
            header_read_timeout,
            ..roomy()
        })
        .await
    }

    async fn running_server_with(limits: ConnectionLimits) -> (SocketAddr, watch::Sender<bool>) {
        let router =
            Router::new()
                .route(
                    "/who",
                    get(
                        |axum::extract::ConnectInfo(remote): axum::extract::ConnectInfo<
                            SocketAddr,
                        >| async move {
                            match event_loop_index() {
                                Some(_) => format!("{} on event loop", remote.ip()),
                                None => remote.ip().to_string(),
                            }
                        },
                    ),
                )
                .route(
                    "/loop",
                    get(|| async { format!("{:?}", event_loop_index()) }),
                );
        serving(router, limits).await
    }

    /// A server whose one route takes bodies of at most 1 KiB, in the
    /// pipeline every service has.
    async fn server_with_a_body_limit() -> (SocketAddr, watch::Sender<bool>) {
        let router = crate::http::pipeline::apply(
            Router::new().route(
                "/echo",
                axum::routing::post(|body: String| async move { body }),
            ),
            &crate::http::pipeline::PipelineOptions {
                body_limit: Some(1024),
                handler_timeout: None,
                access_log: None,
            },
        );
        serving(router, roomy()).await
    }

    /// A server for `router` on free loopback ports, not yet running.
    async fn loopback_server(router: Router, limits: ConnectionLimits) -> Server {
        let listeners = Listeners::bind(&ListenConfig {
            api: ([127, 0, 0, 1], 0).into(),
            admin: ([127, 0, 0, 1], 0).into(),
        })
        .await
        .unwrap();
        Server::new(
            listeners,
            router,
            Readiness::new(),
            &ShutdownConfig {
                drain_timeout_secs: 5,
            },
            limits,
        )
    }

    /// `router` served on a free loopback port until the sender says stop.
    async fn serving(
        router: Router,
        limits: ConnectionLimits,
    ) -> (SocketAddr, watch::Sender<bool>) {
        let server = loopback_server(router, limits).await;
        let addr = server.api_addr();
        let (tx, mut rx) = watch::channel(false);
        tokio::spawn(server.run(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }));
        (addr, tx)
    }

    /// Everything the server sends until it closes; `Err` if the
    /// connection was reset instead.
    async fn answer_of(stream: &mut tokio::net::TcpStream) -> std::io::Result<String> {
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("the server closes within 5 s")?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    #[tokio::test]
    async fn a_body_refused_by_its_length_is_read_first_so_the_413_reaches_the_client() {
        let (addr, _stop) = server_with_a_body_limit().await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let length = 200 * 1024;
        let head = format!("POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: {length}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        // The body in pieces, as an upload arrives: the refusal is decided
        // from the head, long before the last piece.
        let piece = vec![b'x'; length / 10];
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            stream
                .write_all(&piece)
                .await
                .expect("the server kept reading the body it refused");
        }

        let answer = answer_of(&mut stream)
            .await
            .expect("the answer, not a reset");

        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains("\"request_id\""), "{answer}");
    }

    #[tokio::test]
    async fn an_unparseable_request_gets_a_problem_with_a_request_id() {
        let (addr, _stop) = server_with_a_body_limit().await;
        for broken in [
            "GET /echo HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n",
            "GARBAGE\r\n\r\n",
        ] {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(broken.as_bytes()).await.unwrap();
            let answer = answer_of(&mut stream).await.unwrap();
            assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
            assert!(answer.contains("application/problem+json"), "{answer}");
            assert!(answer.contains("\"request_id\""), "{answer}");
        }
    }

    #[tokio::test]
    async fn a_client_waiting_for_100_continue_gets_the_413_at_once() {
        let (addr, _stop) = server_with_a_body_limit().await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 204800\r\nexpect: 100-continue\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();

        // No body follows: the server must not wait for one.
        let answer = answer_of(&mut stream).await.unwrap();

        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(!answer.contains("100 Continue"), "{answer}");
    }

    #[tokio::test]
    async fn handlers_see_the_client_address() {
        let (addr, _stop) = running_server(Duration::from_secs(10)).await;
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

    /// A connection from `local` (a loopback address of the test's choice)
    /// that sends nothing.
    async fn silent_from(local: [u8; 4], addr: SocketAddr) -> tokio::net::TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((local, 0).into()).unwrap();
        socket.connect(addr).await.unwrap()
    }

    /// Whether the server closed `stream` within `within` (EOF or reset).
    async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
        let mut buffer = Vec::new();
        tokio::time::timeout(within, stream.read_to_end(&mut buffer))
            .await
            .is_ok()
    }

    /// `GET /who` from `local`: the address the handler saw.
    async fn who_from(local: [u8; 4], addr: SocketAddr) -> String {
        let mut stream = silent_from(local, addr).await;
        stream
            .write_all(b"GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn a_connection_that_never_sends_a_byte_is_closed_after_the_first_byte_timeout() {
        let (addr, _stop) = running_server_with(ConnectionLimits {
            first_byte_timeout: Duration::from_millis(200),
            ..roomy()
        })
        .await;
        let mut silent = silent_from([127, 0, 0, 1], addr).await;

        assert!(
            closed_within(&mut silent, Duration::from_secs(5)).await,
            "a silent connection still open after 5 s"
        );
    }

    /// Four slots (over `event_loops` loops, 0: the caller's runtime), all
    /// taken by silent connections from four addresses (the per-address
    /// bound is not what is tested here), then a real client: its answer,
    /// and how long it waited for it.
    async fn a_client_after_silent_connections_fill_every_slot(
        event_loops: usize,
    ) -> (String, Duration) {
        let (addr, _stop) = running_server_with(ConnectionLimits {
            max: 4,
            first_byte_timeout: Duration::from_millis(500),
            event_loops,
            ..roomy()
        })
        .await;
        let mut silent = Vec::new();
        for last in 2..6 {
            silent.push(silent_from([127, 0, 0, last], addr).await);
        }
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(5), who_from([127, 0, 0, 9], addr))
            .await
            .expect("the client was never served");
        (answer, started.elapsed())
    }

    /// The client after the silent connections was answered `ending`, and
    /// only once their first-byte timeout had freed a slot.
    fn assert_served_only_once_a_slot_was_free(answer: &str, waited: Duration, ending: &str) {
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(ending), "{answer}");
        assert!(
            waited >= Duration::from_millis(300),
            "served before any slot was free: the bound did not hold"
        );
    }

    #[tokio::test]
    async fn silent_connections_filling_every_slot_hold_a_client_only_until_their_timeout() {
        let (answer, waited) = a_client_after_silent_connections_fill_every_slot(0).await;

        // Served once the silent ones were closed, not before.
        assert_served_only_once_a_slot_was_free(&answer, waited, "127.0.0.9");
    }

    #[tokio::test]
    async fn one_address_holds_at_most_its_share_of_connections_and_others_are_still_served() {
        let (addr, _stop) = running_server_with(ConnectionLimits {
            max_per_client_ip: 2,
            ..roomy()
        })
        .await;
        let _first = silent_from([127, 0, 0, 3], addr).await;
        let _second = silent_from([127, 0, 0, 3], addr).await;

        let mut third = silent_from([127, 0, 0, 3], addr).await;

        assert!(
            closed_within(&mut third, Duration::from_secs(5)).await,
            "a third connection from one address was kept"
        );
        assert!(who_from([127, 0, 0, 4], addr).await.ends_with("127.0.0.4"));
    }

    #[tokio::test]
    async fn event_loops_serve_on_threads_of_their_own_under_one_connection_bound() {
        // Two loops share the four slots (whichever loop accepted each
        // silent connection).
        let (answer, waited) = a_client_after_silent_connections_fill_every_slot(2).await;

        // The bound held across the loops, and the handler ran on an event
        // loop's thread, not on the test's runtime.
        assert_served_only_once_a_slot_was_free(&answer, waited, "127.0.0.9 on event loop");
    }

    /// The body of one `GET path` on a kept-alive `stream`; `None` when the
    /// server closed the connection instead of answering (a refused one).
    async fn try_keep_alive_get(stream: &mut tokio::net::TcpStream, path: &str) -> Option<String> {
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
                .await
                .expect("no answer within 5 s")
                .ok()?;
            if read == 0 {
                return None;
            }
            answer.extend_from_slice(&chunk[..read]);
            let text = String::from_utf8_lossy(&answer).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .expect("a content-length")
                    .parse()
                    .unwrap();
                if body.len() >= length {
                    return Some(body.to_owned());
                }
            }
        }
    }

    async fn keep_alive_get(stream: &mut tokio::net::TcpStream, path: &str) -> String {
        try_keep_alive_get(stream, path)
            .await
            .expect("closed before the answer was whole")
    }

    #[tokio::test]
    async fn a_new_connection_goes_to_the_event_loop_with_the_fewest_open() {
        // Arrange: A and C (from one address, its bound of two) on loop 0,
        // B (another address) on loop 1; then A and C close.
        let (addr, _stop) = running_server_with(ConnectionLimits {
            event_loops: 2,
            max_per_client_ip: 2,
            ..roomy()
        })
        .await;
        let mut opened = Vec::new();
        for local in [[127, 0, 0, 2], [127, 0, 0, 3], [127, 0, 0, 2]] {
            let mut stream = silent_from(local, addr).await;
            let served_by = keep_alive_get(&mut stream, "/loop").await;
            opened.push((stream, served_by));
        }
        let served_by: Vec<_> = opened.iter().map(|(_, loop_)| loop_.as_str()).collect();
        assert_eq!(served_by, ["Some(0)", "Some(1)", "Some(0)"]);
        let (_, b, _) = (opened.remove(0), opened.remove(0), opened.remove(0));

        // Act: a new connection from A's address, admitted once the server
        // has let go of A or C (refused until then: the address's bound).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let served_by = loop {
            let mut probe = silent_from([127, 0, 0, 2], addr).await;
            if let Some(served_by) = try_keep_alive_get(&mut probe, "/loop").await {
                break served_by;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "A and C were never let go"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };

        // Assert: loop 0 holds at most one (C) against loop 1's one (B): the
        // new one goes to loop 0, the first of the fewest (taking turns
        // would have sent the fourth connection to loop 1).
        assert_eq!(served_by, "Some(0)");
        drop(b);
    }

    #[tokio::test]
    async fn connections_opened_at_once_are_spread_evenly_over_the_event_loops() {
        let (addr, _stop) = running_server_with(ConnectionLimits {
            event_loops: 2,
            ..roomy()
        })
        .await;

        // Eight connections opened at once and kept open.
        let mut connections = Vec::new();
        for _ in 0..8 {
            connections.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let mut served_by = std::collections::BTreeMap::<String, usize>::new();
        for connection in &mut connections {
            *served_by
                .entry(keep_alive_get(connection, "/loop").await)
                .or_default() += 1;
        }

        // Four on each loop, not a burst on one.
        assert_eq!(
            served_by,
            [("Some(0)".to_owned(), 4), ("Some(1)".to_owned(), 4)].into(),
        );
    }

    #[tokio::test]
    async fn http2_connections_are_spread_over_the_event_loops_whatever_else_is_open() {
        // Arrange: an HTTP/2 connection (A) lands on loop 0, then an
        // HTTP/1.1 one on loop 1: by their counts alone, the next
        // connection would go to loop 0 again, beside A.
        let (addr, _stop) = running_server_with(ConnectionLimits {
            event_loops: 2,
            ..roomy()
        })
        .await;
        let http2 = || {
            reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .unwrap()
        };
        let loop_of = |client: reqwest::Client| async move {
            let answer = client
                .get(format!("http://{addr}/loop"))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.version(), reqwest::Version::HTTP_2);
            answer.text().await.unwrap()
        };
        let a = http2();
        assert_eq!(loop_of(a.clone()).await, "Some(0)");
        let mut http1 = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert_eq!(keep_alive_get(&mut http1, "/loop").await, "Some(1)");

        // Act: a second HTTP/2 connection (B).
        let b = http2();
        let b_served_by = loop_of(b.clone()).await;

        // Assert: B serves on loop 1, not beside A, and stays there; A
        // and the HTTP/1.1 connection are where they were.
        assert_eq!(b_served_by, "Some(1)");
        assert_eq!(loop_of(b).await, "Some(1)");
        assert_eq!(loop_of(a).await, "Some(0)");
        assert_eq!(keep_alive_get(&mut http1, "/loop").await, "Some(1)");
    }

    #[tokio::test]
    async fn event_loops_finish_in_flight_requests_on_stop_and_then_return() {
        let started = std::sync::Arc::new(tokio::sync::Notify::new());
        let handler_started = started.clone();
        let router = Router::new().route(
            "/slow",
            get(move || async move {
                handler_started.notify_one();
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        );
        let server = loopback_server(
            router,
            ConnectionLimits {
                event_loops: 2,
                ..roomy()
            },
        )
        .await;
        let addr = server.api_addr();
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let running = tokio::spawn(server.run(async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }));
        let request = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
        tokio::time::timeout(Duration::from_secs(5), started.notified())
            .await
            .expect("the request never reached its handler");

        stop_tx.send(true).unwrap();

        let answer = request.await.unwrap().unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.unwrap(), "done");
        let ran = tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("the server did not return after its loops drained");
        ran.unwrap().unwrap();
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "the listener still accepts after the stop"
        );
    }
}

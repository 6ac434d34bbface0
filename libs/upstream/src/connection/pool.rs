//! One endpoint's connections. HTTP/1.1: a stack of idle connections, the
//! most recently used on top (warm, and the cold ones at the bottom age
//! out); a connection goes back when its response body has been read to
//! the end, which is when it can carry the next request. Idle HTTP/1.1
//! connections are kept per API event loop (`PerEventLoop`): a
//! connection's task runs on the loop that dialed it, so a request that
//! reuses one of its own loop's wakes no other thread (threads outside the
//! event loops share one stack). HTTP/2: one connection per API event
//! loop, for the same reason (Envoy keeps one pool per worker), shared by
//! that loop's requests (streams multiplex on it), dialed by the first
//! request that finds none while the others wait for it. (One connection
//! for all would also put every request on one of the endpoint's loops.)

use std::{
    pin::Pin,
    sync::{Arc, Mutex, OnceLock, PoisonError},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::{body::Incoming, client::conn::http1};

use portico_common::http::server::{PerEventLoop, event_loop_slot};

use super::{BoxError, OutgoingBody, http2::Http2Body, http2::Http2Sender};

#[derive(Debug, Default)]
pub struct Pool {
    inner: Arc<PoolInner>,
    /// Each event loop's HTTP/2 connection; an async lock, held while
    /// dialing.
    http2: PerEventLoop<tokio::sync::Mutex<Option<Http2Sender>>>,
}

#[derive(Debug, Default)]
struct PoolInner {
    /// Stacks of idle connections: one per API event loop, one for threads
    /// outside the loops.
    idle: PerEventLoop<Mutex<Vec<Idle>>>,
    /// `<prefix>_upstream_pool_idle_connections{upstream, endpoint}`.
    idle_gauge: OnceLock<metrics::Gauge>,
}

#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<OutgoingBody>,
    since: Instant,
}

/// How long and how many idle connections an endpoint keeps (`max` per
/// stack: per event loop).
#[derive(Debug, Clone, Copy)]
pub struct IdlePolicy {
    pub timeout: Duration,
    pub max: usize,
}

impl Pool {
    /// Reports the idle count to `gauge` from now on.
    pub(crate) fn observe(&self, gauge: metrics::Gauge) {
        let _ = self.inner.idle_gauge.set(gauge);
    }

    /// An idle HTTP/1.1 connection of the calling thread's stack ready for
    /// a request, the most recently used first; `None` when none is left.
    /// Closed and aged ones are dropped on the way.
    pub(crate) async fn checkout_http1(
        &self,
        policy: IdlePolicy,
    ) -> Option<http1::SendRequest<OutgoingBody>> {
        loop {
            let idle = self.inner.lock(event_loop_slot()).pop()?;
            self.inner.gauge_add(-1.0);
            if idle.since.elapsed() > policy.timeout || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            // Ready at once, unless the connection is still finishing the
            // last response; an error means it closed meanwhile.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// The calling loop's HTTP/2 connection and whether it was there
    /// already, dialed by `dial` when there is none (or it closed);
    /// concurrent callers on the loop wait for the one dial.
    pub(crate) async fn loop_http2<F, E>(
        &self,
        dial: impl FnOnce() -> F,
    ) -> Result<(Http2Sender, bool), E>
    where
        F: Future<Output = Result<Http2Sender, E>>,
    {
        let mut connection = self.http2.own().lock().await;
        if let Some(sender) = connection.as_ref()
            && !sender.is_closed()
        {
            return Ok((sender.clone(), true));
        }
        let sender = dial().await?;
        *connection = Some(sender.clone());
        Ok((sender, false))
    }

    /// A body that gives `sender` back to this pool (the calling thread's
    /// stack: the one whose loop drives the connection) once read to its end.
    pub(crate) fn returning(
        &self,
        body: Incoming,
        sender: http1::SendRequest<OutgoingBody>,
        policy: IdlePolicy,
    ) -> UpstreamBody {
        let returner = Returner {
            pool: self.inner.clone(),
            stack: event_loop_slot(),
            sender,
            policy,
        };
        if body.is_end_stream() {
            // Nothing to read (HEAD, 204, 304, an empty body).
            returner.give_back();
            return UpstreamBody::plain(body);
        }
        UpstreamBody {
            inner: Inner::Http1(body),
            returner: Some(returner),
        }
    }

    /// Idle HTTP/1.1 connections now, of every stack.
    pub fn idle_connections(&self) -> usize {
        self.inner
            .idle
            .all()
            .map(|stack| stack.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

impl PoolInner {
    fn lock(&self, stack: usize) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A poisoned stack still holds working connections.
        self.idle
            .at(stack)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn gauge_add(&self, delta: f64) {
        if let Some(gauge) = self.idle_gauge.get() {
            gauge.increment(delta);
        }
    }
}

/// A connection on its way back to its pool.
struct Returner {
    pool: Arc<PoolInner>,
    stack: usize,
    sender: http1::SendRequest<OutgoingBody>,
    policy: IdlePolicy,
}

impl Returner {
    fn give_back(self) {
        if self.sender.is_closed() {
            return;
        }
        let mut idle = self.pool.lock(self.stack);
        // The oldest are at the bottom: past their time, they go.
        let now = Instant::now();
        let aged = idle
            .iter()
            .take_while(|entry| now.duration_since(entry.since) > self.policy.timeout)
            .count();
        idle.drain(..aged);
        let mut added = -(aged as f64);
        if idle.len() < self.policy.max {
            idle.push(Idle {
                sender: self.sender,
                since: now,
            });
            added += 1.0;
        }
        drop(idle);
        self.pool.gauge_add(added);
    }
}

/// A response body from an endpoint; an HTTP/1.1 connection is given back
/// to its pool when the body has been read to its end (dropped before, the
/// connection closes with it: it cannot carry another request).
pub struct UpstreamBody {
    inner: Inner,
    returner: Option<Returner>,
}

enum Inner {
    Http1(Incoming),
    Http2(Http2Body),
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("pooled", &self.returner.is_some())
            .finish_non_exhaustive()
    }
}

impl UpstreamBody {
    /// An HTTP/1.1 body whose connection is not pooled (an upgrade).
    pub(crate) fn plain(inner: Incoming) -> Self {
        Self {
            inner: Inner::Http1(inner),
            returner: None,
        }
    }

    pub(crate) fn http2(inner: Http2Body) -> Self {
        Self {
            inner: Inner::Http2(inner),
            returner: None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = match &mut self.inner {
            Inner::Http2(body) => {
                return Pin::new(body)
                    .poll_frame(cx)
                    .map(|frame| frame.map(|frame| frame.map_err(Into::into)));
            }
            Inner::Http1(body) => std::task::ready!(Pin::new(body).poll_frame(cx)),
        };
        match &frame {
            Some(Ok(_)) if !self.is_end_stream() => {}
            // The end: the connection can take the next request.
            Some(Ok(_)) | None => {
                if let Some(returner) = self.returner.take() {
                    returner.give_back();
                }
            }
            // A broken connection is not given back.
            Some(Err(_)) => self.returner = None,
        }
        Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Http1(body) => body.is_end_stream(),
            Inner::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Http1(body) => body.size_hint(),
            Inner::Http2(body) => body.size_hint(),
        }
    }
}

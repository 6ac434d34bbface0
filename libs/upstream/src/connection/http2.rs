//! HTTP/2 to an endpoint on the `h2` crate directly, not through hyper's
//! HTTP/2 client. hyper's client hands each request over a channel to the
//! connection's task, which starts the stream and spawns one more task per
//! request to pipe its body and forward its answer through a oneshot: two
//! task hand-offs, a spawn, an allocation and a wake-up per request, on
//! the gateway's hottest path. Here the request's own task starts the
//! stream (h2's streams are shared behind one lock), writes a whole body
//! at once, and reads the answer; the connection's task only moves frames
//! and pings. A streamed body is piped by the request's task until the
//! answer's head arrives, and by a task of its own after that (an upload
//! the endpoint answers before reading to its end).

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use futures::future::poll_fn;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{BoxError, OutgoingBody};

/// A dead peer is noticed without a request failing on it: a PING every
/// `interval`, and the connection closed when its PONG takes longer than
/// `timeout`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeepAlive {
    pub interval: Duration,
    pub timeout: Duration,
}

impl KeepAlive {
    pub(crate) const DEFAULT: Self = Self {
        interval: Duration::from_secs(20),
        timeout: Duration::from_secs(10),
    };
}

/// Flow-control windows as hyper's client opens them: an answer of up to
/// 2 MiB per stream (5 MiB across the connection) flows without waiting for
/// a WINDOW_UPDATE.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
/// Largest header list accepted in an answer.
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// Request body bytes h2 holds per stream while the window is shut.
const MAX_SEND_BUFFER: usize = 1024 * 1024;

/// A connection's request side: cheap to clone, one per request.
#[derive(Clone)]
pub(crate) struct Http2Sender {
    send: h2::client::SendRequest<Bytes>,
    /// Set when the connection's task ends or the endpoint said GOAWAY:
    /// the pool dials a new one.
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Http2Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2Sender")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// Why a request got no answer.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The connection could take no new stream: nothing went out, and the
    /// request is given back whole.
    Unsent(Box<http::Request<OutgoingBody>>, h2::Error),
    /// The exchange failed once the request may have reached the endpoint.
    Broken(h2::Error),
    /// The request body failed (the caller's side).
    Body(BoxError),
}

/// The HTTP/2 handshake on an open stream; the connection is driven by a
/// task of its own for as long as it lives.
pub(crate) async fn handshake<I>(io: I, keep_alive: KeepAlive) -> Result<Http2Sender, h2::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut connection) = h2::client::Builder::new()
        .enable_push(false)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .handshake::<_, Bytes>(io)
        .await?;
    let closed = Arc::new(AtomicBool::new(false));
    let ping_pong = connection.ping_pong();
    let flag = closed.clone();
    tokio::spawn(async move {
        let outcome = match ping_pong {
            Some(ping_pong) => tokio::select! {
                outcome = &mut connection => outcome,
                err = pings(ping_pong, keep_alive) => Err(err),
            },
            None => connection.await,
        };
        flag.store(true, Ordering::Release);
        if let Err(err) = outcome {
            tracing::debug!(%err, "upstream HTTP/2 connection ended with an error");
        }
    });
    Ok(Http2Sender { send, closed })
}

/// Pings the endpoint every `keep_alive.interval`; returns (to close the
/// connection) when a PONG is late or the connection is gone.
async fn pings(mut ping_pong: h2::PingPong, keep_alive: KeepAlive) -> h2::Error {
    loop {
        tokio::time::sleep(keep_alive.interval).await;
        if let Err(err) = ping_pong.send_ping(h2::Ping::opaque()) {
            return err;
        }
        match tokio::time::timeout(keep_alive.timeout, poll_fn(|cx| ping_pong.poll_pong(cx))).await
        {
            Ok(Ok(_pong)) => {}
            Ok(Err(err)) => return err,
            Err(_late) => {
                tracing::debug!("upstream HTTP/2 connection: no PONG in time");
                return h2::Error::from(h2::Reason::NO_ERROR);
            }
        }
    }
}

impl Http2Sender {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends `request` on a new stream and waits for the answer's head.
    pub(crate) async fn send(
        &self,
        request: http::Request<OutgoingBody>,
    ) -> Result<http::Response<Http2Body>, SendError> {
        let mut send = match self.send.clone().ready().await {
            Ok(send) => send,
            Err(err) => {
                self.closed.store(true, Ordering::Release);
                return Err(SendError::Unsent(Box::new(request), err));
            }
        };
        let (mut parts, body) = request.into_parts();
        strip_connection_specific(&mut parts.headers);
        let end_of_stream = body.is_end_stream();
        if !end_of_stream
            && let Some(length) = body.size_hint().exact()
            && !parts.headers.contains_key(header::CONTENT_LENGTH)
        {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        let (response, mut stream) = send
            .send_request(http::Request::from_parts(parts, ()), end_of_stream)
            .map_err(SendError::Broken)?;
        let response = match body {
            _ if end_of_stream => response.await,
            OutgoingBody::Whole(bytes) => {
                // All of it now; h2 holds what the window does not admit yet.
                stream.send_data(bytes, true).map_err(SendError::Broken)?;
                response.await
            }
            OutgoingBody::Stream(body) => {
                let mut pipe = Box::pin(pipe(body, stream));
                let mut response = response;
                tokio::select! {
                    biased;
                    answer = &mut response => {
                        // Answered before the upload ended: the rest goes
                        // on by itself.
                        tokio::spawn(async move {
                            if let Err(err) = pipe.await {
                                tracing::debug!(?err, "request body to an HTTP/2 upstream stopped");
                            }
                        });
                        answer
                    }
                    piped = &mut pipe => match piped {
                        Ok(()) => response.await,
                        Err(PipeError::Body(err)) => return Err(SendError::Body(err)),
                        // The stream is gone; its answer says why.
                        Err(PipeError::Stream(err)) => {
                            tracing::debug!(%err, "request body to an HTTP/2 upstream stopped");
                            response.await
                        }
                    },
                }
            }
        };
        let response = response.map_err(SendError::Broken)?;
        let remaining = portico_common::http::pipeline::declared_length(response.headers());
        Ok(response.map(|stream| Http2Body {
            stream,
            remaining,
            data_done: false,
        }))
    }
}

/// Takes out what HTTP/2 forbids in a request (h2 refuses a request that
/// has any of it).
fn strip_connection_specific(headers: &mut HeaderMap) {
    // One pass over the fields: the gateway has dropped them already, and
    // a removal per name would hash each.
    let forbidden: Vec<HeaderName> = headers
        .iter()
        .filter(|(name, value)| is_connection_specific(name, value))
        .map(|(name, _)| name.clone())
        .collect();
    for name in forbidden {
        headers.remove(name);
    }
}

/// Whether a field describes one HTTP/1.1 connection, which HTTP/2 forbids
/// in a request (RFC 9113 §8.2.2); `te` may stay when it says "trailers"
/// (gRPC sends it).
fn is_connection_specific(name: &HeaderName, value: &HeaderValue) -> bool {
    matches!(
        *name,
        header::CONNECTION | header::TRANSFER_ENCODING | header::UPGRADE
    ) || matches!(name.as_str(), "keep-alive" | "proxy-connection")
        || (name == header::TE && value != "trailers")
}

#[derive(Debug)]
enum PipeError {
    Body(BoxError),
    Stream(h2::Error),
}

/// Sends `body`'s frames on `stream` as the endpoint's window admits them.
async fn pipe(
    mut body: UnsyncBoxBody<Bytes, BoxError>,
    mut stream: h2::SendStream<Bytes>,
) -> Result<(), PipeError> {
    loop {
        let frame = match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => {
                return stream
                    .send_data(Bytes::new(), true)
                    .map_err(PipeError::Stream);
            }
            Some(Err(err)) => {
                stream.send_reset(h2::Reason::CANCEL);
                return Err(PipeError::Body(err));
            }
            Some(Ok(frame)) => frame,
        };
        let end = body.is_end_stream();
        match frame.into_data() {
            Ok(mut data) => {
                if data.is_empty() {
                    if end {
                        return stream.send_data(data, true).map_err(PipeError::Stream);
                    }
                    continue;
                }
                stream.reserve_capacity(data.len());
                while !data.is_empty() {
                    let granted = match poll_fn(|cx| stream.poll_capacity(cx)).await {
                        Some(granted) => granted.map_err(PipeError::Stream)?,
                        None => {
                            return Err(PipeError::Stream(h2::Error::from(
                                h2::Reason::STREAM_CLOSED,
                            )));
                        }
                    };
                    let chunk = data.split_to(granted.min(data.len()));
                    stream
                        .send_data(chunk, end && data.is_empty())
                        .map_err(PipeError::Stream)?;
                }
                if end {
                    return Ok(());
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    return stream.send_trailers(trailers).map_err(PipeError::Stream);
                }
            }
        }
    }
}

/// An answer's body from an HTTP/2 endpoint; what is read is given back to
/// the flow-control window at once.
pub struct Http2Body {
    stream: h2::RecvStream,
    /// What `content-length` says is left to come.
    remaining: Option<u64>,
    data_done: bool,
}

impl std::fmt::Debug for Http2Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2Body")
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl Body for Http2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    if let Some(remaining) = &mut this.remaining {
                        *remaining = remaining.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(err)) => return Poll::Ready(end_or_error(err)),
                None => this.data_done = true,
            }
        }
        Poll::Ready(match ready!(this.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
            Ok(None) => None,
            Err(err) => end_or_error(err),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(remaining) => SizeHint::with_exact(remaining),
            None => SizeHint::default(),
        }
    }
}

/// A stream the endpoint reset with NO_ERROR or CANCEL after answering has
/// ended, not failed (it stopped reading a request body it did not need).
fn end_or_error(err: h2::Error) -> Option<Result<Frame<Bytes>, h2::Error>> {
    match err.reason() {
        Some(h2::Reason::NO_ERROR | h2::Reason::CANCEL) if err.is_remote() => None,
        _ => Some(Err(err)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use http_body_util::{BodyExt as _, StreamBody};
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::{TcpListener, TcpStream},
        sync::mpsc,
    };

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    /// An HTTP/2 endpoint (h2's server) answering each request with what
    /// `answer` makes of it; its address.
    async fn endpoint<F, Fut>(answer: F) -> std::net::SocketAddr
    where
        F: Fn(http::Request<h2::RecvStream>, h2::server::SendResponse<Bytes>) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                // Small frames (WINDOW_UPDATEs) go out at once, as the
                // services' own servers send them.
                socket.set_nodelay(true).unwrap();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut connection = h2::server::handshake(socket).await.unwrap();
                    while let Some(Ok((request, respond))) = connection.accept().await {
                        tokio::spawn(answer(request, respond));
                    }
                });
            }
        });
        address
    }

    async fn connect(address: std::net::SocketAddr) -> Http2Sender {
        let stream = TcpStream::connect(address).await.unwrap();
        stream.set_nodelay(true).unwrap();
        handshake(stream, KeepAlive::DEFAULT).await.unwrap()
    }

    /// Waits (up to [`WAIT`]) for the pool to be told `sender` is closed;
    /// fails with `still_open` if it never is.
    async fn closes(sender: &Http2Sender, still_open: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !sender.is_closed() {
            assert!(tokio::time::Instant::now() < deadline, "{still_open}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn request(body: OutgoingBody) -> http::Request<OutgoingBody> {
        http::Request::post("http://upstream.test/upload")
            .body(body)
            .unwrap()
    }

    /// A streamed request body fed through `feed`.
    fn streamed() -> (mpsc::Sender<Result<Frame<Bytes>, BoxError>>, OutgoingBody) {
        let (feed, frames) = mpsc::channel(4);
        let stream = futures::stream::unfold(frames, |mut frames| async move {
            frames.recv().await.map(|frame| (frame, frames))
        });
        (
            feed,
            OutgoingBody::Stream(StreamBody::new(stream).boxed_unsync()),
        )
    }

    /// Reads a request body to its end as h2 hands it over, giving the
    /// window back; its length and trailers.
    async fn drain(body: &mut h2::RecvStream) -> (usize, Option<HeaderMap>) {
        let mut length = 0;
        while let Some(data) = body.data().await {
            let data = data.unwrap();
            length += data.len();
            body.flow_control().release_capacity(data.len()).unwrap();
        }
        (length, body.trailers().await.unwrap())
    }

    /// Our body is read, and its window given back: an answer past both
    /// flow-control windows (2 MiB a stream, 5 MiB the connection) arrives
    /// whole instead of stalling.
    #[tokio::test]
    async fn an_answer_larger_than_the_flow_control_windows_arrives_whole() {
        const LENGTH: usize = 12 * 1024 * 1024;
        let address = endpoint(|_, mut respond| async move {
            let mut stream = respond
                .send_response(http::Response::new(()), false)
                .unwrap();
            let mut left = LENGTH;
            while left > 0 {
                let chunk = left.min(256 * 1024);
                stream.reserve_capacity(chunk);
                let granted = poll_fn(|cx| stream.poll_capacity(cx))
                    .await
                    .unwrap()
                    .unwrap();
                let sent = granted.min(chunk);
                stream
                    .send_data(Bytes::from(vec![b'x'; sent]), sent == left)
                    .unwrap();
                left -= sent;
            }
        })
        .await;
        let sender = connect(address).await;
        // Twice on one connection: the connection's window comes back too.
        for _ in 0..2 {
            let response = sender
                .send(request(OutgoingBody::Whole(Bytes::new())))
                .await
                .unwrap();
            let body = tokio::time::timeout(WAIT, response.into_body().collect())
                .await
                .expect("the answer stalled")
                .unwrap()
                .to_bytes();
            assert_eq!(body.len(), LENGTH);
        }
    }

    /// An answer's declared length is its body's size (hyper's server
    /// frames a body of known size by it), counting down as it is read.
    #[tokio::test]
    async fn a_declared_length_is_the_bodys_exact_size() {
        let address = endpoint(|_, mut respond| async move {
            let answer = http::Response::builder()
                .header(header::CONTENT_LENGTH, 5)
                .body(())
                .unwrap();
            let mut stream = respond.send_response(answer, false).unwrap();
            stream
                .send_data(Bytes::from_static(b"hello"), true)
                .unwrap();
        })
        .await;
        let sender = connect(address).await;
        let response = sender
            .send(request(OutgoingBody::Whole(Bytes::new())))
            .await
            .unwrap();
        let mut body = response.into_body();
        assert_eq!(body.size_hint().exact(), Some(5));
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "hello");
        assert_eq!(body.size_hint().exact(), Some(0));
    }

    /// A streamed upload larger than the endpoint's window goes out whole,
    /// as the window reopens, and its trailers after it.
    #[tokio::test]
    async fn a_streamed_upload_past_the_window_goes_out_whole_with_its_trailers() {
        let address = endpoint(|request, mut respond| async move {
            let mut body = request.into_body();
            let (length, trailers) = drain(&mut body).await;
            let checksum = trailers
                .and_then(|trailers| trailers.get("x-checksum").cloned())
                .unwrap_or(HeaderValue::from_static("none"));
            let answer = http::Response::builder()
                .header("x-length", length)
                .header("x-checksum", checksum)
                .body(())
                .unwrap();
            respond.send_response(answer, true).unwrap();
        })
        .await;
        let sender = connect(address).await;
        let (feed, body) = streamed();
        tokio::spawn(async move {
            for _ in 0..10 {
                let chunk = Bytes::from(vec![b'y'; 300 * 1024]);
                feed.send(Ok(Frame::data(chunk))).await.unwrap();
            }
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", HeaderValue::from_static("c0ffee"));
            feed.send(Ok(Frame::trailers(trailers))).await.unwrap();
        });
        let response = tokio::time::timeout(WAIT, sender.send(request(body)))
            .await
            .expect("the upload stalled")
            .unwrap();
        assert_eq!(response.headers()["x-length"], "3072000");
        assert_eq!(response.headers()["x-checksum"], "c0ffee");
    }

    /// An endpoint may answer before it has read the upload: the answer
    /// comes back at once, and the rest of the body still goes out.
    #[tokio::test]
    async fn an_answer_before_the_upload_ends_comes_back_and_the_upload_goes_on() {
        let received = Arc::new(AtomicUsize::new(0));
        let counted = received.clone();
        let address = endpoint(move |request, mut respond| {
            let counted = counted.clone();
            async move {
                respond
                    .send_response(http::Response::new(()), true)
                    .unwrap();
                let mut body = request.into_body();
                let (length, _) = drain(&mut body).await;
                counted.store(length, Ordering::SeqCst);
            }
        })
        .await;
        let sender = connect(address).await;
        let (feed, body) = streamed();
        feed.send(Ok(Frame::data(Bytes::from_static(b"first part"))))
            .await
            .unwrap();
        let response = tokio::time::timeout(WAIT, sender.send(request(body)))
            .await
            .expect("the answer waited for the whole upload")
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        feed.send(Ok(Frame::data(Bytes::from_static(b", and the rest"))))
            .await
            .unwrap();
        drop(feed);
        let deadline = tokio::time::Instant::now() + WAIT;
        while received.load(Ordering::SeqCst) != 24 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the endpoint got {} of 24 bytes",
                received.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A request body that fails is the caller's failure, and the stream
    /// is reset (the endpoint does not take half a body for a whole one).
    #[tokio::test]
    async fn a_failing_request_body_is_the_callers_and_resets_the_stream() {
        let (reset_tx, mut reset_rx) = mpsc::channel(1);
        let address = endpoint(move |request, _respond| {
            let reset_tx = reset_tx.clone();
            async move {
                let mut body = request.into_body();
                let mut outcome = None;
                while let Some(data) = body.data().await {
                    if let Err(err) = data {
                        outcome = err.reason();
                        break;
                    }
                }
                let _ = reset_tx.send(outcome).await;
            }
        })
        .await;
        let sender = connect(address).await;
        let (feed, body) = streamed();
        feed.send(Ok(Frame::data(Bytes::from_static(b"some"))))
            .await
            .unwrap();
        feed.send(Err("the client went away".into())).await.unwrap();
        let outcome = tokio::time::timeout(WAIT, sender.send(request(body)))
            .await
            .expect("no outcome");
        match outcome {
            Err(SendError::Body(err)) => assert_eq!(err.to_string(), "the client went away"),
            other => panic!("expected the body's failure, got {other:?}"),
        }
        let reason = tokio::time::timeout(WAIT, reset_rx.recv())
            .await
            .expect("the endpoint saw no end")
            .unwrap();
        assert_eq!(reason, Some(h2::Reason::CANCEL));
    }

    /// A connection the endpoint closed takes no request: the request comes
    /// back whole (to go out on another), and the pool is told.
    #[tokio::test]
    async fn a_closed_connection_gives_the_request_back_and_says_it_is_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut connection = h2::server::handshake(socket).await.unwrap();
            connection.graceful_shutdown();
            while connection.accept().await.is_some() {}
        });
        let sender = connect(address).await;
        closes(&sender, "the closed connection is still open to the pool").await;
        let outcome = sender
            .send(request(OutgoingBody::Whole(Bytes::from_static(b"whole"))))
            .await;
        match outcome {
            Err(SendError::Unsent(request, _)) => match request.into_body() {
                OutgoingBody::Whole(bytes) => assert_eq!(bytes, "whole"),
                OutgoingBody::Stream(_) => panic!("a whole body came back as a stream"),
            },
            other => panic!("expected the request back, got {other:?}"),
        }
    }

    /// An endpoint that stops answering PINGs is given up: the connection
    /// closes (and the pool dials a new one) without a request failing on
    /// it.
    #[tokio::test]
    async fn a_peer_that_answers_no_ping_is_given_up() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            // Its SETTINGS and the ACK of ours, then silence: what it reads
            // is never answered.
            socket
                .write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0])
                .await
                .unwrap();
            socket
                .write_all(&[0, 0, 0, 0x4, 0x1, 0, 0, 0, 0])
                .await
                .unwrap();
            let mut sink = [0u8; 1024];
            while socket.read(&mut sink).await.is_ok_and(|read| read > 0) {}
        });
        let stream = TcpStream::connect(address).await.unwrap();
        let keep_alive = KeepAlive {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
        };
        let sender = handshake(stream, keep_alive).await.unwrap();
        assert!(!sender.is_closed(), "closed before any PING");
        closes(&sender, "a silent peer is still taken for alive").await;
    }

    #[test]
    fn connection_specific_headers_are_stripped_and_the_rest_kept() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("x-connection", "kept"),
            ("keep-alives", "kept"),
            ("accept", "kept"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_connection_specific(&mut headers);
        let mut left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "keep-alives", "x-connection"]);

        // `te: trailers` is HTTP/2's own (gRPC sends it).
        let mut headers = HeaderMap::new();
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_connection_specific(&mut headers);
        assert_eq!(headers[header::TE], "trailers");
    }

    #[test]
    fn every_connection_specific_field_is_known_and_no_look_alike() {
        let any = HeaderValue::from_static("close");
        for name in [
            "connection",
            "transfer-encoding",
            "upgrade",
            "keep-alive",
            "proxy-connection",
        ] {
            let name = HeaderName::from_static(name);
            assert!(is_connection_specific(&name, &any), "{name} missed");
        }
        assert!(is_connection_specific(
            &header::TE,
            &HeaderValue::from_static("gzip")
        ));
        assert!(!is_connection_specific(
            &header::TE,
            &HeaderValue::from_static("trailers")
        ));
        for name in [
            "x-connection",
            "keep-alives",
            "proxy",
            "upgrade-insecure-requests",
            "accept",
        ] {
            let name = HeaderName::from_static(name);
            assert!(!is_connection_specific(&name, &any), "{name} taken for one");
        }
    }

    #[tokio::test]
    async fn h2_still_refuses_a_request_with_a_connection_specific_header() {
        // h2's own check (patched to a one-pass test first, vendor/h2).
        let address = endpoint(|_, mut respond| async move {
            let _ = respond.send_response(http::Response::new(()), true);
        })
        .await;
        let stream = TcpStream::connect(address).await.unwrap();
        let (mut client, connection) = h2::client::handshake(stream).await.unwrap();
        tokio::spawn(connection);
        for (name, value) in [
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("connection", "close"),
            ("te", "gzip"),
        ] {
            let request = http::Request::get(format!("http://{address}/"))
                .header(name, value)
                .body(())
                .unwrap();
            let refused = client.send_request(request, true);
            assert!(refused.is_err(), "a request with {name} was sent");
        }
        let request = http::Request::get(format!("http://{address}/"))
            .header(header::TE, "trailers")
            .header("x-connection", "kept")
            .body(())
            .unwrap();
        let (answer, _) = client.send_request(request, true).unwrap();
        assert_eq!(answer.await.unwrap().status(), http::StatusCode::OK);
    }
}

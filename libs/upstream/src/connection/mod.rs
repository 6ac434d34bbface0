//! Connections to endpoints, without hyper-util's general-purpose client:
//! an upstream's [`Connector`] dials (TCP, then TLS when configured, then
//! the HTTP/1.1 or HTTP/2 handshake), and each endpoint keeps its own
//! [`pool::Pool`] of idle HTTP/1.1 connections or its one shared HTTP/2
//! connection. A request takes a connection that is ready, or dials one;
//! nothing is keyed, hashed or spawned per request.

pub mod http2;
pub mod pool;
pub mod tls;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use crate::config::{Protocol, UpstreamConfig};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body as it goes out: whole bytes (replayable) or a stream.
pub enum OutgoingBody {
    /// Sent in one frame (taken by the first poll).
    Whole(Bytes),
    Stream(UnsyncBoxBody<Bytes, BoxError>),
}

impl std::fmt::Debug for OutgoingBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Whole(_) => "OutgoingBody::Whole",
            Self::Stream(_) => "OutgoingBody::Stream",
        })
    }
}

impl http_body::Body for OutgoingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        // Both variants are `Unpin`.
        match self.get_mut() {
            Self::Whole(bytes) => std::task::Poll::Ready(
                (!bytes.is_empty()).then(|| Ok(http_body::Frame::data(std::mem::take(bytes)))),
            ),
            Self::Stream(body) => std::pin::Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Whole(bytes) => bytes.is_empty(),
            Self::Stream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::Whole(bytes) => http_body::SizeHint::with_exact(bytes.len() as u64),
            Self::Stream(body) => body.size_hint(),
        }
    }
}

/// A connection's request side.
pub(crate) enum Sender {
    Http1(http1::SendRequest<OutgoingBody>),
    Http2(http2::Http2Sender),
}

/// Why no connection could be made: nothing reached the endpoint, so any
/// request may go to another.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect: {0}")]
    Tcp(std::io::Error),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("the endpoint did not agree to HTTP/2 by ALPN")]
    NoH2,
    #[error("HTTP handshake: {0}")]
    Handshake(BoxError),
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Name(String),
}

/// How an upstream's endpoints are dialed.
#[derive(Debug)]
pub struct Connector {
    pub protocol: Protocol,
    /// TLS settings when any endpoint is dialed over TLS.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Every endpoint over TLS (a `tls` section), not only `https://` ones.
    tls_everywhere: bool,
    server_name: Option<String>,
}

impl Connector {
    pub fn from_config(spec: &UpstreamConfig) -> Result<Self, String> {
        let protocol = spec.protocol.unwrap_or_default();
        let tls_everywhere = spec.tls.is_some();
        let any_https = spec.endpoints.iter().any(|url| url.starts_with("https://"));
        let tls = (tls_everywhere || any_https)
            .then(|| tls::client_config(spec.tls.as_ref(), protocol))
            .transpose()
            .map_err(|(field, err)| format!("tls.{field}: {err}"))?;
        Ok(Self {
            protocol,
            tls,
            tls_everywhere,
            server_name: spec.tls.as_ref().and_then(|tls| tls.server_name.clone()),
        })
    }

    /// A new connection to `endpoint`, ready for requests, within `timeout`.
    pub(crate) async fn connect(
        &self,
        endpoint: &crate::upstream::Endpoint,
        timeout: Duration,
    ) -> Result<Sender, ConnectError> {
        tokio::time::timeout(timeout, self.dial(endpoint))
            .await
            .unwrap_or(Err(ConnectError::Timeout(timeout)))
    }

    async fn dial(&self, endpoint: &crate::upstream::Endpoint) -> Result<Sender, ConnectError> {
        let over_tls = self.tls_everywhere || endpoint.scheme == http::uri::Scheme::HTTPS;
        let host = endpoint.authority.host();
        let port = endpoint
            .authority
            .port_u16()
            .unwrap_or(if over_tls { 443 } else { 80 });
        let bare_host = host
            .strip_prefix('[')
            .and_then(|v6| v6.strip_suffix(']'))
            .unwrap_or(host);
        let stream = TcpStream::connect((bare_host, port))
            .await
            .map_err(ConnectError::Tcp)?;
        // Requests are small writes; waiting to coalesce them costs latency.
        let _ = stream.set_nodelay(true);
        match (&self.tls, over_tls) {
            (Some(config), true) => {
                let name = tls::server_name(self.server_name.as_deref(), host)
                    .map_err(ConnectError::Name)?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, stream)
                    .await
                    .map_err(ConnectError::Tls)?;
                let agreed_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                if self.protocol == Protocol::Http2 && !agreed_h2 {
                    return Err(ConnectError::NoH2);
                }
                handshake(stream, self.protocol).await
            }
            (None, true) => Err(ConnectError::Name(format!(
                "`{}` needs TLS, which its upstream was not built with",
                endpoint.label
            ))),
            (_, false) => handshake(stream, self.protocol).await,
        }
    }
}

/// The HTTP handshake on an open stream; the connection is driven by a
/// task of its own for as long as it lives.
async fn handshake<I>(io: I, protocol: Protocol) -> Result<Sender, ConnectError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match protocol {
        Protocol::Http1 => {
            let (sender, connection) = http1::Builder::new()
                .handshake(TokioIo::new(io))
                .await
                .map_err(|err| ConnectError::Handshake(err.into()))?;
            tokio::spawn(async move {
                // With upgrades: a WebSocket takes the connection over.
                if let Err(err) = connection.with_upgrades().await {
                    tracing::debug!(%err, "upstream connection ended with an error");
                }
            });
            Ok(Sender::Http1(sender))
        }
        Protocol::Http2 => http2::handshake(io, http2::KeepAlive::DEFAULT)
            .await
            .map(Sender::Http2)
            .map_err(|err| ConnectError::Handshake(err.into())),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    const TOKEN: &str =
        "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIwMWEyNDVmZCJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg";

    /// The payload of the first HEADERS frame a client sends on `socket`,
    /// after the connection preface.
    async fn first_headers_frame(socket: &mut TcpStream) -> Vec<u8> {
        let mut preface = [0u8; 24];
        socket.read_exact(&mut preface).await.unwrap();
        assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        loop {
            let mut head = [0u8; 9];
            socket.read_exact(&mut head).await.unwrap();
            let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; length];
            socket.read_exact(&mut payload).await.unwrap();
            const HEADERS: u8 = 0x1;
            if head[3] == HEADERS {
                return payload;
            }
        }
    }

    /// Header values go to an HTTP/2 upstream as their own octets, not
    /// Huffman-coded (vendor/h2/PORTICO.md): coding a 550-byte bearer token
    /// on every request was a seventh of the gateway's instructions per
    /// proxied read, and decoding it a cost in every replica.
    #[tokio::test]
    async fn http2_header_values_go_upstream_as_their_own_octets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let upstream = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            // The server's (empty) SETTINGS: the connection is open.
            socket
                .write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0])
                .await
                .unwrap();
            first_headers_frame(&mut socket).await
        });
        let stream = TcpStream::connect(address).await.unwrap();
        let Sender::Http2(sender) = handshake(stream, Protocol::Http2).await.unwrap() else {
            panic!("an HTTP/2 handshake gave another sender");
        };
        let request = http::Request::get("http://upstream.test/v1/users/me")
            .header(http::header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header("x-request-id", "01a245fd-5bc8-715a-a8ad-8156b5d4576c")
            .body(OutgoingBody::Whole(Bytes::new()))
            .unwrap();
        // Never answered: the upstream only reads what was sent.
        let _pending = tokio::spawn(async move { sender.send(request).await.is_ok() });
        let block = tokio::time::timeout(Duration::from_secs(10), upstream)
            .await
            .expect("no HEADERS frame within 10 s")
            .unwrap();
        let has = |needle: &[u8]| block.windows(needle.len()).any(|window| window == needle);
        assert!(
            has(format!("Bearer {TOKEN}").as_bytes()),
            "the authorization value is not in the header block as sent"
        );
        assert!(has(b"01a245fd-5bc8-715a-a8ad-8156b5d4576c"));
    }
}

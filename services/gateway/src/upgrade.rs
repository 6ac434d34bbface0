//! Protocol upgrades (WebSocket) passed through: the client's
//! `Upgrade` request (or, over HTTP/2, its extended CONNECT, RFC 8441)
//! goes to the upstream as an HTTP/1.1 `Upgrade` with
//! `Connection: upgrade`; when the upstream answers 101, both connections
//! are handed over and their bytes copied both ways until either side
//! closes or nothing moves for the idle timeout.

use std::time::Duration;

use base64::{Engine, prelude::BASE64_STANDARD};
use http::{Extensions, HeaderMap, HeaderValue, Method, StatusCode, header};
use hyper::{
    ext::Protocol,
    upgrade::{OnUpgrade, Upgraded},
};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};

/// A switch a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Switch {
    /// HTTP/1.1: a GET with `Upgrade` (the protocol named here) and
    /// `upgrade` among its `Connection` options; answered 101.
    Upgrade(HeaderValue),
    /// HTTP/2 (RFC 8441): an extended CONNECT with `:protocol` websocket;
    /// answered 200, the stream then carries the WebSocket.
    ExtendedConnect,
}

/// The switch a request asks for, if any.
pub fn requested(method: &Method, headers: &HeaderMap, extensions: &Extensions) -> Option<Switch> {
    if is_extended_connect(method, extensions) {
        return Some(Switch::ExtendedConnect);
    }
    if method != Method::GET {
        return None;
    }
    let listed = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|option| option.trim().eq_ignore_ascii_case("upgrade"));
    listed
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
        .map(Switch::Upgrade)
}

/// Whether a request is an RFC 8441 WebSocket: CONNECT with the
/// `:protocol` pseudo-header `websocket` (only HTTP/2 can carry one).
pub fn is_extended_connect(method: &Method, extensions: &Extensions) -> bool {
    method == Method::CONNECT
        && extensions
            .get::<Protocol>()
            .is_some_and(|protocol| protocol.as_str().eq_ignore_ascii_case("websocket"))
}

/// Asks the upstream (always HTTP/1.1) for the same switch. A WebSocket
/// over HTTP/2 has no `Sec-WebSocket-Key` (RFC 8441 §5), so one is made
/// for the upstream's handshake.
pub fn ask_upstream(headers: &mut HeaderMap, switch: &Switch) {
    let protocol = match switch {
        Switch::Upgrade(protocol) => protocol.clone(),
        Switch::ExtendedConnect => {
            let key = BASE64_STANDARD.encode(uuid::Uuid::new_v4().as_bytes());
            if let Ok(key) = HeaderValue::from_str(&key) {
                headers.insert(header::SEC_WEBSOCKET_KEY, key);
            }
            HeaderValue::from_static("websocket")
        }
    };
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// The status and headers the client gets for the upstream's 101: the
/// same 101 over HTTP/1.1; over HTTP/2, a 200 without the headers that
/// belong to the HTTP/1.1 handshake.
pub fn answer(switch: &Switch, headers: &mut HeaderMap) -> StatusCode {
    match switch {
        Switch::Upgrade(_) => {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            StatusCode::SWITCHING_PROTOCOLS
        }
        Switch::ExtendedConnect => {
            headers.remove(header::UPGRADE);
            headers.remove(header::SEC_WEBSOCKET_ACCEPT);
            StatusCode::OK
        }
    }
}

/// Joins the client's and the upstream's connections once both have
/// switched (after the 101 is written), on a task of their own.
pub fn join(client: OnUpgrade, upstream: OnUpgrade, idle_timeout: Duration) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(err) => {
                tracing::debug!(%err, "an upgrade did not complete");
                return;
            }
        };
        let open = metrics::gauge!("gateway_upgraded_connections_open");
        open.increment(1.0);
        let ended = splice(client, upstream, idle_timeout).await;
        open.decrement(1.0);
        tracing::debug!(?ended, "upgraded connection ended");
    });
}

/// Why a spliced connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Closed,
    Idle,
    Failed,
}

/// Copies bytes both ways until both sides have closed, one fails, or
/// nothing moves for `idle_timeout`.
async fn splice(client: Upgraded, upstream: Upgraded, idle_timeout: Duration) -> Ended {
    let (mut from_client, mut to_client) = tokio::io::split(TokioIo::new(client));
    let (mut from_upstream, mut to_upstream) = tokio::io::split(TokioIo::new(upstream));
    let mut client_buffer = vec![0u8; 16 * 1024];
    let mut upstream_buffer = vec![0u8; 16 * 1024];
    let (mut client_open, mut upstream_open) = (true, true);
    while client_open || upstream_open {
        // A new timer each turn: any traffic restarts the idle clock.
        let moved = tokio::select! {
            read = from_client.read(&mut client_buffer), if client_open => {
                pass(read, &client_buffer, &mut to_upstream, &mut client_open).await
            }
            read = from_upstream.read(&mut upstream_buffer), if upstream_open => {
                pass(read, &upstream_buffer, &mut to_client, &mut upstream_open).await
            }
            () = tokio::time::sleep(idle_timeout) => return Ended::Idle,
        };
        if moved.is_err() {
            return Ended::Failed;
        }
    }
    Ended::Closed
}

/// Writes what one side sent to the other; at its end, closes the other
/// side's writing half (a half-close, as TCP has).
async fn pass(
    read: std::io::Result<usize>,
    buffer: &[u8],
    to: &mut WriteHalf<TokioIo<Upgraded>>,
    open: &mut bool,
) -> std::io::Result<()> {
    match read? {
        0 => {
            *open = false;
            to.shutdown().await
        }
        n => to.write_all(&buffer[..n]).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn an_upgrade_needs_get_the_upgrade_header_and_the_connection_option() {
        let asking = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        let none = Extensions::new();
        assert_eq!(
            requested(&Method::GET, &asking, &none),
            Some(Switch::Upgrade(HeaderValue::from_static("websocket")))
        );
        assert!(requested(&Method::POST, &asking, &none).is_none());
        assert!(requested(&Method::GET, &headers(&[("upgrade", "websocket")]), &none).is_none());
        assert!(requested(&Method::GET, &headers(&[("connection", "upgrade")]), &none).is_none());
    }

    #[test]
    fn an_extended_connect_needs_the_websocket_protocol() {
        let mut websocket = Extensions::new();
        websocket.insert(Protocol::from_static("websocket"));
        let mut other = Extensions::new();
        other.insert(Protocol::from_static("webtransport"));
        let empty = HeaderMap::new();
        assert_eq!(
            requested(&Method::CONNECT, &empty, &websocket),
            Some(Switch::ExtendedConnect)
        );
        assert!(requested(&Method::CONNECT, &empty, &other).is_none());
        assert!(requested(&Method::CONNECT, &empty, &Extensions::new()).is_none());
        assert!(requested(&Method::GET, &empty, &websocket).is_none());
    }

    #[test]
    fn the_upstream_gets_a_fresh_key_and_the_client_a_200_over_http2() {
        let mut asked = HeaderMap::new();
        ask_upstream(&mut asked, &Switch::ExtendedConnect);
        assert_eq!(asked[header::UPGRADE], "websocket");
        assert_eq!(asked[header::CONNECTION], "upgrade");
        let key = BASE64_STANDARD
            .decode(asked[header::SEC_WEBSOCKET_KEY].as_bytes())
            .unwrap();
        assert_eq!(key.len(), 16, "RFC 6455 §4.1: a 16-byte nonce");

        let mut answered = headers(&[
            ("upgrade", "websocket"),
            ("sec-websocket-accept", "x"),
            ("sec-websocket-protocol", "chat"),
        ]);
        let status = answer(&Switch::ExtendedConnect, &mut answered);
        assert_eq!(status, StatusCode::OK);
        assert!(answered.get(header::UPGRADE).is_none());
        assert!(answered.get(header::SEC_WEBSOCKET_ACCEPT).is_none());
        assert_eq!(answered["sec-websocket-protocol"], "chat");
    }
}

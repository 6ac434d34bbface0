//! Protocol upgrades (WebSocket) passed through: the client's
//! `Upgrade` request goes to the upstream with its `Upgrade` and
//! `Connection: upgrade`; when the upstream answers 101, both connections
//! are handed over and their bytes copied both ways until either side
//! closes or nothing moves for the idle timeout.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, header};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};

/// The protocol an HTTP/1.1 request asks to switch to: a GET with
/// `Upgrade` and `upgrade` among its `Connection` options.
pub fn requested(method: &Method, headers: &HeaderMap) -> Option<HeaderValue> {
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
}

/// Asks the upstream for the same switch.
pub fn ask_upstream(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
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
        assert_eq!(requested(&Method::GET, &asking).unwrap(), "websocket");
        assert!(requested(&Method::POST, &asking).is_none());
        assert!(requested(&Method::GET, &headers(&[("upgrade", "websocket")])).is_none());
        assert!(requested(&Method::GET, &headers(&[("connection", "upgrade")])).is_none());
    }
}

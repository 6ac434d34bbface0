//! WebSocket through the gateway: a real client and a real echo server
//! (tungstenite) on either side, and the idle timeout.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// A WebSocket server that echoes every message; its URL (`http://…`).
async fn echo_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_close() {
                        break;
                    }
                    if socket.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    url
}

async fn gateway_to_echo(idle_secs: u64) -> Gateway {
    let echo = echo_server().await;
    Gateway::start(|config| {
        config.upstreams.insert("live".into(), upstream(&[&echo]));
        config.routes = vec![route("/v1/live", "live")];
        config.proxy.websocket_idle_timeout_secs = idle_secs;
    })
    .await
}

#[tokio::test]
async fn messages_are_echoed_through_the_gateway_both_ways() {
    let gateway = gateway_to_echo(300).await;

    let (mut socket, response) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/live/echo", gateway.api))
            .await
            .unwrap();

    assert_eq!(response.status(), 101);
    assert!(response.headers().contains_key("x-request-id"));
    for message in [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text("x".repeat(100_000)),
    ] {
        socket.send(message.clone()).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("no echo within 5 s")
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn a_websocket_with_no_traffic_is_closed_after_the_idle_timeout() {
    let gateway = gateway_to_echo(1).await;
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/live/echo", gateway.api))
            .await
            .unwrap();
    // Traffic keeps it open past one timeout's length.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        socket.send(Message::text("still here")).await.unwrap();
        assert!(socket.next().await.unwrap().is_ok());
    }

    // Then silence: the gateway closes it.
    let ended = tokio::time::timeout(Duration::from_secs(10), socket.next()).await;

    let message = ended.expect("still open 10 s after the last message");
    assert!(
        !matches!(message, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{message:?}"
    );
}

#[tokio::test]
async fn a_websocket_over_http2_reaches_an_http1_upstream() {
    // RFC 8441: the client opens the WebSocket as an HTTP/2 extended
    // CONNECT stream; the gateway asks the upstream for an HTTP/1.1
    // upgrade and joins the two.
    use hyper_util::rt::TokioIo;
    use tokio_tungstenite::{WebSocketStream, tungstenite::protocol::Role};

    let gateway = gateway_to_echo(300).await;
    let response = extended_connect(&gateway, "/v1/live/echo").await;

    assert_eq!(response.status(), 200, "{:?}", response.headers());
    assert!(response.headers().contains_key("x-request-id"));
    assert!(!response.headers().contains_key("sec-websocket-accept"));
    let upgraded = hyper::upgrade::on(response).await.unwrap();
    let mut socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    socket.send(Message::text("over h2")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("no echo within 5 s")
        .unwrap()
        .unwrap();

    assert_eq!(echoed, Message::text("over h2"));
}

#[tokio::test]
async fn a_websocket_over_http2_to_an_http2_upstream_is_refused() {
    // An HTTP/2 upstream cannot be asked for an HTTP/1.1 upgrade.
    let echo = echo_server().await;
    let mut spec = upstream(&[&echo]);
    spec.protocol = Some(portico_upstream::config::Protocol::Http2);
    let gateway = Gateway::start(|config| {
        config.upstreams.insert("live".into(), spec);
        config.routes = vec![route("/v1/live", "live")];
    })
    .await;

    let response = extended_connect(&gateway, "/v1/live/echo").await;

    assert_eq!(response.status(), 501);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(problem["request_id"].is_string(), "{problem}");
    assert_eq!(
        problem["type"], "urn:portico:problem:websocket-over-http2-unsupported",
        "{problem}"
    );
}

/// Opens `path` on the gateway as an RFC 8441 WebSocket (HTTP/2 extended
/// CONNECT, h2c prior knowledge): the gateway's answer.
async fn extended_connect(gateway: &Gateway, path: &str) -> http::Response<hyper::body::Incoming> {
    use hyper::ext::Protocol;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let stream = tokio::net::TcpStream::connect(gateway.api).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let uri = format!("http://{}{path}", gateway.api);
    // The server's settings (extended CONNECT allowed) come with the
    // handshake; a request sent before they arrive is refused by h2.
    portico_testkit::eventually(
        Duration::from_secs(5),
        "the extended CONNECT accepted",
        || {
            let mut request = http::Request::builder()
                .method(http::Method::CONNECT)
                .uri(&uri)
                .header("sec-websocket-version", "13")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            request
                .extensions_mut()
                .insert(Protocol::from_static("websocket"));
            let attempt = sender.send_request(request);
            async move { attempt.await.ok() }
        },
    )
    .await
}

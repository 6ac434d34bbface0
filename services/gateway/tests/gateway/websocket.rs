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

//! Bodies stream through the gateway both ways: request bodies past the
//! retry buffer go out as they arrive, server-sent events reach the
//! client one by one.

use std::time::Duration;

use axum::{Router, body::Body, routing::get};
use bytes::Bytes;
use futures::StreamExt;
use http::{StatusCode, header};
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::sync::mpsc;

use crate::support::*;

/// `len` bytes with a recognisable pattern, sent as a stream of 64 KiB
/// chunks without a content-length (chunked).
fn chunked(len: usize) -> (Vec<u8>, reqwest::Body) {
    let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = bytes
        .chunks(64 * 1024)
        .map(|chunk| Ok(Frame::data(Bytes::copy_from_slice(chunk))))
        .collect();
    (
        bytes,
        reqwest::Body::wrap(StreamBody::new(futures::stream::iter(chunks))),
    )
}

#[tokio::test]
async fn a_body_larger_than_the_retry_buffer_streams_to_the_upstream_intact() {
    let (gateway, user) = gateway_with_user(|config| {
        config.routes[0].max_body_bytes = Some(16 * 1024 * 1024);
    })
    .await;
    let (sent, body) = chunked(8 * 1024 * 1024);

    let response = gateway
        .client
        .post(gateway.url("/v1/users/upload"))
        .body(body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert!(user.last().body == sent, "the upstream got another body");
}

#[tokio::test]
async fn a_streamed_body_goes_to_the_next_replica_when_the_first_cannot_be_reached() {
    let user = RecordingUpstream::start("user").await;
    let dead = dead_endpoint();
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("user".into(), upstream(&[&dead, &user.url]));
        config.routes = vec![route("/v1/users", "user")];
    })
    .await;
    let (sent, body) = chunked(1024 * 1024);

    // A POST: not replayable once sent, but nothing was sent to the dead one.
    let response = gateway
        .client
        .post(gateway.url("/v1/users"))
        .body(body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert!(user.last().body == sent);
}

#[tokio::test]
async fn a_slow_upload_is_not_cut_by_the_attempt_timeout() {
    // The attempt timeout bounds the wait for an answer once the body is
    // sent; the upload itself is bounded by the route's timeout.
    let (gateway, user) = gateway_with_user(|config| {
        config.routes[0].attempt_timeout_ms = Some(300);
        config.routes[0].max_body_bytes = Some(1024 * 1024);
    })
    .await;
    let chunks = futures::stream::iter(0..4).then(|i| async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![b'a' + i; 100 * 1024])))
    });

    let response = gateway
        .client
        .post(gateway.url("/v1/users/upload"))
        .body(reqwest::Body::wrap(StreamBody::new(chunks)))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(user.last().body.len(), 400 * 1024);
}

#[tokio::test]
async fn server_sent_events_arrive_one_by_one() {
    // An upstream whose event stream sends what the test hands it.
    let (events, to_send) = mpsc::channel::<&'static str>(4);
    let to_send = std::sync::Arc::new(std::sync::Mutex::new(Some(to_send)));
    let app = Router::new().route(
        "/v1/events",
        get(move || {
            let mut to_send = to_send.lock().unwrap().take().expect("one subscriber");
            let stream = futures::stream::poll_fn(move |cx| to_send.poll_recv(cx))
                .map(|event| Ok::<_, std::io::Error>(Bytes::from_static(event.as_bytes())));
            async move {
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    Body::from_stream(stream),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let gateway = Gateway::start(|config| {
        config.upstreams.insert("events".into(), upstream(&[&url]));
        config.routes = vec![route("/v1/events", "events")];
    })
    .await;

    let response = gateway.get("/v1/events").await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut response = response;

    // Each event is read before the next one exists upstream: nothing
    // waits for the stream to end or for a buffer to fill.
    for event in ["data: one\n\n", "data: two\n\n", "data: three\n\n"] {
        events.send(event).await.unwrap();
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .unwrap_or_else(|_| panic!("`{}` did not arrive on its own", event.trim()))
            .unwrap()
            .unwrap();
        assert_eq!(chunk, event.as_bytes());
    }
    drop(events);
    assert!(
        response.chunk().await.unwrap().is_none(),
        "the stream ends with the upstream's"
    );
    server.abort();
}

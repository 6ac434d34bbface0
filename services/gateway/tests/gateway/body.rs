//! Request bodies: bounded by `proxy.max_body_bytes`, forwarded intact.

use bytes::Bytes;
use futures::stream;
use http::{StatusCode, header};
use http_body_util::StreamBody;
use hyper::body::Frame;

use crate::support::{
    Gateway, RecordingUpstream, assert_problem_parts, expect_problem, gateway_with_user,
    large_body, route, send_raw, upstream,
};

const LIMIT: usize = 1024;

async fn gateway() -> (Gateway, RecordingUpstream) {
    let (gateway, user) = gateway_with_user(|config| config.proxy.max_body_bytes = LIMIT).await;
    (gateway, user)
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_problem_and_not_forwarded() {
    let (gateway, user) = gateway().await;

    let response = gateway
        .client
        .post(gateway.url("/v1/users"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(vec![b'x'; LIMIT + 1])
        .send()
        .await
        .unwrap();

    let (_, problem) = expect_problem(response, 413).await;
    assert_eq!(problem["type"], "urn:portico:problem:payload-too-large");
    assert_eq!(user.hits(), 0);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_a_413_problem_and_not_forwarded() {
    let (gateway, user) = gateway().await;
    // No content-length: the limit must hold while the body streams in
    // (and through to the upstream, which never gets all of it).
    let chunks = (0..4)
        .map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b'x'; 512]))));
    let request = http::Request::post("/v1/users")
        .header(header::HOST, "gateway.test")
        .body(StreamBody::new(stream::iter(chunks)))
        .unwrap();

    let response = send_raw(gateway.api, request).await;

    assert_problem_parts(
        response.status,
        &response.headers,
        &response.body,
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    assert!(!user.received_a_whole_request());
}

#[tokio::test]
async fn a_body_within_the_limit_reaches_the_upstream_intact() {
    let (gateway, user) = gateway().await;
    let body: Vec<u8> = (0..LIMIT).map(|i| (i % 256) as u8).collect();

    let response = gateway
        .client
        .post(gateway.url("/v1/users"))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let seen = user.last();
    assert_eq!(seen.method, http::Method::POST);
    assert_eq!(seen.body, body);
    assert_eq!(
        seen.headers[header::CONTENT_TYPE],
        "application/octet-stream"
    );
}

#[tokio::test]
async fn large_and_unsized_responses_reach_the_client_intact() {
    let (gateway, _user) = gateway().await;

    for path in ["/v1/users/large", "/v1/users/unsized"] {
        let response = gateway.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body = response.bytes().await.unwrap();
        assert_eq!(body.len(), large_body().len(), "{path}");
        assert!(
            body.as_ref() == large_body().as_slice(),
            "{path}: body differs"
        );
    }
}

#[tokio::test]
async fn a_body_that_never_arrives_is_a_408_problem_and_not_forwarded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let user = RecordingUpstream::start("user").await;
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("user".into(), upstream(&[&user.url]));
        let mut slow = route("/v1/users", "user");
        slow.timeout_ms = 200;
        config.routes = vec![slow];
    })
    .await;

    // Announce 100 bytes, send 10, then stall (the connection stays open).
    let mut stream = tokio::net::TcpStream::connect(gateway.api).await.unwrap();
    stream
        .write_all(b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the gateway answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);

    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert_eq!(user.hits(), 0);
}

#[tokio::test]
async fn a_body_refused_by_its_length_is_read_first_so_the_413_reaches_the_client() {
    // A body arriving in pieces after the gateway has already decided from
    // the head: closing with input unread would reset the connection and
    // the client would lose the 413.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (gateway, user) = gateway().await;
    let mut stream = tokio::net::TcpStream::connect(gateway.api).await.unwrap();
    let length = 100 * LIMIT;
    let head = format!("POST /v1/users HTTP/1.1\r\nhost: x\r\ncontent-length: {length}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        stream
            .write_all(&vec![b'x'; length / 10])
            .await
            .expect("the gateway kept reading the body it refused");
    }

    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the gateway closes within 5 s")
    .expect("the answer, not a reset");

    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload-too-large"), "{answer}");
    assert_eq!(user.hits(), 0);
}

//! 100 MiB up and 100 MiB down through a real gateway process, with its
//! memory measured: bodies stream through, the gateway never holds one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use axum::{Router, body::Body, extract::State, routing::post};
use bytes::Bytes;
use futures::StreamExt;
use http_body::Frame;
use http_body_util::StreamBody;
use portico_e2e::Process;

const SIZE: u64 = 100 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;
/// What the gateway may grow by while 200 MiB pass through it: a few
/// buffers per connection, nowhere near a body.
const GROWTH_BOUND: u64 = 24 * 1024 * 1024;

/// A storage-like upstream: uploads are read and counted as they arrive,
/// downloads are generated as they go, neither held whole.
async fn blob_store() -> (String, Arc<AtomicU64>) {
    let received = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/blobs", post(upload).get(download))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

async fn upload(State(received): State<Arc<AtomicU64>>, body: Body) -> String {
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len() as u64;
    }
    received.store(total, Ordering::SeqCst);
    total.to_string()
}

async fn download() -> Body {
    let chunks = (0..SIZE / CHUNK as u64)
        .map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![(i % 251) as u8; CHUNK])));
    Body::from_stream(futures::stream::iter(chunks))
}

#[tokio::test]
async fn a_hundred_mebibytes_stream_up_and_down_through_the_gateway_in_bounded_memory() {
    let (store, received) = blob_store().await;
    let logs = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let config = format!(
        r#"
[upstreams.blobs]
endpoints = ["{store}"]

[[routes]]
path_prefix = "/blobs"
upstream = "blobs"
timeout_ms = 60000
auth = "public"
max_body_bytes = {max}
"#,
        max = 2 * SIZE
    );
    let gateway = Process::gateway_alone(&store, &config, logs.path(), &client).await;
    let url = format!("{}/blobs", gateway.api_url());
    // Warm: the first request's one-off allocations are not the body's.
    client
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let before = gateway.memory();

    let upload = futures::stream::iter(0..SIZE / CHUNK as u64)
        .map(|i| Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![(i % 7) as u8; CHUNK]))));
    let answer = client
        .post(&url)
        .body(reqwest::Body::wrap(StreamBody::new(upload)))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{}", gateway.log());
    assert_eq!(answer.text().await.unwrap(), SIZE.to_string());
    assert_eq!(received.load(Ordering::SeqCst), SIZE);

    let mut download = client.get(&url).send().await.unwrap();
    assert_eq!(download.status(), 200);
    let mut downloaded = 0u64;
    while let Some(chunk) = download.chunk().await.unwrap() {
        downloaded += chunk.len() as u64;
    }
    assert_eq!(downloaded, SIZE);

    let after = gateway.memory();
    let growth = after.peak.saturating_sub(before.resident);
    assert!(
        growth < GROWTH_BOUND,
        "the gateway's peak memory grew by {} MiB (from {} MiB) while 200 MiB passed through",
        growth / (1024 * 1024),
        before.resident / (1024 * 1024)
    );
}

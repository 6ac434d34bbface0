//! Compression at the edge: negotiated by `Accept-Encoding`, each
//! algorithm's output decoding to the upstream's bytes, and skipped where
//! it must be (small answers, event streams, images, answers the upstream
//! compressed itself, clients that did not ask).

use std::io::Read;

use axum::{Router, body::Body, response::IntoResponse, routing::get};
use http::{StatusCode, header};

use crate::support::*;

/// 8 KiB of JSON, compressible.
fn document() -> String {
    let items: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"id":{i},"name":"item {i}"}}"#))
        .collect();
    format!("[{}]", items.join(","))
}

/// An upstream answering by path: `/doc` JSON, `/tiny` a few bytes of
/// JSON, `/events` an event stream, `/image` a PNG, `/gzipped` an answer
/// it gzipped itself.
async fn gateway() -> Gateway {
    let app = Router::new()
        .route(
            "/v1/files/doc",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], document()) }),
        )
        .route(
            "/v1/files/tiny",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], "{}") }),
        )
        .route(
            "/v1/files/events",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    "data: x\n\n".repeat(500),
                )
            }),
        )
        .route(
            "/v1/files/image",
            get(|| async { ([(header::CONTENT_TYPE, "image/png")], vec![7u8; 8192]) }),
        )
        .route(
            "/v1/files/gzipped",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::CONTENT_ENCODING, "gzip"),
                    ],
                    Body::from(gzip(document().as_bytes())),
                )
                    .into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Gateway::start(|config| {
        config.upstreams.insert("files".into(), upstream(&[&url]));
        config.routes = vec![route("/v1/files", "files")];
    })
    .await
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::read::GzEncoder::new(bytes, flate2::Compression::fast());
    let mut out = Vec::new();
    encoder.read_to_end(&mut out).unwrap();
    out
}

fn decode(encoding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(bytes, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::decode_all(bytes).unwrap(),
        other => panic!("unexpected encoding {other}"),
    }
    out
}

/// `GET path` with `Accept-Encoding: accept`: status, content-encoding
/// (empty when none) and raw body.
async fn fetch(
    gateway: &Gateway,
    path: &str,
    accept: Option<&str>,
) -> (StatusCode, String, Vec<u8>) {
    let mut request = gateway.client.get(gateway.url(path));
    if let Some(accept) = accept {
        request = request.header(header::ACCEPT_ENCODING, accept);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let encoding = response
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, encoding, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn each_algorithm_is_used_when_asked_for_and_decodes_to_the_upstreams_bytes() {
    let gateway = gateway().await;

    for encoding in ["gzip", "br", "zstd"] {
        let (status, used, body) = fetch(&gateway, "/v1/files/doc", Some(encoding)).await;

        assert_eq!(status, StatusCode::OK);
        assert_eq!(used, encoding);
        assert!(
            body.len() < document().len() / 2,
            "{encoding}: {} bytes",
            body.len()
        );
        assert_eq!(decode(encoding, &body), document().as_bytes(), "{encoding}");
    }
}

#[tokio::test]
async fn the_clients_preference_picks_the_algorithm() {
    let gateway = gateway().await;

    let (_, used, _) = fetch(
        &gateway,
        "/v1/files/doc",
        Some("gzip;q=0.5, zstd;q=0.9, br;q=0.1"),
    )
    .await;

    assert_eq!(used, "zstd");
}

#[tokio::test]
async fn small_answers_event_streams_images_and_identity_clients_are_left_alone() {
    let gateway = gateway().await;

    for (path, accept) in [
        ("/v1/files/tiny", Some("gzip, br, zstd")),
        ("/v1/files/events", Some("gzip, br, zstd")),
        ("/v1/files/image", Some("gzip, br, zstd")),
        ("/v1/files/doc", None),
        ("/v1/files/doc", Some("identity")),
    ] {
        let (status, used, _) = fetch(&gateway, path, accept).await;

        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(used, "", "{path} with {accept:?} was compressed");
    }
}

#[tokio::test]
async fn an_answer_the_upstream_compressed_is_not_compressed_again() {
    let gateway = gateway().await;

    let (_, used, body) = fetch(&gateway, "/v1/files/gzipped", Some("zstd, gzip")).await;

    assert_eq!(used, "gzip");
    assert_eq!(decode("gzip", &body), document().as_bytes());
}

#[tokio::test]
async fn a_client_accepting_no_encoding_gets_the_answer_as_sent_marked_as_varying() {
    let gateway = gateway().await;

    // Not compressed, but a compressible answer says that another client
    // would get another encoding; one never compressed does not.
    for (path, varies) in [("/v1/files/doc", true), ("/v1/files/image", false)] {
        let response = gateway.client.get(gateway.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(
            !response.headers().contains_key(header::CONTENT_ENCODING),
            "{path}"
        );
        let vary: Vec<_> = response.headers().get_all(header::VARY).iter().collect();
        assert_eq!(
            vary.iter().any(|value| *value == "accept-encoding"),
            varies,
            "{path}: {vary:?}"
        );
        let body = response.bytes().await.unwrap();
        if path == "/v1/files/doc" {
            assert_eq!(body, document().as_bytes());
        }
    }
}

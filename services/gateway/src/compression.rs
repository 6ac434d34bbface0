//! Response compression at the edge: an answer the upstream did not
//! compress is compressed with zstd, brotli or gzip as the client's
//! `Accept-Encoding` prefers, when it is large enough to be worth it and
//! of a type that compresses. Never event streams (each event must leave
//! at once), gRPC (its own framing), partial content, or media and
//! archives that are compressed already.

use http::{StatusCode, header};
use portico_common::http::pipeline;
use serde::Deserialize;
use tower_http::compression::{CompressionLayer, CompressionLevel, Predicate};

/// `[compression]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    pub enabled: bool,
    /// Answers with a known length below this stay as they are.
    pub min_bytes: u64,
    pub gzip: bool,
    pub br: bool,
    pub zstd: bool,
}

/// Content types never compressed, by prefix.
const INCOMPRESSIBLE: [&str; 14] = [
    "text/event-stream",
    "application/grpc",
    "image/",
    "video/",
    "audio/",
    "font/woff",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/zstd",
    "application/x-bzip2",
    "application/x-7z-compressed",
    "application/octet-stream",
    "application/pdf",
];

/// Whether a response is compressed.
#[derive(Debug, Clone, Copy)]
pub struct Compressible {
    min_bytes: u64,
}

impl Predicate for Compressible {
    fn should_compress<B>(&self, response: &http::Response<B>) -> bool
    where
        B: http_body::Body,
    {
        if response.status() == StatusCode::PARTIAL_CONTENT
            || response.headers().contains_key(header::CONTENT_RANGE)
        {
            return false;
        }
        // A known size below the bound stays; an unknown one (a stream)
        // is compressed as it goes. Asked first: it is the cheap test, and
        // most API answers end here.
        let known = response
            .body()
            .size_hint()
            .exact()
            .or_else(|| pipeline::declared_length(response.headers()));
        if known.is_some_and(|len| len < self.min_bytes) {
            return false;
        }
        let Some(content_type) = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
        else {
            // Unknown data: it may be compressed already.
            return false;
        };
        // Prefixes compared without regard to case, nothing copied.
        let content_type = content_type.trim().as_bytes();
        let starts_with = |prefix: &str| {
            content_type
                .get(..prefix.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes()))
        };
        let incompressible = INCOMPRESSIBLE.iter().any(|prefix| starts_with(prefix))
            && !starts_with("image/svg+xml");
        !incompressible
    }
}

impl Compressible {
    pub fn new(config: &CompressionConfig) -> Self {
        Self {
            min_bytes: config.min_bytes,
        }
    }

    /// What the layer does to an answer for a client that accepts no
    /// encoding, for one that did not go through it: `Vary:
    /// Accept-Encoding` on an answer it would have compressed for another
    /// client (a cache must not hand this copy to one that asked for
    /// gzip), nothing else.
    pub fn mark_vary<B: http_body::Body>(&self, response: &mut http::Response<B>) {
        let would_compress = !response.headers().contains_key(header::CONTENT_ENCODING)
            && self.should_compress(response);
        let varies = response
            .headers()
            .get_all(header::VARY)
            .iter()
            .any(|value| {
                value
                    .as_bytes()
                    .split(|&byte| byte == b',')
                    .any(|name| name.trim_ascii().eq_ignore_ascii_case(b"accept-encoding"))
            });
        if would_compress && !varies {
            response
                .headers_mut()
                .append(header::VARY, header::ACCEPT_ENCODING.into());
        }
    }
}

/// The layer `config` describes, or `None` when compression is off.
pub fn layer(config: &CompressionConfig) -> Option<CompressionLayer<Compressible>> {
    config.enabled.then(|| {
        CompressionLayer::new()
            .gzip(config.gzip)
            .br(config.br)
            .zstd(config.zstd)
            .no_deflate()
            // brotli 4 (nginx's on-the-fly level), gzip 6, zstd 3.
            .quality(CompressionLevel::Default)
            .compress_when(Compressible::new(config))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(content_type: Option<&str>, len: usize) -> http::Response<String> {
        let mut response = http::Response::new("x".repeat(len));
        if let Some(content_type) = content_type {
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_str(content_type).unwrap(),
            );
        }
        response
    }

    #[test]
    fn text_and_json_above_the_bound_are_compressed_media_and_small_answers_are_not() {
        let predicate = Compressible { min_bytes: 1024 };
        assert!(predicate.should_compress(&response(Some("application/json"), 4096)));
        assert!(predicate.should_compress(&response(Some("text/html; charset=utf-8"), 4096)));
        assert!(predicate.should_compress(&response(Some("image/svg+xml"), 4096)));
        assert!(!predicate.should_compress(&response(Some("application/json"), 100)));
        for skipped in [
            "text/event-stream",
            "application/grpc+proto",
            "image/png",
            "video/mp4",
            "application/zip",
            "application/octet-stream",
        ] {
            assert!(
                !predicate.should_compress(&response(Some(skipped), 4096)),
                "{skipped}"
            );
        }
        assert!(!predicate.should_compress(&response(None, 4096)));
    }

    /// Media types are compared without regard to case (RFC 9110 §8.3.1)
    /// and around surrounding spaces.
    #[test]
    fn media_types_match_whatever_their_case() {
        let predicate = Compressible { min_bytes: 1024 };
        for skipped in ["Image/PNG", " TEXT/Event-Stream ", "Application/GRPC"] {
            assert!(
                !predicate.should_compress(&response(Some(skipped), 4096)),
                "{skipped}"
            );
        }
        assert!(predicate.should_compress(&response(Some("Image/SVG+XML"), 4096)));
        assert!(predicate.should_compress(&response(Some("Application/JSON"), 4096)));
    }

    #[test]
    fn an_answer_that_would_be_compressed_for_another_client_varies_on_accept_encoding() {
        let predicate = Compressible { min_bytes: 1024 };
        let mut json = response(Some("application/json"), 4096);
        predicate.mark_vary(&mut json);
        assert_eq!(json.headers()[header::VARY], "accept-encoding");
        // Once only, whatever case the upstream wrote it in.
        let mut varied = response(Some("application/json"), 4096);
        varied
            .headers_mut()
            .insert(header::VARY, "Origin, Accept-Encoding".parse().unwrap());
        predicate.mark_vary(&mut varied);
        assert_eq!(varied.headers().get_all(header::VARY).iter().count(), 1);
        // Small, already encoded, or media: the same for every client.
        let mut small = response(Some("application/json"), 100);
        let mut encoded = response(Some("application/json"), 4096);
        encoded
            .headers_mut()
            .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        let mut image = response(Some("image/png"), 4096);
        for same_for_all in [&mut small, &mut encoded, &mut image] {
            predicate.mark_vary(same_for_all);
            assert!(!same_for_all.headers().contains_key(header::VARY));
        }
    }

    #[test]
    fn partial_content_is_never_compressed() {
        let predicate = Compressible { min_bytes: 0 };
        let mut partial = response(Some("text/plain"), 4096);
        *partial.status_mut() = StatusCode::PARTIAL_CONTENT;
        assert!(!predicate.should_compress(&partial));
    }
}

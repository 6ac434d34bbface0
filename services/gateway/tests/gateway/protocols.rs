//! The protocols on either side of the gateway: HTTP/2 from clients (h2c
//! prior knowledge), HTTP/1.1 and HTTP/2 to upstreams, plain or over TLS
//! (verified against a configured CA, mutual TLS), and connection reuse.

use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http::{StatusCode, Version};
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use portico_testkit::tls::{TestPki, server_config};
use portico_upstream::config::{Protocol, UpstreamTlsConfig};
use tokio::task::JoinHandle;

use crate::support::*;

/// An upstream that answers every request with 200 `ok`, remembering the
/// HTTP version of each request and counting connections (TLS ones only
/// once their handshake passed).
struct ProtocolUpstream {
    url: String,
    connections: Arc<AtomicUsize>,
    versions: Arc<Mutex<Vec<Version>>>,
    server: JoinHandle<()>,
}

impl Drop for ProtocolUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ProtocolUpstream {
    async fn plain() -> Self {
        Self::serve(None).await
    }

    async fn tls(config: Arc<rustls::ServerConfig>) -> Self {
        Self::serve(Some(config)).await
    }

    async fn serve(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let versions = Arc::new(Mutex::new(Vec::new()));
        let (counted, seen) = (connections.clone(), versions.clone());
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (counted, seen, tls) = (counted.clone(), seen.clone(), tls.clone());
                let service = service_fn(move |request: Request<Incoming>| {
                    seen.lock().unwrap().push(request.version());
                    async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok")))) }
                });
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(config) => {
                            let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                            else {
                                return;
                            };
                            counted.fetch_add(1, Ordering::SeqCst);
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        None => {
                            counted.fetch_add(1, Ordering::SeqCst);
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Self {
            url,
            connections,
            versions,
            server,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn versions(&self) -> Vec<Version> {
        self.versions.lock().unwrap().clone()
    }
}

/// A gateway with `/v1/things` going to one upstream at `url`, set up
/// by `configure`.
async fn gateway_to(
    url: &str,
    configure: impl FnOnce(&mut portico_gateway::config::UpstreamConfig),
) -> Gateway {
    let mut spec = upstream(&[url]);
    configure(&mut spec);
    Gateway::start(|config| {
        config.upstreams.insert("things".into(), spec);
        config.routes = vec![route("/v1/things", "things")];
    })
    .await
}

async fn get_ok(gateway: &Gateway) -> StatusCode {
    get_ok_over(&gateway.client, gateway).await
}

/// The status of a GET through the gateway over `client`'s connections.
async fn get_ok_over(client: &reqwest::Client, gateway: &Gateway) -> StatusCode {
    let response = client.get(gateway.url("/v1/things/1")).send().await;
    response.unwrap().status()
}

#[tokio::test]
async fn clients_speaking_h2c_are_served_over_http2() {
    let (gateway, user) = gateway_with_user(|_| {}).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();

    let response = client
        .get(gateway.url("/v1/users/me"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(user.hits(), 1);
}

#[tokio::test]
async fn sequential_requests_reuse_one_http1_connection_to_the_upstream() {
    let upstream = ProtocolUpstream::plain().await;
    let gateway = gateway_to(&upstream.url, |_| {}).await;

    for _ in 0..50 {
        assert_eq!(get_ok(&gateway).await, StatusCode::OK);
    }

    assert_eq!(upstream.connections(), 1);
    assert!(upstream.versions().iter().all(|v| *v == Version::HTTP_11));
}

#[tokio::test]
async fn concurrent_requests_open_no_more_http1_connections_than_are_busy_at_once() {
    let upstream = ProtocolUpstream::plain().await;
    let gateway = gateway_to(&upstream.url, |_| {}).await;

    for _ in 0..10 {
        let round = (0..8).map(|_| get_ok(&gateway));
        for status in futures::future::join_all(round).await {
            assert_eq!(status, StatusCode::OK);
        }
    }

    assert_eq!(upstream.versions().len(), 80);
    assert!(
        upstream.connections() <= 8,
        "{} connections for 8 at once",
        upstream.connections()
    );
}

#[tokio::test]
async fn an_http2_upstream_gets_requests_on_one_h2c_connection_per_gateway_event_loop() {
    let upstream = ProtocolUpstream::plain().await;
    let gateway = gateway_to(&upstream.url, |spec| {
        spec.protocol = Some(Protocol::Http2);
    })
    .await;
    let event_loops = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);

    // Two client connections open at once are served by two event loops
    // (the acceptor hands each to the loop with the fewest open); each
    // loop dials its own HTTP/2 connection and keeps it for what follows.
    let first = reqwest::Client::builder().no_proxy().build().unwrap();
    let second = reqwest::Client::builder().no_proxy().build().unwrap();
    for client in [&first, &second, &first, &second, &first, &second] {
        assert_eq!(get_ok_over(client, &gateway).await, StatusCode::OK);
    }
    assert_eq!(upstream.connections(), event_loops.min(2));

    // Many at once, over many client connections: still at most one
    // upstream connection per loop, every request over HTTP/2.
    let statuses = futures::future::join_all((0..20).map(|_| get_ok(&gateway))).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(upstream.versions(), vec![Version::HTTP_2; 26]);
    assert!(
        upstream.connections() <= event_loops,
        "{} HTTP/2 connections for {event_loops} event loops",
        upstream.connections()
    );
}

#[tokio::test]
async fn an_upstream_over_tls_is_verified_against_the_configured_ca() {
    let pki = TestPki::new("upstream CA");
    let upstream =
        ProtocolUpstream::tls(server_config(&pki.localhost("user"), &[b"http/1.1"], None)).await;
    let gateway = gateway_to(&upstream.url, |spec| {
        spec.tls = Some(UpstreamTlsConfig {
            ca_file: Some(pki.ca_file.clone()),
            ..UpstreamTlsConfig::default()
        });
    })
    .await;

    assert_eq!(get_ok(&gateway).await, StatusCode::OK);
    assert_eq!(get_ok(&gateway).await, StatusCode::OK);

    assert_eq!(upstream.versions(), vec![Version::HTTP_11; 2]);
    assert_eq!(upstream.connections(), 1, "the TLS connection is reused");
}

#[tokio::test]
async fn http2_over_tls_is_agreed_by_alpn() {
    let pki = TestPki::new("upstream CA");
    let identity = pki.localhost("user");
    let upstream =
        ProtocolUpstream::tls(server_config(&identity, &[b"h2", b"http/1.1"], None)).await;
    let gateway = gateway_to(&upstream.url, |spec| {
        spec.protocol = Some(Protocol::Http2);
        spec.tls = Some(UpstreamTlsConfig {
            ca_file: Some(pki.ca_file.clone()),
            ..UpstreamTlsConfig::default()
        });
    })
    .await;

    assert_eq!(get_ok(&gateway).await, StatusCode::OK);

    assert_eq!(upstream.versions(), vec![Version::HTTP_2]);
}

#[tokio::test]
async fn an_upstream_certificate_from_another_ca_gets_no_request() {
    let theirs = TestPki::new("somebody else's CA");
    let ours = TestPki::new("our CA");
    let upstream = ProtocolUpstream::tls(server_config(
        &theirs.localhost("user"),
        &[b"http/1.1"],
        None,
    ))
    .await;
    let gateway = gateway_to(&upstream.url, |spec| {
        spec.tls = Some(UpstreamTlsConfig {
            ca_file: Some(ours.ca_file.clone()),
            ..UpstreamTlsConfig::default()
        });
    })
    .await;

    let response = gateway.get("/v1/things/1").await;

    expect_problem(response, 503).await;
    assert!(upstream.versions().is_empty());
}

#[tokio::test]
async fn mutual_tls_presents_the_configured_client_certificate() {
    let pki = TestPki::new("mesh CA");
    let upstream = ProtocolUpstream::tls(server_config(
        &pki.localhost("user"),
        &[b"http/1.1"],
        Some(&pki.ca_file),
    ))
    .await;
    let client = pki.client("gateway", "gateway.portico");
    let with_certificate = gateway_to(&upstream.url, |spec| {
        spec.tls = Some(UpstreamTlsConfig {
            ca_file: Some(pki.ca_file.clone()),
            cert_file: Some(client.cert_file.clone()),
            key_file: Some(client.key_file.clone()),
            server_name: None,
        });
    })
    .await;
    let without = gateway_to(&upstream.url, |spec| {
        spec.tls = Some(UpstreamTlsConfig {
            ca_file: Some(pki.ca_file.clone()),
            ..UpstreamTlsConfig::default()
        });
    })
    .await;

    assert_eq!(get_ok(&with_certificate).await, StatusCode::OK);
    let refused = without.get("/v1/things/1").await;

    // TLS 1.3: the client sees its handshake done before the server has
    // judged its certificate, so the refusal arrives as a closed
    // connection (502) or a failed handshake (503).
    assert!(
        [StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE].contains(&refused.status()),
        "{}",
        refused.status()
    );
    assert_eq!(
        upstream.versions().len(),
        1,
        "only the client with a certificate got through"
    );
}

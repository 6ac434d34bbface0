//! A flood of silent connections against a real gateway process: 20,000
//! TCP connections from eight loopback addresses that never send a byte.
//! The per-address bound keeps them from taking every slot, so a client
//! that was already connected and a client that connects during the flood
//! are both answered at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use axum::{Router, routing::get};
use portico_e2e::Process;

const SOURCES_PER_HELPER: [&str; 2] = [
    "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5",
    "127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9",
];
const PER_SOURCE: usize = 2_500;
const PER_ADDRESS_BOUND: usize = 1_500;
/// Far longer than the test: the silent connections stay for all of it.
const FIRST_BYTE_TIMEOUT_MS: u64 = 120_000;
/// A request answered at once on loopback takes milliseconds; one stuck
/// behind the silent connections would wait for their timeout.
const PROMPT: Duration = Duration::from_secs(2);

/// Holds silent connections (in a process of its own: this one's file
/// descriptors are bounded); killed with the test.
struct Flood(Child);

impl Flood {
    fn start(port: u16, sources: &str) -> Self {
        let helper = concat!(env!("CARGO_MANIFEST_DIR"), "/helpers/silent_connections.py");
        let child = Command::new("python3")
            .arg(helper)
            .args(["--port", &port.to_string(), "--sources", sources])
            .args(["--per-source", &PER_SOURCE.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the flood helper");
        Self(child)
    }

    /// Blocks until every connect has completed or failed: how many
    /// opened.
    fn opened(&mut self) -> usize {
        let mut line = String::new();
        BufReader::new(self.0.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim()
            .strip_prefix("opened ")
            .unwrap_or_else(|| panic!("the flood helper said {line:?}"))
            .parse()
            .unwrap()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request, answered 200 within [`PROMPT`].
async fn answered_promptly(client: &reqwest::Client, url: &str) {
    let response = tokio::time::timeout(PROMPT, client.get(url).send())
        .await
        .unwrap_or_else(|_| panic!("no answer within {PROMPT:?} during the flood"))
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_thousand_silent_connections_leave_clients_served() {
    let upstream_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", upstream_listener.local_addr().unwrap());
    let app = Router::new().route("/echo", get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(upstream_listener, app).await });
    let logs = tempfile::tempdir().unwrap();
    let admin = reqwest::Client::new();
    let config = format!(
        r#"
[upstreams.echo]
endpoints = ["{upstream}"]

[[routes]]
path_prefix = "/echo"
upstream = "echo"
timeout_ms = 5000
auth = "public"

[connections]
max = 15000
max_per_client_ip = {PER_ADDRESS_BOUND}
first_byte_timeout_ms = {FIRST_BYTE_TIMEOUT_MS}
"#
    );
    let gateway = Process::gateway_alone(&upstream, &config, logs.path(), &admin).await;
    let url = format!("{}/echo", gateway.api_url());
    // Connected before the flood, kept alive through it.
    let existing = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    answered_promptly(&existing, &url).await;

    let mut floods: Vec<Flood> = SOURCES_PER_HELPER
        .iter()
        .map(|sources| Flood::start(gateway.api_port, sources))
        .collect();
    // The helpers answer once every connect is through (seconds).
    let opened: usize = tokio::task::block_in_place(|| floods.iter_mut().map(Flood::opened).sum());
    assert_eq!(
        opened, 20_000,
        "every silent connection was accepted by TCP"
    );

    // The gateway holds each address's bound of them and closed the rest.
    let held = (8 * PER_ADDRESS_BOUND) as f64;
    portico_testkit::eventually(
        Duration::from_secs(30),
        "the silent connections held up to each address's bound",
        || {
            let gateway = &gateway;
            let admin = &admin;
            async move {
                let open = gateway
                    .metric_sum(admin, |line| line.starts_with("http_connections_open"))
                    .await;
                let refused = gateway
                    .metric_sum(admin, |line| {
                        line.starts_with("http_connections_refused_total")
                            && line.contains("per_client_ip")
                    })
                    .await;
                (open >= held && refused >= 20_000.0 - held).then_some(())
            }
        },
    )
    .await;

    // Meanwhile: the client that was there, and one that comes now.
    for _ in 0..20 {
        answered_promptly(&existing, &url).await;
    }
    let newcomer = reqwest::Client::new();
    answered_promptly(&newcomer, &url).await;
    let open = gateway
        .metric_sum(&admin, |line| line.starts_with("http_connections_open"))
        .await;
    assert!(
        open >= held,
        "the silent connections were still held while the clients were served ({open} open)"
    );
    drop(floods);
}

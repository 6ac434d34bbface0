//! DNS discovery: an upstream's endpoints follow what a DNS name resolves
//! to, through the real resolver against a test DNS server on loopback.

use std::{net::IpAddr, time::Duration};

use http::StatusCode;
use portico_gateway::config::DnsConfig;
use portico_testkit::{
    dns::{DnsStub, Srv},
    eventually,
};
use serde_json::Value;

use crate::support::{Gateway, RecordingUpstream, route};

/// A port free on both 127.0.0.2 and 127.0.0.3.
fn shared_port() -> u16 {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.3", port)).is_ok() {
            return port;
        }
    }
}

fn dns_upstream(dns: DnsConfig) -> portico_gateway::config::UpstreamConfig {
    let mut upstream = crate::support::upstream(&[]);
    upstream.dns = Some(dns);
    upstream
}

async fn replica_of(gateway: &Gateway, path: &str) -> String {
    let response = gateway.get(path).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["replica"].as_str().unwrap().to_owned()
}

async fn endpoints(gateway: &Gateway) -> Vec<String> {
    let running = gateway.running_config().await;
    running["upstreams"]["user"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["url"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn endpoints_follow_the_name_as_replicas_come_and_go_without_dropping_a_request() {
    // Arrange: two replicas on one port, 127.0.0.2 and 127.0.0.3; the name
    // first resolves to the first only.
    let port = shared_port();
    let a = RecordingUpstream::start_on("a", &format!("127.0.0.2:{port}")).await;
    let b = RecordingUpstream::start_on("b", &format!("127.0.0.3:{port}")).await;
    let dns = DnsStub::start().await;
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    dns.set_addresses("users.portico.test", &[ip("127.0.0.2")]);
    let gateway = Gateway::start(|config| {
        config.upstreams.insert(
            "user".into(),
            dns_upstream(DnsConfig {
                name: "users.portico.test".into(),
                port: Some(port),
                srv: false,
                interval_ms: Some(200),
                nameservers: vec![dns.addr.to_string()],
            }),
        );
        config.routes = vec![route("/v1/users", "user")];
    })
    .await;
    assert_eq!(replica_of(&gateway, "/v1/users/me").await, "a");

    // Act 1: a second replica appears.
    dns.set_addresses("users.portico.test", &[ip("127.0.0.2"), ip("127.0.0.3")]);
    eventually(
        Duration::from_secs(5),
        "the new replica to get traffic",
        || async { (replica_of(&gateway, "/v1/users/me").await == "b").then_some(()) },
    )
    .await;

    // Act 2: with a request in flight on `a`, the name drops `a`. Two slow
    // requests: round robin sends one to each replica.
    let (a_before, b_before) = (a.hits(), b.hits());
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (client, url) = (gateway.client.clone(), gateway.url("/v1/users/slow"));
            tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
        })
        .collect();
    eventually(
        Duration::from_secs(5),
        "a slow request on each replica",
        || async { (a.hits() > a_before && b.hits() > b_before).then_some(()) },
    )
    .await;
    b.release_slow();
    dns.set_addresses("users.portico.test", &[ip("127.0.0.3")]);
    eventually(
        Duration::from_secs(5),
        "a to leave the endpoint set",
        || async {
            (endpoints(&gateway).await == [format!("http://127.0.0.3:{port}")]).then_some(())
        },
    )
    .await;

    // Assert: new requests all go to `b`; the one in flight on `a` answers.
    let b_before = b.hits();
    for _ in 0..5 {
        assert_eq!(replica_of(&gateway, "/v1/users/me").await, "b");
    }
    assert_eq!(b.hits(), b_before + 5);
    a.release_slow();
    for request in slow {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_failing_dns_keeps_the_last_good_endpoints() {
    let user = RecordingUpstream::start("user").await;
    let port: u16 = user.url.rsplit(':').next().unwrap().parse().unwrap();
    let dns = DnsStub::start().await;
    dns.set_addresses("users.portico.test", &["127.0.0.1".parse().unwrap()]);
    let gateway = Gateway::start(|config| {
        config.upstreams.insert(
            "user".into(),
            dns_upstream(DnsConfig {
                name: "users.portico.test".into(),
                port: Some(port),
                srv: false,
                interval_ms: Some(100),
                nameservers: vec![dns.addr.to_string()],
            }),
        );
        config.routes = vec![route("/v1/users", "user")];
    })
    .await;

    dns.fail("users.portico.test");
    let asked = dns.queries();
    eventually(
        Duration::from_secs(5),
        "the gateway to ask again",
        || async { (dns.queries() >= asked + 3).then_some(()) },
    )
    .await;

    assert_eq!(replica_of(&gateway, "/v1/users/me").await, "user");
    assert_eq!(endpoints(&gateway).await, vec![user.url.clone()]);
}

#[tokio::test]
async fn srv_records_give_each_replica_its_own_port() {
    let a = RecordingUpstream::start("a").await;
    let b = RecordingUpstream::start("b").await;
    let port = |url: &str| url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let dns = DnsStub::start().await;
    dns.set_addresses("replicas.portico.test", &["127.0.0.1".parse().unwrap()]);
    dns.set_srv(
        "_http._tcp.users.portico.test",
        &[
            Srv {
                priority: 0,
                weight: 1,
                port: port(&a.url),
                target: "replicas.portico.test".into(),
            },
            Srv {
                priority: 0,
                weight: 1,
                port: port(&b.url),
                target: "replicas.portico.test".into(),
            },
        ],
    );
    let gateway = Gateway::start(|config| {
        config.upstreams.insert(
            "user".into(),
            dns_upstream(DnsConfig {
                name: "_http._tcp.users.portico.test".into(),
                port: None,
                srv: true,
                interval_ms: Some(200),
                nameservers: vec![dns.addr.to_string()],
            }),
        );
        config.routes = vec![route("/v1/users", "user")];
    })
    .await;

    let mut found = endpoints(&gateway).await;
    found.sort();
    let mut wanted = vec![a.url.clone(), b.url.clone()];
    wanted.sort();
    assert_eq!(found, wanted);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        seen.insert(replica_of(&gateway, "/v1/users/me").await);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test]
async fn a_bad_dns_setting_stops_startup_naming_the_key() {
    use portico_common::config::ServiceConfig as _;
    let mut config = portico_gateway::Config::built_in();
    let mut user = dns_upstream(DnsConfig {
        name: "bad name".into(),
        port: Some(1),
        srv: false,
        interval_ms: None,
        nameservers: vec![],
    });
    config.upstreams.insert("user".into(), user.clone());
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("upstreams.user.dns.name"), "{err}");

    user.endpoints = vec!["http://127.0.0.1:1".into()];
    user.dns.as_mut().unwrap().name = "user".into();
    config.upstreams.insert("user".into(), user);
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("upstreams.user.dns"), "{err}");
    assert!(err.contains("not both"), "{err}");
}

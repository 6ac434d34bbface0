//! Endpoint health: active checks, passive outlier detection on 5xx, and
//! the panic threshold.

use std::{collections::BTreeMap, time::Duration};

use http::StatusCode;
use portico_gateway::config::{HealthConfig, OutlierConfig};
use portico_testkit::eventually;
use serde_json::Value;

use crate::support::{Gateway, RecordingUpstream, route, upstream};

fn checks() -> HealthConfig {
    HealthConfig {
        path: Some("/readyz".into()),
        port: None,
        port_offset: None,
        interval_ms: Some(100),
        timeout_ms: Some(500),
        rise: Some(1),
        fall: Some(1),
    }
}

async fn replica_of(gateway: &Gateway) -> (StatusCode, String) {
    let response = gateway.get("/v1/users/me").await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["replica"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn healthy(gateway: &Gateway) -> BTreeMap<String, bool> {
    let running = gateway.running_config().await;
    running["upstreams"]["user"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["url"].as_str().unwrap().to_owned(),
                e["healthy"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn active_checks_take_a_failing_endpoint_out_and_bring_it_back() {
    let a = RecordingUpstream::start("a").await;
    let b = RecordingUpstream::start("b").await;
    let gateway = Gateway::start(|config| {
        let mut user = upstream(&[&a.url, &b.url]);
        user.health = Some(checks());
        config.upstreams.insert("user".into(), user);
        config.routes = vec![route("/v1/users", "user")];
    })
    .await;

    b.set_ready(false);
    eventually(Duration::from_secs(5), "b to be taken out", || async {
        (healthy(&gateway).await.get(&b.url) == Some(&false)).then_some(())
    })
    .await;
    let b_hits = b.hits();
    for _ in 0..6 {
        assert_eq!(replica_of(&gateway).await, (StatusCode::OK, "a".to_owned()));
    }
    assert_eq!(b.hits(), b_hits, "no traffic to the unhealthy endpoint");

    b.set_ready(true);
    eventually(Duration::from_secs(5), "b to get traffic again", || async {
        (replica_of(&gateway).await.1 == "b").then_some(())
    })
    .await;
}

#[tokio::test]
async fn consecutive_5xx_eject_an_endpoint() {
    let a = RecordingUpstream::start("a").await;
    let b = RecordingUpstream::start("b").await;
    let gateway = Gateway::start(|config| {
        let mut user = upstream(&[&a.url, &b.url]);
        user.outlier = Some(OutlierConfig {
            consecutive_5xx: Some(2),
            base_ejection_ms: Some(60_000),
            ..OutlierConfig::default()
        });
        config.upstreams.insert("user".into(), user);
        config.routes = vec![route("/v1/users", "user")];
    })
    .await;
    b.set_failing(true);

    // Round robin: b answers 503 on every other request until its second
    // in a row ejects it; from then on only a serves.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(replica_of(&gateway).await.0);
    }
    let served_by_b = b.hits();
    for _ in 0..6 {
        assert_eq!(replica_of(&gateway).await, (StatusCode::OK, "a".to_owned()));
    }

    assert_eq!(served_by_b, 2, "{statuses:?}");
    assert_eq!(b.hits(), 2, "b was ejected after two 5xx in a row");
    let ejections = gateway.metrics().await;
    assert!(
        ejections
            .lines()
            .any(|l| l.starts_with("gateway_outlier_ejections_total{") && l.contains(&b.url)),
        "{ejections}"
    );
}

/// Four endpoints, three of which fail their active checks (yet serve).
async fn one_of_four_healthy(panic_threshold: u32) -> (Gateway, Vec<RecordingUpstream>) {
    let mut replicas = Vec::new();
    for name in ["a", "b", "c", "d"] {
        replicas.push(RecordingUpstream::start(name).await);
    }
    for replica in &replicas[1..] {
        replica.set_ready(false);
    }
    let urls: Vec<&str> = replicas.iter().map(|r| r.url.as_str()).collect();
    let gateway = Gateway::start(|config| {
        let mut user = upstream(&urls);
        user.health = Some(checks());
        user.panic_threshold_percent = Some(panic_threshold);
        config.upstreams.insert("user".into(), user);
        config.routes = vec![route("/v1/users", "user")];
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "three endpoints unhealthy",
        || async { (healthy(&gateway).await.values().filter(|h| !**h).count() == 3).then_some(()) },
    )
    .await;
    (gateway, replicas)
}

#[tokio::test]
async fn below_the_panic_threshold_traffic_spreads_over_every_endpoint() {
    let (gateway, replicas) = one_of_four_healthy(50).await;
    for _ in 0..8 {
        assert_eq!(replica_of(&gateway).await.0, StatusCode::OK);
    }
    // Round robin over all four, as if none were unhealthy.
    assert!(
        replicas.iter().all(|r| r.hits() == 2),
        "{:?}",
        replicas
            .iter()
            .map(RecordingUpstream::hits)
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn without_a_panic_threshold_only_the_healthy_endpoint_serves() {
    let (gateway, replicas) = one_of_four_healthy(0).await;
    for _ in 0..8 {
        assert_eq!(replica_of(&gateway).await.0, StatusCode::OK);
    }
    assert_eq!(replicas[0].hits(), 8);
}

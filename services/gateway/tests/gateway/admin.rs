//! The admin listener and startup checks.

use http::StatusCode;
use portico_common::config::ServiceConfig as _;
use portico_gateway::{Application, Config};
use serde_json::Value;

use crate::support::{
    Gateway, RecordingUpstream, dead_endpoint, gateway_with_user, listeners, route, upstream,
};

async fn readiness(gateway: &Gateway) -> (StatusCode, Value) {
    let response = gateway
        .client
        .get(gateway.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn ready_when_every_upstream_has_a_replica_and_the_keys_are_loaded() {
    let user = RecordingUpstream::start("user").await;
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("user".into(), upstream(&[&dead_endpoint(), &user.url]));
        let mut protected = route("/v1/users", "user");
        protected.auth = Some("bearer".to_owned());
        config.routes = vec![protected];
    })
    .await;

    let (status, body) = readiness(&gateway).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["upstreams"], "ok");
    assert_eq!(body["checks"]["keys"], "ok");
}

#[tokio::test]
async fn not_ready_while_an_upstream_has_no_reachable_replica() {
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("user".into(), upstream(&[&dead_endpoint()]));
        config.routes = vec![route("/v1/users", "user")];
    })
    .await;

    let (status, body) = readiness(&gateway).await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["upstreams"], "unavailable");
}

#[tokio::test]
async fn not_ready_without_keys_when_a_route_needs_them_then_ready_once_they_load() {
    let user = RecordingUpstream::start("user").await;
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("user".into(), upstream(&[&user.url]));
        let mut protected = route("/v1/users", "user");
        protected.auth = Some("bearer".to_owned());
        config.routes = vec![protected];
    })
    .await;
    gateway.issuer.set_available(false);

    let (status, body) = readiness(&gateway).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["keys"], "unavailable");

    gateway.issuer.set_available(true);
    portico_testkit::eventually(std::time::Duration::from_secs(10), "ready", || async {
        (readiness(&gateway).await.0 == StatusCode::OK).then_some(())
    })
    .await;
}

#[tokio::test]
async fn health_and_readiness_answer_200() {
    let gateway = Gateway::start(|_| {}).await;

    let health = gateway
        .client
        .get(gateway.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let ready = gateway
        .client
        .get(gateway.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn metrics_count_proxied_requests_per_upstream_endpoint() {
    let (gateway, user) = gateway_with_user(|_| {}).await;

    assert_eq!(gateway.get("/v1/users/me").await.status(), StatusCode::OK);

    let metrics = gateway.metrics().await;
    let endpoint_label = format!("endpoint=\"{}\"", user.url);
    let line = metrics
        .lines()
        .find(|line| {
            line.starts_with("gateway_upstream_requests_total{") && line.contains(&endpoint_label)
        })
        .unwrap_or_else(|| panic!("no request count for {}:\n{metrics}", user.url));
    assert!(line.ends_with(" 1"), "{line}");
}

#[tokio::test]
async fn a_route_to_an_unknown_upstream_stops_startup_naming_the_key() {
    let mut config = Config::built_in();
    config.routes.push(route("/v1/orders", "orders"));
    let index = config.routes.len() - 1;

    let Err(err) = Application::build_with_listeners(config, listeners().await).await else {
        panic!("a route to an unknown upstream was accepted");
    };

    let message = err.to_string();
    assert!(
        message.contains(&format!("routes.{index}.upstream")),
        "{message}"
    );
    assert!(message.contains("orders"), "{message}");
}

#[tokio::test]
async fn the_running_config_is_served_on_the_admin_listener_only() {
    let (gateway, user) = gateway_with_user(|_| {}).await;

    let response = gateway
        .client
        .get(gateway.admin_url("/config"))
        .send()
        .await
        .unwrap();
    let on_api = gateway.get("/config").await;

    assert_eq!(response.status(), StatusCode::OK);
    let running: Value = response.json().await.unwrap();
    assert_eq!(running["version"], 1);
    assert_eq!(running["routes"][0]["path_prefix"], "/v1/users");
    assert_eq!(running["routes"][0]["upstream"], "user");
    let endpoint = &running["upstreams"]["user"]["endpoints"][0];
    assert_eq!(endpoint["url"], user.url.as_str());
    assert_eq!(endpoint["ejected"], false);
    assert_eq!(running["upstreams"]["user"]["balance"], "round_robin");
    assert_eq!(on_api.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_upstream_no_route_uses_does_not_decide_readiness() {
    let user = RecordingUpstream::start("user").await;
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("user".into(), upstream(&[&user.url]));
        config
            .upstreams
            .insert("spare".into(), upstream(&[&dead_endpoint()]));
        config.routes = vec![route("/v1/users", "user")];
    })
    .await;
    let (status, body) = readiness(&gateway).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// `http_connections_open` on the gateway's /metrics.
async fn open_connections(gateway: &Gateway) -> f64 {
    let metrics = gateway.metrics().await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("http_connections_open "))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn open_client_connections_are_counted_while_they_are_open() {
    let (gateway, _user) = gateway_with_user(|_| {}).await;
    let before = open_connections(&gateway).await;

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(gateway.api).await.unwrap());
    }
    portico_testkit::eventually(
        std::time::Duration::from_secs(10),
        "three more open connections counted",
        || async { (open_connections(&gateway).await >= before + 3.0).then_some(()) },
    )
    .await;
    drop(held);

    portico_testkit::eventually(
        std::time::Duration::from_secs(10),
        "the closed connections uncounted",
        || async { (open_connections(&gateway).await <= before).then_some(()) },
    )
    .await;
}

//! Rate limits at the edge: GCRA per route, shared through Redis by every
//! gateway replica, with a fallback when Redis cannot answer.

use http::StatusCode;
use portico_gateway::{config::Config, ratelimit::RateLimitConfig};
use secrecy::SecretString;

use crate::support::{Gateway, RecordingUpstream, route, upstream};

fn limit(key: &str, rate: u32, burst: u32, on_failure: Option<&str>) -> RateLimitConfig {
    RateLimitConfig {
        key: key.to_owned(),
        rate,
        period_ms: 60_000,
        burst: Some(burst),
        on_redis_failure: on_failure.map(str::to_owned),
    }
}

fn limited_route(config: &mut Config, user: &RecordingUpstream, limit: RateLimitConfig) {
    config
        .upstreams
        .insert("user".into(), upstream(&[&user.url]));
    let mut users = route("/v1/users", "user");
    users.rate_limit = Some(limit);
    config.routes = vec![users];
}

async fn statuses(gateway: &Gateway, n: usize, headers: &[(&str, &str)]) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut request = gateway.client.get(gateway.url("/v1/users/me"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        out.push(request.send().await.unwrap().status().as_u16());
    }
    out
}

#[tokio::test]
async fn over_the_limit_is_a_429_problem_with_ratelimit_headers() {
    let user = RecordingUpstream::start("user").await;
    let gateway =
        Gateway::start(|config| limited_route(config, &user, limit("client_ip", 5, 3, None))).await;

    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = gateway.get("/v1/users/me").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["ratelimit-policy"],
            "\"/v1/users\";q=5;w=60"
        );
        remaining.push(response.headers()["ratelimit"].to_str().unwrap().to_owned());
    }
    let refused = gateway.get("/v1/users/me").await;

    assert!(
        remaining[0].starts_with("\"/v1/users\";r=2;t="),
        "{remaining:?}"
    );
    assert!(
        remaining[2].starts_with("\"/v1/users\";r=0;t="),
        "{remaining:?}"
    );
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // One request per 12 s (5 a minute): the next is allowed within that.
    assert!((1..=12).contains(&retry_after), "{retry_after}");
    assert!(refused.headers().contains_key("ratelimit"));
    let (_, problem) = crate::support::expect_problem(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(problem["type"], "urn:portico:problem:rate-limited");
    assert_eq!(user.hits(), 3, "refused requests never reach the upstream");
}

#[tokio::test]
async fn two_gateways_sharing_redis_admit_no_more_than_the_limit() {
    let user = RecordingUpstream::start("user").await;
    let prefix = format!("portico:test:{}:", uuid::Uuid::new_v4().simple());
    let shared = |config: &mut Config| {
        limited_route(config, &user, limit("client_ip", 20, 20, None));
        config.redis.url = Some(SecretString::from(portico_testkit::redis_url()));
        config.redis.key_prefix = prefix.clone();
    };
    let first = Gateway::start(shared).await;
    let second = Gateway::start(shared).await;

    let mut allowed = 0;
    for i in 0..60 {
        let gateway = if i % 2 == 0 { &first } else { &second };
        if gateway.get("/v1/users/me").await.status() == StatusCode::OK {
            allowed += 1;
        }
    }

    assert_eq!(
        allowed, 20,
        "the two replicas together admitted {allowed} of a limit of 20"
    );
}

async fn with_redis_down(on_failure: &str) -> (Vec<u16>, String) {
    let user = RecordingUpstream::start("user").await;
    let gateway = Gateway::start(|config| {
        limited_route(config, &user, limit("client_ip", 3, 3, Some(on_failure)));
        let dead = format!("redis://127.0.0.1:{}", portico_testkit::http::closed_port());
        config.redis.url = Some(SecretString::from(dead));
    })
    .await;
    let seen = statuses(&gateway, 5, &[]).await;
    let metrics = gateway.metrics().await;
    (seen, metrics)
}

#[tokio::test]
async fn with_redis_down_the_configured_fallback_decides() {
    let (local, metrics) = with_redis_down("local").await;
    let (open, _) = with_redis_down("open").await;
    let (closed, _) = with_redis_down("closed").await;

    assert_eq!(
        local,
        [200, 200, 200, 429, 429],
        "each replica limits alone"
    );
    assert_eq!(open, [200; 5]);
    assert_eq!(closed, [429; 5]);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_rate_limit_fallback_active") && l.ends_with(" 1")),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_api_key_limit_counts_each_key_apart_and_skips_requests_without_one() {
    let user = RecordingUpstream::start("user").await;
    let gateway = Gateway::start(|config| {
        limited_route(config, &user, limit("header:x-api-key", 2, 2, None))
    })
    .await;

    assert_eq!(
        statuses(&gateway, 3, &[("x-api-key", "one")]).await,
        [200, 200, 429]
    );
    assert_eq!(
        statuses(&gateway, 2, &[("x-api-key", "two")]).await,
        [200, 200]
    );
    assert_eq!(statuses(&gateway, 3, &[]).await, [200, 200, 200]);
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let user = RecordingUpstream::start("user").await;
    let untrusting =
        Gateway::start(|config| limited_route(config, &user, limit("client_ip", 2, 2, None))).await;
    let trusting = Gateway::start(|config| {
        limited_route(config, &user, limit("client_ip", 2, 2, None));
        config.proxy.trusted_proxies =
            vec![portico_common::net::Cidr::try_from("127.0.0.0/8".to_owned()).unwrap()];
    })
    .await;

    // A client cannot escape its limit by claiming other addresses...
    let claimed = [
        statuses(&untrusting, 2, &[("x-forwarded-for", "203.0.113.1")]).await,
        statuses(&untrusting, 1, &[("x-forwarded-for", "203.0.113.2")]).await,
    ]
    .concat();
    // ...but behind a trusted proxy each client has its own.
    let behind_proxy = [
        statuses(&trusting, 2, &[("x-forwarded-for", "203.0.113.1")]).await,
        statuses(&trusting, 2, &[("x-forwarded-for", "203.0.113.2")]).await,
    ]
    .concat();

    assert_eq!(claimed, [200, 200, 429]);
    assert_eq!(behind_proxy, [200, 200, 200, 200]);
    assert_eq!(user.last().headers["x-forwarded-for"], "203.0.113.2");
}

//! Retries and their budget, the upstream's limits, endpoint circuit
//! breakers and the deadline passed upstream.

use std::time::{Duration, Instant};

use http::StatusCode;
use portico_gateway::config::{BreakerConfig, LimitsConfig, OutlierConfig, RetryBudgetConfig};
use portico_testkit::eventually;

use crate::support::{Gateway, RecordingUpstream, gateway_with_user, route, upstream};

/// Outlier detection that never ejects: the tests below watch one
/// mechanism at a time.
fn no_ejection() -> OutlierConfig {
    OutlierConfig {
        consecutive_gateway_failures: Some(1_000_000),
        consecutive_5xx: Some(1_000_000),
        ..OutlierConfig::default()
    }
}

/// A breaker that never opens.
fn no_breaker() -> BreakerConfig {
    BreakerConfig {
        min_requests: Some(1_000_000),
        ..BreakerConfig::default()
    }
}

#[tokio::test]
async fn a_get_that_gets_a_503_is_retried_on_another_replica_and_a_post_is_not() {
    let failing = RecordingUpstream::start("failing").await;
    let healthy = RecordingUpstream::start("healthy").await;
    failing.set_failing(true);
    let gateway = Gateway::start(|config| {
        let mut user = upstream(&[&failing.url, &healthy.url]);
        user.outlier = Some(no_ejection());
        user.breaker = Some(no_breaker());
        config.upstreams.insert("user".into(), user);
        config.routes = vec![route("/v1/users", "user")];
    })
    .await;

    for _ in 0..6 {
        assert_eq!(gateway.get("/v1/users/me").await.status(), StatusCode::OK);
    }
    // Requests that started at the failing replica were retried on the
    // healthy one: it served every request.
    assert!(failing.hits() >= 1, "no request met the failing replica");
    assert_eq!(healthy.hits(), 6);

    let mut posts = Vec::new();
    for _ in 0..2 {
        let response = gateway
            .client
            .post(gateway.url("/v1/users/me"))
            .body("{}")
            .send()
            .await
            .unwrap();
        posts.push(response.status());
    }
    assert!(
        posts.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "{posts:?}"
    );
}

#[tokio::test]
async fn retries_against_a_failing_upstream_stay_within_the_budget() {
    let a = RecordingUpstream::start("a").await;
    let b = RecordingUpstream::start("b").await;
    a.set_failing(true);
    b.set_failing(true);
    let gateway = Gateway::start(|config| {
        let mut user = upstream(&[&a.url, &b.url]);
        user.outlier = Some(no_ejection());
        user.breaker = Some(no_breaker());
        user.retry_budget = Some(RetryBudgetConfig {
            ratio_percent: Some(20),
            min_per_second: Some(0),
        });
        config.upstreams.insert("user".into(), user);
        config.proxy.retry_backoff_base_ms = 1;
        config.proxy.retry_backoff_max_ms = 1;
        config.routes = vec![route("/v1/users", "user")];
    })
    .await;

    for _ in 0..100 {
        assert_eq!(
            gateway.get("/v1/users/me").await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    // Without a budget every request would be tried on both: 200 attempts.
    let attempts = a.hits() + b.hits();
    assert!(
        (110..=120).contains(&attempts),
        "{attempts} attempts for 100 requests"
    );
}

#[tokio::test]
async fn past_the_in_flight_limit_requests_get_a_prompt_503_with_retry_after() {
    let hung = RecordingUpstream::start("hung").await;
    let gateway = Gateway::start(|config| {
        let mut user = upstream(&[&hung.url]);
        user.limits = Some(LimitsConfig {
            max_in_flight: Some(2),
            max_queued: Some(0),
            queue_timeout_ms: None,
        });
        config.upstreams.insert("user".into(), user);
        config.routes = vec![route("/v1/users", "user")];
    })
    .await;
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let (client, url) = (gateway.client.clone(), gateway.url("/v1/users/slow"));
            tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
        })
        .collect();
    eventually(
        Duration::from_secs(5),
        "two requests held by the upstream",
        || async { (hung.hits() == 2).then_some(()) },
    )
    .await;

    let started = Instant::now();
    let refused = gateway.get("/v1/users/me").await;
    let waited = started.elapsed();

    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(waited < Duration::from_secs(1), "refused after {waited:?}");
    assert_eq!(
        hung.hits(),
        2,
        "the refused request never reached the upstream"
    );
    hung.release_slow();
    for request in stuck {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(gateway.get("/v1/users/me").await.status(), StatusCode::OK);
}

async fn breaker_of(gateway: &Gateway, url: &str) -> String {
    let running = gateway.running_config().await;
    running["upstreams"]["user"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == url)
        .map(|e| e["breaker"].as_str().unwrap().to_owned())
        .unwrap()
}

#[tokio::test]
async fn a_breaker_opens_on_errors_and_closes_after_a_half_open_probe() {
    let flaky = RecordingUpstream::start("flaky").await;
    let steady = RecordingUpstream::start("steady").await;
    flaky.set_failing(true);
    let gateway = Gateway::start(|config| {
        let mut user = upstream(&[&flaky.url, &steady.url]);
        user.outlier = Some(no_ejection());
        user.breaker = Some(BreakerConfig {
            error_percent: Some(50),
            min_requests: Some(4),
            window_ms: Some(10_000),
            open_ms: Some(300),
            half_open_requests: Some(1),
        });
        config.upstreams.insert("user".into(), user);
        config.routes = vec![route("/v1/users", "user")];
    })
    .await;

    // Four failures on `flaky` (retried on `steady`: clients see 200s).
    for _ in 0..8 {
        assert_eq!(gateway.get("/v1/users/me").await.status(), StatusCode::OK);
    }
    assert_eq!(breaker_of(&gateway, &flaky.url).await, "open");
    let while_open = flaky.hits();
    for _ in 0..4 {
        assert_eq!(gateway.get("/v1/users/me").await.status(), StatusCode::OK);
    }
    assert_eq!(
        flaky.hits(),
        while_open,
        "an open breaker lets nothing through"
    );

    // Recovered: after open_ms one probe goes through and closes it.
    flaky.set_failing(false);
    eventually(
        Duration::from_secs(5),
        "the breaker to close again",
        || async {
            gateway.get("/v1/users/me").await;
            (breaker_of(&gateway, &flaky.url).await == "closed").then_some(())
        },
    )
    .await;
    assert!(flaky.hits() > while_open);
}

#[tokio::test]
async fn the_upstream_is_told_its_deadline_and_a_clients_own_is_dropped() {
    let (gateway, user) = gateway_with_user(|_| {}).await;
    let response = gateway
        .client
        .get(gateway.url("/v1/users/me"))
        .header("x-portico-deadline-ms", "999999999")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = user.last().headers["x-portico-deadline-ms"]
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    // The route allows 5 s (its attempt timeout too): no more than that.
    assert!((1..=5_000).contains(&seen), "{seen}");
}

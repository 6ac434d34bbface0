//! Prefix routing, the never-routed `/internal`, ambiguous paths, and
//! pass-through of upstream answers.

use http::{StatusCode, header};
use portico_common::error::PROBLEM_JSON;
use serde_json::Value;

use crate::support::{
    Gateway, RecordingUpstream, assert_problem_parts, conflict_body, expect_problem, raw_get,
    request_id, route, upstream,
};

/// A gateway with `/v1/users` → user and `/v1/auth` → auth.
async fn users_and_auth() -> (Gateway, RecordingUpstream, RecordingUpstream) {
    let user = RecordingUpstream::start("user").await;
    let auth = RecordingUpstream::start("auth").await;
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("user".into(), upstream(&[&user.url]));
        config
            .upstreams
            .insert("auth".into(), upstream(&[&auth.url]));
        config.routes = vec![route("/v1/users", "user"), route("/v1/auth", "auth")];
    })
    .await;
    (gateway, user, auth)
}

#[tokio::test]
async fn each_prefix_is_routed_to_its_upstream() {
    let (gateway, user, auth) = users_and_auth().await;

    for (path, replica) in [
        ("/v1/users", "user"),
        ("/v1/users/me", "user"),
        ("/v1/auth/login", "auth"),
    ] {
        let response = gateway.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["replica"], replica, "{path}");
        assert_eq!(body["path"], path);
    }
    let response = gateway
        .client
        .post(gateway.url("/v1/auth/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(auth.last().method, http::Method::POST);
    assert_eq!((user.hits(), auth.hits()), (2, 2));
}

#[tokio::test]
async fn a_path_that_merely_starts_with_the_prefix_text_is_not_routed() {
    let (gateway, user, _auth) = users_and_auth().await;

    expect_problem(gateway.get("/v1/usersx").await, 404).await;
    expect_problem(gateway.get("/v1/usersx/me").await, 404).await;
    assert_eq!(user.hits(), 0);
}

#[tokio::test]
async fn the_query_string_is_forwarded_unchanged() {
    let (gateway, user, _auth) = users_and_auth().await;

    let target = "/v1/users?limit=5&cursor=abc%3D&q=ada%20lovelace";
    let response = gateway.get(target).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(user.last().uri, target);
}

#[tokio::test]
async fn the_longest_matching_prefix_wins() {
    let user = RecordingUpstream::start("user").await;
    let admin = RecordingUpstream::start("admin").await;
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("user".into(), upstream(&[&user.url]));
        config
            .upstreams
            .insert("admin".into(), upstream(&[&admin.url]));
        config.routes = vec![
            route("/v1/users", "user"),
            route("/v1/users/admin", "admin"),
        ];
    })
    .await;

    for (path, replica) in [
        ("/v1/users/me", "user"),
        ("/v1/users/admin", "admin"),
        ("/v1/users/admin/stats", "admin"),
        ("/v1/users/administrator", "user"),
    ] {
        let body: Value = gateway.get(path).await.json().await.unwrap();
        assert_eq!(body["replica"], replica, "{path}");
    }
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let (gateway, user, auth) = users_and_auth().await;

    let (_, problem) = expect_problem(gateway.get("/v2/anything").await, 404).await;

    assert_eq!(problem["type"], "urn:portico:problem:not-found");
    assert_eq!(user.hits() + auth.hits(), 0);
}

#[tokio::test]
async fn internal_paths_are_never_routed_even_beside_a_users_route() {
    let (gateway, user, auth) = users_and_auth().await;

    for path in [
        "/internal/users",
        "/internal",
        "/internal/",
        "/internal/users/42",
    ] {
        expect_problem(gateway.get(path).await, 404).await;
        let response = gateway
            .client
            .post(gateway.url(path))
            .body("{}")
            .send()
            .await
            .unwrap();
        expect_problem(response, 404).await;
    }
    assert_eq!(user.hits() + auth.hits(), 0);
}

#[tokio::test]
async fn dot_segments_into_internal_are_refused_with_400() {
    let (gateway, user, _auth) = users_and_auth().await;

    for target in [
        "/v1/users/../internal/users",
        "/v1/users/./me",
        "/v1/users/..",
    ] {
        let response = raw_get(gateway.api, target).await;
        assert_problem_parts(
            response.status,
            &response.headers,
            &response.body,
            StatusCode::BAD_REQUEST,
        );
    }
    assert_eq!(user.hits(), 0);
}

#[tokio::test]
async fn percent_encoded_dots_and_slashes_are_refused_with_400() {
    let (gateway, user, _auth) = users_and_auth().await;

    for target in [
        "/v1/users/%2e%2e/internal/users",
        "/v1/users/%2E%2E/internal/users",
        "/v1/users/.%2e/internal/users",
        "/v1/users/..%2finternal%2fusers",
        "/v1/users/%5c..%5cinternal",
    ] {
        let response = raw_get(gateway.api, target).await;
        assert_problem_parts(
            response.status,
            &response.headers,
            &response.body,
            StatusCode::BAD_REQUEST,
        );
    }
    assert_eq!(user.hits(), 0);
}

#[tokio::test]
async fn upstream_problem_bodies_pass_through_unchanged() {
    let (gateway, user, _auth) = users_and_auth().await;

    let response = gateway
        .client
        .get(gateway.url("/v1/users/conflict"))
        .header("x-request-id", "conflict-1")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    assert_eq!(request_id(response.headers()), "conflict-1");
    let body = response.text().await.unwrap();
    assert_eq!(body, conflict_body(&user.last().headers));
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["request_id"], "conflict-1");
    assert_eq!(problem["detail"], "that display name is taken");
}

#[tokio::test]
async fn host_method_and_header_conditions_choose_between_routes_with_one_prefix() {
    let stable = RecordingUpstream::start("stable").await;
    let canary = RecordingUpstream::start("canary").await;
    let tenant = RecordingUpstream::start("tenant").await;
    let gateway = Gateway::start(|config| {
        for (name, server) in [
            ("stable", &stable),
            ("canary", &canary),
            ("tenant", &tenant),
        ] {
            config
                .upstreams
                .insert(name.into(), upstream(&[&server.url]));
        }
        let mut pinned = route("/v1/users", "canary");
        pinned.headers = [("x-pin".to_owned(), "canary".to_owned())].into();
        pinned.methods = Some(vec!["GET".to_owned()]);
        let mut by_host = route("/v1/users", "tenant");
        by_host.host = Some("*.tenant.example".to_owned());
        config.routes = vec![route("/v1/users", "stable"), pinned, by_host];
    })
    .await;
    let replica = |response: reqwest::Response| async move {
        let body: Value = response.json().await.unwrap();
        body["replica"].as_str().unwrap().to_owned()
    };

    let plain = gateway.get("/v1/users/me").await;
    let pinned = gateway
        .client
        .get(gateway.url("/v1/users/me"))
        .header("x-pin", "canary")
        .send()
        .await
        .unwrap();
    let pinned_post = gateway
        .client
        .post(gateway.url("/v1/users/me"))
        .header("x-pin", "canary")
        .send()
        .await
        .unwrap();
    let by_host = gateway
        .client
        .get(gateway.url("/v1/users/me"))
        .header(header::HOST, "acme.tenant.example:8080")
        .send()
        .await
        .unwrap();

    assert_eq!(replica(plain).await, "stable");
    assert_eq!(replica(pinned).await, "canary");
    assert_eq!(replica(pinned_post).await, "stable");
    assert_eq!(replica(by_host).await, "tenant");
}

#[tokio::test]
async fn an_unknown_host_is_a_404_problem() {
    let user = RecordingUpstream::start("user").await;
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("user".into(), upstream(&[&user.url]));
        let mut only = route("/v1/users", "user");
        only.host = Some("api.example.com".to_owned());
        config.routes = vec![only];
    })
    .await;
    let response = gateway
        .client
        .get(gateway.url("/v1/users/me"))
        .header(header::HOST, "evil.example.com")
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::NOT_FOUND).await;
    assert_eq!(user.hits(), 0);
}

#[tokio::test]
async fn a_rewrite_replaces_the_matched_prefix_upstream() {
    let user = RecordingUpstream::start("user").await;
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("user".into(), upstream(&[&user.url]));
        let mut legacy = route("/api/profile", "user");
        legacy.rewrite_prefix = Some("/v1/users".to_owned());
        config.routes = vec![legacy];
    })
    .await;
    let response = gateway.get("/api/profile/me?fields=email").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(user.last().uri, "/v1/users/me?fields=email");
}

#[tokio::test]
async fn a_route_body_limit_overrides_the_proxys() {
    let user = RecordingUpstream::start("user").await;
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("user".into(), upstream(&[&user.url]));
        let mut small = route("/v1/users", "user");
        small.max_body_bytes = Some(16);
        config.routes = vec![small];
    })
    .await;
    let response = gateway
        .client
        .post(gateway.url("/v1/users/me"))
        .body(vec![b'x'; 17])
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(user.hits(), 0);
}

#[tokio::test]
async fn requests_are_labelled_by_the_route_that_served_them() {
    let (gateway, _user, _auth) = users_and_auth().await;
    gateway.get("/v1/users/me").await;
    gateway.get("/nowhere").await;
    let metrics = gateway.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("http_requests_total{") && l.contains("route=\"/v1/users\"")),
        "{metrics}"
    );
    assert!(
        !metrics.contains("/nowhere"),
        "a raw path became a label: {metrics}"
    );
}

#[tokio::test]
async fn an_http11_request_without_a_host_or_with_two_is_refused_and_never_forwarded() {
    let (gateway, user, _auth) = users_and_auth().await;
    let without = http::Request::get("/v1/users/me")
        .body(axum::body::Body::empty())
        .unwrap();
    let mut with_two = http::Request::get("/v1/users/me")
        .header(http::header::HOST, "gateway.test")
        .body(axum::body::Body::empty())
        .unwrap();
    with_two
        .headers_mut()
        .append(http::header::HOST, "evil.test".parse().unwrap());

    let answers = [
        crate::support::send_raw(gateway.api, without).await,
        crate::support::send_raw(gateway.api, with_two).await,
    ];

    for answer in answers {
        let problem = assert_problem_parts(
            answer.status,
            &answer.headers,
            &answer.body,
            StatusCode::BAD_REQUEST,
        );
        assert!(
            problem["type"].as_str().unwrap().ends_with("invalid-host"),
            "{problem}"
        );
    }
    assert_eq!(user.hits(), 0);
    // With one Host, the same request goes through.
    assert_eq!(
        raw_get(gateway.api, "/v1/users/me").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_overlong_target_gets_a_414_and_oversized_headers_a_431_problem_never_forwarded() {
    let (gateway, user, _auth) = users_and_auth().await;
    let long_target = format!("/v1/users/me?q={}", "a".repeat(9000));
    let big_headers = {
        let mut request = http::Request::get("/v1/users/me")
            .header(http::header::HOST, "gateway.test")
            .body(axum::body::Body::empty())
            .unwrap();
        for i in 0..20 {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(format!("x-filler-{i}").as_bytes()).unwrap(),
                "b".repeat(4000).parse().unwrap(),
            );
        }
        request
    };

    let too_long = raw_get(gateway.api, &long_target).await;
    let too_large = crate::support::send_raw(gateway.api, big_headers).await;

    for (answer, status, kind) in [
        (too_long, StatusCode::URI_TOO_LONG, "uri-too-long"),
        (
            too_large,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
        ),
    ] {
        let problem = assert_problem_parts(answer.status, &answer.headers, &answer.body, status);
        assert!(
            problem["type"].as_str().unwrap().ends_with(kind),
            "{problem}"
        );
    }
    assert_eq!(user.hits(), 0);
}

//! CORS per route at the edge: preflights answered by the gateway (allowed
//! or refused, never forwarded, no token needed), actual cross-origin
//! answers carrying the origin only when it is allowed.

use http::{Method, StatusCode, header};
use portico_gateway::cors::CorsConfig;

use crate::support::{Gateway, RecordingUpstream, expect_problem, gateway_with_user};

async fn gateway() -> (Gateway, RecordingUpstream) {
    gateway_with_user(|config| {
        let route = &mut config.routes[0];
        route.auth = Some("bearer".into());
        route.cors = Some(CorsConfig {
            origins: vec![
                "https://app.example.com".into(),
                "https://*.preview.example.com".into(),
            ],
            methods: Some(vec!["GET".into(), "PATCH".into()]),
            headers: None,
            expose_headers: vec!["x-request-id".into()],
            credentials: true,
            max_age_secs: Some(300),
        });
    })
    .await
}

fn preflight(gateway: &Gateway, origin: &str, method: &str) -> reqwest::RequestBuilder {
    gateway
        .client
        .request(Method::OPTIONS, gateway.url("/v1/users/me"))
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, method)
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization, content-type",
        )
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_at_the_edge_without_a_token() {
    let (gateway, user) = gateway().await;

    let exact = preflight(&gateway, "https://app.example.com", "PATCH")
        .send()
        .await
        .unwrap();
    let pattern = preflight(&gateway, "https://pr-42.preview.example.com", "GET")
        .send()
        .await
        .unwrap();

    for (response, origin) in [
        (exact, "https://app.example.com"),
        (pattern, "https://pr-42.preview.example.com"),
    ] {
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let headers = response.headers();
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], origin);
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, PATCH");
        assert_eq!(headers[header::ACCESS_CONTROL_MAX_AGE], "300");
        assert_eq!(headers[header::VARY], "origin");
    }
    assert_eq!(user.hits(), 0, "a preflight never reaches the upstream");
}

#[tokio::test]
async fn a_preflight_from_another_origin_or_for_another_method_or_header_is_refused() {
    let (gateway, user) = gateway().await;

    let refused = [
        preflight(&gateway, "https://evil.test", "GET"),
        preflight(&gateway, "https://app.example.com.evil.test", "GET"),
        preflight(&gateway, "https://preview.example.com", "GET"),
        preflight(&gateway, "https://app.example.com", "DELETE"),
        preflight(&gateway, "https://app.example.com", "GET")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "x-secret-header"),
    ];

    for request in refused {
        let response = request.send().await.unwrap();
        assert!(
            !response
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        );
        let (_, problem) = expect_problem(response, 403).await;
        assert!(
            problem["type"].as_str().unwrap().ends_with("cors-refused"),
            "{problem}"
        );
    }
    assert_eq!(user.hits(), 0);
}

#[tokio::test]
async fn an_actual_request_carries_its_origin_back_only_when_allowed() {
    let (gateway, _user) = gateway().await;
    let token = gateway.token();
    let read = |origin: &'static str| {
        gateway
            .client
            .get(gateway.url("/v1/users/me"))
            .bearer_auth(&token)
            .header(header::ORIGIN, origin)
            .send()
    };

    let allowed = read("https://app.example.com").await.unwrap();
    let other = read("https://evil.test").await.unwrap();

    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(
        allowed.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
    assert_eq!(
        allowed.headers()[header::ACCESS_CONTROL_ALLOW_CREDENTIALS],
        "true"
    );
    assert_eq!(
        allowed.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS],
        "x-request-id"
    );
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "the gateway does not block; the browser does"
    );
    assert!(
        !other
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
    assert!(
        !other
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
    );
    assert_eq!(other.headers()[header::VARY], "origin");
}

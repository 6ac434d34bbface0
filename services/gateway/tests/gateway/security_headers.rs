//! Security headers at the edge: on proxied answers, on the gateway's own
//! errors and pages, the upstream's own values kept, and the headers that
//! say which software answered removed.

use http::{StatusCode, header};

use crate::support::{gateway_with_user, raw_get};

#[tokio::test]
async fn a_proxied_answer_gets_the_headers_keeps_the_upstreams_own_and_loses_its_software_banner() {
    let (gateway, _user) = gateway_with_user(|_| {}).await;

    let response = gateway.get("/v1/users/revealing").await;

    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(
        headers[header::CONTENT_SECURITY_POLICY],
        "default-src 'none'; frame-ancestors 'none'"
    );
    assert_eq!(
        headers[header::REFERRER_POLICY],
        "strict-origin",
        "the upstream's own value"
    );
    assert!(!headers.contains_key(header::SERVER), "{headers:?}");
    assert!(!headers.contains_key("x-powered-by"), "{headers:?}");
    assert!(!headers.contains_key(header::STRICT_TRANSPORT_SECURITY));
}

#[tokio::test]
async fn the_gateways_own_errors_refusals_and_docs_get_them_too_docs_with_their_own_policy() {
    let (gateway, _user) = gateway_with_user(|config| {
        config.security_headers.strict_transport_security = "max-age=31536000".into();
        config.security_headers.referrer_policy = String::new();
    })
    .await;

    let no_route = gateway.get("/nowhere").await;
    let docs = gateway.get("/docs/").await;
    // Refused by the pipeline before any route is looked at.
    let too_long = raw_get(gateway.api, &format!("/v1/users/me?q={}", "a".repeat(9000))).await;

    assert_eq!(no_route.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        no_route.headers()[header::X_CONTENT_TYPE_OPTIONS],
        "nosniff"
    );
    assert_eq!(
        no_route.headers()[header::STRICT_TRANSPORT_SECURITY],
        "max-age=31536000"
    );
    assert!(
        !no_route.headers().contains_key(header::REFERRER_POLICY),
        "an empty value leaves the header out"
    );
    assert_eq!(too_long.status, StatusCode::URI_TOO_LONG);
    assert_eq!(too_long.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(docs.status(), StatusCode::OK);
    let policy = docs.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    assert_eq!(docs.headers()[header::X_FRAME_OPTIONS], "DENY");
}

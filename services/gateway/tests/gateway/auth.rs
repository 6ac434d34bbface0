//! Bearer tokens verified at the edge on `require_auth` routes: every bad
//! token is a 401 problem that never reaches the upstream.

use http::{StatusCode, header};
use portico_testkit::issuer::{self, TestIssuer};
use uuid::Uuid;

use crate::support::{Gateway, RecordingUpstream, dead_endpoint, expect_problem, route, upstream};

/// `/v1/users` (auth required) and `/v1/auth` (public), one upstream each.
async fn guarded(jwks_url: Option<String>) -> (Gateway, RecordingUpstream, RecordingUpstream) {
    let user = RecordingUpstream::start("user").await;
    let auth = RecordingUpstream::start("auth").await;
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("user".into(), upstream(&[&user.url]));
        config
            .upstreams
            .insert("auth".into(), upstream(&[&auth.url]));
        let mut users = route("/v1/users", "user");
        users.auth = Some("bearer".to_owned());
        config.routes = vec![users, route("/v1/auth", "auth")];
        if let Some(url) = jwks_url {
            config.tokens.jwks.url = url;
        }
    })
    .await;
    (gateway, user, auth)
}

/// Sends `GET /v1/users/me` with the `Authorization` value `authorization`
/// makes from the gateway's issuer, and asserts the gateway refused it
/// itself with a 401 problem.
async fn assert_refused(authorization: impl FnOnce(&TestIssuer) -> Option<String>) {
    let (gateway, user, _auth) = guarded(None).await;
    let mut request = gateway.client.get(gateway.url("/v1/users/me"));
    if let Some(value) = authorization(&gateway.issuer) {
        request = request.header(header::AUTHORIZATION, value);
    }

    let (headers, problem) = expect_problem(request.send().await.unwrap(), 401).await;

    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(problem["type"], "urn:portico:problem:unauthenticated");
    assert_eq!(user.hits(), 0, "a refused request reached the upstream");
}

#[tokio::test]
async fn a_missing_token_is_refused_at_the_edge() {
    assert_refused(|_| None).await;
}

#[tokio::test]
async fn an_expired_token_is_refused_at_the_edge() {
    assert_refused(|issuer| Some(format!("Bearer {}", issuer.expired_token(Uuid::now_v7())))).await;
}

#[tokio::test]
async fn a_tampered_token_is_refused_at_the_edge() {
    assert_refused(|issuer| {
        let token = issuer.user_token(Uuid::now_v7());
        let forged = issuer::tampered(&token, &Uuid::now_v7().to_string());
        Some(format!("Bearer {forged}"))
    })
    .await;
}

#[tokio::test]
async fn an_alg_none_token_is_refused_at_the_edge() {
    assert_refused(|issuer| Some(format!("Bearer {}", issuer.alg_none_token(Uuid::now_v7()))))
        .await;
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused_at_the_edge() {
    assert_refused(|issuer| {
        Some(format!(
            "Bearer {}",
            issuer.wrong_audience_token(Uuid::now_v7())
        ))
    })
    .await;
}

#[tokio::test]
async fn a_service_token_is_refused_on_the_public_api() {
    assert_refused(|issuer| Some(format!("Bearer {}", issuer.service_token()))).await;
}

#[tokio::test]
async fn a_token_from_another_key_is_refused_at_the_edge() {
    let stranger = TestIssuer::start().await;
    let token = stranger.user_token(Uuid::now_v7());
    assert_refused(|_| Some(format!("Bearer {token}"))).await;
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_a_known_key_id_is_refused_at_the_edge() {
    // The key id is the gateway's issuer's, so only the signature check
    // stands between this token and the upstream.
    let stranger = TestIssuer::start().await;
    assert_refused(|issuer| {
        let forged = stranger.sign_as(issuer.kid(), &issuer.user_claims(Uuid::now_v7()));
        Some(format!("Bearer {forged}"))
    })
    .await;
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused_at_the_edge() {
    for variant in 0..2 {
        assert_refused(|issuer| {
            let token = issuer.hs256_public_key_tokens(Uuid::now_v7())[variant].clone();
            Some(format!("Bearer {token}"))
        })
        .await;
    }
}

#[tokio::test]
async fn injected_key_ids_are_refused_at_the_edge() {
    for kid in [
        "../../../../dev/null".to_owned(),
        "' OR '1'='1".to_owned(),
        "https://attacker.example/jwks.json".to_owned(),
        "k".repeat(10_000),
    ] {
        assert_refused(|issuer| {
            let token = issuer.sign_as(&kid, &issuer.user_claims(Uuid::now_v7()));
            Some(format!("Bearer {token}"))
        })
        .await;
    }
}

#[tokio::test]
async fn a_not_yet_valid_token_is_refused_at_the_edge() {
    assert_refused(|issuer| {
        let mut claims = issuer.user_claims(Uuid::now_v7());
        let in_an_hour = claims["iat"].as_i64().unwrap() + 3600;
        claims["nbf"] = in_an_hour.into();
        claims["iat"] = in_an_hour.into();
        claims["exp"] = (in_an_hour + 900).into();
        Some(format!("Bearer {}", issuer.sign(&claims)))
    })
    .await;
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused_at_the_edge() {
    assert_refused(|issuer| {
        let mut claims = issuer.user_claims(Uuid::now_v7());
        claims["iss"] = "https://someone-else.example".into();
        Some(format!("Bearer {}", issuer.sign(&claims)))
    })
    .await;
}

#[tokio::test]
async fn the_basic_scheme_is_refused_at_the_edge() {
    assert_refused(|_| Some("Basic YWRhOmxvdmVsYWNl".to_owned())).await;
}

#[tokio::test]
async fn a_valid_token_is_forwarded_with_the_request() {
    let (gateway, user, _auth) = guarded(None).await;
    let token = gateway.token();

    let response = gateway
        .client
        .get(gateway.url("/v1/users/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(user.hits(), 1);
    assert_eq!(
        user.last().headers[header::AUTHORIZATION],
        format!("Bearer {token}")
    );
}

#[tokio::test]
async fn a_public_route_needs_no_token() {
    let (gateway, user, auth) = guarded(None).await;

    let response = gateway
        .client
        .post(gateway.url("/v1/auth/login"))
        .body("{}")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!((auth.hits(), user.hits()), (1, 0));
}

#[tokio::test]
async fn unreachable_signing_keys_are_a_503_problem_not_a_401() {
    let (gateway, user, _auth) =
        guarded(Some(format!("{}/.well-known/jwks.json", dead_endpoint()))).await;
    let token = gateway.token();

    let response = gateway
        .client
        .get(gateway.url("/v1/users/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();

    expect_problem(response, 503).await;
    assert_eq!(user.hits(), 0);
}

#[tokio::test]
async fn a_revoked_sessions_token_is_refused_at_the_edge_within_a_second() {
    let (gateway, user, _auth) = guarded(None).await;
    let claims = gateway.issuer.user_claims(Uuid::now_v7());
    let sid: Uuid = claims["sid"].as_str().unwrap().parse().unwrap();
    let token = gateway.issuer.sign(&claims);
    let get = || async {
        gateway
            .client
            .get(gateway.url("/v1/users/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
    };
    portico_testkit::eventually(
        std::time::Duration::from_secs(10),
        "the token accepted",
        || async { (get().await.status() == StatusCode::OK).then_some(()) },
    )
    .await;

    gateway.issuer.revoke(sid);

    portico_testkit::eventually(
        std::time::Duration::from_secs(1),
        "the token refused",
        || async { (get().await.status() == StatusCode::UNAUTHORIZED).then_some(()) },
    )
    .await;
    // Refused at the edge: the upstream never sees it.
    let hits = user.hits();
    expect_problem(get().await, 401).await;
    assert_eq!(user.hits(), hits);
}

#[tokio::test]
async fn a_role_route_needs_a_token_with_that_role() {
    let admin_api = RecordingUpstream::start("admin").await;
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("auth".into(), upstream(&[&admin_api.url]));
        let mut admin = route("/v1/auth/admin", "auth");
        admin.auth = Some("role:admin".to_owned());
        config.routes = vec![admin];
    })
    .await;
    let mut claims = gateway.issuer.user_claims(uuid::Uuid::now_v7());
    let user = gateway.issuer.sign(&claims);
    claims["roles"] = serde_json::json!(["user", "admin"]);
    let admin = gateway.issuer.sign(&claims);

    let anonymous = gateway.get("/v1/auth/admin/audit").await;
    let as_user = gateway
        .client
        .get(gateway.url("/v1/auth/admin/audit"))
        .bearer_auth(user)
        .send()
        .await
        .unwrap();
    let as_admin = gateway
        .client
        .get(gateway.url("/v1/auth/admin/audit"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();

    expect_problem(anonymous, StatusCode::UNAUTHORIZED).await;
    expect_problem(as_user, StatusCode::FORBIDDEN).await;
    assert_eq!(as_admin.status(), StatusCode::OK);
    assert_eq!(
        admin_api.hits(),
        1,
        "only the admin's request reached the upstream"
    );
}

#[tokio::test]
async fn a_refused_request_is_counted_under_its_route() {
    let (gateway, _user, _auth) = guarded(None).await;

    let response = gateway.get("/v1/users/me").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let metrics = gateway.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("http_requests_total")
                && line.contains(r#"route="/v1/users""#)
                && line.contains(r#"status="401""#)),
        "no 401 counted under /v1/users:\n{metrics}"
    );
}

//! The JWKS, the discovery document, the OpenAPI document and unknown routes.

use portico_common::config::ServiceConfig as _;
use portico_testkit::Backend;
use reqwest::{StatusCode, header};
use serde_json::Value;

use crate::helpers::{TestApp, assert_problem};

#[tokio::test]
async fn jwks_publishes_ed25519_keys_with_key_ids() {
    // Arrange
    let app = TestApp::spawn_without_user_service(Backend::Sqlite).await;

    // Act
    let response = app.get("/.well-known/jwks.json").await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key(header::CACHE_CONTROL));
    let jwks: Value = response.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["alg"], "EdDSA");
        assert!(key["kid"].is_string() && key["x"].is_string(), "{key}");
        assert!(key.get("d").is_none(), "private key material published");
    }
}

#[tokio::test]
async fn openid_configuration_names_the_issuer_and_jwks_uri() {
    // Arrange
    let app = TestApp::spawn_without_user_service(Backend::Sqlite).await;
    let issuer = portico_auth::Config::built_in().tokens.issuer;

    // Act
    let response = app.get("/.well-known/openid-configuration").await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["issuer"], issuer.as_str());
    assert_eq!(
        document["jwks_uri"],
        format!("{issuer}/.well-known/jwks.json").as_str()
    );
    assert_eq!(
        document["token_endpoint"],
        format!("{issuer}/v1/auth/token").as_str()
    );
    assert_eq!(
        document["grant_types_supported"],
        serde_json::json!(["client_credentials"])
    );
    assert_eq!(
        document["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(
        document["id_token_signing_alg_values_supported"],
        serde_json::json!(["EdDSA"])
    );
}

#[tokio::test]
async fn openapi_lists_the_auth_and_well_known_paths() {
    // Arrange
    let app = TestApp::spawn_without_user_service(Backend::Sqlite).await;

    // Act
    let response = app.get("/openapi.json").await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.unwrap();
    let paths = document["paths"].as_object().expect("paths object");
    for (path, method) in [
        ("/v1/auth/register", "post"),
        ("/v1/auth/login", "post"),
        ("/v1/auth/refresh", "post"),
        ("/v1/auth/logout", "post"),
        ("/.well-known/jwks.json", "get"),
        ("/.well-known/openid-configuration", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn unknown_route_is_a_404_problem() {
    // Arrange
    let app = TestApp::spawn_without_user_service(Backend::Sqlite).await;

    // Act
    let response = app.get("/v1/auth/nothing-here").await;

    // Assert
    assert_problem(response, StatusCode::NOT_FOUND).await;
}

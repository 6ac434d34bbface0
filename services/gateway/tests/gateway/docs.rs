//! The public OpenAPI document, merged from the upstreams' own, and the
//! offline `/docs` page.

use http::{StatusCode, header};
use serde_json::{Value, json};

use crate::support::{Gateway, RecordingUpstream, route, upstream};

fn operation(summary: &str) -> Value {
    json!({"summary": summary, "responses": {"200": {"description": "ok"}}})
}

#[tokio::test]
async fn the_public_document_has_routed_paths_and_gateway_errors_but_no_internal_api() {
    let user = RecordingUpstream::with_openapi(
        "user",
        json!({
            "openapi": "3.1.0",
            "paths": {
                "/v1/users/me": {"get": operation("own profile")},
                "/internal/users": {"post": {
                    "requestBody": {"content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/CreateProfile"}
                    }}},
                    "responses": {"201": {"description": "created"}},
                }},
            },
            "components": {"schemas": {
                "Problem": {"type": "object"},
                "CreateProfile": {"type": "object"},
            }},
        }),
    )
    .await;
    let auth = RecordingUpstream::with_openapi(
        "auth",
        json!({
            "openapi": "3.1.0",
            "paths": {
                "/v1/auth/login": {"post": operation("log in")},
                "/internal/sessions": {"get": operation("list sessions")},
            },
        }),
    )
    .await;
    let gateway = Gateway::start(|config| {
        for (name, replica) in [("user", &user), ("auth", &auth)] {
            let mut config_upstream = upstream(&[&replica.url]);
            config_upstream.openapi_path = Some("/openapi.json".into());
            config.upstreams.insert(name.into(), config_upstream);
        }
        config.routes = vec![route("/v1/users", "user"), route("/v1/auth", "auth")];
    })
    .await;

    let response = gateway.get("/openapi.json").await;

    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.unwrap();
    let paths = document["paths"].as_object().unwrap();
    let mut names: Vec<&str> = paths.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["/v1/auth/login", "/v1/users/me"]);
    assert!(!document.to_string().contains("/internal"), "{document}");
    let responses = &document["paths"]["/v1/users/me"]["get"]["responses"];
    for status in ["200", "502", "503", "504"] {
        assert!(
            responses.get(status).is_some(),
            "{status} missing: {responses}"
        );
    }
    let schemas = document["components"]["schemas"].as_object().unwrap();
    assert!(schemas.contains_key("Problem"), "{schemas:?}");
    assert!(
        !schemas.contains_key("CreateProfile"),
        "a schema only internal operations use leaked"
    );
}

#[tokio::test]
async fn the_docs_page_is_served_from_bundled_assets() {
    let gateway = Gateway::start(|_| {}).await;

    let page = gateway.get("/docs/").await;
    assert_eq!(page.status(), StatusCode::OK);
    let content_type = page.headers()[header::CONTENT_TYPE].to_str().unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");

    let script = gateway.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(script.status(), StatusCode::OK);
    assert!(!script.bytes().await.unwrap().is_empty());
}

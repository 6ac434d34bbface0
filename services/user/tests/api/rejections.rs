//! Bad requests to `PATCH /v1/users/me`: each gets a problem and changes nothing.

use portico_testkit::{Backend, issuer};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{
    JSON, TestApp, assert_problem, assert_unauthorized, error_fields, on_both_backends,
};

/// A running service with one profile, and a valid token for it.
async fn app_with_profile(backend: Backend) -> (TestApp, Uuid, String) {
    let app = TestApp::spawn(backend).await;
    let profile = app.seed_profile().await;
    let token = app.issuer.user_token(profile.id);
    (app, profile.id, token)
}

async fn malformed_json_is_400(backend: Backend) {
    // Arrange
    let (app, id, token) = app_with_profile(backend).await;
    let before = app.snapshot(id).await;

    // Act
    let response = app
        .patch_me_raw(Some(&token), JSON, r#"{"display_name": "Ann"#)
        .await;

    // Assert
    assert_problem(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(app.snapshot(id).await, before);
}

async fn text_plain_body_is_415(backend: Backend) {
    // Arrange
    let (app, id, token) = app_with_profile(backend).await;
    let before = app.snapshot(id).await;

    // Act
    let response = app
        .patch_me_raw(Some(&token), "text/plain", r#"{"display_name": "Bob"}"#)
        .await;

    // Assert
    assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(app.snapshot(id).await, before);
}

async fn null_display_name_is_422_naming_it(backend: Backend) {
    // Arrange
    let (app, id, token) = app_with_profile(backend).await;
    let before = app.snapshot(id).await;

    // Act
    let response = app
        .patch_me(Some(&token), &json!({"display_name": null}))
        .await;

    // Assert
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&problem), ["display_name"]);
    assert_eq!(app.snapshot(id).await, before);
}

async fn invisible_or_bidi_display_names_are_422(backend: Backend) {
    // Arrange
    let (app, id, token) = app_with_profile(backend).await;
    let before = app.snapshot(id).await;

    for name in [
        "\u{200b}",
        "\u{feff}\u{200d}",
        " \u{2060} ",
        "\u{3164}",
        "Ann\u{202e}nnA",
        "\u{2067}admin\u{2069}",
    ] {
        // Act
        let response = app
            .patch_me(Some(&token), &json!({"display_name": name}))
            .await;

        // Assert
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(error_fields(&problem), ["display_name"], "{name:?}");
    }
    assert_eq!(app.snapshot(id).await, before);
}

async fn invalid_locale_and_time_zone_are_422_naming_both(backend: Backend) {
    // Arrange
    let (app, id, token) = app_with_profile(backend).await;
    let before = app.snapshot(id).await;

    // Act
    let response = app
        .patch_me(
            Some(&token),
            &json!({"display_name": "Bob", "locale": "en_US", "time_zone": "Mars/Olympus_Mons"}),
        )
        .await;

    // Assert
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&problem), ["locale", "time_zone"]);
    assert_eq!(app.snapshot(id).await, before);
}

async fn a_change_without_if_match_is_428(backend: Backend) {
    // Arrange
    let (app, id, token) = app_with_profile(backend).await;
    let before = app.snapshot(id).await;

    // Act
    let response = app
        .patch_me_if(Some(&token), None, &json!({"display_name": "Bob"}))
        .await;

    // Assert
    let problem = assert_problem(response, StatusCode::PRECONDITION_REQUIRED).await;
    assert_eq!(problem["type"], "urn:portico:problem:precondition-required");
    assert_eq!(app.snapshot(id).await, before);
}

async fn a_stale_or_weak_if_match_is_412(backend: Backend) {
    // Arrange
    let (app, id, token) = app_with_profile(backend).await;
    let first = app
        .patch_me_if(
            Some(&token),
            Some("\"1\""),
            &json!({"display_name": "First"}),
        )
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    let before = app.snapshot(id).await;

    // Act: the version read before the first change; the current one, but
    // weak (If-Match compares strongly); a tag that is no version.
    for stale in ["\"1\"", "W/\"2\"", "\"abc\""] {
        let response = app
            .patch_me_if(
                Some(&token),
                Some(stale),
                &json!({"display_name": "Second"}),
            )
            .await;

        // Assert
        let problem = assert_problem(response, StatusCode::PRECONDITION_FAILED).await;
        assert_eq!(problem["type"], "urn:portico:problem:precondition-failed");
    }
    assert_eq!(app.snapshot(id).await, before);
}

async fn a_malformed_if_match_is_400(backend: Backend) {
    // Arrange
    let (app, id, token) = app_with_profile(backend).await;
    let before = app.snapshot(id).await;

    for malformed in ["1", "\"1", "W/1", "\"1\" \"2\""] {
        // Act
        let response = app
            .patch_me_if(
                Some(&token),
                Some(malformed),
                &json!({"display_name": "Bob"}),
            )
            .await;

        // Assert
        let problem = assert_problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(
            problem["type"], "urn:portico:problem:malformed-precondition",
            "{malformed}"
        );
    }
    assert_eq!(app.snapshot(id).await, before);
}

async fn blank_display_name_is_422_naming_it(backend: Backend) {
    // Arrange
    let (app, id, token) = app_with_profile(backend).await;
    let before = app.snapshot(id).await;

    // Act
    let response = app
        .patch_me(Some(&token), &json!({"display_name": "   "}))
        .await;

    // Assert
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&problem), ["display_name"]);
    assert_eq!(app.snapshot(id).await, before);
}

async fn unknown_field_is_422(backend: Backend) {
    // Arrange
    let (app, id, token) = app_with_profile(backend).await;
    let before = app.snapshot(id).await;

    // Act
    let response = app
        .patch_me(
            Some(&token),
            &json!({"display_name": "Bob", "is_admin": true}),
        )
        .await;

    // Assert
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("is_admin"),
        "{problem}"
    );
    assert_eq!(app.snapshot(id).await, before);
}

async fn body_over_64_kib_is_413(backend: Backend) {
    // Arrange
    let (app, id, token) = app_with_profile(backend).await;
    let before = app.snapshot(id).await;
    let body = serde_json::to_vec(&json!({"display_name": "x".repeat(64 * 1024)})).unwrap();

    // Act
    let response = app.patch_me_raw(Some(&token), JSON, body).await;

    // Assert
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(app.snapshot(id).await, before);
}

/// Sends a valid change with `token` and checks it is refused with 401.
async fn assert_token_refused(app: &TestApp, id: Uuid, token: Option<&str>) {
    let before = app.snapshot(id).await;
    let response = app
        .patch_me(token, &json!({"display_name": "Mallory"}))
        .await;
    assert_unauthorized(response).await;
    assert_eq!(app.snapshot(id).await, before);
}

async fn missing_token_is_401(backend: Backend) {
    // Arrange
    let (app, id, _) = app_with_profile(backend).await;

    // Act and assert
    assert_token_refused(&app, id, None).await;
}

async fn expired_token_is_401(backend: Backend) {
    // Arrange
    let (app, id, _) = app_with_profile(backend).await;
    let expired = app.issuer.expired_token(id);

    // Act and assert
    assert_token_refused(&app, id, Some(&expired)).await;
}

async fn token_with_a_tampered_subject_is_401(backend: Backend) {
    // Arrange: signed for someone else, payload edited to name the profile's owner.
    let (app, id, _) = app_with_profile(backend).await;
    let other = app.issuer.user_token(Uuid::now_v7());
    let tampered = issuer::tampered(&other, &id.to_string());

    // Act and assert
    assert_token_refused(&app, id, Some(&tampered)).await;
}

async fn unsigned_alg_none_token_is_401(backend: Backend) {
    // Arrange
    let (app, id, _) = app_with_profile(backend).await;
    let unsigned = app.issuer.alg_none_token(id);

    // Act and assert
    assert_token_refused(&app, id, Some(&unsigned)).await;
}

async fn token_for_another_audience_is_401(backend: Backend) {
    // Arrange
    let (app, id, _) = app_with_profile(backend).await;
    let foreign = app.issuer.wrong_audience_token(id);

    // Act and assert
    assert_token_refused(&app, id, Some(&foreign)).await;
}

async fn service_token_is_not_accepted_as_a_user_token(backend: Backend) {
    // Arrange: a service subject with the public audience, so the token is
    // refused for not being a user's, not for its audience.
    let (app, id, _) = app_with_profile(backend).await;
    let mut claims = app.issuer.service_claims();
    claims["aud"] = serde_json::json!(issuer::AUDIENCE);
    let service = app.issuer.sign(&claims);

    // Act and assert
    assert_token_refused(&app, id, Some(&service)).await;
}

on_both_backends!(
    malformed_json_is_400,
    text_plain_body_is_415,
    null_display_name_is_422_naming_it,
    invisible_or_bidi_display_names_are_422,
    invalid_locale_and_time_zone_are_422_naming_both,
    a_change_without_if_match_is_428,
    a_stale_or_weak_if_match_is_412,
    a_malformed_if_match_is_400,
    blank_display_name_is_422_naming_it,
    unknown_field_is_422,
    body_over_64_kib_is_413,
    missing_token_is_401,
    expired_token_is_401,
    token_with_a_tampered_subject_is_401,
    unsigned_alg_none_token_is_401,
    token_for_another_audience_is_401,
    service_token_is_not_accepted_as_a_user_token,
);

//! `GET /v1/users`: the directory, for admins, a keyset page at a time,
//! searchable by email prefix and display-name substring.

use portico_common::types::DisplayName;
use portico_testkit::Backend;
use portico_user::domain::{Precondition, ProfileChange};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, assert_problem, error_fields, new_profile, now, on_both_backends};

fn admin_token(app: &TestApp) -> String {
    let mut claims = app.issuer.user_claims(Uuid::now_v7());
    claims["roles"] = json!(["user", "admin"]);
    app.issuer.sign(&claims)
}

async fn page(app: &TestApp, token: &str, query: &str) -> reqwest::Response {
    app.client
        .get(format!("{}/v1/users?{query}", app.api))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn page_json(app: &TestApp, token: &str, query: &str) -> Value {
    let response = page(app, token, query).await;
    assert_eq!(response.status(), StatusCode::OK, "{query}");
    response.json().await.unwrap()
}

fn emails(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["email"].as_str().unwrap().to_owned())
        .collect()
}

async fn create(app: &TestApp, email: &str, name: &str) -> Uuid {
    let id = Uuid::now_v7();
    app.store
        .create(&new_profile(id, email, name), now())
        .await
        .unwrap();
    id
}

async fn pages_hold_still_while_rows_come_and_go(backend: Backend) {
    // Arrange: five profiles, in creation order.
    let app = TestApp::spawn(backend).await;
    let admin = admin_token(&app);
    let mut ids = Vec::new();
    for n in 1..=5 {
        ids.push(create(&app, &format!("p{n}@example.com"), &format!("Person {n}")).await);
    }

    // Act: the first page, then a row before the cursor is deleted and
    // one is added at the end.
    let first = page_json(&app, &admin, "limit=2").await;
    app.store
        .delete(ids[0], &Precondition::Any, now())
        .await
        .unwrap();
    create(&app, "p6@example.com", "Person 6").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let second = page_json(&app, &admin, &format!("limit=2&cursor={cursor}")).await;
    let cursor = second["next_cursor"].as_str().unwrap().to_owned();
    let third = page_json(&app, &admin, &format!("limit=2&cursor={cursor}")).await;

    // Assert: nothing repeated or skipped; the last page has no cursor.
    assert_eq!(emails(&first), ["p1@example.com", "p2@example.com"]);
    assert_eq!(emails(&second), ["p3@example.com", "p4@example.com"]);
    assert_eq!(emails(&third), ["p5@example.com", "p6@example.com"]);
    let last = page_json(
        &app,
        &admin,
        &format!("limit=2&cursor={}", third["next_cursor"].as_str().unwrap()),
    )
    .await;
    assert_eq!(last, json!({"items": [], "next_cursor": null}));
    let deleted = page_json(&app, &admin, "status=deleted").await;
    assert_eq!(emails(&deleted), ["p1@example.com"]);
    assert_eq!(deleted["next_cursor"], Value::Null);
}

async fn search_matches_email_prefixes_and_name_substrings_literally(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let admin = admin_token(&app);
    create(&app, "Ann.Lee@example.com", "Ann Lee").await;
    create(&app, "bob@example.com", "Bobby Tables").await;
    let carol = create(&app, "carol@example.com", "Carol").await;
    app.store
        .update(
            carol,
            &Precondition::Any,
            &ProfileChange {
                display_name: Some(DisplayName::parse("100% Carol_").unwrap()),
                ..ProfileChange::default()
            },
            now(),
        )
        .await
        .unwrap();

    // Act and assert
    assert_eq!(
        emails(&page_json(&app, &admin, "q=ann.").await),
        ["Ann.Lee@example.com"]
    );
    assert_eq!(
        emails(&page_json(&app, &admin, "q=TABLES").await),
        ["bob@example.com"]
    );
    assert_eq!(
        emails(&page_json(&app, &admin, "q=example").await),
        Vec::<String>::new()
    );
    // `%` and `_` are searched for, not wildcards.
    assert_eq!(
        emails(&page_json(&app, &admin, "q=0%25").await),
        ["carol@example.com"]
    );
    assert_eq!(
        emails(&page_json(&app, &admin, "q=l_").await),
        ["carol@example.com"]
    );
    assert_eq!(
        emails(&page_json(&app, &admin, "q=%25").await),
        ["carol@example.com"]
    );
}

async fn the_directory_is_for_admins_and_refuses_bad_parameters(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    let admin = admin_token(&app);
    let user = app.seed_profile().await;
    let user_token = app.issuer.user_token(user.id);

    // Act and assert
    assert_problem(page(&app, &user_token, "").await, StatusCode::FORBIDDEN).await;
    assert_problem(
        page(&app, &admin, "status=active&status=active").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let long = "x".repeat(101);
    for (query, fields) in [
        ("limit=0", vec!["limit"]),
        ("limit=101", vec!["limit"]),
        ("cursor=garbage", vec!["cursor"]),
        ("cursor=AQ", vec!["cursor"]),
        ("status=gone", vec!["status"]),
        ("q=", vec!["q"]),
        (&format!("q={long}"), vec!["q"]),
        (
            "limit=-1&cursor=x&status=x",
            vec!["limit", "cursor", "status"],
        ),
    ] {
        let problem = assert_problem(
            page(&app, &admin, query).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(error_fields(&problem), fields, "{query}");
    }
}

on_both_backends!(
    pages_hold_still_while_rows_come_and_go,
    search_matches_email_prefixes_and_name_substrings_literally,
    the_directory_is_for_admins_and_refuses_bad_parameters,
);

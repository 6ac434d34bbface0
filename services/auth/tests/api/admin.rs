//! Roles and admins: the bootstrap admin, granting and revoking roles
//! (which ends the user's sessions), and who may do it.

use portico_common::types::Email;
use portico_testkit::{Backend, issuer::claims_of};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{
    PASSWORD, TestApp, assert_problem, assert_tokens, assert_unauthorized, on_both_backends,
};

pub const ADMIN_EMAIL: &str = "root@example.com";

fn roles_of(access_token: &str) -> Vec<String> {
    serde_json::from_value(claims_of(access_token)["roles"].clone()).unwrap()
}

/// An auth service whose bootstrap admin is [`ADMIN_EMAIL`], and that
/// admin's access token.
pub async fn app_with_admin(backend: Backend) -> (TestApp, String) {
    let app = TestApp::spawn_with_config(backend, |config| {
        config.admin.bootstrap_email = Some(Email::parse(ADMIN_EMAIL).unwrap());
    })
    .await;
    let admin = app.register_account(ADMIN_EMAIL).await;
    (app, admin.access_token)
}

fn user_id_of(access_token: &str) -> String {
    claims_of(access_token)["sub"].as_str().unwrap().to_owned()
}

async fn set_role(
    app: &TestApp,
    method: Method,
    token: Option<&str>,
    user: &str,
    role: &str,
) -> reqwest::Response {
    app.send_as(
        method,
        &format!("/v1/auth/admin/users/{user}/roles/{role}"),
        token,
        None,
    )
    .await
}

async fn the_bootstrap_admin_gets_the_admin_role_at_registration(backend: Backend) {
    // Arrange + Act
    let (app, admin) = app_with_admin(backend).await;
    let someone = app.register_account("ann@example.com").await;

    // Assert
    assert_eq!(roles_of(&admin), ["admin", "user"]);
    assert_eq!(roles_of(&someone.access_token), ["user"]);
}

async fn naming_a_registered_account_makes_it_admin_at_startup(backend: Backend) {
    // Arrange: registered before anyone named it.
    let app = TestApp::spawn(backend).await;
    let before = app.register_account("ops@example.com").await;
    assert_eq!(roles_of(&before.access_token), ["user"]);

    // Act: a replica starts with the account named.
    let replica = app
        .spawn_replica(|config| {
            config.admin.bootstrap_email = Some(Email::parse("OPS@example.com").unwrap());
        })
        .await;

    // Assert: its next sign-in carries the role; the grant is audited.
    let response = app
        .client
        .post(format!("{replica}/v1/auth/login"))
        .json(&serde_json::json!({"email": "ops@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let tokens = assert_tokens(response, StatusCode::OK).await;
    assert_eq!(roles_of(&tokens.access_token), ["admin", "user"]);
}

async fn granting_admin_ends_the_users_sessions_and_new_tokens_carry_it(backend: Backend) {
    // Arrange
    let (app, admin) = app_with_admin(backend).await;
    let ann = app.register_account("ann@example.com").await;
    let ann_id = user_id_of(&ann.access_token);

    // Act
    let response = set_role(&app, Method::PUT, Some(&admin), &ann_id, "admin").await;

    // Assert
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_problem(
        app.refresh(&ann.refresh_token).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let sessions = app
        .send_as(
            Method::GET,
            "/v1/auth/sessions",
            Some(&ann.access_token),
            None,
        )
        .await;
    assert_unauthorized(sessions).await;
    let again = assert_tokens(app.login("ann@example.com", PASSWORD).await, StatusCode::OK).await;
    assert_eq!(roles_of(&again.access_token), ["admin", "user"]);

    // Granting it again changes nothing and ends nothing.
    let response = set_role(&app, Method::PUT, Some(&admin), &ann_id, "admin").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_tokens(app.refresh(&again.refresh_token).await, StatusCode::OK).await;
}

async fn revoking_admin_ends_the_users_sessions_and_takes_the_role_away(backend: Backend) {
    // Arrange: Bob is made admin, then signs in.
    let (app, admin) = app_with_admin(backend).await;
    let bob = app.register_account("bob@example.com").await;
    let bob_id = user_id_of(&bob.access_token);
    set_role(&app, Method::PUT, Some(&admin), &bob_id, "admin").await;
    let bob = assert_tokens(app.login("bob@example.com", PASSWORD).await, StatusCode::OK).await;
    assert_eq!(roles_of(&bob.access_token), ["admin", "user"]);

    // Act
    let response = set_role(&app, Method::DELETE, Some(&admin), &bob_id, "admin").await;

    // Assert: his admin token is dead at once; a new one lacks the role.
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let with_old_token =
        set_role(&app, Method::PUT, Some(&bob.access_token), &bob_id, "admin").await;
    assert_unauthorized(with_old_token).await;
    let again = assert_tokens(app.login("bob@example.com", PASSWORD).await, StatusCode::OK).await;
    assert_eq!(roles_of(&again.access_token), ["user"]);
}

async fn only_admins_change_roles_and_bad_targets_are_404(backend: Backend) {
    // Arrange
    let (app, admin) = app_with_admin(backend).await;
    let ann = app.register_account("ann@example.com").await;
    let ann_id = user_id_of(&ann.access_token);

    // Act + Assert: a plain user is forbidden, even for themself.
    for method in [Method::PUT, Method::DELETE] {
        let response = set_role(
            &app,
            method.clone(),
            Some(&ann.access_token),
            &ann_id,
            "admin",
        )
        .await;
        assert_problem(response, StatusCode::FORBIDDEN).await;
        assert_unauthorized(set_role(&app, method, None, &ann_id, "admin").await).await;
    }
    // Unknown users and roles that are not granted by hand.
    let unknown = uuid::Uuid::now_v7().to_string();
    for (user, role) in [
        (unknown.as_str(), "admin"),
        ("not-a-uuid", "admin"),
        (ann_id.as_str(), "superuser"),
        (ann_id.as_str(), "user"),
        (ann_id.as_str(), "service"),
    ] {
        let response = set_role(&app, Method::PUT, Some(&admin), user, role).await;
        assert_problem(response, StatusCode::NOT_FOUND).await;
    }
    // Nothing changed: Ann's session lives, her roles are as they were.
    let again = assert_tokens(app.refresh(&ann.refresh_token).await, StatusCode::OK).await;
    assert_eq!(roles_of(&again.access_token), ["user"]);
}

async fn the_audit_log_is_for_admins_only(backend: Backend) {
    // Arrange
    let (app, _) = app_with_admin(backend).await;
    let ann = app.register_account("ann@example.com").await;

    // Act + Assert
    let response = app
        .send_as(
            Method::GET,
            "/v1/auth/admin/audit",
            Some(&ann.access_token),
            None,
        )
        .await;
    let problem: Value = assert_problem(response, StatusCode::FORBIDDEN).await;
    assert!(problem["detail"].as_str().unwrap().contains("admin"));
    assert_unauthorized(
        app.send_as(Method::GET, "/v1/auth/admin/audit", None, None)
            .await,
    )
    .await;
}

on_both_backends!(
    the_bootstrap_admin_gets_the_admin_role_at_registration,
    naming_a_registered_account_makes_it_admin_at_startup,
    granting_admin_ends_the_users_sessions_and_new_tokens_carry_it,
    revoking_admin_ends_the_users_sessions_and_takes_the_role_away,
    only_admins_change_roles_and_bad_targets_are_404,
    the_audit_log_is_for_admins_only,
);

/// A role change that keeps losing its compare-and-swap (here a trigger
/// swallows every role update, as endless concurrent changes would) gives
/// up with a 503 problem, writing nothing.
#[tokio::test]
async fn a_role_change_that_keeps_losing_its_swap_is_503_and_changes_nothing() {
    // Arrange
    let (app, admin) = app_with_admin(Backend::Postgres).await;
    let ann = app.register_account("ann@example.com").await;
    let ann_id = user_id_of(&ann.access_token);
    portico_common::on_db!(app.store.db(), pool => {
        sqlx::raw_sql(
            "CREATE FUNCTION swallow_role_updates() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN IF NEW.roles <> OLD.roles THEN RETURN NULL; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER swallow_role_updates BEFORE UPDATE ON credentials \
             FOR EACH ROW EXECUTE FUNCTION swallow_role_updates();",
        )
        .execute(pool)
        .await
        .unwrap();
    });

    // Act
    let response = set_role(&app, Method::PUT, Some(&admin), &ann_id, "admin").await;

    // Assert
    assert!(response.headers().contains_key("retry-after"));
    let problem = assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("roles"),
        "{problem}"
    );
    assert_tokens(app.refresh(&ann.refresh_token).await, StatusCode::OK).await;
}

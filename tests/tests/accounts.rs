//! Accounts across the services, with real processes: a deletion in the
//! user service reaches auth as a signed webhook, and the account's tokens
//! stop working at the gateway; with auth down, deletions wait in the
//! outbox and are applied, in order, once it is back; auth's own events
//! survive auth dying before their delivery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use portico_e2e::{PASSWORD, System};
use portico_testkit::{
    Backend, eventually,
    tcp::TcpRelay,
    webhooks::{SECRET, WebhookEndpoint},
};
use serde_json::{Value, json};

/// Deletes the caller's account through the gateway, based on the profile
/// it reads first.
async fn delete_account(system: &System, access: &str) -> reqwest::Response {
    let profile = system
        .client
        .get(system.url("/v1/users/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(profile.status(), 200);
    let etag = profile.headers()["etag"].to_str().unwrap().to_owned();
    system
        .client
        .delete(system.url("/v1/users/me"))
        .bearer_auth(access)
        .header("if-match", etag)
        .send()
        .await
        .unwrap()
}

async fn status_of(
    system: &System,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    access: Option<&str>,
) -> u16 {
    let mut request = system.client.request(method, system.url(path));
    if let Some(access) = access {
        request = request.bearer_auth(access);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap().status().as_u16()
}

async fn deleting_an_account_refuses_its_tokens_within_a_second(backend: Backend) {
    // Arrange
    let system = System::start(backend).await;
    let tokens = system.register("leaving@example.com").await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    // Act
    let deleted = delete_account(&system, &access).await;
    let returned = Instant::now();
    assert_eq!(deleted.status(), 204, "{}", system.logs());

    // Assert: the access token is refused at the gateway itself (auth
    // revoked the session on the event; the gateway follows revocations),
    // where until then the user service answered (404 for the deleted
    // profile, then 401 as it learnt of the revocation too).
    let refused_after = eventually(
        Duration::from_secs(5),
        "the deleted account's access token refused at the gateway",
        || async {
            let response = system
                .client
                .get(system.url("/v1/users/me"))
                .bearer_auth(&access)
                .send()
                .await
                .unwrap();
            let elapsed = returned.elapsed();
            if response.status() != 401 {
                return None;
            }
            let request_id = response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            let line = eventually(Duration::from_secs(5), "the answer's access line", || {
                let log = system.gateway.log();
                let line = log
                    .lines()
                    .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                    .find(|line| {
                        line["target"] == "access" && line["request_id"] == request_id.as_str()
                    });
                async move { line }
            })
            .await;
            // No upstream: answered at the edge.
            line.get("upstream").is_none().then_some(elapsed)
        },
    )
    .await;
    assert!(
        refused_after < Duration::from_secs(1),
        "refused at the gateway {refused_after:?} after the DELETE returned"
    );
    let refreshed = status_of(
        &system,
        reqwest::Method::POST,
        "/v1/auth/refresh",
        Some(json!({"refresh_token": refresh})),
        None,
    )
    .await;
    assert_eq!(refreshed, 401);
    let login = status_of(
        &system,
        reqwest::Method::POST,
        "/v1/auth/login",
        Some(json!({"email": "leaving@example.com", "password": PASSWORD})),
        None,
    )
    .await;
    assert_eq!(login, 401);
}

async fn deletions_wait_while_auth_is_down_and_apply_when_it_returns(backend: Backend) {
    // Arrange: two accounts, then auth stops.
    let mut system = System::start(backend).await;
    let first = system.register("first@example.com").await;
    let second = system.register("second@example.com").await;
    // The profiles are read before auth goes (the gateway needs auth's
    // keys, which it has cached).
    let accesses = [
        first["access_token"].as_str().unwrap().to_owned(),
        second["access_token"].as_str().unwrap().to_owned(),
    ];
    for access in &accesses {
        let live = status_of(
            &system,
            reqwest::Method::GET,
            "/v1/auth/sessions",
            None,
            Some(access),
        )
        .await;
        assert_eq!(live, 200, "the session is live before the deletion");
    }
    system.auth.kill_hard();

    // Act: both deletions are committed with auth down.
    for access in &accesses {
        let deleted = delete_account(&system, access).await;
        assert_eq!(deleted.status(), 204, "{}", system.logs());
    }
    let client = system.client.clone();
    system.auth.restart(&client).await;

    // Assert: once auth is back, both are applied: their sessions end
    // (listing them changes nothing, where a refresh would rotate).
    for access in &accesses {
        eventually(
            Duration::from_secs(30),
            "the deletion applied after auth returned",
            || async {
                let status = status_of(
                    &system,
                    reqwest::Method::GET,
                    "/v1/auth/sessions",
                    None,
                    Some(access),
                )
                .await;
                (status == 401).then_some(())
            },
        )
        .await;
    }
    let login = status_of(
        &system,
        reqwest::Method::POST,
        "/v1/auth/login",
        Some(json!({"email": "first@example.com", "password": PASSWORD})),
        None,
    )
    .await;
    assert_eq!(login, 401);
}

/// The user service dies (SIGKILL) after committing a deletion and before
/// delivering its event (auth is down, so delivery cannot have happened):
/// after both return, the event is delivered and auth applies it once.
async fn a_deletion_survives_the_user_service_dying_before_delivery(backend: Backend) {
    // Arrange: an admin (to read auth's audit log) and an account.
    // A replica killed while it holds a claim leaves the delivery to the
    // others once the lease passes: a short one here.
    let mut system = System::start_with(
        backend,
        &[
            ("auth", "ADMIN__BOOTSTRAP_EMAIL", "root@example.com"),
            ("user", "EVENTS__TIMEOUT_MS", "1000"),
            ("user", "EVENTS__LEASE_MS", "5000"),
        ],
    )
    .await;
    let admin = system.register("root@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let account = system.register("doomed@example.com").await;
    let access = account["access_token"].as_str().unwrap().to_owned();
    let user_id = account["user_id"].as_str().unwrap().to_owned();
    system.auth.kill_hard();

    // Act: the deletion commits; every user replica dies before auth is
    // back; then auth, then the users, return.
    let deleted = delete_account(&system, &access).await;
    assert_eq!(deleted.status(), 204, "{}", system.logs());
    for user in &mut system.users {
        user.kill_hard();
    }
    let client = system.client.clone();
    system.auth.restart(&client).await;
    for user in &mut system.users {
        user.restart(&client).await;
    }

    // Assert: applied — the session ended — and applied once.
    eventually(Duration::from_secs(30), "the deletion applied", || async {
        let status = status_of(
            &system,
            reqwest::Method::GET,
            "/v1/auth/sessions",
            None,
            Some(&access),
        )
        .await;
        (status == 401).then_some(())
    })
    .await;
    let audit: Value = system
        .client
        .get(system.url(&format!(
            "/v1/auth/admin/audit?type=account_deleted&user_id={user_id}"
        )))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
}

/// auth dies (SIGKILL) after committing a password change and before its
/// event reached the subscriber (the way there is cut): after it returns,
/// the event is delivered, signed, once.
async fn an_auth_event_survives_auth_dying_before_delivery(backend: Backend) {
    // Arrange: a customer endpoint behind a relay the test cuts.
    let endpoint = WebhookEndpoint::default();
    let url = endpoint.start().await;
    let relay = TcpRelay::in_front_of(&url).await;
    let through = relay.url_through(&url);
    relay.cut();
    let subscribers = format!(
        "[{{name = \"crm\", url = \"{through}\", secret = \"{SECRET}\", types = [\"auth.password_changed\"]}}]"
    );
    let mut system = System::start_with(
        backend,
        &[
            ("auth", "OUTBOX__SUBSCRIBERS", &subscribers),
            ("auth", "OUTBOX__TIMEOUT_MS", "1000"),
            ("auth", "OUTBOX__LEASE_MS", "5000"),
            ("auth", "OUTBOX__BACKOFF_BASE_MS", "100"),
            ("auth", "OUTBOX__BACKOFF_MAX_MS", "200"),
        ],
    )
    .await;
    let account = system.register("moving@example.com").await;
    let access = account["access_token"].as_str().unwrap().to_owned();
    let user_id = account["user_id"].as_str().unwrap().to_owned();

    // Act: the change commits, its delivery fails; auth dies; the way to
    // the endpoint comes back, then auth.
    let changed = status_of(
        &system,
        reqwest::Method::POST,
        "/v1/auth/password",
        Some(json!({"current_password": PASSWORD, "new_password": "a new and longer passphrase"})),
        Some(&access),
    )
    .await;
    assert_eq!(changed, 204, "{}", system.logs());
    // The relay has tried and failed: the event is committed and pending.
    eventually(Duration::from_secs(30), "a failed attempt", || async {
        let text = system.auth.metrics(&system.client).await?;
        text.lines()
            .any(|l| l.starts_with("events_delivery_failures_total{subscriber=\"crm\"}"))
            .then_some(())
    })
    .await;
    system.auth.kill_hard();
    relay.restore();
    let client = system.client.clone();
    system.auth.restart(&client).await;

    // Assert: delivered; once auth reports it delivered with nothing
    // pending, every attempt there will be has been answered — once.
    eventually(Duration::from_secs(30), "the delivery recorded", || async {
        let text = system.auth.metrics(&system.client).await?;
        let has = |line: &str| text.lines().any(|l| l == line);
        (has("events_delivered_total{subscriber=\"crm\"} 1")
            && has("events_backlog{subscriber=\"crm\"} 0"))
        .then_some(())
    })
    .await;
    let received = endpoint.received();
    assert_eq!(received.len(), 1, "delivered once: {received:?}");
    assert_eq!(received[0]["type"], "auth.password_changed");
    assert_eq!(received[0]["subject"], user_id.as_str());
    assert_eq!(received[0]["data"]["method"], "change");
    assert!(
        endpoint.unverified().is_empty(),
        "{:?}",
        endpoint.unverified()
    );
}

async fn export(system: &System, access: &str) -> reqwest::Response {
    system
        .client
        .get(system.url("/v1/users/me/export"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
}

async fn the_export_holds_both_services_data_and_is_a_clear_503_while_auth_is_down(
    backend: Backend,
) {
    // Arrange
    let mut system = System::start(backend).await;
    let tokens = system.register("export@example.com").await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();

    // Act + Assert: through the gateway, one document from both services.
    let response = export(&system, &access).await;
    assert_eq!(response.status(), 200, "{}", system.logs());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["profile"]["email"], "export@example.com");
    assert_eq!(body["auth"]["email"], "export@example.com");
    assert_eq!(body["auth"]["sessions"].as_array().unwrap().len(), 1);

    // Auth down: the user service says why, with a request id, at once.
    system.auth.kill_hard();
    let started = Instant::now();
    let down = export(&system, &access).await;
    assert_eq!(down.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(down.headers()["content-type"], "application/problem+json");
    let problem: Value = down.json().await.unwrap();
    assert!(problem["request_id"].is_string(), "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("auth"),
        "{problem}"
    );

    // Back: the export works again, no restart of the user service.
    system.auth.restart(&system.client).await;
    eventually(
        Duration::from_secs(10),
        "the export after auth returned",
        || async { (export(&system, &access).await.status() == 200).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn the_export_holds_both_services_data_and_is_a_clear_503_while_auth_is_down_on_postgres() {
    the_export_holds_both_services_data_and_is_a_clear_503_while_auth_is_down(Backend::Postgres)
        .await;
}

#[tokio::test]
async fn an_auth_event_survives_auth_dying_before_delivery_on_postgres() {
    an_auth_event_survives_auth_dying_before_delivery(Backend::Postgres).await;
}

#[tokio::test]
async fn an_auth_event_survives_auth_dying_before_delivery_on_sqlite() {
    an_auth_event_survives_auth_dying_before_delivery(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_deletion_survives_the_user_service_dying_before_delivery_on_postgres() {
    a_deletion_survives_the_user_service_dying_before_delivery(Backend::Postgres).await;
}

#[tokio::test]
async fn deleting_an_account_refuses_its_tokens_within_a_second_on_postgres() {
    deleting_an_account_refuses_its_tokens_within_a_second(Backend::Postgres).await;
}

#[tokio::test]
async fn deleting_an_account_refuses_its_tokens_within_a_second_on_sqlite() {
    deleting_an_account_refuses_its_tokens_within_a_second(Backend::Sqlite).await;
}

#[tokio::test]
async fn deletions_wait_while_auth_is_down_and_apply_when_it_returns_on_sqlite() {
    deletions_wait_while_auth_is_down_and_apply_when_it_returns(Backend::Sqlite).await;
}

//! MFA with TOTP, driven as an authenticator app would (an independent
//! RFC 6238 implementation reading the secret) with the service's clock
//! moved instead of waited on.

use std::sync::Arc;

use portico_auth::domain::audit::AuditKind;
use portico_common::clock::{Clock, ManualClock};
use portico_testkit::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use crate::helpers::{
    PASSWORD, TestApp, assert_problem, assert_tokens, assert_unauthorized, on_both_backends,
};

/// An account, its access token, and the service's clock.
struct Account {
    app: TestApp,
    clock: Arc<ManualClock>,
    access: String,
}

async fn account(backend: Backend) -> Account {
    account_with(backend, |_| {}).await
}

async fn account_with(
    backend: Backend,
    customise: impl FnOnce(&mut portico_auth::Config),
) -> Account {
    // Mid-step, so codes of the current step stay current for a while.
    let start = OffsetDateTime::from_unix_timestamp(
        OffsetDateTime::now_utc().unix_timestamp() / 30 * 30 + 5,
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let app = TestApp::spawn_with_clock_and_config(backend, clock.clone(), customise).await;
    let access = app.register_account("ann@example.com").await.access_token;
    Account { app, clock, access }
}

/// A six-digit code that is not `right`.
fn wrong_code(right: &str) -> &'static str {
    if right == "000000" {
        "111111"
    } else {
        "000000"
    }
}

/// What an authenticator app shows at the service's current time.
fn code(secret: &str, clock: &ManualClock) -> String {
    let key = data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .unwrap();
    let now = u64::try_from(clock.now().unix_timestamp()).unwrap();
    totp_lite::totp_custom::<totp_lite::Sha1>(30, 6, &key, now)
}

impl Account {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
        self.app
            .send_as(method, path, Some(&self.access), body.as_ref())
            .await
    }

    /// Enrols an authenticator; its base32 secret and the whole answer.
    async fn enrol(&self) -> (String, Value) {
        let response = self
            .call(
                Method::POST,
                "/v1/auth/mfa/totp",
                Some(json!({"password": PASSWORD})),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body: Value = response.json().await.unwrap();
        (body["secret"].as_str().unwrap().to_owned(), body)
    }

    /// Enrols and confirms: MFA on. The secret and the recovery codes.
    async fn turn_on(&self) -> (String, Vec<String>) {
        let (secret, _) = self.enrol().await;
        let response = self
            .call(
                Method::POST,
                "/v1/auth/mfa/totp/confirm",
                Some(json!({"code": code(&secret, &self.clock)})),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        let codes = body["recovery_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        // The confirming code's step is used up: the next sign-in needs the
        // next one.
        self.clock.advance(Duration::seconds(30));
        (secret, codes)
    }

    /// Signs in with the password: the `mfa_token` of the challenge.
    async fn challenge(&self) -> String {
        let response = self.app.login("ann@example.com", PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["mfa_required"], true, "{body}");
        assert!(body.get("access_token").is_none(), "{body}");
        body["mfa_token"].as_str().unwrap().to_owned()
    }

    async fn complete(&self, body: Value) -> reqwest::Response {
        self.app.post_json("/v1/auth/login/mfa", &body).await
    }

    async fn status(&self) -> Value {
        let response = self.call(Method::GET, "/v1/auth/mfa", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn audited(&self, kind: AuditKind) -> usize {
        crate::audit::events_of_kind(&self.app, kind).await.len()
    }
}

async fn an_authenticator_enrolled_and_confirmed_makes_sign_in_need_its_code(backend: Backend) {
    // Arrange
    let account = account(backend).await;
    let (secret, enrolled) = account.enrol().await;
    let uri = enrolled["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Portico:ann%40example.com?secret=")
            && uri.contains(&secret)
            && uri.contains("issuer=Portico"),
        "{uri}"
    );
    assert_eq!(account.status().await["totp"], "pending");
    // Not on until confirmed: the password alone still signs in.
    assert_tokens(
        account.app.login("ann@example.com", PASSWORD).await,
        StatusCode::OK,
    )
    .await;

    // Act
    let confirmed = account
        .call(
            Method::POST,
            "/v1/auth/mfa/totp/confirm",
            Some(json!({"code": code(&secret, &account.clock)})),
        )
        .await;
    let recovery: Value = confirmed.json().await.unwrap();
    account.clock.advance(Duration::seconds(30));
    let mfa_token = account.challenge().await;
    let sessions_before = account.app.counts().await.1;
    let tokens = account
        .complete(json!({"mfa_token": mfa_token, "code": code(&secret, &account.clock)}))
        .await;

    // Assert
    assert_eq!(recovery["recovery_codes"].as_array().unwrap().len(), 10);
    let tokens = assert_tokens(tokens, StatusCode::OK).await;
    assert_eq!(account.app.counts().await.1, sessions_before + 1);
    let status = account.status().await;
    assert_eq!(status["totp"], "on");
    assert_eq!(status["recovery_codes_left"], 10);
    assert_eq!(account.audited(AuditKind::MfaEnabled).await, 1);
    // The session is a real one.
    let refreshed = account.app.refresh(&tokens.refresh_token).await;
    assert_tokens(refreshed, StatusCode::OK).await;
}

async fn a_code_signs_in_once_and_a_replay_is_refused(backend: Backend) {
    // Arrange
    let account = account(backend).await;
    let (secret, _) = account.turn_on().await;
    let used = code(&secret, &account.clock);
    let first = account.challenge().await;
    assert_tokens(
        account
            .complete(json!({"mfa_token": first, "code": used}))
            .await,
        StatusCode::OK,
    )
    .await;
    let sessions = account.app.counts().await.1;

    // Act: the same code, within its window, on a fresh challenge; and the
    // used challenge again with a fresh code.
    let second = account.challenge().await;
    let replay = account
        .complete(json!({"mfa_token": second, "code": used}))
        .await;
    account.clock.advance(Duration::seconds(30));
    let reused_token = account
        .complete(json!({"mfa_token": first, "code": code(&secret, &account.clock)}))
        .await;

    // Assert
    let problem = assert_problem(replay, StatusCode::UNAUTHORIZED).await;
    assert_eq!(problem["detail"], "the code does not match");
    let problem = assert_problem(reused_token, StatusCode::UNAUTHORIZED).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("mfa_token"),
        "{problem}"
    );
    assert_eq!(account.app.counts().await.1, sessions, "no session opened");
    assert!(account.audited(AuditKind::MfaFailed).await >= 1);
}

async fn wrong_codes_end_the_challenge_after_five_and_are_throttled(backend: Backend) {
    // Arrange
    let account = account(backend).await;
    let (secret, _) = account.turn_on().await;
    let right = code(&secret, &account.clock);
    let wrong = wrong_code(&right);
    let mfa_token = account.challenge().await;

    // Act: five wrong codes; then the right one on the same challenge.
    for _ in 0..5 {
        let response = account
            .complete(json!({"mfa_token": mfa_token, "code": wrong}))
            .await;
        assert_problem(response, StatusCode::UNAUTHORIZED).await;
    }
    let too_late = account
        .complete(json!({"mfa_token": mfa_token, "code": right}))
        .await;
    // A new challenge, one more wrong code: the throttle locks.
    let next = account.challenge().await;
    let sixth = account
        .complete(json!({"mfa_token": next, "code": wrong}))
        .await;
    let locked = account
        .complete(json!({"mfa_token": next, "code": right}))
        .await;

    // Assert
    let problem = assert_problem(too_late, StatusCode::UNAUTHORIZED).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("mfa_token"),
        "{problem}"
    );
    assert_problem(sixth, StatusCode::UNAUTHORIZED).await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(locked.headers().contains_key("retry-after"));
    assert_eq!(account.audited(AuditKind::MfaFailed).await, 6);

    // Once the lock has passed, the right code works.
    // (5 minutes for the client and account: `mfa_throttle`).
    // That challenge has expired by then (5 minutes too): a new sign-in.
    account.clock.advance(Duration::minutes(6));
    let fresh = account.challenge().await;
    let response = account
        .complete(json!({"mfa_token": fresh, "code": code(&secret, &account.clock)}))
        .await;
    assert_tokens(response, StatusCode::OK).await;
}

async fn a_recovery_code_signs_in_once(backend: Backend) {
    // Arrange
    let account = account(backend).await;
    let (_, codes) = account.turn_on().await;
    let typed = codes[3].to_uppercase();

    // Act
    let first = account.challenge().await;
    let signed_in = account
        .complete(json!({"mfa_token": first, "recovery_code": typed}))
        .await;
    let second = account.challenge().await;
    let again = account
        .complete(json!({"mfa_token": second, "recovery_code": codes[3]}))
        .await;

    // Assert
    assert_tokens(signed_in, StatusCode::OK).await;
    assert_problem(again, StatusCode::UNAUTHORIZED).await;
    assert_eq!(account.status().await["recovery_codes_left"], 9);
    assert_eq!(account.audited(AuditKind::RecoveryCodeUsed).await, 1);
}

async fn disabling_needs_a_code_and_then_the_password_alone_signs_in(backend: Backend) {
    // Arrange
    let account = account(backend).await;
    let (secret, codes) = account.turn_on().await;
    let right = code(&secret, &account.clock);
    let wrong = wrong_code(&right);

    // Act
    let refused = account
        .call(
            Method::POST,
            "/v1/auth/mfa/totp/disable",
            Some(json!({"code": wrong})),
        )
        .await;
    let still_on = account.status().await;
    let disabled = account
        .call(
            Method::POST,
            "/v1/auth/mfa/totp/disable",
            Some(json!({"recovery_code": codes[0]})),
        )
        .await;

    // Assert
    assert_problem(refused, StatusCode::FORBIDDEN).await;
    assert_eq!(still_on["totp"], "on");
    assert_eq!(disabled.status(), StatusCode::NO_CONTENT);
    assert_eq!(account.status().await["totp"], "off");
    assert_tokens(
        account.app.login("ann@example.com", PASSWORD).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(account.audited(AuditKind::MfaDisabled).await, 1);
}

async fn the_secret_is_sealed_at_rest(backend: Backend) {
    // Arrange
    let account = account(backend).await;
    let (secret, _) = account.enrol().await;
    let raw = data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .unwrap();

    // Act
    let stored: Vec<u8> = portico_common::on_db!(account.app.store.db(), pool => {
        sqlx::query_scalar("SELECT sealed_secret FROM totp_factors")
            .fetch_one(pool)
            .await
            .unwrap()
    });

    // Assert
    assert!(
        stored.len() > raw.len(),
        "nonce and tag around the ciphertext"
    );
    assert!(
        !stored.windows(raw.len()).any(|w| w == raw.as_slice()),
        "the secret is not stored in the clear"
    );
}

async fn mfa_requests_out_of_order_or_malformed_are_refused_and_change_nothing(backend: Backend) {
    // Arrange
    let account = account(backend).await;

    // Act + Assert: nothing enrolled yet.
    let confirm = |code: &'static str| {
        account.call(
            Method::POST,
            "/v1/auth/mfa/totp/confirm",
            Some(json!({"code": code})),
        )
    };
    assert_problem(confirm("123456").await, StatusCode::CONFLICT).await;
    let disable = account
        .call(
            Method::POST,
            "/v1/auth/mfa/totp/disable",
            Some(json!({"code": "123456"})),
        )
        .await;
    assert_problem(disable, StatusCode::CONFLICT).await;
    let wrong_password = account
        .call(
            Method::POST,
            "/v1/auth/mfa/totp",
            Some(json!({"password": "not the password at all"})),
        )
        .await;
    assert_problem(wrong_password, StatusCode::FORBIDDEN).await;
    let anonymous = account
        .app
        .send_as(
            Method::POST,
            "/v1/auth/mfa/totp",
            None,
            Some(&json!({"password": PASSWORD})),
        )
        .await;
    assert_unauthorized(anonymous).await;
    assert_eq!(account.status().await["totp"], "off");

    // Malformed codes are 422, counted as no guess.
    account.enrol().await;
    for malformed in ["12345", "12345a", "1234567"] {
        let problem =
            assert_problem(confirm(malformed).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["errors"][0]["field"], "code", "{problem}");
    }
    assert_eq!(account.status().await["totp"], "pending");

    // Once on: enrolling again is 409; a sign-in's completion needs exactly
    // one proof, a live token, and a token not expired.
    let (secret, _) = account.turn_on().await;
    let again = account
        .call(
            Method::POST,
            "/v1/auth/mfa/totp",
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_problem(again, StatusCode::CONFLICT).await;
    let mfa_token = account.challenge().await;
    let both = account
        .complete(json!({"mfa_token": mfa_token, "code": "123456", "recovery_code": "abcd"}))
        .await;
    assert_problem(both, StatusCode::UNPROCESSABLE_ENTITY).await;
    let neither = account.complete(json!({"mfa_token": mfa_token})).await;
    assert_problem(neither, StatusCode::UNPROCESSABLE_ENTITY).await;
    let unknown = account
        .complete(json!({"mfa_token": "not-a-token", "code": code(&secret, &account.clock)}))
        .await;
    assert_problem(unknown, StatusCode::UNAUTHORIZED).await;
    account.clock.advance(Duration::seconds(301));
    let expired = account
        .complete(json!({"mfa_token": mfa_token, "code": code(&secret, &account.clock)}))
        .await;
    assert_problem(expired, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        account.audited(AuditKind::MfaFailed).await,
        0,
        "no guess was made"
    );
}

async fn turning_mfa_on_and_off_is_announced_to_subscribers(backend: Backend) {
    // Arrange
    let endpoint = portico_testkit::webhooks::WebhookEndpoint::default();
    let url = endpoint.start().await;
    let account = account_with(backend, |config| {
        config.outbox.subscribers = vec![crate::outbox::subscriber(url, &[])];
    })
    .await;

    // Act
    let (_, codes) = account.turn_on().await;
    let disabled = account
        .call(
            Method::POST,
            "/v1/auth/mfa/totp/disable",
            Some(json!({"recovery_code": codes[0]})),
        )
        .await;
    assert_eq!(disabled.status(), StatusCode::NO_CONTENT);

    // Assert: the enrolment alone (not confirmed) announced nothing.
    let received = endpoint.received_at_least(2).await;
    let seen: Vec<(&str, i64)> = received
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["version"].as_i64().unwrap()))
        .collect();
    assert_eq!(seen, [("auth.mfa_enabled", 1), ("auth.mfa_disabled", 2)]);
    assert_eq!(received[0]["data"]["factor"], "totp");
    assert_eq!(received[1]["data"]["proof"], "recovery_code");
    let body = serde_json::to_string(&received).unwrap();
    assert!(!body.contains(&codes[0]), "no recovery code in events");
    portico_testkit::webhooks::assert_each_documented(
        &format!("{}/openapi.json", account.app.api),
        &received,
    )
    .await;
}

on_both_backends!(
    turning_mfa_on_and_off_is_announced_to_subscribers,
    wrong_codes_from_many_addresses_still_lock_the_accounts_code_entry,
    a_kek_rotation_reseals_totp_secrets_so_the_old_kek_can_go,
    an_authenticator_enrolled_and_confirmed_makes_sign_in_need_its_code,
    a_code_signs_in_once_and_a_replay_is_refused,
    wrong_codes_end_the_challenge_after_five_and_are_throttled,
    a_recovery_code_signs_in_once,
    disabling_needs_a_code_and_then_the_password_alone_signs_in,
    the_secret_is_sealed_at_rest,
    mfa_requests_out_of_order_or_malformed_are_refused_and_change_nothing,
);

/// Another key-encryption key (32 bytes, base64), for a KEK rotation.
const OTHER_KEK: &str = "YW5vdGhlciBrZWssIGFsc28gdGhpcnR5LXR3byEhISE=";

async fn a_kek_rotation_reseals_totp_secrets_so_the_old_kek_can_go(backend: Backend) {
    // Arrange: an authenticator enrolled under the first KEK.
    let app = TestApp::spawn(backend).await;
    let access = app.register_account("ann@example.com").await.access_token;
    let enrolled = app
        .send_as(
            Method::POST,
            "/v1/auth/mfa/totp",
            Some(&access),
            Some(&json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(enrolled.status(), StatusCode::CREATED);
    let secret = enrolled.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    // Act: the rotation's rollouts — a replica with the new KEK naming the
    // old one (it re-seals as it starts), then one with the new KEK alone.
    app.spawn_replica(|config| {
        config.signing_keys.encryption_key = Some(secrecy::SecretString::from(OTHER_KEK));
        config.signing_keys.previous_encryption_keys =
            vec![secrecy::SecretString::from(portico_testkit::TEST_KEK)];
    })
    .await;
    let only_new = app
        .spawn_replica(|config| {
            config.signing_keys.encryption_key = Some(secrecy::SecretString::from(OTHER_KEK));
            config.signing_keys.previous_encryption_keys = Vec::new();
        })
        .await;

    // Assert: the replica without the old KEK opens the secret.
    let key = data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .unwrap();
    let now = u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap();
    let code = totp_lite::totp_custom::<totp_lite::Sha1>(30, 6, &key, now);
    let confirmed = reqwest::Client::new()
        .post(format!("{only_new}/v1/auth/mfa/totp/confirm"))
        .bearer_auth(&access)
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), StatusCode::OK);
}

async fn wrong_codes_from_many_addresses_still_lock_the_accounts_code_entry(backend: Backend) {
    // Arrange: MFA on; a guesser who knows the password moves to a new
    // address for every guess (so no per-address counter fills).
    let account = account(backend).await;
    let (secret, _) = account.turn_on().await;
    let right = code(&secret, &account.clock);
    let wrong = wrong_code(&right);
    let from = |n: usize| format!("203.0.113.{n}");
    let guess = async |n: usize, code: &str| {
        let login = account
            .app
            .login_via("ann@example.com", PASSWORD, &from(n))
            .await;
        let body: Value = login.json().await.unwrap();
        let token = body["mfa_token"].as_str().unwrap().to_owned();
        account
            .app
            .client
            .post(format!("{}/v1/auth/login/mfa", account.app.api))
            .header("x-forwarded-for", from(n))
            .json(&json!({"mfa_token": token, "code": code}))
            .send()
            .await
            .unwrap()
    };

    // Act: eleven wrong codes (one past the account's daily ten), each from
    // its own address; then the right code from yet another.
    for n in 1..=11 {
        assert_problem(guess(n, wrong).await, StatusCode::UNAUTHORIZED).await;
    }
    let locked = guess(12, &right).await;

    // Assert
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(locked.headers().contains_key("retry-after"));
}

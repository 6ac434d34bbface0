//! Email verification and password reset, with mail sent over SMTP to a
//! real server (aiosmtpd) and the links read from what it received.

use std::sync::Arc;

use portico_auth::{domain::audit::AuditKind, mailer};
use portico_common::clock::ManualClock;
use portico_testkit::{
    Backend,
    issuer::claims_of,
    smtp::{ReceivedMail, SmtpServer},
};
use reqwest::{Method, StatusCode};
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::helpers::{
    PASSWORD, TestApp, assert_problem, assert_tokens, assert_unauthorized, on_both_backends,
    registration,
};

const NEW_PASSWORD: &str = "a brand new passphrase";

struct Mailing {
    app: TestApp,
    smtp: SmtpServer,
    clock: Arc<ManualClock>,
}

async fn mailing(backend: Backend, customise: impl FnOnce(&mut portico_auth::Config)) -> Mailing {
    let smtp = SmtpServer::start().await;
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let port = smtp.port;
    let app = TestApp::spawn_with_clock_and_config(backend, clock.clone(), |config| {
        config.mail.transport = mailer::TransportKind::Smtp;
        config.mail.smtp.host = "127.0.0.1".into();
        config.mail.smtp.port = port;
        config.mail.smtp.tls = mailer::SmtpTls::None;
        config.mail.link_base = "https://app.example.com/".into();
        customise(config);
    })
    .await;
    Mailing { app, smtp, clock }
}

impl Mailing {
    async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.app.post_json(path, &body).await
    }

    async fn audited(&self, kind: AuditKind) -> usize {
        crate::audit::events_of_kind(&self.app, kind).await.len()
    }

    /// The `n`th message (from 1), once it has arrived.
    async fn mail(&self, n: usize) -> ReceivedMail {
        self.smtp.wait_for(n).await.swap_remove(n - 1)
    }
}

/// [`mailing`] with a subscriber of every event auth sends.
async fn mailing_announced(
    backend: Backend,
) -> (Mailing, portico_testkit::webhooks::WebhookEndpoint) {
    let endpoint = portico_testkit::webhooks::WebhookEndpoint::default();
    let url = endpoint.start().await;
    let mailing = mailing(backend, |config| {
        config.outbox.subscribers = vec![crate::outbox::subscriber(url, &[])];
    })
    .await;
    (mailing, endpoint)
}

/// Asks for a reset link for ann@example.com and sets `NEW_PASSWORD`
/// with it (the `nth` mail); the confirmation's answer.
async fn reset_by_mail(mailing: &Mailing, nth: usize) -> reqwest::Response {
    mailing
        .post(
            "/v1/auth/password/reset/request",
            json!({"email": "ann@example.com"}),
        )
        .await;
    let reset = token_of(&mailing.mail(nth).await);
    mailing
        .post(
            "/v1/auth/password/reset/confirm",
            json!({"token": reset, "new_password": NEW_PASSWORD}),
        )
        .await
}

fn token_of(mail: &ReceivedMail) -> String {
    mail.link_token()
        .unwrap_or_else(|| panic!("no link in:\n{}", mail.raw))
}

async fn registration_mails_a_verification_link_that_works_once(backend: Backend) {
    // Arrange
    let mailing = mailing(backend, |_| {}).await;
    let registered = mailing.app.register_account("ann@example.com").await;
    assert_eq!(claims_of(&registered.access_token)["email_verified"], false);
    let mail = mailing.mail(1).await;

    // Act
    let confirmed = mailing
        .post(
            "/v1/auth/email/verify/confirm",
            json!({"token": token_of(&mail)}),
        )
        .await;
    let again = mailing
        .post(
            "/v1/auth/email/verify/confirm",
            json!({"token": token_of(&mail)}),
        )
        .await;

    // Assert
    assert_eq!(mail.header("To").as_deref(), Some("ann@example.com"));
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Confirm your email address")
    );
    assert!(
        mail.raw
            .contains("https://app.example.com/verify-email#token=")
    );
    assert_eq!(confirmed.status(), StatusCode::NO_CONTENT);
    assert_problem(again, StatusCode::BAD_REQUEST).await;
    let tokens = assert_tokens(
        mailing.app.login("ann@example.com", PASSWORD).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(claims_of(&tokens.access_token)["email_verified"], true);
    assert_eq!(mailing.audited(AuditKind::EmailVerified).await, 1);
}

async fn a_new_verification_mail_replaces_the_old_and_links_expire(backend: Backend) {
    // Arrange
    let mailing = mailing(backend, |_| {}).await;
    let access = mailing
        .app
        .register_account("ann@example.com")
        .await
        .access_token;
    let first = mailing.mail(1).await;
    let resend = async |access: &str| {
        mailing
            .app
            .send_as(
                Method::POST,
                "/v1/auth/email/verify/request",
                Some(access),
                None,
            )
            .await
    };

    // Act + Assert: a second mail; the first link no longer works.
    assert_eq!(resend(&access).await.status(), StatusCode::ACCEPTED);
    let second = mailing.mail(2).await;
    let superseded = mailing
        .post(
            "/v1/auth/email/verify/confirm",
            json!({"token": token_of(&first)}),
        )
        .await;
    assert_problem(superseded, StatusCode::BAD_REQUEST).await;

    // A day later the second has expired; a third works (asked from a new
    // session: the first one's access token has expired too).
    mailing
        .clock
        .advance(Duration::days(1) + Duration::seconds(1));
    let expired = mailing
        .post(
            "/v1/auth/email/verify/confirm",
            json!({"token": token_of(&second)}),
        )
        .await;
    assert_problem(expired, StatusCode::BAD_REQUEST).await;
    let access = assert_tokens(
        mailing.app.login("ann@example.com", PASSWORD).await,
        StatusCode::OK,
    )
    .await
    .access_token;
    assert_eq!(resend(&access).await.status(), StatusCode::ACCEPTED);
    let third = mailing.mail(3).await;
    let confirmed = mailing
        .post(
            "/v1/auth/email/verify/confirm",
            json!({"token": token_of(&third)}),
        )
        .await;
    assert_eq!(confirmed.status(), StatusCode::NO_CONTENT);

    // Verified: asking again is a conflict, and mails nothing.
    assert_problem(resend(&access).await, StatusCode::CONFLICT).await;
    assert_eq!(mailing.smtp.messages().len(), 3);
}

async fn a_reset_link_sets_the_password_once_and_ends_every_session(backend: Backend) {
    // Arrange: two sessions, and a reset asked for.
    let mailing = mailing(backend, |_| {}).await;
    let first = mailing.app.register_account("ann@example.com").await;
    let second = assert_tokens(
        mailing.app.login("ann@example.com", PASSWORD).await,
        StatusCode::OK,
    )
    .await;
    mailing.mail(1).await;
    let asked = mailing
        .post(
            "/v1/auth/password/reset/request",
            json!({"email": "Ann@Example.com"}),
        )
        .await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    let mail = mailing.mail(2).await;
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Reset your password")
    );
    let token = token_of(&mail);

    // Act: a weak password is refused without using the link; then the reset.
    let weak = mailing
        .post(
            "/v1/auth/password/reset/confirm",
            json!({"token": token, "new_password": "password"}),
        )
        .await;
    let reset = mailing
        .post(
            "/v1/auth/password/reset/confirm",
            json!({"token": token, "new_password": NEW_PASSWORD}),
        )
        .await;
    let replayed = mailing
        .post(
            "/v1/auth/password/reset/confirm",
            json!({"token": token, "new_password": "yet another passphrase"}),
        )
        .await;

    // Assert
    let problem = assert_problem(weak, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "new_password");
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert_problem(replayed, StatusCode::BAD_REQUEST).await;
    for session in [&first, &second] {
        assert_unauthorized(mailing.app.refresh(&session.refresh_token).await).await;
    }
    assert_unauthorized(mailing.app.login("ann@example.com", PASSWORD).await).await;
    let tokens = assert_tokens(
        mailing.app.login("ann@example.com", NEW_PASSWORD).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        claims_of(&tokens.access_token)["email_verified"],
        true,
        "the reset link reached the address"
    );
    assert_eq!(mailing.audited(AuditKind::PasswordReset).await, 1);
}

async fn a_reset_request_answers_the_same_for_any_address_and_mails_only_accounts(
    backend: Backend,
) {
    // Arrange
    let mailing = mailing(backend, |_| {}).await;
    mailing.app.register_account("ann@example.com").await;
    mailing.mail(1).await;

    // Act
    let unknown = mailing
        .post(
            "/v1/auth/password/reset/request",
            json!({"email": "nobody@example.com"}),
        )
        .await;
    let known = mailing
        .post(
            "/v1/auth/password/reset/request",
            json!({"email": "ann@example.com"}),
        )
        .await;

    // Assert: one answer; one mail, to the account. Both requests' work is
    // done once the service has counted them (it runs after the answer).
    let (unknown_status, known_status) = (unknown.status(), known.status());
    let unknown_body = unknown.bytes().await.unwrap();
    let known_body = known.bytes().await.unwrap();
    assert_eq!(unknown_status, StatusCode::ACCEPTED);
    assert_eq!(known_status, unknown_status);
    assert_eq!(known_body, unknown_body);
    let counted = |outcome: &'static str| {
        let app = &mailing.app;
        async move {
            let text = app
                .client
                .get(format!("{}/metrics", app.admin))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let (outcome, purpose) = (
                format!("outcome=\"{outcome}\""),
                "purpose=\"reset_password\"",
            );
            text.lines()
                .filter(|line| line.starts_with("auth_mail_links_total{"))
                .filter(|line| line.contains(&outcome) && line.contains(purpose))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        }
    };
    portico_testkit::eventually(
        std::time::Duration::from_secs(10),
        "both reset requests handled",
        || async {
            (counted("sent").await >= 1.0 && counted("not_wanted").await >= 1.0).then_some(())
        },
    )
    .await;
    let to: Vec<_> = mailing
        .smtp
        .messages()
        .iter()
        .map(|m| m.header("To").unwrap())
        .collect();
    assert_eq!(to, ["ann@example.com", "ann@example.com"]);
    assert_eq!(mailing.audited(AuditKind::PasswordResetRequested).await, 1);
}

async fn reset_requests_are_limited_per_address_alike_for_accounts_and_strangers(backend: Backend) {
    // Arrange
    let mailing = mailing(backend, |_| {}).await;
    mailing.app.register_account("ann@example.com").await;

    // Act: the same client asks for one address again and again.
    let mut statuses = Vec::new();
    for email in ["ann@example.com", "nobody@example.com"] {
        let mut sequence = Vec::new();
        for _ in 0..5 {
            let response = mailing
                .post("/v1/auth/password/reset/request", json!({"email": email}))
                .await;
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                assert!(response.headers().contains_key("retry-after"));
            }
            sequence.push(response.status().as_u16());
        }
        statuses.push(sequence);
    }

    // Assert: three go through, then 429 — the same for both.
    assert_eq!(statuses[0], [202, 202, 202, 429, 429]);
    assert_eq!(statuses[1], statuses[0]);
}

async fn with_verification_required_an_unverified_account_cannot_sign_in(backend: Backend) {
    // Arrange
    let mailing = mailing(backend, |config| config.email_verification.required = true).await;
    mailing.app.register_account("ann@example.com").await;
    let mail = mailing.mail(1).await;

    // Act
    let before = mailing.app.login("ann@example.com", PASSWORD).await;
    // Signed out, a new link is asked for by address.
    let asked = mailing
        .post(
            "/v1/auth/email/verify/request",
            json!({"email": "ann@example.com"}),
        )
        .await;
    let resent = mailing.mail(2).await;
    mailing
        .post(
            "/v1/auth/email/verify/confirm",
            json!({"token": token_of(&resent)}),
        )
        .await;
    let after = mailing.app.login("ann@example.com", PASSWORD).await;

    // Assert
    let problem = assert_problem(before, StatusCode::FORBIDDEN).await;
    assert!(problem["detail"].as_str().unwrap().contains("not verified"));
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    assert_ne!(token_of(&mail), token_of(&resent));
    assert_tokens(after, StatusCode::OK).await;
}

async fn mailed_token_requests_with_bad_input_are_refused_and_change_nothing(backend: Backend) {
    // Arrange
    let mailing = mailing(backend, |_| {}).await;
    mailing.app.register_account("ann@example.com").await;
    mailing.mail(1).await;

    // Act + Assert
    let not_an_email = mailing
        .post(
            "/v1/auth/password/reset/request",
            json!({"email": "not an email"}),
        )
        .await;
    let problem = assert_problem(not_an_email, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "email");
    let unknown_field = mailing
        .post(
            "/v1/auth/password/reset/request",
            json!({"email": "ann@example.com", "admin": true}),
        )
        .await;
    assert!(unknown_field.status().is_client_error());
    let forged = mailing
        .post(
            "/v1/auth/password/reset/confirm",
            json!({"token": "forged-token", "new_password": NEW_PASSWORD}),
        )
        .await;
    assert_problem(forged, StatusCode::BAD_REQUEST).await;
    let forged = mailing
        .post(
            "/v1/auth/email/verify/confirm",
            json!({"token": "forged-token"}),
        )
        .await;
    assert_problem(forged, StatusCode::BAD_REQUEST).await;
    let bad_bearer = mailing
        .app
        .send_as(
            Method::POST,
            "/v1/auth/email/verify/request",
            Some("not-a-jwt"),
            None,
        )
        .await;
    assert_unauthorized(bad_bearer).await;
    // Nothing changed: the old password works, no mail went out.
    assert_tokens(
        mailing.app.login("ann@example.com", PASSWORD).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(mailing.smtp.messages().len(), 1);
    assert_eq!(mailing.audited(AuditKind::PasswordReset).await, 0);
}

async fn the_file_transport_writes_owner_only_messages(backend: Backend) {
    // Arrange: the embedded default.
    let app = TestApp::spawn(backend).await;

    // Act
    let response = app.register(&registration("ann@example.com")).await;
    assert_eq!(response.status(), StatusCode::CREATED);

    // Assert
    let path = portico_testkit::eventually(
        std::time::Duration::from_secs(10),
        "a message file",
        || async {
            std::fs::read_dir(app.mail_dir.path())
                .ok()?
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .find(|path| path.extension().is_some_and(|e| e == "eml"))
        },
    )
    .await;
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "readable by the owner only");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("To: ann@example.com"), "{text}");
    assert!(text.contains("/verify-email#token="), "{text}");
}

async fn a_verified_address_and_a_reset_password_are_announced(backend: Backend) {
    // Arrange
    let (mailing, endpoint) = mailing_announced(backend).await;
    let registered = mailing.app.register_account("ann@example.com").await;
    let verification = token_of(&mailing.mail(1).await);

    // Act
    let verified = mailing
        .post(
            "/v1/auth/email/verify/confirm",
            json!({"token": verification}),
        )
        .await;
    assert_eq!(verified.status(), StatusCode::NO_CONTENT);
    let done = reset_by_mail(&mailing, 2).await;
    assert_eq!(done.status(), StatusCode::NO_CONTENT);

    // Assert
    let received = endpoint.received_at_least(2).await;
    let user_id = claims_of(&registered.access_token)["sub"].clone();
    assert_eq!(
        crate::outbox::kinds(&received),
        [
            ("user.email_verified".to_owned(), 1),
            ("auth.password_changed".to_owned(), 2)
        ]
    );
    assert_eq!(received[0]["data"], json!({"user_id": user_id}));
    assert_eq!(
        received[1]["data"],
        json!({"user_id": user_id, "method": "reset"})
    );
    assert!(received.iter().all(|e| e["subject"] == user_id));
    portico_testkit::webhooks::assert_each_documented(
        &format!("{}/openapi.json", mailing.app.api),
        &received,
    )
    .await;
}

async fn a_reset_of_an_unverified_address_announces_the_verification_first(backend: Backend) {
    // Arrange: the verification mail is not opened first.
    let (mailing, endpoint) = mailing_announced(backend).await;
    mailing.app.register_account("ann@example.com").await;
    let verification = token_of(&mailing.mail(1).await);

    // Act
    let done = reset_by_mail(&mailing, 2).await;

    // Assert: two facts, two events, in order.
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    let received = endpoint.received_at_least(2).await;
    assert_eq!(
        crate::outbox::kinds(&received),
        [
            ("user.email_verified".to_owned(), 1),
            ("auth.password_changed".to_owned(), 2)
        ]
    );
    assert_eq!(mailing.audited(AuditKind::EmailVerified).await, 1);
    assert_eq!(mailing.audited(AuditKind::PasswordReset).await, 1);

    // The verification link opened afterwards works, and is no new fact.
    let late = mailing
        .post(
            "/v1/auth/email/verify/confirm",
            json!({"token": verification}),
        )
        .await;
    assert_eq!(late.status(), StatusCode::NO_CONTENT);
    assert_eq!(mailing.audited(AuditKind::EmailVerified).await, 1);
    let subject = received[0]["subject"].as_str().unwrap().parse().unwrap();
    let stored = portico_common::outbox::store::for_subject(mailing.app.store.db().into(), subject)
        .await
        .unwrap();
    assert_eq!(stored.len(), 2, "no second user.email_verified");
}

on_both_backends!(
    a_reset_of_an_unverified_address_announces_the_verification_first,
    a_verified_address_and_a_reset_password_are_announced,
    registration_mails_a_verification_link_that_works_once,
    a_new_verification_mail_replaces_the_old_and_links_expire,
    a_reset_link_sets_the_password_once_and_ends_every_session,
    a_reset_request_answers_the_same_for_any_address_and_mails_only_accounts,
    reset_requests_are_limited_per_address_alike_for_accounts_and_strangers,
    with_verification_required_an_unverified_account_cannot_sign_in,
    mailed_token_requests_with_bad_input_are_refused_and_change_nothing,
    the_file_transport_writes_owner_only_messages,
);

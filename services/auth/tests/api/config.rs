//! Configuration rules checked before the service starts.

use portico_auth::Config;
use portico_common::config::ServiceConfig as _;
use portico_testkit::{Backend, TestDatabase};

/// The built-in defaults with the one required secret given.
fn built_in_with_kek() -> Config {
    let mut config = Config::built_in();
    config.signing_keys.encryption_key =
        Some(secrecy::SecretString::from(portico_testkit::TEST_KEK));
    config
}

#[test]
fn built_in_defaults_are_valid_once_the_kek_is_given() {
    assert!(built_in_with_kek().validate().is_ok());
}

#[test]
fn a_missing_or_unusable_kek_is_refused_naming_the_key() {
    let error = Config::built_in().validate().unwrap_err().to_string();
    assert!(error.contains("signing_keys.encryption_key"), "{error}");
    assert!(
        error.contains("PORTICO_AUTH_SIGNING_KEYS__ENCRYPTION_KEY"),
        "{error}"
    );
    for bad in ["short", "bm90IDMyIGJ5dGVz"] {
        let mut config = built_in_with_kek();
        config.signing_keys.encryption_key = Some(secrecy::SecretString::from(bad));
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("signing_keys.encryption_key"), "{error}");
        assert!(!error.contains(bad), "the secret is not echoed: {error}");
    }
    let mut config = built_in_with_kek();
    config.signing_keys.previous_encryption_keys = vec![secrecy::SecretString::from("x")];
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("previous_encryption_keys[0]"), "{error}");
}

#[test]
fn a_rotation_period_within_the_publish_lead_is_refused() {
    let mut config = built_in_with_kek();
    config.signing_keys.rotate_every_secs = config.signing_keys.publish_lead_secs;
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("signing_keys.rotate_every_secs"), "{error}");
}

#[test]
fn weak_argon2_memory_cost_is_refused_naming_the_key() {
    // Arrange
    let mut config = built_in_with_kek();
    config.password_hashing.memory_kib = 1024;

    // Act
    let error = config.validate().unwrap_err().to_string();

    // Assert
    assert!(error.contains("password_hashing.memory_kib"), "{error}");
    assert!(
        error.contains("PORTICO_AUTH_PASSWORD_HASHING__MEMORY_KIB"),
        "{error}"
    );
}

#[tokio::test]
async fn service_does_not_start_with_a_weak_hashing_cost() {
    // Arrange
    let database = TestDatabase::new(Backend::Sqlite).await;
    let mut config = built_in_with_kek();
    config.database = config
        .database
        .with_url(&database.url)
        .creating_if_missing();
    config.password_hashing.iterations = 1;
    let listeners =
        portico_common::http::server::Listeners::bind(&portico_common::config::ListenConfig {
            api: ([127, 0, 0, 1], 0).into(),
            admin: ([127, 0, 0, 1], 0).into(),
        })
        .await
        .unwrap();

    // Act
    let built = portico_auth::Application::build_with_listeners(config, listeners).await;

    // Assert
    let error = built.err().expect("the service must refuse to start");
    assert!(
        error.to_string().contains("password_hashing.iterations"),
        "{error:#}"
    );
}

/// A key and a change to the config that the key's rule refuses.
type Spoiler = (&'static str, fn(&mut Config));

#[test]
fn a_bad_user_service_upstream_is_refused_naming_the_key() {
    let cases: [Spoiler; 5] = [
        ("user_service.upstream.endpoints", |c| {
            c.user_service.upstream.endpoints.clear();
        }),
        ("user_service.upstream.endpoints", |c| {
            c.user_service.upstream.endpoints = vec!["ftp://somewhere".into()];
        }),
        ("user_service.upstream.dns.port", |c| {
            c.user_service.upstream.endpoints.clear();
            c.user_service.upstream.dns = Some(portico_upstream::config::DnsConfig {
                name: "user".into(),
                port: None,
                srv: false,
                interval_ms: None,
                nameservers: Vec::new(),
            });
        }),
        ("user_service.upstream", |c| {
            c.user_service.upstream.split = [("user".to_owned(), 1)].into();
        }),
        ("user_service.max_attempts", |c| {
            c.user_service.max_attempts = 0;
        }),
    ];
    for (key, spoil) in cases {
        let mut config = built_in_with_kek();
        spoil(&mut config);
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains(key), "{key}: {error}");
    }
}

#[test]
fn an_outbox_subscriber_with_an_unknown_type_or_bad_secret_is_refused_naming_the_key() {
    let mut config = built_in_with_kek();
    config.outbox.subscribers = vec![crate::outbox::subscriber(
        "http://127.0.0.1:9/hooks".to_owned(),
        &["user.created"],
    )];
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("outbox.subscribers[0].types"), "{error}");
    config.outbox.subscribers[0].types = vec!["auth.mfa_enabled".to_owned()];
    assert!(config.validate().is_ok());
    config.outbox.subscribers[0].secret = secrecy::SecretString::from("whsec_short");
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("outbox.subscribers[0].secret"), "{error}");
    assert!(
        !error.contains("whsec_short"),
        "the secret is not echoed: {error}"
    );
}

//! Configuration rules checked before the service starts.

use portico_auth::Config;
use portico_common::config::ServiceConfig as _;
use portico_testkit::{Backend, TestDatabase};

#[test]
fn built_in_defaults_are_valid() {
    assert!(Config::built_in().validate().is_ok());
}

#[test]
fn weak_argon2_memory_cost_is_refused_naming_the_key() {
    // Arrange
    let mut config = Config::built_in();
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
    let mut config = Config::built_in();
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

//! A signing-key rotation as the edge sees it: tokens signed before and
//! after it both pass the gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use portico_e2e::System;
use portico_testkit::{Backend, eventually, issuer::header_of};

fn kid(tokens: &serde_json::Value) -> String {
    header_of(tokens["access_token"].as_str().unwrap())["kid"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn tokens_of_the_old_and_the_new_key_both_pass_the_gateway_after_a_rotation() {
    // Arrange: a new key signs one second after it is published.
    let system = System::start_with(
        Backend::Sqlite,
        &[
            ("auth", "ADMIN__BOOTSTRAP_EMAIL", "root@example.com"),
            ("auth", "SIGNING_KEYS__PUBLISH_LEAD_SECS", "1"),
        ],
    )
    .await;
    let admin = system.register("root@example.com").await;
    let before = system.register("ann@example.com").await;
    let me = system.url("/v1/users/me");

    // Act
    let rotated = system
        .client
        .post(system.url("/v1/auth/admin/keys/rotate"))
        .bearer_auth(admin["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 202);
    let new_kid = rotated.json::<serde_json::Value>().await.unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();

    // Assert: once the new key signs, both tokens pass the edge (the
    // gateway fetches the JWKS again for the kid it has not seen).
    let after = eventually(Duration::from_secs(5), "the new key to sign", || async {
        let tokens = system.login("ann@example.com").await;
        (kid(&tokens) == new_kid).then_some(tokens)
    })
    .await;
    assert_ne!(kid(&before), new_kid);
    for tokens in [&before, &after] {
        let token = tokens["access_token"].as_str().unwrap();
        eventually(
            Duration::from_secs(10),
            "the gateway to accept the token",
            || async {
                let status = system
                    .client
                    .get(&me)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .status();
                (status == 200).then_some(())
            },
        )
        .await;
    }
}

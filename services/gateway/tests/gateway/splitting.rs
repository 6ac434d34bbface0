//! Traffic splitting (canary / blue-green) and consistent hashing through a
//! running gateway.

use std::collections::{BTreeMap, BTreeSet};

use http::{StatusCode, header};
use portico_common::config::ServiceConfig as _;
use portico_gateway::{Config, balance::Policy};
use serde_json::Value;

use crate::support::{Gateway, RecordingUpstream, route, upstream};

/// `user` = stable 50 / canary 50, on a route with the given auth policy.
async fn split_gateway(auth: &str) -> (Gateway, RecordingUpstream, RecordingUpstream) {
    let stable = RecordingUpstream::start("stable").await;
    let canary = RecordingUpstream::start("canary").await;
    let gateway = Gateway::start(|config| {
        config
            .upstreams
            .insert("user-stable".into(), upstream(&[&stable.url]));
        config
            .upstreams
            .insert("user-canary".into(), upstream(&[&canary.url]));
        let mut split = upstream(&[]);
        split.split = BTreeMap::from([("user-stable".into(), 50), ("user-canary".into(), 50)]);
        config.upstreams.insert("user".into(), split);
        let mut users = route("/v1/users", "user");
        users.auth = Some(auth.to_owned());
        config.routes = vec![users];
    })
    .await;
    (gateway, stable, canary)
}

async fn group(response: reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["replica"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn each_user_stays_in_one_group_and_the_pin_header_overrides() {
    let (gateway, _stable, _canary) = split_gateway("bearer").await;
    let mut groups = BTreeSet::new();
    for _ in 0..30 {
        let token = gateway.token();
        let mut seen = BTreeSet::new();
        for _ in 0..3 {
            let response = gateway
                .client
                .get(gateway.url("/v1/users/me"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            seen.insert(group(response).await);
        }
        assert_eq!(seen.len(), 1, "a user flipped between groups: {seen:?}");
        groups.extend(seen);
    }
    assert_eq!(
        groups.len(),
        2,
        "30 users all in one group of a 50/50 split"
    );

    for pinned in ["user-canary", "user-stable"] {
        let response = gateway
            .client
            .get(gateway.url("/v1/users/me"))
            .bearer_auth(gateway.token())
            .header("x-portico-group", pinned)
            .send()
            .await
            .unwrap();
        assert_eq!(group(response).await, pinned.trim_start_matches("user-"));
    }
}

#[tokio::test]
async fn an_anonymous_client_is_kept_in_its_group_by_a_cookie() {
    let (gateway, _stable, _canary) = split_gateway("public").await;
    let first = gateway.get("/v1/users/me").await;
    let cookie = first
        .headers()
        .get(header::SET_COOKIE)
        .expect("a sticky cookie")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("portico_sticky="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let first_group = group(first).await;
    let pair = cookie.split(';').next().unwrap().to_owned();
    for _ in 0..6 {
        let again = gateway
            .client
            .get(gateway.url("/v1/users/me"))
            .header(header::COOKIE, &pair)
            .send()
            .await
            .unwrap();
        assert!(
            again.headers().get(header::SET_COOKIE).is_none(),
            "cookie set twice"
        );
        assert_eq!(group(again).await, first_group);
    }
}

#[tokio::test]
async fn consistent_hashing_keeps_each_key_on_one_endpoint() {
    let replicas = [
        RecordingUpstream::start("a").await,
        RecordingUpstream::start("b").await,
        RecordingUpstream::start("c").await,
    ];
    let urls: Vec<&str> = replicas.iter().map(|r| r.url.as_str()).collect();
    let gateway = Gateway::start(|config| {
        let mut user = upstream(&urls);
        user.balance = Some(Policy::ConsistentHash);
        user.hash_on = Some("header:x-tenant".to_owned());
        config.upstreams.insert("user".into(), user);
        config.routes = vec![route("/v1/users", "user")];
    })
    .await;
    let mut used = BTreeSet::new();
    for tenant in 0..20 {
        let mut seen = BTreeSet::new();
        for _ in 0..3 {
            let response = gateway
                .client
                .get(gateway.url("/v1/users/me"))
                .header("x-tenant", format!("tenant-{tenant}"))
                .send()
                .await
                .unwrap();
            seen.insert(group(response).await);
        }
        assert_eq!(seen.len(), 1, "tenant-{tenant} moved: {seen:?}");
        used.extend(seen);
    }
    assert!(used.len() >= 2, "20 keys all on one endpoint: {used:?}");
}

#[test]
fn split_and_hash_mistakes_stop_startup_naming_the_key() {
    let base = || {
        let mut config = Config::built_in();
        config
            .upstreams
            .insert("user-canary".into(), upstream(&["http://127.0.0.1:1"]));
        config
    };
    let cases: Vec<(BTreeMap<String, u32>, &str)> = vec![
        (BTreeMap::from([("nowhere".into(), 1)]), "no upstream named"),
        (
            BTreeMap::from([("user-canary".into(), 0)]),
            "weight above 0",
        ),
    ];
    for (groups, wanted) in cases {
        let mut config = base();
        let mut split = upstream(&[]);
        split.split = groups;
        config.upstreams.insert("user".into(), split);
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("upstreams.user.split") && err.contains(wanted),
            "{err}"
        );
    }
    let mut nested = base();
    let mut inner = upstream(&[]);
    inner.split = BTreeMap::from([("user-canary".into(), 1)]);
    nested.upstreams.insert("inner".into(), inner.clone());
    inner.split = BTreeMap::from([("inner".into(), 1)]);
    nested.upstreams.insert("user".into(), inner);
    let err = nested.validate().unwrap_err().to_string();
    assert!(err.contains("itself a split"), "{err}");

    let mut bad_hash = base();
    bad_hash.upstreams.get_mut("user").unwrap().hash_on = Some("ip".into());
    let err = bad_hash.validate().unwrap_err().to_string();
    assert!(err.contains("upstreams.user.hash_on"), "{err}");
}

//! The gateway's live configuration with real processes: routes change
//! with the config file and on SIGHUP while requests keep succeeding, and an
//! invalid file is refused whole.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use portico_e2e::System;
use portico_testkit::{Backend, eventually};

/// The default routes, plus `extra` (TOML of more `[[routes]]`), padded to
/// one length so that only SIGHUP, not the file watch, can tell two
/// versions apart when their modification time is also kept.
fn config_file(extra: &str) -> String {
    let text = format!(
        r#"
[[routes]]
path_prefix = "/v1/auth"
upstream = "auth"
timeout_ms = 15000
auth = "public"

[[routes]]
path_prefix = "/.well-known"
upstream = "auth"
timeout_ms = 5000
auth = "public"

[[routes]]
path_prefix = "/v1/users"
upstream = "user"
timeout_ms = 15000
auth = "bearer"
{extra}
"#
    );
    format!("{text:<2048}\n")
}

/// Replaces the file in one step (no reader sees half of it).
fn write_config(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

const PROFILE_ALIAS: &str = r#"
[[routes]]
path_prefix = "/api/profile"
upstream = "user"
timeout_ms = 15000
auth = "bearer"
rewrite_prefix = "/v1/users"
"#;

const ME_ALIAS: &str = r#"
[[routes]]
path_prefix = "/api/me"
upstream = "user"
timeout_ms = 15000
auth = "bearer"
rewrite_prefix = "/v1/users/me"
"#;

const BROKEN: &str = r#"
[[routes]]
path_prefix = "/api/profile"
upstream = "nowhere"
timeout_ms = 15000
auth = "bearer"
"#;

async fn status(system: &System, path: &str, token: &str) -> u16 {
    system
        .client
        .get(system.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn routes_follow_the_config_file_and_sighup_without_failing_a_request() {
    // Arrange: a gateway reading its routes from a file, and a steady load
    // of profile reads running through every change below.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    write_config(&path, &config_file(""));
    let system = System::start_with(
        Backend::Sqlite,
        &[("gateway", "CONFIG_FILE", path.to_str().unwrap())],
    )
    .await;
    let token = system.register("reload@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (client, url, token) = (
            system.client.clone(),
            system.url("/v1/users/me"),
            token.clone(),
        );
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let ok = client
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                sent.fetch_add(1, Ordering::SeqCst);
                if !ok {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    assert_eq!(status(&system, "/api/profile/me", &token).await, 404);

    // Act 1: a new route appears in the file.
    write_config(&path, &config_file(PROFILE_ALIAS));
    eventually(
        Duration::from_secs(10),
        "the new route to serve",
        || async { (status(&system, "/api/profile/me", &token).await == 200).then_some(()) },
    )
    .await;

    // Act 2: an invalid file (a route to an unknown upstream) is refused
    // whole; the running routes keep serving.
    write_config(&path, &config_file(BROKEN));
    eventually(
        Duration::from_secs(10),
        "the failed reload to be counted",
        || async {
            let failed = system
                .gateway
                .metric_sum(&system.client, |line| {
                    line.starts_with("gateway_config_reloads_total{")
                        && line.contains("outcome=\"error\"")
                })
                .await;
            (failed >= 1.0).then_some(())
        },
    )
    .await;
    assert_eq!(status(&system, "/api/profile/me", &token).await, 200);

    // Act 3: SIGHUP alone: a file of the same length and modification time
    // as one already seen, which only a SIGHUP makes the gateway read.
    write_config(&path, &config_file(PROFILE_ALIAS));
    eventually(
        Duration::from_secs(10),
        "the valid file to load again",
        || async {
            let version = admin_version(&system).await;
            (version >= 3).then_some(version)
        },
    )
    .await;
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let before = admin_version(&system).await;
    let same_length = config_file(ME_ALIAS);
    assert_eq!(same_length.len(), config_file(PROFILE_ALIAS).len());
    // Written beside it with the old time, then renamed over it: at no
    // moment does the file look changed to the watch.
    let next = path.with_extension("next");
    std::fs::write(&next, &same_length).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&next)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::rename(&next, &path).unwrap();
    system.gateway.hang_up();
    eventually(Duration::from_secs(10), "SIGHUP to reload", || async {
        (status(&system, "/api/me", &token).await == 200).then_some(())
    })
    .await;
    assert!(admin_version(&system).await > before);
    assert_eq!(status(&system, "/api/profile/me", &token).await, 404);

    // Assert: not one request of the load failed across the reloads.
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert!(sent.load(Ordering::SeqCst) > 10, "the load ran");
    assert_eq!(failed.load(Ordering::SeqCst), 0, "{}", system.logs());
}

/// The running config's version, from the admin listener.
async fn admin_version(system: &System) -> u64 {
    let running: serde_json::Value = system
        .client
        .get(format!("{}/config", system.gateway.admin_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    running["version"].as_u64().unwrap()
}

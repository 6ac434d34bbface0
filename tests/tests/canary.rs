//! A canary release through the gateway's traffic split, driven by
//! `scripts/ci/canary.py` exactly as the pipeline runs it, against real
//! processes and a steady load of many users: a healthy canary is stepped
//! up to all traffic without one failed read and then handed back; one that
//! fails is judged by its error ratio at its first step and rolled back,
//! every user on the stable group again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use portico_e2e::{Load, Process, System};
use portico_testkit::{Backend, eventually};

/// Users, each with a token: a split is sticky per user, so the canary's
/// share is a share of users.
const USERS: usize = 24;

fn canary_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ci/canary.py")
}

async fn system_with_users() -> (System, Vec<String>) {
    let system = System::start_with_upstreams_in_file(Backend::Sqlite).await;
    let mut tokens = Vec::new();
    for i in 0..USERS {
        let response = system.register(&format!("canary-{i}@example.com")).await;
        tokens.push(response["access_token"].as_str().unwrap().to_owned());
    }
    (system, tokens)
}

/// `canary.py <args>` against this system's gateway: (succeeded, output).
async fn canary(system: &System, args: &[&str]) -> (Option<i32>, String) {
    let metrics = format!("{}/metrics", system.gateway.admin_url());
    let file = system.gateway_file.as_ref().unwrap().display().to_string();
    let output = tokio::process::Command::new("python3")
        .arg(canary_script())
        .args(args)
        .args(["--traffic-file", &file, "--metrics-url", &metrics])
        .args(["--service", "user", "--settle-timeout", "20"])
        .output()
        .await
        .expect("python3 runs scripts/ci/canary.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

fn run_args<'a>(canary_replica: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--steps",
        steps,
        "--interval",
        "2",
        "--min-requests",
        "20",
        "--max-error-ratio",
        "0.05",
        "--canary-endpoints",
        canary_replica,
    ]
}

/// The weight the gateway runs the canary group at (absent: never split).
async fn canary_weight(system: &System) -> f64 {
    system
        .gateway
        .metric_sum(&system.client, |line| {
            line.starts_with("gateway_split_weight{") && line.contains("group=\"user-canary\"")
        })
        .await
}

async fn reads_served_by(process: &Process, system: &System) -> u64 {
    process.request_count(&system.client, "/v1/users/me").await
}

#[tokio::test]
async fn a_healthy_canary_is_stepped_up_to_all_traffic_without_a_failed_read_then_handed_back() {
    // Arrange
    let (system, tokens) = system_with_users().await;
    let file = system.gateway_file.clone().unwrap();
    let original = std::fs::read_to_string(&file).unwrap();
    let canary_replica = system.spawn_user("user-canary").await;
    let load = Load::start(&system, &tokens, 3);

    // Act
    let canary_url = canary_replica.api_url();
    let (code, output) = canary(&system, &run_args(&canary_url, "30,100")).await;
    let served_at_full = reads_served_by(&canary_replica, &system).await;
    let (restored, restore_output) = canary(&system, &["restore"]).await;
    let (served, failures) = load.stop().await;

    // Assert: promoted through every step, the canary served reads, no
    // read failed at any step, and the file is the operator's again.
    assert_eq!(code, Some(0), "{output}\n{}", system.logs());
    assert!(output.contains(" 30% to user-canary") && output.contains("100% to user-canary"));
    assert!(
        served_at_full >= 20,
        "the canary served {served_at_full} reads"
    );
    assert!(
        failures.is_empty(),
        "{} of {served} reads failed: {failures:?}",
        failures.len()
    );
    assert_eq!(restored, Some(0), "{restore_output}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    assert_eq!(canary_weight(&system).await, 0.0);
}

#[tokio::test]
async fn a_failing_canary_is_rolled_back_at_its_first_step_and_every_user_reads_again() {
    // Arrange: the new version dies once it meets traffic.
    let (system, tokens) = system_with_users().await;
    let file = system.gateway_file.clone().unwrap();
    let original = std::fs::read_to_string(&file).unwrap();
    let mut canary_replica = system.spawn_user("user-canary").await;
    let canary_url = canary_replica.api_url();
    canary_replica.kill_hard();
    let load = Load::start(&system, &tokens, 3);

    // Act
    let (code, output) = canary(&system, &run_args(&canary_url, "50,100")).await;
    let (_, failures_during_canary) = load.stop().await;

    // Assert: judged by its errors at the first step, never stepped
    // further, the file put back and the gateway off the canary; every user
    // reads again.
    assert_eq!(code, Some(1), "{output}\n{}", system.logs());
    assert!(
        output.contains(" 50% to user-canary") && output.contains("error ratio above the limit"),
        "{output}"
    );
    assert!(!output.contains("100% to user-canary"), "{output}");
    assert!(
        !failures_during_canary.is_empty(),
        "no user met the dead canary: the test did not exercise it"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    assert!(!file.with_extension("toml.before-canary").exists());
    eventually(
        Duration::from_secs(10),
        "the canary's weight to be 0",
        || {
            let system = &system;
            async move { (canary_weight(system).await == 0.0).then_some(()) }
        },
    )
    .await;
    for token in &tokens {
        let response = system
            .client
            .get(system.url("/v1/users/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "a user still meets the canary");
    }
}

//! Startup behaviour of the real binaries: a bad configuration stops the
//! process at once with one line naming the key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};

fn run_with(binary: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|p| p.parent()).unwrap();
    let output = Command::new(dir.join(binary))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run binary (built by scripts/test.sh)");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_bad_value_stops_startup_with_one_line_naming_the_key() {
    let (code, stderr) = run_with(
        "portico-user",
        &[("PORTICO_USER_DATABASE__MAX_CONNECTIONS", "many")],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("database.max_connections"), "{stderr}");
    assert!(
        stderr.contains("PORTICO_USER_DATABASE__MAX_CONNECTIONS"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_key_stops_startup() {
    let (code, stderr) = run_with(
        "portico-gateway",
        &[("PORTICO_GATEWAY_PROXY__MAX_BODY", "1")],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("max_body"), "{stderr}");
}

#[test]
fn weak_password_hashing_is_refused_at_startup() {
    let (code, stderr) = run_with(
        "portico-auth",
        &[("PORTICO_AUTH_PASSWORD_HASHING__MEMORY_KIB", "4096")],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("password_hashing.memory_kib"), "{stderr}");
}

#[test]
fn a_route_to_an_unknown_upstream_is_refused_at_startup() {
    let (code, stderr) = run_with(
        "portico-gateway",
        &[(
            "PORTICO_GATEWAY_ROUTES",
            r#"[{path_prefix = "/v1/x", upstream = "nowhere"}]"#,
        )],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("routes.0.upstream"), "{stderr}");
}

//! Startup behaviour of the real binaries: a bad configuration stops the
//! process at once with one line naming the key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::Read,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Runs `binary` with only `env` and returns its exit code and stderr. A
/// process still running after 10 s accepted the config it should have
/// refused: it is killed and the test fails (instead of hanging).
fn run_with(binary: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    run_with_args(binary, &[], env)
}

/// [`run_with`], with command-line arguments.
fn run_with_args(binary: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|p| p.parent()).unwrap();
    let mut child = Command::new(dir.join(binary))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run binary (built by scripts/test.sh)");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("{binary} was still running after 10 s: it accepted the configuration");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
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
            r#"[{path_prefix = "/v1/x", upstream = "nowhere", timeout_ms = 1000, require_auth = false}]"#,
        )],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("routes.0.upstream"), "{stderr}");
}

#[test]
fn a_route_without_an_auth_policy_is_refused_at_startup() {
    let (code, stderr) = run_with(
        "portico-gateway",
        &[(
            "PORTICO_GATEWAY_ROUTES",
            r#"[{path_prefix = "/v1/x", upstream = "user", timeout_ms = 1000}]"#,
        )],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("routes.0.auth"), "{stderr}");
}

#[test]
fn a_missing_sqlite_file_is_not_created_unless_told_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user.db");
    let url = format!("sqlite://{}", path.display());
    let (code, stderr) = run_with(
        "portico-user",
        &[
            ("PORTICO_USER_DATABASE__URL", &url),
            ("PORTICO_USER_LISTEN__API", "127.0.0.1:0"),
            ("PORTICO_USER_LISTEN__ADMIN", "127.0.0.1:0"),
        ],
    );
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("create_if_missing"), "{stderr}");
    assert!(!path.exists(), "a database file was created");
}

#[tokio::test]
async fn healthcheck_exits_0_for_a_ready_service_and_1_otherwise() {
    // Arrange: a running system, and the admin address of one user replica.
    let system = portico_e2e::System::start(portico_testkit::Backend::Sqlite).await;
    let ready = format!("127.0.0.1:{}", system.users[0].admin_port);
    let nothing = format!("127.0.0.1:{}", portico_testkit::http::closed_port());

    // Act
    let (up, _) = run_with_args(
        "portico-user",
        &["healthcheck"],
        &[("PORTICO_USER_LISTEN__ADMIN", &ready)],
    );
    let (down, why) = run_with_args(
        "portico-user",
        &["healthcheck"],
        &[("PORTICO_USER_LISTEN__ADMIN", &nothing)],
    );

    // Assert
    assert_eq!(up, Some(0), "{}", system.logs());
    assert_eq!(down, Some(1));
    assert!(why.contains("not ready"), "{why}");
}

#[test]
fn an_unknown_argument_stops_with_usage() {
    let (code, stderr) = run_with_args("portico-gateway", &["serve"], &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("unknown argument `serve`"), "{stderr}");
    assert!(stderr.contains("healthcheck"), "{stderr}");
}

/// `<binary> check-config` with only `env`: exit code, stdout, stderr.
fn check_config(binary: &str, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|p| p.parent()).unwrap();
    let output = Command::new(dir.join(binary))
        .arg("check-config")
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run binary (built by scripts/test.sh)");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_config_reports_the_listen_addresses_of_a_valid_configuration() {
    let (code, stdout, stderr) = check_config(
        "portico-auth",
        &[
            ("PORTICO_AUTH_LISTEN__API", "0.0.0.0:8082"),
            (
                "PORTICO_AUTH_SIGNING_KEYS__ENCRYPTION_KEY",
                portico_testkit::TEST_KEK,
            ),
            // Empty counts as unset: compose passes optional values as `${VAR:-}`.
            ("PORTICO_AUTH_TELEMETRY__OTLP_ENDPOINT", ""),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["service"], "portico-auth");
    assert_eq!(report["listen"]["api"], "0.0.0.0:8082");
    assert_eq!(report["listen"]["admin"], "127.0.0.1:9082");
}

#[test]
fn check_config_refuses_an_unknown_key_and_a_missing_required_secret() {
    let (unknown, _, why_unknown) = check_config(
        "portico-user",
        &[("PORTICO_USER_DATABASE__URI", "postgres://typo")],
    );
    let (missing, _, why_missing) = check_config("portico-auth", &[]);
    assert_eq!(unknown, Some(2), "{why_unknown}");
    assert!(why_unknown.contains("uri"), "{why_unknown}");
    assert_eq!(missing, Some(2), "{why_missing}");
    assert!(why_missing.contains("encryption_key"), "{why_missing}");
}

#[test]
fn migrate_applies_the_migrations_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user.db");
    let url = format!("sqlite://{}", path.display());
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .join("portico-user");
    let run = |url: &str| {
        Command::new(&bin)
            .arg("migrate")
            .env_clear()
            .env("PORTICO_USER_DATABASE__URL", url)
            .env("PORTICO_USER_DATABASE__CREATE_IF_MISSING", "true")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    let applied = run(&url);
    let unreachable = run("postgres://portico:x@127.0.0.1:1/portico");

    assert_eq!(
        applied.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let schema = std::fs::read(&path).unwrap();
    assert!(
        schema
            .windows(b"CREATE TABLE users".len())
            .any(|w| w == b"CREATE TABLE users"),
        "no users table in the migrated file"
    );
    assert_eq!(unreachable.status.code(), Some(1));
}

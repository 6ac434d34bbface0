//! The gateway's access log, read from a real gateway's log: one JSON line
//! per request with who served it and how long it took, and never a token,
//! cookie, query secret or password — a test greps for each one it sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use portico_e2e::{PASSWORD, System};
use portico_testkit::{Backend, eventually};
use serde_json::Value;

/// The access lines in `log`, by request id.
fn access_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "access")
        .collect()
}

fn line_of<'a>(lines: &'a [Value], request_id: &str) -> Option<&'a Value> {
    lines.iter().find(|line| line["request_id"] == request_id)
}

#[tokio::test]
async fn every_request_has_one_access_line_and_no_secret_reaches_the_log() {
    let system = System::start(Backend::Sqlite).await;
    let token = system.register("logged@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let cookie_secret = "cookie-secret-5b1f";
    let query_secret = "query-secret-9e3a";
    let forged = format!("{token}x");

    let served = system
        .client
        .get(system.url(&format!("/v1/users/me?api_key={query_secret}")))
        .bearer_auth(&token)
        .header("cookie", format!("session={cookie_secret}"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    let served_id = served.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let refused = system
        .client
        .get(system.url("/v1/users/me"))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refused_id = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();

    let (served_line, refused_line) =
        eventually(Duration::from_secs(5), "both access lines", || {
            let lines = access_lines(&system.gateway.log());
            let pair = line_of(&lines, &served_id)
                .cloned()
                .zip(line_of(&lines, &refused_id).cloned());
            async move { pair }
        })
        .await;

    assert_eq!(served_line["method"], "GET");
    // The operation's template, from the user service's OpenAPI document.
    assert_eq!(served_line["route"], "/v1/users/me");
    assert_eq!(served_line["path"], "/v1/users/me");
    assert_eq!(served_line["status"], 200);
    assert_eq!(served_line["upstream"], "user");
    let endpoint = served_line["endpoint"].as_str().unwrap();
    assert!(
        system.users.iter().any(|user| user.api_url() == endpoint),
        "{endpoint} is not a user replica"
    );
    assert_eq!(served_line["attempts"], 1);
    let total = served_line["duration_ms"].as_f64().unwrap();
    let upstream = served_line["upstream_ms"].as_f64().unwrap();
    assert!(
        upstream > 0.0 && upstream <= total,
        "{upstream} of {total} ms"
    );
    assert!(served_line["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(served_line["trace_id"].as_str().unwrap().len(), 32);
    assert_eq!(served_line["client_ip"], "127.0.0.1");
    assert_eq!(served_line["complete"], true);
    assert_eq!(refused_line["status"], 401);
    assert_eq!(refused_line["route"], "/v1/users/me");

    let log = system.gateway.log();
    for (secret, what) in [
        (token.as_str(), "the access token"),
        (forged.as_str(), "the forged token"),
        (cookie_secret, "the cookie"),
        (query_secret, "the query secret"),
        (PASSWORD, "the password"),
    ] {
        assert!(!log.contains(secret), "{what} is in the gateway's log");
    }
}

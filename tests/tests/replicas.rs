//! Load balancing and failover across user replicas, and clean shutdown,
//! with real processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use portico_e2e::System;
use portico_testkit::Backend;
use serde_json::Value;

/// Registers a user through the gateway; returns an access token.
async fn register(system: &System, email: &str) -> String {
    system.register(email).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn read_profile(system: &System, token: &str) -> reqwest::StatusCode {
    system
        .client
        .get(system.url("/v1/users/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn round_robin_spreads_profile_reads_over_both_user_replicas() {
    let system = System::start_with(
        Backend::Postgres,
        &[("gateway", "UPSTREAMS__USER__BALANCE", "round_robin")],
    )
    .await;
    let token = register(&system, "spread@example.com").await;

    for _ in 0..20 {
        assert_eq!(read_profile(&system, &token).await, 200);
    }

    let mut counts = Vec::new();
    for user in &system.users {
        counts.push(user.request_count(&system.client, "/v1/users/me").await);
    }
    assert_eq!(counts.iter().sum::<u64>(), 20, "{counts:?}");
    assert!(counts.iter().all(|&c| c >= 8), "uneven spread: {counts:?}");
}

#[tokio::test]
async fn profile_reads_keep_succeeding_after_a_replica_is_killed_with_sigkill() {
    let mut system = System::start(Backend::Postgres).await;
    let token = register(&system, "failover@example.com").await;
    // Warm both replicas so the gateway holds pooled connections to each.
    for _ in 0..4 {
        assert_eq!(read_profile(&system, &token).await, 200);
    }

    let survivor_before = system.users[0]
        .request_count(&system.client, "/v1/users/me")
        .await;
    system.users[1].kill_hard();

    for i in 0..20 {
        let status = read_profile(&system, &token).await;
        assert_eq!(
            status,
            200,
            "read {i} after SIGKILL failed:\n{}",
            system.logs()
        );
    }
    // Every read after the kill reached the survivor, none lost and none
    // counted twice.
    let survivor = system.users[0]
        .request_count(&system.client, "/v1/users/me")
        .await;
    assert_eq!(
        survivor,
        survivor_before + 20,
        "the surviving replica's reads"
    );
    // And the gateway did try the dead replica and failed over from it.
    let failures = system.gateway_failed_attempts_on_user(1).await;
    assert!(failures >= 1.0, "no failed attempt on the killed replica");
}

#[tokio::test]
async fn a_hung_replica_costs_one_short_attempt_and_is_then_set_aside() {
    // Arrange: attempts wait 400 ms for headers (the route allows 15 s).
    let system = System::start_with(
        Backend::Sqlite,
        &[("gateway", "PROXY__ATTEMPT_TIMEOUT_MS", "400")],
    )
    .await;
    let token = register(&system, "hung@example.com").await;
    for _ in 0..4 {
        assert_eq!(read_profile(&system, &token).await, 200);
    }

    // Act: one replica hangs (SIGSTOP: connections are accepted, nothing
    // answers); 20 reads follow.
    system.users[1].freeze();
    let mut slow = 0;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let started = std::time::Instant::now();
        statuses.push(read_profile(&system, &token).await);
        if started.elapsed() >= std::time::Duration::from_millis(400) {
            slow += 1;
        }
    }
    system.users[1].thaw();

    // Assert: every read answered; at most one waited for the hung replica
    // (then it was ejected), and the gateway counted that attempt.
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{statuses:?}\n{}",
        system.logs()
    );
    assert!(slow <= 1, "{slow} reads waited for the hung replica");
    let hung = format!("endpoint=\"{}\"", system.users[1].api_url());
    let timeouts = system
        .gateway
        .metric_sum(&system.client, |line| {
            line.starts_with("gateway_upstream_attempt_timeouts_total{") && line.contains(&hung)
        })
        .await;
    assert!(timeouts >= 1.0, "no attempt timed out on the hung replica");
}

#[tokio::test]
async fn least_request_steers_reads_away_from_a_replica_that_is_slow_to_answer() {
    // Arrange: the default policy; one replica frozen, so requests sent to
    // it stay in flight until the attempt times out (2 s).
    let system = System::start_with(
        Backend::Sqlite,
        &[
            ("gateway", "PROXY__ATTEMPT_TIMEOUT_MS", "2000"),
            ("gateway", "PROXY__EJECT_SECS", "0"),
        ],
    )
    .await;
    let token = register(&system, "slow@example.com").await;
    let before = system.users[0]
        .request_count(&system.client, "/v1/users/me")
        .await;
    system.users[1].freeze();

    // Act: 40 reads started 10 ms apart, not waiting for each other. With
    // ejection off (0 s), only the in-flight count keeps reads away from the
    // frozen replica (round robin would send it 20).
    let reads = (0..40u64).map(|i| {
        let (system, token) = (&system, &token);
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(10 * i)).await;
            read_profile(system, token).await
        }
    });
    let statuses = futures::future::join_all(reads).await;
    system.users[1].thaw();

    // Assert: all answered, and most went straight to the healthy replica.
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let served = system.users[0]
        .request_count(&system.client, "/v1/users/me")
        .await
        - before;
    assert_eq!(served, 40, "every read ends on the healthy replica");
    let frozen_attempts = system
        .gateway
        .metric_sum(&system.client, |line| {
            line.starts_with("gateway_upstream_attempt_timeouts_total{")
                && line.contains(&format!("endpoint=\"{}\"", system.users[1].api_url()))
        })
        .await;
    assert!(
        frozen_attempts <= 10.0,
        "{frozen_attempts} of 40 reads were sent to the busy replica first"
    );
}

/// A PATCH whose body is half sent, straight to `port`: in flight.
async fn start_patch(port: u16, token: &str, body: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let head = format!(
        "PATCH /v1/users/me HTTP/1.1\r\nhost: portico\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\nif-match: *\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    stream
}

/// Sends the rest of the body; returns the response's status line, or what
/// went wrong on the connection.
async fn finish_patch(mut stream: tokio::net::TcpStream, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if let Err(err) = stream.write_all(&body[body.len() / 2..]).await {
        return format!("writing the rest of the body failed: {err}");
    }
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read the head; the service closes or keeps the connection, either is fine.
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) => return "connection closed without a response".to_owned(),
            Ok(read) => response.extend_from_slice(&chunk[..read]),
            Err(err) => return format!("reading the response failed: {err}"),
        }
    }
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Whether the server side of the connection from `client` to `server`
/// (both on 127.0.0.1) has nothing left unread in its receive queue: the
/// service has taken the request off the socket and is working on it.
/// Read from /proc/net/tcp (addresses in hex; rx_queue after the colon).
fn server_has_read(server: u16, client: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{server:04X}");
    let remote = format!("0100007F:{client:04X}");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 4
            && fields[1] == local
            && fields[2] == remote
            && fields[4].split(':').nth(1) == Some("00000000")
    })
}

async fn is_draining(client: &reqwest::Client, admin_url: &str) -> bool {
    match client.get(format!("{admin_url}/readyz")).send().await {
        Ok(response) => response
            .json::<Value>()
            .await
            .is_ok_and(|body| body["status"] == "draining"),
        Err(_) => false,
    }
}

/// Sends SIGTERM to `process` while a PATCH to `port` is in flight (its body
/// half sent), waits until the process drains, sends the rest of the body
/// and returns the response's status line.
async fn patch_across_sigterm(
    system: &System,
    process: &portico_e2e::Process,
    port: u16,
    token: &str,
) -> String {
    let body = br#"{"display_name": "Drained"}"#;
    let in_flight = start_patch(port, token, body).await;
    // Signalled only once the service holds the request: a request still
    // unread in the socket when the signal lands is not in flight yet.
    let client = in_flight.local_addr().unwrap().port();
    portico_testkit::eventually(
        std::time::Duration::from_secs(10),
        "the service reading the request",
        || async move { server_has_read(port, client).then_some(()) },
    )
    .await;
    process.send_sigterm();
    let admin = process.admin_url();
    portico_testkit::eventually(
        std::time::Duration::from_secs(10),
        "the service draining",
        || {
            let (client, admin) = (system.client.clone(), admin.clone());
            async move { is_draining(&client, &admin).await.then_some(()) }
        },
    )
    .await;
    finish_patch(in_flight, body).await
}

#[tokio::test]
async fn a_request_in_flight_across_sigterm_completes_and_the_service_exits_zero() {
    let mut system = System::start(Backend::Sqlite).await;
    let token = register(&system, "inflight@example.com").await;

    // A user replica: the request arrived before the signal, its body after.
    let user = &system.users[0];
    let answer = patch_across_sigterm(&system, user, user.api_port, &token).await;
    assert!(
        answer.contains(" 200 "),
        "user-1: {answer}\n{}",
        system.logs()
    );
    let status = system.users[0].wait_exit().await;
    assert!(status.success(), "user-1 exited with {status}");

    // The gateway (forwarding to the replica still running).
    let gateway = &system.gateway;
    let answer = patch_across_sigterm(&system, gateway, gateway.api_port, &token).await;
    assert!(
        answer.contains(" 200 "),
        "gateway: {answer}\n{}",
        system.logs()
    );
    let status = system.gateway.wait_exit().await;
    assert!(status.success(), "the gateway exited with {status}");
}

#[tokio::test]
async fn sigterm_drains_and_every_service_exits_zero() {
    let mut system = System::start(Backend::Sqlite).await;
    let token = register(&system, "drain@example.com").await;
    assert_eq!(read_profile(&system, &token).await, 200);

    for process in [&mut system.gateway, &mut system.auth] {
        let status = process.terminate().await;
        assert!(status.success(), "{} exited with {status}", process.name);
    }
    for user in &mut system.users {
        let status = user.terminate().await;
        assert!(status.success(), "{} exited with {status}", user.name);
    }
}

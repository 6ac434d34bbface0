//! Registration under crashes, with real processes: auth is SIGKILLed at
//! each step of a registration — after storing the pending credential but
//! before the user service saw the profile, and after the profile was made
//! but before auth learnt so — and once restarted its reconciler leaves a
//! complete account or none: never a credential without a profile, or a
//! profile that blocks the email.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::Duration,
};

use portico_e2e::{PASSWORD, System};
use portico_testkit::{Backend, eventually};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

/// Where a [`Relay`] stops a profile creation.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Cut {
    /// Everything passes.
    Nothing,
    /// The creation request is held: the user service never sees it.
    Request,
    /// The creation passes; its answer is held: the profile exists, auth
    /// does not know.
    Answer,
}

/// A TCP relay between auth and a user replica (auth's only user
/// endpoint) that holds a profile creation at the chosen point and says
/// when it got there: the measured point at which the test kills auth.
struct Relay {
    url: String,
    target: Arc<OnceLock<SocketAddr>>,
    cut: Arc<AtomicU8>,
    reached: Arc<Notify>,
}

impl Relay {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Self {
            url: format!("http://{}", listener.local_addr().unwrap()),
            target: Arc::default(),
            cut: Arc::new(AtomicU8::new(Cut::Nothing as u8)),
            reached: Arc::default(),
        };
        let (target, cut, reached) = (
            relay.target.clone(),
            relay.cut.clone(),
            relay.reached.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Some(target) = target.get().copied() else {
                    continue;
                };
                tokio::spawn(relay_connection(
                    client,
                    target,
                    cut.clone(),
                    reached.clone(),
                ));
            }
        });
        relay
    }

    fn cut(&self, cut: Cut) {
        self.cut.store(cut as u8, Ordering::SeqCst);
    }
}

async fn relay_connection(
    client: TcpStream,
    target: SocketAddr,
    cut: Arc<AtomicU8>,
    reached: Arc<Notify>,
) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let answer_held = Arc::new(AtomicBool::new(false));
    let hold_answer = answer_held.clone();
    let hold_reached = reached.clone();
    let upstream = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = from_client.read(&mut buffer).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            let chunk = &buffer[..n];
            let creation = chunk.windows(20).any(|w| w == b"POST /internal/users");
            if creation {
                match cut.load(Ordering::SeqCst) {
                    c if c == Cut::Request as u8 => {
                        reached.notify_one();
                        std::future::pending::<()>().await;
                    }
                    c if c == Cut::Answer as u8 => hold_answer.store(true, Ordering::SeqCst),
                    _ => {}
                }
            }
            if to_server.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    let downstream = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = from_server.read(&mut buffer).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            if answer_held.load(Ordering::SeqCst) {
                // The user service answered: the profile is committed.
                hold_reached.notify_one();
                std::future::pending::<()>().await;
            }
            if to_client.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(upstream, downstream);
}

/// The whole system, auth calling the user service through `relay`, with
/// a short pending timeout and a reconciler that looks often.
async fn system_behind(backend: Backend, relay: &Relay) -> System {
    let endpoints = format!(r#"["{}"]"#, relay.url);
    let system = System::start_with(
        backend,
        &[
            ("auth", "USER_SERVICE__UPSTREAM__ENDPOINTS", &endpoints),
            ("auth", "USER_SERVICE__TIMEOUT_MS", "800"),
            ("auth", "USER_SERVICE__ATTEMPT_TIMEOUT_MS", "400"),
            ("auth", "REGISTRATION__PENDING_TIMEOUT_SECS", "2"),
            ("auth", "REGISTRATION__RECONCILE_INTERVAL_MS", "200"),
        ],
    )
    .await;
    let user = system.users[0].api_url();
    let address = user.trim_start_matches("http://").parse().unwrap();
    relay.target.set(address).unwrap();
    system
}

/// Starts a registration of `email` through the gateway, kills auth once
/// the relay holds it at `cut`, and starts auth again.
async fn crash_auth_during_registration(system: &mut System, relay: &Relay, email: &str, cut: Cut) {
    relay.cut(cut);
    let request = system
        .client
        .post(system.url("/v1/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD, "display_name": "Ann"}))
        .send();
    let registering = tokio::spawn(request);
    tokio::time::timeout(Duration::from_secs(10), relay.reached.notified())
        .await
        .unwrap_or_else(|_| panic!("the registration never reached the cut:\n{}", system.logs()));
    system.auth.kill_hard();
    let answer = registering.await.unwrap().unwrap();
    assert!(
        answer.status().is_server_error(),
        "the gateway lost auth mid-request: {}",
        answer.status()
    );
    relay.cut(Cut::Nothing);
    system.auth.restart(&system.client).await;
}

async fn reconciled(system: &System, outcome: &str) {
    let series = format!("auth_registrations_reconciled_total{{outcome=\"{outcome}\"}}");
    eventually(
        Duration::from_secs(20),
        &format!("the reconciler to report a registration {outcome}"),
        || async {
            let settled = system
                .auth
                .metric_sum(&system.client, |line| line.starts_with(&series))
                .await;
            (settled >= 1.0).then_some(())
        },
    )
    .await;
}

async fn status(system: &System, path: &str, body: serde_json::Value) -> u16 {
    system
        .client
        .post(system.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn a_crash_at_any_step_of_registration_leaves_a_whole_account_or_none(backend: Backend) {
    // Arrange
    let relay = Relay::start().await;
    let mut system = system_behind(backend, &relay).await;

    // Act + Assert: killed before the profile was made — no account.
    crash_auth_during_registration(&mut system, &relay, "early@example.com", Cut::Request).await;
    reconciled(&system, "abandoned").await;
    let login = json!({"email": "early@example.com", "password": PASSWORD});
    assert_eq!(status(&system, "/v1/auth/login", login).await, 401);
    // The email is free (no credential, and no profile holding it in the
    // user service): anyone may register it.
    let fresh = json!({"email": "early@example.com", "password": "another horse battery", "display_name": "Bo"});
    assert_eq!(
        status(&system, "/v1/auth/register", fresh).await,
        201,
        "{}",
        system.logs()
    );

    // Act + Assert: killed after the profile was made — a whole account.
    crash_auth_during_registration(&mut system, &relay, "late@example.com", Cut::Answer).await;
    reconciled(&system, "completed").await;
    let tokens = system.login("late@example.com").await;
    let access = tokens["access_token"].as_str().unwrap();
    let profile: serde_json::Value = system
        .client
        .get(system.url("/v1/users/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(profile["email"], "late@example.com", "{profile}");
    let again = json!({"email": "late@example.com", "password": PASSWORD, "display_name": "Ann"});
    assert_eq!(status(&system, "/v1/auth/register", again).await, 409);
}

#[tokio::test]
async fn a_crash_at_any_step_of_registration_leaves_a_whole_account_or_none_on_postgres() {
    a_crash_at_any_step_of_registration_leaves_a_whole_account_or_none(Backend::Postgres).await;
}

#[tokio::test]
async fn a_crash_at_any_step_of_registration_leaves_a_whole_account_or_none_on_sqlite() {
    a_crash_at_any_step_of_registration_leaves_a_whole_account_or_none(Backend::Sqlite).await;
}

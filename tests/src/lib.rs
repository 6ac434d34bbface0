//! Runs the real Portico binaries as a system for end-to-end tests: two user
//! replicas, one auth replica and the gateway, each a separate process with
//! its own log file, on PostgreSQL or SQLite.
//!
//! The binaries come from the same `target/` profile directory as the test
//! executable; `scripts/test.sh` builds them before running the tests.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: fail loudly

mod load;
pub mod topology;

pub use load::Load;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use portico_testkit::{Backend, TestDatabase, eventually};

/// The password of every account the tests register.
pub const PASSWORD: &str = "correct horse battery";

/// Issuer and audience the whole test system agrees on.
const ISSUER: &str = "http://portico.e2e";

/// Directory holding the service binaries (`target/debug`).
fn binaries_dir() -> PathBuf {
    // The test executable lives in target/debug/deps.
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target profile dir")
        .to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let path = binaries_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (scripts/test.sh runs `cargo build --bins`)",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1 (the OS picks; the listener is released),
/// never the same one twice in this process. Another process may still take
/// it before our child binds it: [`System::start_with`] retries then.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut handed_out = HANDED_OUT.lock().expect("port list");
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// A process lost its pre-picked port to another process between the pick
/// and its bind (ports are picked by binding port 0 and releasing it).
#[derive(Debug)]
pub struct PortTaken(pub String);

/// One running service process.
#[derive(Debug)]
pub struct Process {
    pub name: String,
    pub api_port: u16,
    pub admin_port: u16,
    child: Option<Child>,
    log: PathBuf,
    /// How it was started, to start it again ([`Process::restart`]).
    binary_name: String,
    env_prefix: String,
    env: Vec<(String, String)>,
}

impl Process {
    fn spawn(
        name: &str,
        binary_name: &str,
        env_prefix: &str,
        env: &[(String, String)],
        logs: &Path,
    ) -> Self {
        let mut process = Self {
            name: name.to_owned(),
            api_port: free_port(),
            admin_port: free_port(),
            child: None,
            log: logs.join(format!("{name}.log")),
            binary_name: binary_name.to_owned(),
            env_prefix: env_prefix.to_owned(),
            env: env.to_vec(),
        };
        process.launch();
        process
    }

    /// A gateway on its own (no user or auth service), reading
    /// `config_toml` over its defaults, ready. The default `auth` and `user`
    /// upstreams point at `stand_in` (they must answer for the gateway to
    /// be ready). Its log goes to `logs`.
    pub async fn gateway_alone(
        stand_in: &str,
        config_toml: &str,
        logs: &Path,
        client: &reqwest::Client,
    ) -> Self {
        let file = logs.join("gateway.toml");
        let config = format!(
            "[upstreams.auth]\nendpoints = [\"{stand_in}\"]\n\
             [upstreams.user]\nendpoints = [\"{stand_in}\"]\n\n{config_toml}"
        );
        std::fs::write(&file, config).expect("gateway config file");
        let env = [("CONFIG_FILE".to_owned(), file.display().to_string())];
        for attempt in 1..=3 {
            let mut gateway =
                Self::spawn("gateway", "portico-gateway", "PORTICO_GATEWAY_", &env, logs);
            match gateway.wait_ready(client).await {
                Ok(()) => return gateway,
                Err(PortTaken(_)) => eprintln!("attempt {attempt}: the gateway lost its port"),
            }
        }
        panic!("the gateway could not start: its ports kept being taken");
    }

    /// Its resident memory now and at its peak so far, in bytes
    /// (`VmRSS`, `VmHWM`).
    pub fn memory(&self) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the process's status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map(|kib| kib * 1024)
                .unwrap_or_else(|| panic!("no {name} in /proc status"))
        };
        Memory {
            resident: field("VmRSS:"),
            peak: field("VmHWM:"),
        }
    }

    /// Starts it again after it exited, on the same ports and with the
    /// same settings (a rolling restart's second half), and waits until
    /// it is ready. Its log continues in the same file.
    pub async fn restart(&mut self, client: &reqwest::Client) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        self.launch();
        if self.wait_ready(client).await.is_err() {
            panic!("{} lost its port on restart:\n{}", self.name, self.log());
        }
    }

    fn launch(&mut self) {
        let (api_port, admin_port, env_prefix) =
            (self.api_port, self.admin_port, self.env_prefix.as_str());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut command = Command::new(binary(&self.binary_name));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                format!("{env_prefix}LISTEN__API"),
                format!("127.0.0.1:{api_port}"),
            )
            .env(
                format!("{env_prefix}LISTEN__ADMIN"),
                format!("127.0.0.1:{admin_port}"),
            )
            .env(format!("{env_prefix}TELEMETRY__LOG_FORMAT"), "json")
            .env(format!("{env_prefix}SHUTDOWN__DRAIN_TIMEOUT_SECS"), "5")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().expect("log file")))
            .stderr(Stdio::from(file));
        for (key, value) in &self.env {
            command.env(format!("{env_prefix}{key}"), value);
        }
        self.child = Some(command.spawn().expect("spawn service"));
    }

    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// The process's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    /// Waits until `/readyz` answers 200, failing with the log if the
    /// process exits or the deadline passes.
    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, client: &reqwest::Client) -> Result<(), PortTaken> {
        self.wait_for(client, "/readyz").await
    }

    /// Waits until `/healthz` answers 200: the process serves (its
    /// migrations are done) though it may not be ready yet.
    pub async fn wait_alive(&mut self, client: &reqwest::Client) -> Result<(), PortTaken> {
        self.wait_for(client, "/healthz").await
    }

    async fn wait_for(&mut self, client: &reqwest::Client, path: &str) -> Result<(), PortTaken> {
        let url = format!("{}{path}", self.admin_url());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                if self.log().contains("Address already in use") {
                    return Err(PortTaken(self.name.clone()));
                }
                panic!(
                    "{} exited during startup ({status}):\n{}",
                    self.name,
                    self.log()
                );
            }
            if let Ok(response) = client.get(&url).send().await
                && response.status() == 200
            {
                return Ok(());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} not answering 200 on {path} after 60 s:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGSTOP: the process hangs — it keeps its sockets open and accepts
    /// connections (the kernel does) but answers nothing.
    pub fn freeze(&self) {
        kill(self.pid(), Signal::SIGSTOP).expect("SIGSTOP");
    }

    /// SIGHUP: the gateway reloads its configuration.
    pub fn hang_up(&self) {
        kill(self.pid(), Signal::SIGHUP).expect("SIGHUP");
    }

    /// SIGCONT: a frozen process carries on.
    pub fn thaw(&self) {
        kill(self.pid(), Signal::SIGCONT).expect("SIGCONT");
    }

    /// SIGKILL: the process dies without any chance to clean up.
    pub fn kill_hard(&mut self) {
        kill(self.pid(), Signal::SIGKILL).expect("SIGKILL");
        self.child.take().expect("running").wait().expect("reap");
    }

    /// SIGTERM, then waits for the exit (bounded).
    pub async fn terminate(&mut self) -> ExitStatus {
        self.send_sigterm();
        self.wait_exit().await
    }

    /// SIGTERM without waiting: the process starts draining.
    pub fn send_sigterm(&self) {
        kill(self.pid(), Signal::SIGTERM).expect("SIGTERM");
    }

    /// Waits (bounded) for the process to exit.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        eventually(
            Duration::from_secs(30),
            "process exit after SIGTERM",
            || {
                let status = child.try_wait().expect("try_wait");
                async move { status }
            },
        )
        .await
    }

    /// Sum of the `http_requests_total` counters for `route`.
    pub async fn request_count(&self, client: &reqwest::Client, route: &str) -> u64 {
        let needle = format!("route=\"{route}\"");
        self.metric_sum(client, |line| {
            line.starts_with("http_requests_total{") && line.contains(&needle)
        })
        .await as u64
    }

    /// The process's `/metrics` text; `None` while it cannot be read (the
    /// process down or restarting).
    pub async fn metrics(&self, client: &reqwest::Client) -> Option<String> {
        client
            .get(format!("{}/metrics", self.admin_url()))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    /// Sum of the values of the metric lines `select` picks.
    pub async fn metric_sum(&self, client: &reqwest::Client, select: impl Fn(&str) -> bool) -> f64 {
        let text = self.metrics(client).await.expect("metrics");
        text.lines()
            .filter(|line| select(line))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A process's memory, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub resident: u64,
    pub peak: u64,
}

/// The whole system: gateway → two user replicas and one auth replica.
#[derive(Debug)]
pub struct System {
    pub gateway: Process,
    pub users: Vec<Process>,
    pub auth: Process,
    pub client: reqwest::Client,
    /// The gateway's config file, when it reads its upstreams from one
    /// ([`System::start_with_upstreams_in_file`]).
    pub gateway_file: Option<PathBuf>,
    _databases: Vec<TestDatabase>,
    logs: tempfile::TempDir,
}

/// Extra settings for one service of a [`System`]: `(service, KEY, value)`
/// where service is `gateway`, `user` or `auth` and KEY has no prefix.
pub type ExtraEnv<'a> = &'a [(&'a str, &'a str, &'a str)];

fn extra_for(extra: ExtraEnv<'_>, service: &str) -> Vec<(String, String)> {
    extra
        .iter()
        .filter(|(s, _, _)| *s == service)
        .map(|(_, k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl System {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    pub async fn start_with(backend: Backend, extra: ExtraEnv<'_>) -> Self {
        Self::start_inner(backend, extra, false).await
    }

    /// As [`System::start`], with the gateway's upstreams in a config file
    /// (`gateway_file`) rather than its environment, as Kubernetes runs it:
    /// rewriting the file changes them live.
    pub async fn start_with_upstreams_in_file(backend: Backend) -> Self {
        Self::start_inner(backend, &[], true).await
    }

    async fn start_inner(backend: Backend, extra: ExtraEnv<'_>, upstreams_in_file: bool) -> Self {
        let logs = tempfile::tempdir().expect("log dir");
        let gateway_file = upstreams_in_file.then(|| logs.path().join("gateway.toml"));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let user_db = TestDatabase::new(backend).await;
        let auth_db = TestDatabase::new(backend).await;
        for attempt in 1..=3 {
            let spawned = Self::spawn_processes(
                extra,
                &client,
                &user_db,
                &auth_db,
                logs.path(),
                gateway_file.as_deref(),
            )
            .await;
            match spawned {
                Ok((gateway, users, auth)) => {
                    return Self {
                        gateway,
                        users,
                        auth,
                        client,
                        gateway_file,
                        _databases: vec![user_db, auth_db],
                        logs,
                    };
                }
                Err(PortTaken(name)) => {
                    eprintln!(
                        "attempt {attempt}: {name} lost its port to another process; retrying on new ports"
                    );
                }
            }
        }
        panic!("the system could not start: its ports kept being taken");
    }

    /// Starts users, auth and gateway; a process that loses its port ends
    /// the attempt (the processes started so far are dropped, i.e. killed).
    async fn spawn_processes(
        extra: ExtraEnv<'_>,
        client: &reqwest::Client,
        user_db: &TestDatabase,
        auth_db: &TestDatabase,
        logs: &Path,
        gateway_file: Option<&Path>,
    ) -> Result<(Process, Vec<Process>, Process), PortTaken> {
        // Auth's port must be known before the users start (their JWKS URL)
        // and the users' before auth starts (its user service URL), so the
        // auth process is spawned with a pre-picked port.
        // Who finds whom comes from deploy/topology.toml; this run's
        // addresses fill it in.
        let token_env = || {
            vec![
                ("TOKENS__ISSUER".to_owned(), ISSUER.to_owned()),
                ("TOKENS__AUDIENCE".to_owned(), "portico-api".to_owned()),
            ]
        };
        let auth_api_port = free_port();
        let mut addresses = topology::Addresses::default();
        addresses
            .service
            .insert("auth", format!("http://127.0.0.1:{auth_api_port}"));

        let mut users = Vec::new();
        for i in 1..=2 {
            let mut env = token_env();
            env.extend(topology::wiring("user", &addresses));
            env.push(("DATABASE__URL".to_owned(), user_db.url.clone()));
            env.push(("DATABASE__CREATE_IF_MISSING".to_owned(), "true".to_owned()));
            // Account deletions reach auth as signed webhooks.
            env.push((
                "EVENTS__SUBSCRIBERS".to_owned(),
                format!(
                    r#"[{{name = "auth", url = "http://127.0.0.1:{auth_api_port}/internal/events", secret = "{}", types = ["user.deleted"]}}]"#,
                    portico_testkit::TEST_WEBHOOK_SECRET
                ),
            ));
            env.extend(extra_for(extra, "user"));
            let mut user = Process::spawn(
                &format!("user-{i}"),
                "portico-user",
                "PORTICO_USER_",
                &env,
                logs,
            );
            // The first replica migrates the shared database before the
            // second starts. Ready comes later: it needs auth's keys.
            user.wait_alive(client).await?;
            users.push(user);
        }

        let auth_env = vec![
            (
                "LISTEN__API".to_owned(),
                format!("127.0.0.1:{auth_api_port}"),
            ),
            ("DATABASE__URL".to_owned(), auth_db.url.clone()),
            ("DATABASE__CREATE_IF_MISSING".to_owned(), "true".to_owned()),
            ("TOKENS__ISSUER".to_owned(), ISSUER.to_owned()),
            ("TOKENS__AUDIENCE".to_owned(), "portico-api".to_owned()),
            (
                "SIGNING_KEYS__ENCRYPTION_KEY".to_owned(),
                portico_testkit::TEST_KEK.to_owned(),
            ),
            (
                "EVENTS__SECRETS".to_owned(),
                format!(r#"["{}"]"#, portico_testkit::TEST_WEBHOOK_SECRET),
            ),
            (
                "MAIL__FILE_DIR".to_owned(),
                logs.join("mail").display().to_string(),
            ),
        ];
        addresses
            .replicas
            .insert("user", users.iter().map(Process::api_url).collect());
        let auth_env = [
            auth_env,
            topology::wiring("auth", &addresses),
            extra_for(extra, "auth"),
        ]
        .concat();
        let mut auth = Process::spawn("auth", "portico-auth", "PORTICO_AUTH_", &auth_env, logs);
        auth.api_port = auth_api_port;
        auth.wait_ready(client).await?;
        for user in &mut users {
            user.wait_ready(client).await?;
        }

        let mut gateway_env = token_env();
        let wiring = topology::wiring("gateway", &addresses);
        match gateway_file {
            None => gateway_env.extend(wiring),
            Some(file) => {
                let (upstreams, rest): (Vec<_>, Vec<_>) = wiring
                    .into_iter()
                    .partition(|(key, _)| key.starts_with("UPSTREAMS__"));
                std::fs::write(file, upstreams_toml(&upstreams)).expect("gateway config file");
                gateway_env.extend(rest);
                gateway_env.push(("CONFIG_FILE".to_owned(), file.display().to_string()));
            }
        }
        gateway_env.extend(extra_for(extra, "gateway"));
        let mut gateway = Process::spawn(
            "gateway",
            "portico-gateway",
            "PORTICO_GATEWAY_",
            &gateway_env,
            logs,
        );
        gateway.wait_ready(client).await?;
        // The gateway learns the services' operations (its metric and
        // access-log labels) in the background; a test starts once it has.
        let document = format!("{}/openapi.json", gateway.api_url());
        eventually(
            Duration::from_secs(10),
            "the gateway's public document with every service's operations",
            || async {
                let paths = match client.get(&document).send().await {
                    Ok(response) => response.json::<serde_json::Value>().await.ok(),
                    Err(_) => None,
                }?;
                let paths = paths.get("paths")?;
                (paths.get("/v1/users/me").is_some() && paths.get("/v1/auth/login").is_some())
                    .then_some(())
            },
        )
        .await;

        Ok((gateway, users, auth))
    }

    /// One more user replica, started like the others (same database and
    /// settings) and ready; not known to the gateway until it is told.
    pub async fn spawn_user(&self, name: &str) -> Process {
        let template = &self.users[0];
        for _ in 0..3 {
            let mut user = Process::spawn(
                name,
                &template.binary_name,
                &template.env_prefix,
                &template.env,
                self.logs.path(),
            );
            if user.wait_ready(&self.client).await.is_ok() {
                return user;
            }
        }
        panic!("user replica {name} could not start: its ports kept being taken");
    }

    /// The gateway's failed attempts (refused connections and mid-request
    /// failures) on user replica `index`.
    pub async fn gateway_failed_attempts_on_user(&self, index: usize) -> f64 {
        let endpoint = format!("endpoint=\"{}\"", self.users[index].api_url());
        self.gateway
            .metric_sum(&self.client, |line| {
                (line.starts_with("gateway_upstream_connect_failures_total{")
                    || line.starts_with("gateway_upstream_failures_total{"))
                    && line.contains(&endpoint)
            })
            .await
    }

    /// URL of `path` through the gateway.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.api_url())
    }

    /// Registers `email` (with [`PASSWORD`]) through the gateway; the token
    /// response.
    pub async fn register(&self, email: &str) -> serde_json::Value {
        let body = serde_json::json!({"email": email, "password": PASSWORD, "display_name": "Ann"});
        self.expect_tokens("/v1/auth/register", &body, 201).await
    }

    /// Logs `email` in through the gateway; the token response.
    pub async fn login(&self, email: &str) -> serde_json::Value {
        let body = serde_json::json!({"email": email, "password": PASSWORD});
        self.expect_tokens("/v1/auth/login", &body, 200).await
    }

    async fn expect_tokens(
        &self,
        path: &str,
        body: &serde_json::Value,
        status: u16,
    ) -> serde_json::Value {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request through the gateway");
        assert_eq!(response.status(), status, "{path}:\n{}", self.logs());
        response.json().await.expect("token response")
    }

    /// Every process's log, for failure messages.
    pub fn logs(&self) -> String {
        std::fs::read_dir(self.logs.path())
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| {
                        format!(
                            "--- {} ---\n{}",
                            e.file_name().to_string_lossy(),
                            std::fs::read_to_string(e.path()).unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }
}

/// `UPSTREAMS__<NAME>__<KEY>` wiring as the TOML of a gateway config file.
fn upstreams_toml(wiring: &[(String, String)]) -> String {
    let mut out = String::new();
    for (key, value) in wiring {
        let mut parts = key.splitn(3, "__").skip(1);
        let (Some(name), Some(field)) = (parts.next(), parts.next()) else {
            panic!("wiring key {key} is not UPSTREAMS__<NAME>__<KEY>");
        };
        // The values are JSON lists of strings, which TOML reads as they are.
        out.push_str(&format!(
            "[upstreams.{}]\n{} = {value}\n\n",
            name.to_lowercase(),
            field.to_lowercase()
        ));
    }
    out
}

//! A real SMTP server for tests that send mail: aiosmtpd (installed by
//! `scripts/lib/test-services.sh`, found through `PORTICO_TEST_AIOSMTPD`),
//! one per test on a free port, keeping what it receives in a maildir the
//! test reads. Without the variable the test fails loudly: it never passes
//! because no server was there.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// The variable naming the Python that has aiosmtpd.
pub const AIOSMTPD_VAR: &str = "PORTICO_TEST_AIOSMTPD";

/// One message as the server received it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The raw RFC 5322 text, headers and body.
    pub raw: String,
}

impl ReceivedMail {
    /// The value of header `name` (first occurrence, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.raw
            .lines()
            .take_while(|line| !line.is_empty())
            .find(|line| line.to_ascii_lowercase().starts_with(&prefix))
            .map(|line| line[prefix.len()..].trim().to_owned())
    }

    /// The value of `#token=` in the message's link.
    pub fn link_token(&self) -> Option<String> {
        let start = self.raw.find("#token=")? + "#token=".len();
        let token: String = self.raw[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .collect();
        (!token.is_empty()).then_some(token)
    }
}

/// A running aiosmtpd.
pub struct SmtpServer {
    pub port: u16,
    maildir: tempfile::TempDir,
    child: Child,
}

impl SmtpServer {
    /// Starts a server on a free port and waits until it accepts
    /// connections (on another port if the first was taken meanwhile).
    pub async fn start() -> Self {
        let python = std::env::var(AIOSMTPD_VAR).unwrap_or_else(|_| {
            panic!(
                "{AIOSMTPD_VAR} is not set: run the tests through scripts/test.sh, or `source \
                 scripts/lib/test-services.sh && portico_ensure_smtp_server` first"
            )
        });
        for _ in 0..3 {
            if let Some(server) = Self::try_start(&python).await {
                return server;
            }
        }
        panic!("aiosmtpd could not start: its ports kept being taken");
    }

    async fn try_start(python: &str) -> Option<Self> {
        let maildir = tempfile::tempdir().expect("maildir");
        // A port the OS picks, released for the server to bind.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("box"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("start aiosmtpd ({python}): {err}"));
        let mut server = Self {
            port,
            maildir,
            child,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(_)) = server.child.try_wait() {
                return None;
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(server);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "aiosmtpd not accepting on {port} after 15 s"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn new_dir(&self) -> PathBuf {
        self.maildir.path().join("box").join("new")
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        let mut entries: Vec<_> = std::fs::read_dir(self.new_dir())
            .map(|dir| dir.filter_map(Result::ok).collect())
            .unwrap_or_default();
        // Maildir names are `<secs>.M<usecs>P<pid>Q<count>.<host>`: order by
        // the second, then the server's own delivery count.
        entries.sort_by_key(|entry| delivery_order(&entry.file_name().to_string_lossy()));
        entries
            .iter()
            .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
            .map(|raw| ReceivedMail { raw })
            .collect()
    }

    /// Waits (up to 10 s) until `count` messages have arrived; all of them.
    pub async fn wait_for(&self, count: usize) -> Vec<ReceivedMail> {
        crate::eventually(
            Duration::from_secs(10),
            &format!("{count} messages at the SMTP server"),
            || async {
                let messages = self.messages();
                (messages.len() >= count).then_some(messages)
            },
        )
        .await
    }
}

/// `(seconds, delivery count)` of a maildir file name.
fn delivery_order(name: &str) -> (u64, u64) {
    let mut parts = name.split('.');
    let secs = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let count = parts
        .next()
        .and_then(|unique| unique.rsplit_once('Q'))
        .and_then(|(_, count)| count.parse().ok())
        .unwrap_or(0);
    (secs, count)
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

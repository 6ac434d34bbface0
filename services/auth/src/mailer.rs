//! Mail to an account's address: the links that verify the email and
//! reset the password. SMTP (`lettre`) in production; in the embedded
//! default each message is an `.eml` file in a directory (owner-only, as
//! the links in it are secrets) — nothing is ever logged with its token.

use std::{path::PathBuf, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{
        Body, Mailbox,
        header::{ContentTransferEncoding, ContentType},
    },
    transport::smtp::authentication::Credentials,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// `mail` in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// `file` (the embedded default) or `smtp`.
    pub transport: TransportKind,
    /// The sender, `Name <address>`.
    pub from: String,
    /// Where the file transport writes.
    pub file_dir: PathBuf,
    /// Where the links in mails point: your app's pages, which read the
    /// token from the fragment (`#token=…`) and post it to auth.
    pub link_base: String,
    pub smtp: SmtpConfig,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    File,
    Smtp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// `starttls` (587), `tls` (implicit, 465) or `none` (a relay on the
    /// same host, tests).
    pub tls: SmtpTls,
    /// Empty: no authentication.
    pub username: String,
    pub password: Option<SecretString>,
    /// One message's whole exchange.
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    Starttls,
    Tls,
    None,
}

/// What a mail says.
#[derive(Debug, Clone, Copy)]
pub enum Mail<'a> {
    VerifyEmail { token: &'a str },
    ResetPassword { token: &'a str },
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("the message could not be built: {0}")]
    Build(String),
    #[error("the message could not be sent: {0}")]
    Send(String),
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(PathBuf),
}

/// Sends the service's mail.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    link_base: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = match &self.transport {
            Transport::Smtp(_) => "smtp",
            Transport::File(_) => "file",
        };
        f.debug_struct("Mailer")
            .field("transport", &transport)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// The mailer the config describes; the key at fault and what is wrong
    /// otherwise.
    pub fn from_config(config: &MailConfig) -> Result<Self, (String, String)> {
        let from = config
            .from
            .parse::<Mailbox>()
            .map_err(|err| ("mail.from".to_owned(), format!("not a mailbox: {err}")))?;
        if !(config.link_base.starts_with("https://") || config.link_base.starts_with("http://"))
            || !config.link_base.is_ascii()
            || config.link_base.len() > 512
        {
            return Err((
                "mail.link_base".into(),
                "must be an http(s) URL in ASCII (punycode, percent-encoding), at most 512 bytes: your app's pages".into(),
            ));
        }
        let transport = match config.transport {
            TransportKind::File => Transport::File(config.file_dir.clone()),
            TransportKind::Smtp => Transport::Smtp(smtp_transport(&config.smtp)?),
        };
        Ok(Self {
            transport,
            from,
            link_base: config.link_base.trim_end_matches('/').to_owned(),
        })
    }

    /// Sends `mail` to `to`.
    pub async fn send(&self, to: &str, mail: Mail<'_>) -> Result<(), MailError> {
        let (subject, body) = self.compose(mail);
        let to = to
            .parse::<Mailbox>()
            .map_err(|err| MailError::Build(err.to_string()))?;
        // 7bit, never quoted-printable: a soft line break must not split
        // the link. Valid as is: the text is ASCII (the link base is
        // checked at startup, tokens are base64url) and its longest line
        // is far below the 998-octet limit.
        if !body.is_ascii() || body.lines().any(|line| line.len() > 998) {
            return Err(MailError::Build("the body is not 7-bit text".into()));
        }
        let body = Body::dangerous_pre_encoded(
            body.replace('\n', "\r\n").into_bytes(),
            ContentTransferEncoding::SevenBit,
        );
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|err| MailError::Build(err.to_string()))?;
        match &self.transport {
            Transport::Smtp(smtp) => smtp
                .send(message)
                .await
                .map(|_| ())
                .map_err(|err| MailError::Send(err.to_string())),
            Transport::File(dir) => write_file(dir, &message.formatted()).await,
        }
    }

    fn compose(&self, mail: Mail<'_>) -> (&'static str, String) {
        match mail {
            Mail::VerifyEmail { token } => (
                "Confirm your email address",
                format!(
                    "Confirm that this address is yours by opening:\n\n{}/verify-email#token={token}\n\n\
                     The link works once, for a limited time. If you did not create an account, ignore this message.\n",
                    self.link_base
                ),
            ),
            Mail::ResetPassword { token } => (
                "Reset your password",
                format!(
                    "Someone asked to reset the password of the account with this address. To choose a new one, open:\n\n\
                     {}/reset-password#token={token}\n\n\
                     The link works once, for a limited time, and signs every device out. \
                     If it was not you, ignore this message: your password stays as it is.\n",
                    self.link_base
                ),
            ),
        }
    }
}

fn smtp_transport(
    config: &SmtpConfig,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, (String, String)> {
    let invalid =
        |err: lettre::transport::smtp::Error| ("mail.smtp.host".to_owned(), err.to_string());
    let builder = match config.tls {
        SmtpTls::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host).map_err(invalid)?
        }
        SmtpTls::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host).map_err(invalid)?
        }
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
    };
    let mut builder = builder
        .port(config.port)
        .timeout(Some(Duration::from_millis(config.timeout_ms)));
    if !config.username.is_empty() {
        let password = config.password.as_ref().ok_or_else(|| {
            (
                "mail.smtp.password".to_owned(),
                "required with a username".to_owned(),
            )
        })?;
        builder = builder.credentials(Credentials::new(
            config.username.clone(),
            password.expose_secret().to_owned(),
        ));
    }
    Ok(builder.build())
}

/// One message as `<dir>/<uuid>.eml`, readable by the owner only.
async fn write_file(dir: &std::path::Path, message: &[u8]) -> Result<(), MailError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let dir = dir.to_owned();
    let message = message.to_vec();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.eml", uuid::Uuid::now_v7()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(&message)
    })
    .await
    .map_err(|err| MailError::Send(format!("file transport task: {err}")))?
    .map_err(|err| MailError::Send(format!("file transport: {err}")))
}

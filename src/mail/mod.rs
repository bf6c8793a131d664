//! Outgoing email: verification, recovery, magic-URL and OTP sign-in, team invitations.
//!
//! A [`Mailer`] either talks SMTP to a relay (`NIMBUS_SMTP_URL`) or, with no relay
//! configured, writes each message as an `.eml` file into an outbox directory, so a
//! fresh install works offline and a developer can open what would have been sent.
//!
//! This module only formats, queues ([`queue`], on durable jobs) and delivers: it
//! does not decide *when* to send (the services do), does not build links or
//! secrets (the caller does), and never logs a message body, which carries sign-in
//! secrets.

pub mod queue;
pub mod templates;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};

/// Bounds connecting and each SMTP command, so a silent relay cannot hold a worker.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds one whole delivery: a relay that answers every command just in time must
/// still not hold a worker for long.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// One email to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMail {
    /// The recipient's bare address (`ada@example.com`), checked before sending.
    pub to: String,
    /// One line; line breaks are refused (they would inject headers).
    pub subject: String,
    /// The plain-text body, always sent.
    pub text: String,
    /// An HTML alternative of the same content, when there is one.
    pub html: Option<String>,
}

/// Why an email was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The recipient is not a valid email address.
    #[error("{address:?} is not a valid email address: {reason}")]
    InvalidAddress { address: String, reason: String },
    /// The subject has a line break or another control character, which would let
    /// its author add headers of their own.
    #[error("the subject must be a single line without control characters")]
    InvalidSubject,
    /// The relay refused the message or could not be reached. The text names the
    /// failing step and the relay's reply, never the credentials.
    #[error("SMTP delivery failed: {0}")]
    Transport(String),
    /// The outbox directory could not be written.
    #[error("cannot write to the outbox: {0}")]
    Io(#[from] std::io::Error),
}

/// Sends email over SMTP, or drops it into the development outbox.
#[derive(Clone)]
pub struct Mailer {
    from: Mailbox,
    delivery: Delivery,
}

#[derive(Clone)]
enum Delivery {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        /// The URL without credentials, for logs and health.
        description: String,
    },
    Outbox {
        dir: PathBuf,
    },
}

/// How an `smtp://` connection treats STARTTLS (`?starttls=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartTls {
    /// Upgrade when the relay offers it, else stay plain: the default without
    /// credentials.
    Opportunistic,
    /// Refuse to continue without it: the default with credentials, so a password
    /// never crosses the network in clear because someone stripped the offer.
    Required,
    /// Never upgrade: for a trusted local relay with a certificate we cannot check.
    Never,
}

/// `to` as an address the relay takes.
fn recipient(to: &str) -> Result<Address, MailError> {
    to.parse().map_err(
        |err: lettre::address::AddressError| MailError::InvalidAddress {
            address: to.to_string(),
            reason: err.to_string(),
        },
    )
}

impl Mailer {
    /// Builds the mailer from the server's settings.
    ///
    /// With `smtp_url`, messages go to that relay:
    /// - `smtp://[user:password@]host[:port]` — plain SMTP, upgraded with STARTTLS when
    ///   the relay offers it (port 25 by default). With credentials STARTTLS is
    ///   required instead (port 587 by default), unless the URL says otherwise.
    /// - `?starttls=required|opportunistic|never` chooses explicitly.
    /// - `smtps://[user:password@]host[:port]` — TLS from the first byte (port 465).
    ///
    /// User and password are percent-decoded. Without `smtp_url`, each message is
    /// written to `outbox_dir` (created here) as an `.eml` file.
    ///
    /// `from` is the sender, a bare address or `Name <address>`.
    pub fn from_config(
        smtp_url: Option<&str>,
        from: &str,
        outbox_dir: &Path,
    ) -> anyhow::Result<Mailer> {
        let from: Mailbox = from
            .parse()
            .with_context(|| format!("the sender address {from:?} is not valid"))?;
        let delivery = match smtp_url {
            Some(url) => smtp_delivery(url, &from)?,
            None => {
                std::fs::create_dir_all(outbox_dir).with_context(|| {
                    format!("cannot create the mail outbox {}", outbox_dir.display())
                })?;
                Delivery::Outbox {
                    dir: outbox_dir.to_path_buf(),
                }
            }
        };
        Ok(Mailer { from, delivery })
    }

    /// `smtp` or `outbox`, for health reports.
    pub fn kind(&self) -> &'static str {
        match self.delivery {
            Delivery::Smtp { .. } => "smtp",
            Delivery::Outbox { .. } => "outbox",
        }
    }

    /// Where mail goes, safe to log: `smtp://host:port` (no credentials) or
    /// `outbox DIR`.
    pub fn describe(&self) -> String {
        match &self.delivery {
            Delivery::Smtp { description, .. } => description.clone(),
            Delivery::Outbox { dir } => format!("outbox {}", dir.display()),
        }
    }

    /// Checks that mail can go out: for SMTP, connects (with TLS and login as
    /// configured), sends NOOP and QUIT, all within the SMTP timeout; for the outbox,
    /// writes and removes a probe file.
    pub async fn check(&self) -> Result<(), MailError> {
        match &self.delivery {
            Delivery::Smtp { transport, .. } => {
                match tokio::time::timeout(SMTP_TIMEOUT, transport.test_connection()).await {
                    Ok(Ok(true)) => Ok(()),
                    Ok(Ok(false)) => {
                        Err(MailError::Transport("the relay did not answer NOOP".into()))
                    }
                    Ok(Err(err)) => Err(MailError::Transport(err.to_string())),
                    Err(_) => Err(MailError::Transport(format!(
                        "no answer within {SMTP_TIMEOUT:?}"
                    ))),
                }
            }
            Delivery::Outbox { dir } => {
                let probe = dir.join(format!(".health-{:016x}", rand::random::<u64>()));
                let written = tokio::fs::write(&probe, b"ok").await;
                let _ = tokio::fs::remove_file(&probe).await;
                Ok(written?)
            }
        }
    }

    /// Sends one message: checks it, then hands it to the relay or writes it to the
    /// outbox.
    pub async fn send(&self, mail: OutgoingMail) -> Result<(), MailError> {
        let message = self.build(&mail)?;
        match &self.delivery {
            Delivery::Smtp { transport, .. } => {
                match tokio::time::timeout(SEND_TIMEOUT, transport.send(message)).await {
                    Ok(Ok(_)) => {
                        tracing::debug!(to = %mail.to, subject = %mail.subject, "mail sent");
                        Ok(())
                    }
                    Ok(Err(err)) => Err(MailError::Transport(err.to_string())),
                    Err(_) => Err(MailError::Transport(format!(
                        "not delivered within {SEND_TIMEOUT:?}"
                    ))),
                }
            }
            Delivery::Outbox { dir } => {
                let path = write_to_outbox(dir, &message.formatted()).await?;
                tracing::info!(
                    to = %mail.to,
                    subject = %mail.subject,
                    path = %path.display(),
                    "mail written to the outbox (no SMTP relay configured)"
                );
                Ok(())
            }
        }
    }

    /// Checks that `mail` can be sent (recipient, subject) without sending it.
    pub fn check_message(&self, mail: &OutgoingMail) -> Result<(), MailError> {
        self.build(mail).map(|_| ())
    }

    /// Checks that mail can be sent to `to`, before anything is written for it.
    pub fn check_recipient(&self, to: &str) -> Result<(), MailError> {
        recipient(to).map(|_| ())
    }

    fn build(&self, mail: &OutgoingMail) -> Result<Message, MailError> {
        let to = recipient(&mail.to)?;
        if mail.subject.chars().any(|c| c.is_control() && c != '\t') {
            return Err(MailError::InvalidSubject);
        }
        let builder = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(mail.subject.as_str())
            // lettre's own id would end in `@localhost`, which spam filters dislike.
            .message_id(Some(format!(
                "<{:016x}{:016x}@{}>",
                rand::random::<u64>(),
                rand::random::<u64>(),
                self.from.email.domain()
            )));
        let built = match &mail.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                html.clone(),
            )),
            None => builder.singlepart(SinglePart::plain(mail.text.clone())),
        };
        // Every header was checked above, so this is a bug, not bad input.
        built.map_err(|err| MailError::Transport(format!("cannot build the message: {err}")))
    }
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the transport itself: it holds the relay's credentials.
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .field("delivery", &self.describe())
            .finish()
    }
}

/// Parses `smtp(s)://…` into a transport. See [`Mailer::from_config`].
fn smtp_delivery(raw: &str, from: &Mailbox) -> anyhow::Result<Delivery> {
    // Errors name the URL's parts, never the URL: it may hold a password.
    let url = url::Url::parse(raw).map_err(|err| anyhow::anyhow!("bad SMTP URL: {err}"))?;
    let implicit_tls = match url.scheme() {
        "smtp" => false,
        "smtps" => true,
        other => anyhow::bail!("bad SMTP URL: the scheme must be smtp or smtps, not {other:?}"),
    };
    let host = match url.host() {
        Some(url::Host::Domain(domain)) => domain.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => anyhow::bail!("bad SMTP URL: it has no host"),
    };
    anyhow::ensure!(
        matches!(url.path(), "" | "/") && url.fragment().is_none(),
        "bad SMTP URL: it takes no path or fragment"
    );

    let decode = |part: &str, what: &str| {
        percent_decode(part).with_context(|| format!("bad SMTP URL: cannot decode the {what}"))
    };
    let credentials = match (url.username(), url.password()) {
        ("", None) => None,
        (user, Some(password)) if !user.is_empty() => Some(Credentials::new(
            decode(user, "user name")?,
            decode(password, "password")?,
        )),
        _ => anyhow::bail!("bad SMTP URL: credentials must be user:password"),
    };

    let mut starttls = None;
    for (key, value) in url.query_pairs() {
        match (key.as_ref(), value.as_ref()) {
            ("starttls", "required") => starttls = Some(StartTls::Required),
            ("starttls", "opportunistic") => starttls = Some(StartTls::Opportunistic),
            ("starttls", "never") => starttls = Some(StartTls::Never),
            ("starttls", other) => anyhow::bail!(
                "bad SMTP URL: starttls must be required, opportunistic or never, not {other:?}"
            ),
            (other, _) => anyhow::bail!("bad SMTP URL: unknown parameter {other:?}"),
        }
    }
    anyhow::ensure!(
        !(implicit_tls && starttls.is_some()),
        "bad SMTP URL: smtps:// is TLS from the start; starttls applies to smtp:// only"
    );
    let starttls = starttls.unwrap_or(if credentials.is_some() {
        StartTls::Required
    } else {
        StartTls::Opportunistic
    });

    let tls_parameters = || {
        TlsParameters::new(host.clone())
            .map_err(|err| anyhow::anyhow!("cannot set up TLS for the SMTP relay: {err}"))
    };
    let (tls, default_port, query) = if implicit_tls {
        (Tls::Wrapper(tls_parameters()?), 465, "")
    } else {
        match starttls {
            StartTls::Opportunistic => (Tls::Opportunistic(tls_parameters()?), 25, ""),
            StartTls::Required => (Tls::Required(tls_parameters()?), 587, "?starttls=required"),
            StartTls::Never => (Tls::None, 25, "?starttls=never"),
        }
    };
    let port = url.port().unwrap_or(default_port);
    if credentials.is_some() && starttls == StartTls::Never {
        tracing::warn!(
            host,
            port,
            "SMTP credentials will be sent without encryption"
        );
    }

    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
        .port(port)
        .tls(tls)
        .timeout(Some(SMTP_TIMEOUT))
        // RFC 5321 wants our own domain in EHLO; the sender's domain is the one we
        // know, and lettre's fallback (an address literal) is what spam filters flag.
        .hello_name(ClientId::Domain(from.email.domain().to_string()));
    if let Some(credentials) = credentials {
        builder = builder.credentials(credentials);
    }
    let display_host = match url.host() {
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        _ => host.clone(),
    };
    Ok(Delivery::Smtp {
        transport: builder.build(),
        description: format!("{}://{display_host}:{port}{query}", url.scheme()),
    })
}

/// Decodes `%XX` escapes (user and password in a URL); `None` when the result is not
/// UTF-8. A `%` not followed by two hex digits stays as it is, as browsers do.
fn percent_decode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| input.get(i + 1..i + 3))
            .flatten()
            // from_str_radix alone would also take a sign: "%+1".
            .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Writes one message under a fresh name, through a temporary file and a rename, so
/// whoever watches the outbox never reads half a message.
async fn write_to_outbox(dir: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let name = format!(
        "{}-{:016x}.eml",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
        rand::random::<u64>()
    );
    let temporary = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let written = async {
        tokio::fs::write(&temporary, bytes).await?;
        tokio::fs::rename(&temporary, &path).await
    }
    .await;
    if let Err(err) = written {
        let _ = tokio::fs::remove_file(&temporary).await;
        return Err(err);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox_mailer(dir: &Path) -> Mailer {
        Mailer::from_config(None, "Nimbus <noreply@example.com>", dir).unwrap()
    }

    fn mail(to: &str, subject: &str) -> OutgoingMail {
        OutgoingMail {
            to: to.into(),
            subject: subject.into(),
            text: "Open https://app.example.com/verify?userId=u1&secret=s3cr3t".into(),
            html: Some("<p>Open the link</p>".into()),
        }
    }

    fn outbox_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        files
    }

    #[tokio::test]
    async fn outbox_holds_a_readable_eml_per_message() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox");
        let mailer = outbox_mailer(&outbox);
        assert_eq!(mailer.kind(), "outbox");
        assert_eq!(mailer.describe(), format!("outbox {}", outbox.display()));
        mailer.check().await.unwrap();

        mailer
            .send(mail("ada@example.com", "Verify your email"))
            .await
            .unwrap();
        mailer
            .send(mail("bob@example.com", "Second"))
            .await
            .unwrap();

        let files = outbox_files(&outbox);
        assert_eq!(
            files.len(),
            2,
            "one file per message, no leftovers: {files:?}"
        );
        assert!(files.iter().all(|f| f.extension().unwrap() == "eml"));
        let eml = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .find(|eml| eml.contains("To: ada@example.com"))
            .expect("the first message");
        assert!(
            eml.contains("From: Nimbus <noreply@example.com>\r\n"),
            "{eml}"
        );
        assert!(eml.contains("Subject: Verify your email\r\n"), "{eml}");
        assert!(eml.contains("Message-ID: <"), "{eml}");
        assert!(eml.contains("@example.com>"), "{eml}");
        assert!(eml.contains("multipart/alternative"), "{eml}");
        // Short ASCII lines travel as 7bit: the link is there verbatim.
        assert!(
            eml.contains("https://app.example.com/verify?userId=u1&secret=s3cr3t"),
            "{eml}"
        );
    }

    #[tokio::test]
    async fn refuses_line_breaks_in_the_subject() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = outbox_mailer(dir.path());
        for subject in [
            "Hi\r\nBcc: eve@example.com",
            "Hi\nBcc: eve@example.com",
            "a\rb",
        ] {
            let err = mailer
                .send(mail("ada@example.com", subject))
                .await
                .unwrap_err();
            assert!(
                matches!(err, MailError::InvalidSubject),
                "{subject:?}: {err}"
            );
        }
        assert!(outbox_files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn refuses_a_bad_recipient() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = outbox_mailer(dir.path());
        for to in [
            "",
            "not-an-address",
            "ada@",
            "@example.com",
            "ada@example.com\r\nBcc: eve@example.com",
            "Ada <ada@example.com>",
        ] {
            let err = mailer.send(mail(to, "Hello")).await.unwrap_err();
            assert!(
                matches!(&err, MailError::InvalidAddress { address, .. } if address == to),
                "{to:?}: {err}"
            );
        }
        assert!(outbox_files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn reads_smtp_urls_and_never_shows_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let build = |url: &str| Mailer::from_config(Some(url), "noreply@example.com", dir.path());
        let cases = [
            ("smtp://mail.example.com", "smtp://mail.example.com:25"),
            ("smtp://127.0.0.1:2525", "smtp://127.0.0.1:2525"),
            (
                "smtp://me%40example.com:p%40ss@mail.example.com",
                "smtp://mail.example.com:587?starttls=required",
            ),
            (
                "smtp://mail.example.com?starttls=required",
                "smtp://mail.example.com:587?starttls=required",
            ),
            (
                "smtp://u:p@[::1]:2525?starttls=never",
                "smtp://[::1]:2525?starttls=never",
            ),
            (
                "smtps://u:secret@mail.example.com",
                "smtps://mail.example.com:465",
            ),
        ];
        for (url, described) in cases {
            let mailer = build(url).unwrap();
            assert_eq!(mailer.kind(), "smtp");
            assert_eq!(mailer.describe(), described, "{url}");
            assert!(!format!("{mailer:?}").contains("secret"));
        }
        for bad in [
            "http://mail.example.com",
            "smtp://",
            "smtp://mail.example.com/path",
            "smtp://mail.example.com?tls=required",
            "smtp://mail.example.com?starttls=maybe",
            "smtps://mail.example.com?starttls=required",
            "smtp://user@mail.example.com",
        ] {
            let err = build(bad).unwrap_err().to_string();
            assert!(err.starts_with("bad SMTP URL"), "{bad}: {err}");
        }
        let err = build("smtp://u:hunter2@mail.example.com:99999")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(Mailer::from_config(None, "not an address", dir.path()).is_err());
    }

    #[tokio::test]
    async fn smtp_failures_are_transport_errors_within_the_timeout() {
        // A port that refuses connections: bind, note the port, close.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let dir = tempfile::tempdir().unwrap();
        let mailer = Mailer::from_config(
            Some(&format!("smtp://127.0.0.1:{port}")),
            "noreply@example.com",
            dir.path(),
        )
        .unwrap();
        assert!(matches!(mailer.check().await, Err(MailError::Transport(_))));
        let err = mailer
            .send(mail("ada@example.com", "Hello"))
            .await
            .unwrap_err();
        assert!(matches!(err, MailError::Transport(_)), "{err}");
    }
}

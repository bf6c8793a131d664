//! A small real SMTP server that tests start for themselves, so email flows
//! (verification, recovery, magic URL, OTP, invitations) run end to end through
//! `Mailer`'s SMTP path on 127.0.0.1.
//!
//! It speaks what a submission client needs — EHLO/HELO, MAIL FROM, RCPT TO, DATA
//! (dot-unstuffed), RSET, NOOP, QUIT — and keeps every message in memory. No AUTH, no
//! TLS: point `Mailer` at [`TestSmtp::url`] (`smtp://…`, STARTTLS opportunistic, and
//! this server never offers it). Lines, messages, recipients and idle time are bounded;
//! a client that sends garbage is cut off. Nothing here panics on input; only a test
//! that waits in vain fails, with the list of what did arrive.
//!
//! [`ReceivedMail`] decodes what lettre writes (RFC 2047 subjects, quoted-printable
//! and base64 bodies, multipart/alternative) without regexes.

// Test support: not every test uses every helper.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

/// RFC 5321 allows 512 octets per command and 1000 per text line; a little slack.
const MAX_LINE: usize = 2048;
/// What EHLO advertises as SIZE and DATA enforces.
const MAX_MESSAGE: usize = 10 * 1024 * 1024;
const MAX_RECIPIENTS: usize = 100;
/// Unknown or out-of-order commands tolerated before the server hangs up.
const MAX_ERRORS: usize = 5;
/// A connection that says nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How deep [`ReceivedMail`] follows nested multiparts.
const MAX_MIME_DEPTH: usize = 8;

/// A running test SMTP server; it stops when dropped.
pub struct TestSmtp {
    /// `smtp://127.0.0.1:PORT`, ready for `Mailer::from_config`.
    pub url: String,
    inbox: Arc<Inbox>,
    accepting: JoinHandle<()>,
}

/// One message as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The envelope sender (MAIL FROM), without angle brackets.
    pub from: String,
    /// The envelope recipients (RCPT TO), without angle brackets.
    pub to: Vec<String>,
    /// The message as sent after DATA: headers and body, CRLF line ends,
    /// dot-unstuffed, without the final `.` line.
    pub data: String,
}

#[derive(Default)]
struct Inbox {
    messages: Mutex<Messages>,
    arrived: Notify,
}

#[derive(Default)]
struct Messages {
    all: Vec<ReceivedMail>,
    /// Parallel to `all`: the (lowercased) recipients each message was already
    /// returned for by `wait_for_message_to`.
    handed_out: Vec<HashSet<String>>,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, Messages> {
        // A panicking test thread must not take the server down with it.
        self.messages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn store(&self, mail: ReceivedMail) {
        let mut messages = self.lock();
        messages.all.push(mail);
        messages.handed_out.push(HashSet::new());
        drop(messages);
        self.arrived.notify_waiters();
    }
}

impl TestSmtp {
    /// Listens on a free port of 127.0.0.1 and serves until dropped.
    pub async fn start() -> TestSmtp {
        Self::start_on(0).await
    }

    /// Listens on `port` of 127.0.0.1 (0: a free one), e.g. the port of a relay
    /// that was down until now.
    pub async fn start_on(port: u16) -> TestSmtp {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the test SMTP server");
        let port = listener.local_addr().expect("its address").port();
        let inbox = Arc::new(Inbox::default());
        let accepting = tokio::spawn(accept(listener, Arc::clone(&inbox)));
        TestSmtp {
            url: format!("smtp://127.0.0.1:{port}"),
            inbox,
            accepting,
        }
    }

    /// The oldest message to `recipient` (compared case-insensitively) not yet
    /// returned for that recipient, waiting up to `timeout` for it to arrive. Each
    /// message is handed out once per recipient, so two calls for one recipient return
    /// two different emails.
    ///
    /// # Panics
    /// When none arrives in time, naming who did get mail.
    pub async fn wait_for_message_to(&self, recipient: &str, timeout: Duration) -> ReceivedMail {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before looking, so a message stored in between still wakes us.
            let arrived = self.inbox.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(mail) = self.take_first_to(recipient) {
                return mail;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let seen: Vec<Vec<String>> = self
                    .inbox
                    .lock()
                    .all
                    .iter()
                    .map(|mail| mail.to.clone())
                    .collect();
                panic!("no email to {recipient} within {timeout:?}; recipients so far: {seen:?}");
            }
        }
    }

    /// Every message received so far, in arrival order, handed out or not.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.inbox.lock().all.clone()
    }

    /// Every message received so far for `recipient`, handed out or not.
    pub fn messages_to(&self, recipient: &str) -> Vec<ReceivedMail> {
        self.inbox
            .lock()
            .all
            .iter()
            .filter(|mail| mail.is_to(recipient))
            .cloned()
            .collect()
    }

    fn take_first_to(&self, recipient: &str) -> Option<ReceivedMail> {
        let mut messages = self.inbox.lock();
        let Messages { all, handed_out } = &mut *messages;
        let recipient = recipient.to_ascii_lowercase();
        let index = (0..all.len())
            .find(|&i| all[i].is_to(&recipient) && !handed_out[i].contains(&recipient))?;
        handed_out[index].insert(recipient);
        Some(all[index].clone())
    }
}

impl Drop for TestSmtp {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, which aborts every connection.
        self.accepting.abort();
    }
}

async fn accept(listener: TcpListener, inbox: Arc<Inbox>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve(stream, Arc::clone(&inbox)));
                }
                // Out of descriptors and the like: wait a moment rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reap finished connections so the set does not grow for the whole test.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(stream: TcpStream, inbox: Arc<Inbox>) {
    let _ = stream.set_nodelay(true);
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    // Any I/O error just ends this connection.
    let _ = Session::default()
        .run(&mut reader, &mut writer, &inbox)
        .await;
    let _ = writer.shutdown().await;
}

/// One SMTP conversation's state.
#[derive(Default)]
struct Session {
    greeted: bool,
    from: Option<String>,
    to: Vec<String>,
    errors: usize,
}

/// What a line read produced.
enum Line {
    Complete(Vec<u8>),
    TooLong,
    /// The peer closed (a partial last line is dropped) or went idle.
    Closed,
}

impl Session {
    async fn run<R, W>(&mut self, reader: &mut R, writer: &mut W, inbox: &Inbox) -> io::Result<()>
    where
        R: AsyncBufRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        reply(writer, "220 127.0.0.1 Nimbus test SMTP ready").await?;
        loop {
            let line = match read_line(reader).await? {
                Line::Complete(line) => line,
                Line::TooLong => return reply(writer, "500 5.5.2 Line too long, closing").await,
                Line::Closed => return Ok(()),
            };
            let Ok(line) = String::from_utf8(line) else {
                return reply(writer, "500 5.5.2 Not a command, closing").await;
            };
            let (verb, argument) = match line.split_once(' ') {
                Some((verb, argument)) => (verb.to_ascii_uppercase(), argument.trim()),
                None => (line.to_ascii_uppercase(), ""),
            };
            match verb.as_str() {
                "EHLO" | "HELO" if argument.is_empty() => {
                    self.fail(writer, "501 5.5.4 Say who you are").await?;
                }
                "EHLO" => {
                    self.greet();
                    let size = format!("250-SIZE {MAX_MESSAGE}");
                    let lines = [
                        "250-127.0.0.1 greets you",
                        "250-8BITMIME",
                        "250-SMTPUTF8",
                        &size,
                        "250 HELP",
                    ];
                    writer
                        .write_all(format!("{}\r\n", lines.join("\r\n")).as_bytes())
                        .await?;
                    writer.flush().await?;
                }
                "HELO" => {
                    self.greet();
                    reply(writer, "250 127.0.0.1").await?;
                }
                "MAIL" if !self.greeted => self.fail(writer, "503 5.5.1 EHLO first").await?,
                "MAIL" if self.from.is_some() => {
                    self.fail(writer, "503 5.5.1 Already have a sender").await?;
                }
                "MAIL" => match path_after(argument, "FROM:") {
                    Some(from) => {
                        self.from = Some(from);
                        reply(writer, "250 2.1.0 OK").await?;
                    }
                    None => {
                        self.fail(writer, "501 5.5.4 Syntax: MAIL FROM:<address>")
                            .await?
                    }
                },
                "RCPT" if self.from.is_none() => self.fail(writer, "503 5.5.1 MAIL first").await?,
                "RCPT" => match path_after(argument, "TO:").filter(|to| !to.is_empty()) {
                    Some(_) if self.to.len() >= MAX_RECIPIENTS => {
                        reply(writer, "452 4.5.3 Too many recipients").await?;
                    }
                    Some(to) => {
                        self.to.push(to);
                        reply(writer, "250 2.1.5 OK").await?;
                    }
                    None => {
                        self.fail(writer, "501 5.5.4 Syntax: RCPT TO:<address>")
                            .await?
                    }
                },
                "DATA" if !argument.is_empty() => {
                    self.fail(writer, "501 5.5.4 DATA takes no argument")
                        .await?;
                }
                "DATA" if self.to.is_empty() => {
                    self.fail(writer, "503 5.5.1 RCPT first").await?;
                }
                "DATA" => {
                    reply(writer, "354 End data with <CR><LF>.<CR><LF>").await?;
                    let Some(data) = read_data(reader).await? else {
                        return reply(writer, "552 5.3.4 Message or line too big, closing").await;
                    };
                    inbox.store(ReceivedMail {
                        from: self.from.take().unwrap_or_default(),
                        to: std::mem::take(&mut self.to),
                        data,
                    });
                    reply(writer, "250 2.0.0 OK queued").await?;
                }
                "RSET" => {
                    self.reset();
                    reply(writer, "250 2.0.0 OK").await?;
                }
                "NOOP" => reply(writer, "250 2.0.0 OK").await?,
                "QUIT" => return reply(writer, "221 2.0.0 Bye").await,
                "VRFY" => reply(writer, "252 2.1.5 Cannot verify, send some mail").await?,
                "HELP" => {
                    reply(writer, "214 2.0.0 EHLO HELO MAIL RCPT DATA RSET NOOP QUIT").await?
                }
                "AUTH" | "STARTTLS" | "BDAT" | "ETRN" | "EXPN" | "TURN" => {
                    self.fail(writer, "502 5.5.1 Not implemented").await?;
                }
                _ => {
                    self.fail(writer, "500 5.5.2 Command not recognized")
                        .await?
                }
            }
            if self.errors >= MAX_ERRORS {
                return reply(writer, "421 4.7.0 Too many errors, closing").await;
            }
        }
    }

    fn greet(&mut self) {
        self.greeted = true;
        self.reset();
    }

    fn reset(&mut self) {
        self.from = None;
        self.to.clear();
    }

    async fn fail<W: AsyncWrite + Unpin>(&mut self, writer: &mut W, line: &str) -> io::Result<()> {
        self.errors += 1;
        reply(writer, line).await
    }
}

async fn reply<W: AsyncWrite + Unpin>(writer: &mut W, line: &str) -> io::Result<()> {
    // One write per reply: two small ones would meet Nagle and delayed ACKs and cost
    // the client ~40 ms per command.
    writer.write_all(format!("{line}\r\n").as_bytes()).await?;
    writer.flush().await
}

/// Reads one line (CRLF or bare LF), without its line end, of at most [`MAX_LINE`]
/// bytes; gives up on a peer silent for [`IDLE_TIMEOUT`].
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Line> {
    match tokio::time::timeout(IDLE_TIMEOUT, read_line_now(reader)).await {
        Ok(line) => line,
        Err(_) => Ok(Line::Closed),
    }
}

async fn read_line_now<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Line> {
    let mut line = Vec::new();
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(Line::Closed);
        }
        let (chunk, complete) = match buffer.iter().position(|&b| b == b'\n') {
            Some(end) => (&buffer[..=end], true),
            None => (buffer, false),
        };
        // +2 for the CRLF, which does not count against the line.
        if line.len() + chunk.len() > MAX_LINE + 2 {
            return Ok(Line::TooLong);
        }
        line.extend_from_slice(chunk);
        let used = chunk.len();
        reader.consume(used);
        if complete {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Line::Complete(line));
        }
    }
}

/// Reads a message after `354` up to the lone `.` line, undoing dot-stuffing.
/// `None` when a line or the whole message is over its limit.
async fn read_data<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Option<String>> {
    let mut data = Vec::new();
    loop {
        let line = match read_line(reader).await? {
            Line::Complete(line) => line,
            Line::TooLong => return Ok(None),
            Line::Closed => return Err(io::ErrorKind::UnexpectedEof.into()),
        };
        if line == b"." {
            // The CRLF before the final dot ends the last line; it is not content.
            data.truncate(data.len().saturating_sub(2));
            return Ok(Some(String::from_utf8_lossy(&data).into_owned()));
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        if data.len() + line.len() + 2 > MAX_MESSAGE {
            return Ok(None);
        }
        data.extend_from_slice(line);
        data.extend_from_slice(b"\r\n");
    }
}

/// The address in `FROM:<a@b> PARAMS` or `TO:<a@b>` (`prefix` case-insensitive);
/// parameters after it are ignored. `<>` gives an empty address.
fn path_after(argument: &str, prefix: &str) -> Option<String> {
    let head = argument.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = argument[prefix.len()..].trim_start().strip_prefix('<')?;
    let (path, _parameters) = rest.split_once('>')?;
    Some(path.to_string())
}

impl ReceivedMail {
    fn is_to(&self, recipient: &str) -> bool {
        self.to.iter().any(|to| to.eq_ignore_ascii_case(recipient))
    }

    /// A top-level header, unfolded, with RFC 2047 encoded words decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        let (headers, _) = split_headers(&self.data);
        header_value(&headers, name).map(|value| decode_words(value.trim()))
    }

    /// The decoded `Subject`, or "" when there is none.
    pub fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default()
    }

    /// The decoded `text/plain` part (the whole body of a plain message), with `\n`
    /// line ends and no trailing line breaks; "" when there is no text part.
    pub fn body_text(&self) -> String {
        find_part(&self.data, "text/plain", 0)
            .map(|text| tidy(&text))
            .unwrap_or_default()
    }

    /// The decoded `text/html` part, when there is one.
    pub fn body_html(&self) -> Option<String> {
        find_part(&self.data, "text/html", 0).map(|html| tidy(&html))
    }

    /// The first `http://` or `https://` URL in the text part, up to whitespace or
    /// `<`, `>`, `"`, `'`.
    pub fn first_link(&self) -> Option<String> {
        let text = self.body_text();
        let start = ["https://", "http://"]
            .iter()
            .filter_map(|scheme| text.find(scheme))
            .min()?;
        let link: String = text[start..]
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '<' | '>' | '"' | '\''))
            .collect();
        Some(link)
    }

    /// A query parameter of [`first_link`](Self::first_link), percent-decoded
    /// (`userId`, `secret`, `teamId`, …).
    pub fn link_param(&self, name: &str) -> Option<String> {
        let link = url::Url::parse(&self.first_link()?).ok()?;
        link.query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }

    /// Whether the decoded text or HTML contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.body_text().contains(needle)
            || self.body_html().is_some_and(|html| html.contains(needle))
    }

    /// What follows `marker` on the first text line that contains it, trimmed
    /// (`line_after("Security phrase:")`).
    pub fn line_after(&self, marker: &str) -> Option<String> {
        self.body_text().lines().find_map(|line| {
            line.find(marker)
                .map(|at| line[at + marker.len()..].trim().to_string())
        })
    }

    /// The first run of exactly `digits` ASCII digits in the text (an OTP code).
    pub fn first_code(&self, digits: usize) -> Option<String> {
        let text = self.body_text();
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let run = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
            if run == digits {
                return Some(text[i..i + run].to_string());
            }
            i += run.max(1);
        }
        None
    }
}

/// CRLF to LF, and no trailing line breaks.
fn tidy(text: &str) -> String {
    text.replace("\r\n", "\n")
        .trim_end_matches('\n')
        .to_string()
}

/// Splits an entity into unfolded `(name, value)` headers and its body.
fn split_headers(entity: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = match entity.find("\r\n\r\n") {
        Some(at) => (&entity[..at], &entity[at + 4..]),
        None if entity.starts_with("\r\n") => ("", &entity[2..]),
        None => (entity, ""),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            // A folded continuation: unfolding removes only the CRLF.
            if let Some((_, value)) = headers.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.to_string()));
        }
    }
    (headers, body)
}

fn header_value<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// `text/plain; charset=utf-8; boundary="x"` → (`text/plain`, parameters).
fn content_type(value: &str) -> (String, HashMap<String, String>) {
    let mut parts = value.split(';');
    let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let parameters = parts
        .filter_map(|part| part.split_once('='))
        .map(|(key, value)| {
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            (key.trim().to_ascii_lowercase(), value.to_string())
        })
        .collect();
    (mime, parameters)
}

/// The first part of type `wanted`, decoded, searching multiparts depth-first.
fn find_part(entity: &str, wanted: &str, depth: usize) -> Option<String> {
    if depth > MAX_MIME_DEPTH {
        return None;
    }
    let (headers, body) = split_headers(entity);
    let (mime, parameters) =
        content_type(header_value(&headers, "Content-Type").unwrap_or("text/plain"));
    if mime.starts_with("multipart/") {
        let boundary = parameters.get("boundary")?;
        return multipart_parts(body, boundary)
            .into_iter()
            .find_map(|part| find_part(&part, wanted, depth + 1));
    }
    if mime != wanted {
        return None;
    }
    let encoding = header_value(&headers, "Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .trim()
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .unwrap_or_else(|_| body.as_bytes().to_vec())
        }
        "quoted-printable" => decode_quoted_printable(body),
        _ => body.as_bytes().to_vec(),
    };
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The parts between `--boundary` lines, up to `--boundary--` (RFC 2046: the CRLF
/// before a delimiter belongs to the delimiter).
fn multipart_parts(body: &str, boundary: &str) -> Vec<String> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in body.split("\r\n") {
        if let Some(rest) = line.strip_prefix(delimiter.as_str()) {
            let rest = rest.trim_end();
            if rest.is_empty() || rest == "--" {
                if let Some(lines) = current.take() {
                    parts.push(lines.join("\r\n"));
                }
                if rest == "--" {
                    break;
                }
                current = Some(Vec::new());
                continue;
            }
        }
        if let Some(lines) = current.as_mut() {
            lines.push(line);
        }
    }
    // Be lenient with a missing closing delimiter.
    parts.extend(current.map(|lines| lines.join("\r\n")));
    parts
}

/// Quoted-printable (RFC 2045): `=XX` is a byte, `=` at a line end a soft break.
/// Malformed escapes stay as they are.
fn decode_quoted_printable(body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut lines = body.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        // Trailing whitespace on an encoded line is padding, not content.
        let line = line.trim_end_matches([' ', '\t']);
        let (line, soft_break) = match line.strip_suffix('=') {
            Some(line) => (line, true),
            None => (line, false),
        };
        decode_escapes(line.as_bytes(), false, &mut out);
        if !soft_break && lines.peek().is_some() {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// Decodes `=XX` escapes (and `_` as space, in RFC 2047 Q words) into `out`.
fn decode_escapes(input: &[u8], underscore_is_space: bool, out: &mut Vec<u8>) {
    let mut i = 0;
    while i < input.len() {
        let byte = input[i];
        let escaped = (byte == b'=')
            .then(|| input.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| Some(hex_value(hex[0])? << 4 | hex_value(hex[1])?));
        match escaped {
            Some(value) => {
                out.push(value);
                i += 3;
            }
            None => {
                out.push(if underscore_is_space && byte == b'_' {
                    b' '
                } else {
                    byte
                });
                i += 1;
            }
        }
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|value| value as u8)
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`) standing as
/// whole words; whitespace between two encoded words is dropped, as the RFC says.
/// Every charset is read as UTF-8, which is all lettre writes.
fn decode_words(value: &str) -> String {
    let mut out: Vec<u8> = Vec::new();
    let mut space = "";
    let mut after_encoded = false;
    for token in words_and_spaces(value) {
        if token.starts_with([' ', '\t']) {
            space = token;
            continue;
        }
        match encoded_word(token) {
            Some(decoded) => {
                if !after_encoded {
                    out.extend_from_slice(space.as_bytes());
                }
                out.extend_from_slice(&decoded);
                after_encoded = true;
            }
            None => {
                out.extend_from_slice(space.as_bytes());
                out.extend_from_slice(token.as_bytes());
                after_encoded = false;
            }
        }
        space = "";
    }
    out.extend_from_slice(space.as_bytes());
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits `value` into runs of spaces/tabs and runs of everything else.
fn words_and_spaces(value: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut start = 0;
    let mut in_space = None;
    for (at, c) in value.char_indices() {
        let is_space = c == ' ' || c == '\t';
        if in_space.is_some_and(|was| was != is_space) {
            tokens.push(&value[start..at]);
            start = at;
        }
        in_space = Some(is_space);
    }
    if start < value.len() {
        tokens.push(&value[start..]);
    }
    tokens
}

/// The bytes of `=?charset?encoding?text?=`, when `word` is one.
fn encoded_word(word: &str) -> Option<Vec<u8>> {
    let inner = word.strip_prefix("=?")?.strip_suffix("?=")?;
    let mut fields = inner.splitn(3, '?');
    let (_charset, encoding, text) = (fields.next()?, fields.next()?, fields.next()?);
    if text.contains('?') {
        return None;
    }
    match encoding {
        "b" | "B" => base64::engine::general_purpose::STANDARD.decode(text).ok(),
        "q" | "Q" => {
            let mut out = Vec::new();
            decode_escapes(text.as_bytes(), true, &mut out);
            Some(out)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    use tokio::net::TcpStream;

    use super::*;

    /// A raw client: sends lines, reads replies.
    struct Client {
        reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
        writer: tokio::net::tcp::OwnedWriteHalf,
    }

    impl Client {
        async fn connect(server: &TestSmtp) -> Client {
            let address = server.url.trim_start_matches("smtp://");
            let (reader, writer) = TcpStream::connect(address).await.unwrap().into_split();
            let mut client = Client {
                reader: BufReader::new(reader),
                writer,
            };
            assert!(client.reply().await.starts_with("220 "));
            client
        }

        /// The last line of the next reply, or "" when the server closed.
        async fn reply(&mut self) -> String {
            loop {
                let mut line = String::new();
                if self.reader.read_line(&mut line).await.unwrap() == 0 {
                    return String::new();
                }
                if line.as_bytes().get(3) != Some(&b'-') {
                    return line.trim_end().to_string();
                }
            }
        }

        async fn send(&mut self, raw: &str) -> String {
            self.writer.write_all(raw.as_bytes()).await.unwrap();
            self.reply().await
        }
    }

    #[tokio::test]
    async fn smtp_server_receives_and_unstuffs_a_message() {
        let server = TestSmtp::start().await;
        let mut client = Client::connect(&server).await;
        assert!(client.send("EHLO test\r\n").await.starts_with("250 "));
        assert!(
            client
                .send("MAIL FROM:<a@example.com> BODY=8BITMIME\r\n")
                .await
                .starts_with("250")
        );
        assert!(
            client
                .send("RCPT TO:<Ada@Example.com>\r\n")
                .await
                .starts_with("250")
        );
        assert!(
            client
                .send("rcpt to: <bob@example.com>\r\n")
                .await
                .starts_with("250")
        );
        assert!(client.send("DATA\r\n").await.starts_with("354"));
        let reply = client
            .send("Subject: hi\r\n\r\n..leading dot\r\n.\r\n")
            .await;
        assert!(reply.starts_with("250"), "{reply}");
        assert!(client.send("NOOP\r\n").await.starts_with("250"));
        assert!(client.send("QUIT\r\n").await.starts_with("221"));

        let mail = server
            .wait_for_message_to("ada@example.com", Duration::from_secs(5))
            .await;
        assert_eq!(mail.from, "a@example.com");
        assert_eq!(mail.to, ["Ada@Example.com", "bob@example.com"]);
        assert_eq!(mail.data, "Subject: hi\r\n\r\n.leading dot");
        assert_eq!(mail.subject(), "hi");
        assert_eq!(mail.body_text(), ".leading dot");
        // Handed out once per recipient, still listed for everyone.
        assert_eq!(server.messages_to("bob@example.com").len(), 1);
        assert_eq!(
            server
                .wait_for_message_to("bob@example.com", Duration::from_secs(5))
                .await,
            mail
        );
    }

    #[tokio::test]
    async fn smtp_server_enforces_command_order_and_rset() {
        let server = TestSmtp::start().await;
        let mut client = Client::connect(&server).await;
        assert!(
            client
                .send("MAIL FROM:<a@example.com>\r\n")
                .await
                .starts_with("503")
        );
        assert!(client.send("HELO test\r\n").await.starts_with("250"));
        assert!(
            client
                .send("RCPT TO:<b@example.com>\r\n")
                .await
                .starts_with("503")
        );
        assert!(
            client
                .send("MAIL FROM:<a@example.com>\r\n")
                .await
                .starts_with("250")
        );
        assert!(client.send("DATA\r\n").await.starts_with("503"));
        assert!(
            client
                .send("RCPT TO:<b@example.com>\r\n")
                .await
                .starts_with("250")
        );
        assert!(client.send("RSET\r\n").await.starts_with("250"));
        assert!(client.send("DATA\r\n").await.starts_with("503"));
        assert!(client.send("QUIT\r\n").await.starts_with("221"));
        assert!(server.messages().is_empty());
    }

    #[tokio::test]
    async fn smtp_server_hangs_up_on_garbage() {
        let server = TestSmtp::start().await;

        let mut client = Client::connect(&server).await;
        let long = format!("EHLO {}\r\n", "x".repeat(MAX_LINE + 10));
        assert!(client.send(&long).await.starts_with("500"));
        assert_eq!(client.reply().await, "", "closed after an overlong line");

        let mut client = Client::connect(&server).await;
        assert!(client.send("\u{1}\u{2}\u{ff}\r\n").await.starts_with("500"));
        for _ in 1..MAX_ERRORS {
            client.writer.write_all(b"FOO\r\n").await.unwrap();
        }
        let mut last = String::new();
        loop {
            let reply = client.reply().await;
            if reply.is_empty() {
                break;
            }
            last = reply;
        }
        assert!(last.starts_with("421"), "{last}");

        let mut client = Client::connect(&server).await;
        client.writer.write_all(&[0xff, 0xfe, b'\n']).await.unwrap();
        assert!(client.reply().await.starts_with("500"));
        assert_eq!(client.reply().await, "");

        // Still serving others.
        let mut client = Client::connect(&server).await;
        assert!(client.send("NOOP\r\n").await.starts_with("250"));
    }

    #[test]
    fn decodes_encoded_words_quoted_printable_and_multipart() {
        let data = "Subject: =?utf-8?b?w6l0w6k=?=\r\n =?utf-8?q?_=C3=A0_la_plage?= ok\r\n\
                    Content-Type: multipart/alternative; boundary=\"XyZ\"\r\n\r\n\
                    --XyZ\r\nContent-Type: text/plain; charset=utf-8\r\n\
                    Content-Transfer-Encoding: quoted-printable\r\n\r\n\
                    caf=C3=A9 https://x.example/?a=3D1&b=3D=\r\n2 done\r\n\
                    --XyZ\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n\
                    PHA+aGk8L3A+\r\n--XyZ--\r\n";
        let mail = ReceivedMail {
            from: String::new(),
            to: vec![],
            data: data.into(),
        };
        assert_eq!(mail.subject(), "été à la plage ok");
        assert_eq!(mail.body_text(), "café https://x.example/?a=1&b=2 done");
        assert_eq!(mail.body_html().as_deref(), Some("<p>hi</p>"));
        assert_eq!(
            mail.first_link().as_deref(),
            Some("https://x.example/?a=1&b=2")
        );
        assert_eq!(mail.link_param("b").as_deref(), Some("2"));
        assert!(mail.contains("<p>hi</p>"));
        assert_eq!(
            mail.line_after("café").as_deref(),
            Some("https://x.example/?a=1&b=2 done")
        );
    }

    /// What `Mailer` sends is built by lettre: decode its quoted-printable and
    /// base64 output, and its encoded-word subjects, back to the original.
    #[test]
    fn decodes_what_lettre_writes() {
        use lettre::message::{Mailbox, MultiPart, SinglePart};

        let link = format!(
            "https://app.example.com/verify?userId=u1&secret={}&x=a%3Db",
            "9f".repeat(60)
        );
        let cases = [
            // Short ASCII lines: 7bit.
            format!("Hello\n.dot line\n{}", "short"),
            // A long ASCII line: quoted-printable with soft breaks and =3D.
            format!("Open:\n{link}\nThanks — Acme"),
            // Mostly non-ASCII: base64.
            format!("{}\n{link}", "Здравствуйте, это письмо. ".repeat(20)),
        ];
        let mut encodings = Vec::new();
        let subject = format!(
            "Vérifiez votre adresse — {}",
            "très long sujet ".repeat(6).trim_end()
        );
        for text in cases {
            let html = format!("<p>{text}</p>");
            for multipart in [false, true] {
                let builder = lettre::Message::builder()
                    .from("a@example.com".parse::<Mailbox>().unwrap())
                    .to("b@example.com".parse::<Mailbox>().unwrap())
                    .subject(subject.clone());
                let message = if multipart {
                    builder.multipart(MultiPart::alternative_plain_html(
                        text.clone(),
                        html.clone(),
                    ))
                } else {
                    builder.singlepart(SinglePart::plain(text.clone()))
                }
                .unwrap();
                let mail = ReceivedMail {
                    from: "a@example.com".into(),
                    to: vec!["b@example.com".into()],
                    data: String::from_utf8(message.formatted()).unwrap(),
                };
                encodings.push(mail.header("Content-Transfer-Encoding"));
                assert_eq!(mail.subject(), subject, "{}", mail.data);
                assert_eq!(mail.body_text(), text, "{}", mail.data);
                if multipart {
                    assert_eq!(
                        mail.body_html().as_deref(),
                        Some(html.as_str()),
                        "{}",
                        mail.data
                    );
                }
                if text.contains(&link) {
                    assert_eq!(mail.first_link().as_deref(), Some(link.as_str()));
                    assert_eq!(mail.link_param("x").as_deref(), Some("a=b"));
                }
            }
        }
        for encoding in ["7bit", "quoted-printable", "base64"] {
            assert!(
                encodings.contains(&Some(encoding.to_string())),
                "{encoding} not exercised: {encodings:?}"
            );
        }
    }

    #[test]
    fn finds_codes_of_the_exact_length() {
        let mail = ReceivedMail {
            from: String::new(),
            to: vec![],
            data: "Subject: x\r\n\r\nref 1234567, code 042917.".into(),
        };
        assert_eq!(mail.first_code(6).as_deref(), Some("042917"));
        assert_eq!(mail.first_code(8), None);
    }

    #[test]
    fn never_panics_on_malformed_mime() {
        for data in [
            "",
            "\r\n",
            "no headers at all",
            "Content-Type: multipart/mixed\r\n\r\nno boundary",
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n--b\r\n--b--",
            "Content-Transfer-Encoding: base64\r\n\r\n!!!not base64",
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n=\r\n=Z=4\r\né=",
            "Subject: =?utf-8?q?=E2=82?= =?x?b?*?= =?é?=\r\n\r\n",
        ] {
            let mail = ReceivedMail {
                from: String::new(),
                to: vec![],
                data: data.into(),
            };
            let _ = (
                mail.subject(),
                mail.body_text(),
                mail.body_html(),
                mail.first_link(),
            );
        }
        let nested: String = (0..50)
            .map(|level| {
                format!("Content-Type: multipart/mixed; boundary=b{level}\r\n\r\n--b{level}\r\n")
            })
            .collect();
        let mail = ReceivedMail {
            from: String::new(),
            to: vec![],
            data: nested,
        };
        assert_eq!(mail.body_text(), "");
    }
}

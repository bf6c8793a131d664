//! Virus scanning with a ClamAV daemon (`NIMBUS_CLAMD=host:port`) through its
//! `INSTREAM` command: the stored file's original bytes are streamed to clamd in
//! length-prefixed chunks and its verdict decides whether the file is kept. Every
//! size is scanned unless `NIMBUS_ANTIVIRUS_MAX_BYTES` says otherwise (larger files
//! are then kept unscanned, as Appwrite keeps those over 20 MB): clamd's own
//! `StreamMaxLength` must allow what is scanned (a refusal counts as a failed
//! scan, and the upload is refused). At most
//! [`CONCURRENT_SCANS`] scans run at once, so a client finishing many uploads
//! cannot take every one of clamd's threads from everyone else's.

use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::AppState;
use crate::error::{AppError, AppResult, codes};
use crate::files::{Key, Written};

/// Longest a scan may take, its wait for a turn included, before the upload is
/// refused.
const SCAN_TIMEOUT: Duration = Duration::from_secs(120);
/// Scans this replica runs at once (clamd's default `MaxThreads` is 10).
pub const CONCURRENT_SCANS: usize = 4;
static SCANS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CONCURRENT_SCANS);
/// Longest verdict read back.
const MAX_REPLY: usize = 4096;

/// What clamd said of a stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    Infected(String),
}

/// Scans the file just written under `key`; an infected file is refused with
/// `FILE_INFECTED` (the caller removes it), an unreachable or failing clamd with
/// `ANTIVIRUS_UNAVAILABLE`.
pub async fn check(state: &AppState, address: &str, key: &Key, written: &Written) -> AppResult<()> {
    let most = state.config.antivirus_max_bytes;
    if most > 0 && written.size > most {
        tracing::warn!(key = %key.as_str(), size = written.size, "file kept unscanned: over NIMBUS_ANTIVIRUS_MAX_BYTES");
        return Ok(());
    }
    let unavailable = |detail: String| {
        tracing::error!(clamd = %address, error = %detail, "virus scan failed");
        AppError::Upstream {
            code: codes::ANTIVIRUS_UNAVAILABLE,
            reason: "the virus scanner could not check this file; try again later".into(),
        }
    };
    let deadline = tokio::time::Instant::now() + SCAN_TIMEOUT;
    let _turn = tokio::time::timeout_at(deadline, SCANS.acquire())
        .await
        .map_err(|_| unavailable("no turn to scan in time".into()))?
        .map_err(|_| unavailable("scans closed".into()))?;
    let bytes = state
        .files
        .read(key, &written.encoding, &state.secret)
        .await
        .map_err(super::service::file_error)?;
    let verdict = tokio::time::timeout_at(deadline, scan(address, bytes))
        .await
        .map_err(|_| unavailable("timed out".into()))?
        .map_err(|err| unavailable(err.to_string()))?;
    match verdict {
        Verdict::Clean => Ok(()),
        Verdict::Infected(signature) => {
            tracing::warn!(key = %key.as_str(), %signature, "infected upload refused");
            Err(AppError::Invalid {
                code: codes::FILE_INFECTED,
                field: "file".into(),
                reason: format!("the virus scanner found {signature}"),
            })
        }
    }
}

/// Streams `bytes` to clamd at `address` and reads its verdict.
pub async fn scan(address: &str, mut bytes: crate::files::ByteStream) -> std::io::Result<Verdict> {
    let mut socket = TcpStream::connect(address).await?;
    socket.write_all(b"zINSTREAM\0").await?;
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk?;
        // clamd takes chunks of at most 4 GiB each; ours are far smaller.
        for part in chunk.chunks(1 << 20) {
            socket.write_all(&(part.len() as u32).to_be_bytes()).await?;
            socket.write_all(part).await?;
        }
    }
    socket.write_all(&0u32.to_be_bytes()).await?;
    socket.flush().await?;
    let mut reply = Vec::new();
    let mut buffer = [0u8; 512];
    loop {
        let read = socket.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        reply.extend_from_slice(&buffer[..read]);
        if reply.contains(&0) || reply.len() > MAX_REPLY {
            break;
        }
    }
    parse_reply(&reply)
}

/// `stream: OK`, `stream: NAME FOUND`, or an error such as `INSTREAM size limit
/// exceeded. ERROR`.
fn parse_reply(reply: &[u8]) -> std::io::Result<Verdict> {
    let text = String::from_utf8_lossy(reply);
    let text = text.trim_end_matches(['\0', '\n']).trim();
    let body = text.strip_prefix("stream:").map(str::trim).unwrap_or(text);
    if body == "OK" {
        return Ok(Verdict::Clean);
    }
    if let Some(signature) = body.strip_suffix(" FOUND") {
        return Ok(Verdict::Infected(signature.trim().to_string()));
    }
    Err(std::io::Error::other(format!(
        "clamd answered {:?}",
        text.chars().take(200).collect::<String>()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_into_verdicts() {
        assert_eq!(parse_reply(b"stream: OK\0").unwrap(), Verdict::Clean);
        assert_eq!(
            parse_reply(b"stream: Eicar-Test-Signature FOUND\0").unwrap(),
            Verdict::Infected("Eicar-Test-Signature".into())
        );
        assert!(parse_reply(b"INSTREAM size limit exceeded. ERROR\0").is_err());
        assert!(parse_reply(b"").is_err());
    }
}

//! Every pass over an upload's bytes, checked from outside: a file larger than the
//! connection's read buffer, sent in one multipart request or in chunks, into a plain
//! or an encrypted bucket, is stored as exactly the bytes sent and answers the
//! checksum `sha256sum` gives; the sealed bytes at rest are AES-256-GCM exactly as
//! files were sealed before (aead's STREAM over `aes-gcm`), so old files open; a
//! client that breaks off a chunk leaves the upload free for the retry; a chunk the
//! store loses is the server's failure, never told to the client; and the
//! request-head limit, now apart from the connection's read buffer, is where it was.

use std::time::Duration;

use aead::Payload;
use aead::stream::EncryptorBE32;
use hmac::Mac as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, WAIT};
use crate::security_limits::parse_answer;
use crate::storage::{stored_objects, upload};
use crate::storage_transfers::app_with_buckets;
use crate::uploads::{downloaded, put_bytes, start_upload, stored_object};
use crate::uploads_fast::content;

/// Plaintext bytes per sealed segment.
const SEGMENT: usize = 65_536;

/// A server with a plain and an encrypted bucket, in a local store when `local`.
async fn app_with(local: bool) -> TestApp {
    // Chunks of several reads and several spool batches each, a few per file.
    app_with_buckets(local, |config| {
        config.upload_chunk_size = (1024 * 1024 + 3 * SEGMENT) as u64;
    })
    .await
}

/// What `sha256sum` says of `bytes`: a digest computed outside the server's code.
fn sha256sum(bytes: &[u8]) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let out = std::process::Command::new("sha256sum")
        .arg(file.path())
        .output()
        .expect("sha256sum runs");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Starts a resumable upload: its URL and chunk size.
async fn started(app: &TestApp, bucket: &str, id: &str, size: usize) -> (String, usize) {
    let started = start_upload(app, bucket, id, size).await;
    (
        started["uploadUrl"].as_str().unwrap().to_string(),
        started["chunkSize"].as_u64().unwrap() as usize,
    )
}

/// Uploads `bytes` in its chunks; the completed file.
async fn upload_in_chunks(app: &TestApp, bucket: &str, id: &str, bytes: &[u8]) -> Value {
    let (url, chunk) = started(app, bucket, id, bytes.len()).await;
    let mut last = Value::Null;
    for start in (0..bytes.len()).step_by(chunk) {
        let end = (start + chunk).min(bytes.len());
        let (status, answer) = put_bytes(app, &url, bytes, start, end).await;
        let expected = if end == bytes.len() { 201 } else { 200 };
        assert_eq!(status, expected, "{bucket}: chunk at {start}: {answer}");
        last = answer;
    }
    last
}

async fn every_way_stores_the_bytes_sent(local: bool) {
    let app = app_with(local).await;
    let admin = [("x-nimbus-key", app.admin_key.as_str())];
    // Many of the connection's reads, several spool batches, a sealed segment and a bit.
    let bytes = content(3 * 1024 * 1024 + SEGMENT + 13, 77);
    let expected = sha256sum(&bytes);
    for bucket in ["plain", "sealed"] {
        let answer = upload(
            &app,
            &admin,
            json!({"bucketId": bucket, "fileId": "whole", "file": null}),
            "whole.bin",
            "application/octet-stream",
            &bytes,
        )
        .await
        .ok();
        assert_eq!(answer["createFile"]["size"], bytes.len(), "{bucket}");
        assert_eq!(answer["createFile"]["checksum"], expected, "{bucket}");
        assert!(
            downloaded(&app, bucket, "whole").await == bytes,
            "{bucket}: one request: the bytes read back are the source's"
        );
        let done = upload_in_chunks(&app, bucket, "chunked", &bytes).await;
        assert_eq!(done["status"], "READY", "{bucket}: {done}");
        assert_eq!(done["checksum"], expected, "{bucket}: {done}");
        assert!(
            downloaded(&app, bucket, "chunked").await == bytes,
            "{bucket}: chunks: the bytes read back are the source's"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn every_way_of_uploading_stores_the_bytes_and_checksum_sha256sum_gives_in_a_local_store() {
    every_way_stores_the_bytes_sent(true).await;
}

#[tokio::test]
async fn every_way_of_uploading_stores_the_bytes_and_checksum_sha256sum_gives_in_any_store() {
    every_way_stores_the_bytes_sent(false).await;
}

/// The sealed object a multipart upload leaves at rest is byte for byte what aead's
/// STREAM over `aes-gcm` seals under the file's key and nonce prefix: the cipher
/// changed, the bytes did not, so files sealed before open.
#[tokio::test]
async fn a_sealed_file_is_what_aes_gcm_sealed_before_so_old_files_open() {
    use aes_gcm::KeyInit as _;
    let app = app_with(true).await;
    let admin = [("x-nimbus-key", app.admin_key.as_str())];
    let bytes = content(3 * SEGMENT + 1000, 78);
    upload(
        &app,
        &admin,
        json!({"bucketId": "sealed", "fileId": "old", "file": null}),
        "old.bin",
        "application/octet-stream",
        &bytes,
    )
    .await
    .ok();
    let state = app.server.as_ref().unwrap().state();
    let row = sqlx::query("SELECT encryption_salt FROM storage_files WHERE id = 'old'")
        .fetch_one(state.db.pool())
        .await
        .unwrap();
    let salt = hex::decode(nimbus::db::columns::text(&row, "encryption_salt").unwrap()).unwrap();
    let objects = stored_objects(&app).await;
    let stored = std::fs::read(stored_object(&objects, "sealed", "old")).unwrap();
    let header = &stored[..12];
    assert_eq!(&header[..5], b"NBFE\x01");

    let mut mac =
        <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(state.secret.as_bytes()).unwrap();
    mac.update(b"nimbus file key\0");
    mac.update(&salt);
    let key = mac.finalize().into_bytes();
    let prefix: [u8; 7] = header[5..].try_into().unwrap();
    let mut encryptor = EncryptorBE32::from_aead(aes_gcm::Aes256Gcm::new(&key), (&prefix).into());
    let mut reference = header.to_vec();
    let segments: Vec<&[u8]> = bytes.chunks(SEGMENT).collect();
    for segment in &segments[..segments.len() - 1] {
        reference.extend(
            encryptor
                .encrypt_next(Payload {
                    msg: segment,
                    aad: header,
                })
                .unwrap(),
        );
    }
    reference.extend(
        encryptor
            .encrypt_last(Payload {
                msg: segments[segments.len() - 1],
                aad: header,
            })
            .unwrap(),
    );
    assert!(
        stored == reference,
        "the object is aead's STREAM over aes-gcm"
    );
    assert!(downloaded(&app, "sealed", "old").await == bytes);
    app.shutdown().await;
}

/// A chunk whose body breaks off part-way is refused, and the request that was
/// receiving it lets the upload go (no task or blocking thread keeps holding it):
/// the retry completes it with the bytes and checksum of the source.
async fn a_broken_chunk_leaves_the_upload_free(local: bool) {
    let app = app_with(local).await;
    for bucket in ["plain", "sealed"] {
        let bytes = content(3 * 1024 * 1024 + 5, 79);
        let (url, chunk) = started(&app, bucket, "retried", bytes.len()).await;
        let end = chunk.min(bytes.len());
        let half = bytes[..end / 2].to_vec();
        let body = futures_util::stream::iter([
            Ok::<_, std::io::Error>(half),
            Err(std::io::Error::other("the client broke off")),
        ]);
        let broken = app
            .client
            .put(format!("{}{url}", app.url))
            .header("x-nimbus-key", &app.admin_key)
            .header(
                "content-range",
                format!("bytes 0-{}/{}", end - 1, bytes.len()),
            )
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await;
        if let Ok(response) = broken {
            assert_ne!(response.status().as_u16(), 200, "{bucket}: a cut chunk");
        }
        // The broken request may still be ending when the client has given up on it
        // (409: another request is delivering a chunk); it must end, and let go.
        let retried = put_once_free(&app, &url, &bytes, 0, end, bucket).await;
        assert_eq!(retried.0, 200, "{bucket}: {}", retried.1);
        let mut last = retried.1;
        for start in (end..bytes.len()).step_by(chunk) {
            let stop = (start + chunk).min(bytes.len());
            let (status, answer) = put_once_free(&app, &url, &bytes, start, stop, bucket).await;
            assert!(status == 200 || status == 201, "{bucket}: {answer}");
            last = answer;
        }
        assert_eq!(last["checksum"], sha256sum(&bytes), "{bucket}: {last}");
        assert!(
            downloaded(&app, bucket, "retried").await == bytes,
            "{bucket}"
        );
    }
    app.shutdown().await;
}

/// `PUT`s a chunk, again while the server answers 409 (a request the client gave
/// up on still holds the upload), until [`WAIT`] has passed.
async fn put_once_free(
    app: &TestApp,
    url: &str,
    bytes: &[u8],
    start: usize,
    stop: usize,
    bucket: &str,
) -> (u16, Value) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = put_bytes(app, url, bytes, start, stop).await;
        if answer.0 != 409 {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{bucket}: the broken chunk still holds the upload: {}",
            answer.1
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_chunk_broken_off_leaves_the_upload_free_for_its_retry_in_a_local_store() {
    a_broken_chunk_leaves_the_upload_free(true).await;
}

#[tokio::test]
async fn a_chunk_broken_off_leaves_the_upload_free_for_its_retry_in_any_store() {
    a_broken_chunk_leaves_the_upload_free(false).await;
}

/// An S3 store's chunk object that cannot be read back when the upload completes
/// is the server's failure: the last chunk is answered `INTERNAL`, with nothing of
/// what the store said, and the upload is let go. (A local store keeps no chunk
/// objects: its chunks are written in place.)
#[tokio::test]
async fn a_chunk_lost_from_the_store_is_the_servers_failure_and_not_told_in_any_store() {
    let app = app_with(false).await;
    let Some(location) = app.config.storage.clone() else {
        app.shutdown().await;
        return;
    };
    let bytes = content(2 * 1024 * 1024, 83);
    let (url, chunk) = started(&app, "plain", "lost", bytes.len()).await;
    let (status, answer) = put_bytes(&app, &url, &bytes, 0, chunk).await;
    assert_eq!(status, 200, "{answer}");
    let objects = stored_objects(&app).await;
    let first: Vec<&String> = objects
        .iter()
        .filter(|key| key.contains("/uploads/lost/0-"))
        .collect();
    assert_eq!(first.len(), 1, "{objects:?}");
    // The server's own view of the store, to take the chunk away from under it.
    let store = nimbus::files::FileStore::from_url(&location).unwrap();
    let stored = &first[0][first[0].find("projects/").unwrap()..];
    let key = nimbus::files::Key::from_stored(stored).unwrap();
    store.delete(&key).await.unwrap();
    assert!(!stored_objects(&app).await.contains(first[0]));

    let (status, answer) = put_bytes(&app, &url, &bytes, chunk, bytes.len()).await;
    assert_eq!(status, 500, "{answer}");
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "INTERNAL",
        "{answer}"
    );
    let told = answer.to_string().to_lowercase();
    for internal in ["storage", "chunk", "s3", "nosuchkey", "missing", "upload"] {
        assert!(!told.contains(internal), "`{internal}` in {answer}");
    }
    let gone = app
        .admin(
            "{ fileUpload(bucketId: \"plain\", fileId: \"lost\") { status } }",
            json!({}),
        )
        .await;
    assert_eq!(gone.code(), "UPLOAD_NOT_FOUND", "{:#}", gone.body);
    app.shutdown().await;
}

/// Sends one request of `head_padding` header bytes on `stream`; the status.
async fn head_status(stream: &mut TcpStream, head_padding: usize, close: bool) -> u16 {
    let padding = "x".repeat(head_padding);
    let connection = if close { "close" } else { "keep-alive" };
    stream
        .write_all(
            format!(
                "GET /health HTTP/1.1\r\nHost: nimbus\r\nConnection: {connection}\r\nX-Padding: {padding}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(WAIT, async {
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            received.extend_from_slice(&buf[..n]);
            if received.windows(4).any(|w| w == b"\r\n\r\n") && !close {
                // The health answer is small: its head and body come together.
                tokio::time::sleep(Duration::from_millis(20)).await;
                return;
            }
        }
    })
    .await
    .expect("an answer");
    parse_answer(&received).0
}

/// The head limit is hyper's `max_header_size`, apart from its read buffer; the
/// limit itself is where it was: a head over the default 64 KiB is answered 431, on
/// a fresh connection and on one that has just streamed a body of many reads, and a
/// head under it is served.
#[tokio::test]
async fn the_request_head_limit_holds_whatever_the_read_size() {
    let app = app_with(true).await;
    assert_eq!(app.config.http_max_head_bytes, 64 * 1024);
    let addr = app.url.trim_start_matches("http://").to_string();

    let mut fresh = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(head_status(&mut fresh, 60 * 1024, false).await, 200);
    assert_eq!(head_status(&mut fresh, 70 * 1024, true).await, 431);

    // A keep-alive connection that has just read a 3 MiB body, its buffer grown.
    let bytes = content(3 * 1024 * 1024, 80);
    let (url, chunk) = started(&app, "plain", "warm", bytes.len()).await;
    let end = chunk.min(bytes.len());
    let mut warm = TcpStream::connect(&addr).await.unwrap();
    warm.write_all(
        format!(
            "PUT {url} HTTP/1.1\r\nHost: nimbus\r\nX-Nimbus-Key: {}\r\nContent-Range: bytes 0-{}/{}\r\nContent-Length: {end}\r\n\r\n",
            app.admin_key,
            end - 1,
            bytes.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    warm.write_all(&bytes[..end]).await.unwrap();
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(WAIT, async {
        while !String::from_utf8_lossy(&received).contains("chunksUploaded") {
            let n = warm.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before answering the chunk");
            received.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the chunk is answered");
    assert_eq!(parse_answer(&received).0, 200);
    // Sent in one write: the server may read all of it at once.
    assert_eq!(head_status(&mut warm, 200 * 1024, true).await, 431);
    app.shutdown().await;
}

//! The paths that make resumable uploads cheap: in a local store an encrypted
//! bucket's chunks are sealed as they arrive, each attempt at a chunk under a key of
//! its own, and completing the upload is a rename; every chunk is recorded with one
//! statement. What must hold on each path: the bytes read back are the last ones
//! sent for every place, whatever failed or came out of order before; a chunk sent
//! twice never seals under the same key; tampering with the stored bytes is caught;
//! and every refusal is a stable error code.

use serde_json::{Value, json};

use crate::helpers::{TestApp, WAIT};
use crate::storage::stored_objects;
use crate::storage_transfers::app_with_buckets;
use crate::uploads::{
    contains, download, downloaded, put_bytes, put_range, range_request, start_upload,
    stored_object,
};
use crate::uploads_fast::{content, sha256_hex};

const CHUNK: usize = 65_536;

/// A server with chunks of `chunk` bytes, in a local store when `local`, with a
/// plain and an encrypted bucket.
async fn app_with(chunk: usize, local: bool) -> TestApp {
    app_with_buckets(local, |config| config.upload_chunk_size = chunk as u64).await
}

/// Starts a resumable upload: its URL.
async fn started(app: &TestApp, bucket: &str, id: &str, size: usize) -> String {
    let started = start_upload(app, bucket, id, size).await;
    // In a local store an encrypted bucket's upload is sealed from its first chunk
    // on; in S3 its chunks are sealed when it completes.
    if app.config.storage.is_none() {
        assert_eq!(started["encrypted"], bucket == "sealed", "{started}");
    }
    started["uploadUrl"].as_str().unwrap().to_string()
}

/// Chunk `index` of `bytes`, cut in chunks of `chunk`.
async fn put_chunk(
    app: &TestApp,
    url: &str,
    bytes: &[u8],
    chunk: usize,
    index: usize,
) -> (u16, Value) {
    let start = index * chunk;
    put_bytes(app, url, bytes, start, (start + chunk).min(bytes.len())).await
}

fn code(answer: &Value) -> &str {
    answer["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
}

fn upload_dir(app: &TestApp, bucket: &str, id: &str) -> std::path::PathBuf {
    app.config.data_dir.join(format!(
        "files/projects/default/buckets/{bucket}/uploads/{id}"
    ))
}

#[tokio::test]
async fn encrypted_chunks_are_sealed_as_they_arrive_and_the_upload_completes_by_a_rename() {
    let app = app_with(CHUNK, true).await;
    let size = 3 * CHUNK + 5;
    let source = content(size, 1);
    let url = started(&app, "sealed", "f", size).await;
    for index in 0..2 {
        let (status, answer) = put_chunk(&app, &url, &source, CHUNK, index).await;
        assert_eq!(status, 200, "{answer}");
    }
    // What lies on disk mid-way is already sealed: the new layout's header, and none
    // of the plaintext.
    let assembly = std::fs::read(upload_dir(&app, "sealed", "f").join("assembly")).unwrap();
    assert_eq!(&assembly[..5], b"NBFE\x02", "sealed chunk by chunk");
    for at in [0, CHUNK - 40, CHUNK + 1000, 2 * CHUNK - 40] {
        assert!(
            !contains(&assembly, &source[at..at + 32]),
            "plaintext at {at} found on disk"
        );
    }
    for index in 2..4 {
        let (status, answer) = put_chunk(&app, &url, &source, CHUNK, index).await;
        assert_eq!(status, if index == 3 { 201 } else { 200 }, "{answer}");
        if index == 3 {
            assert_eq!(answer["checksum"], sha256_hex(&source));
        }
    }
    assert!(
        !upload_dir(&app, "sealed", "f").exists(),
        "the assembly became the file"
    );
    let objects = stored_objects(&app).await;
    let stored = std::fs::read(stored_object(&objects, "sealed", "f")).unwrap();
    // Header, and per chunk a seed, its plaintext and one tag per 64 KiB segment.
    let expected = 13 + 3 * (16 + CHUNK + 16) + (16 + 5 + 16);
    assert_eq!(stored.len(), expected, "the stored layout");
    let file = app
        .admin(
            "{ file(bucketId: \"sealed\", fileId: \"f\") { size storedSize encrypted checksum } }",
            json!({}),
        )
        .await
        .ok()["file"]
        .clone();
    assert_eq!(file["size"], size);
    assert_eq!(file["storedSize"], expected);
    assert_eq!(file["encrypted"], true);
    assert!(
        downloaded(&app, "sealed", "f").await == source,
        "the bytes read back are the source's"
    );
    // Ranges are opened from the start and cut.
    let response = app
        .client
        .get(format!(
            "{}/v1/storage/buckets/sealed/files/f/download",
            app.url
        ))
        .header("x-nimbus-key", &app.admin_key)
        .header("range", format!("bytes={}-{}", CHUNK - 3, 2 * CHUNK + 2))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 206);
    assert!(response.bytes().await.unwrap()[..] == source[CHUNK - 3..2 * CHUNK + 3]);
    app.shutdown().await;
}

#[tokio::test]
async fn tampering_with_a_file_sealed_chunk_by_chunk_is_caught() {
    let app = app_with(CHUNK, true).await;
    let size = 3 * CHUNK;
    let source = content(size, 2);
    let url = started(&app, "sealed", "t", size).await;
    for index in 0..3 {
        let (status, answer) = put_chunk(&app, &url, &source, CHUNK, index).await;
        assert!(status == 200 || status == 201, "{answer}");
    }
    let objects = stored_objects(&app).await;
    let path = stored_object(&objects, "sealed", "t");
    let original = std::fs::read(&path).unwrap();

    // A flipped bit in the first segment: refused before any byte is sent.
    let mut first = original.clone();
    first[13 + 16 + 100] ^= 1;
    std::fs::write(&path, &first).unwrap();
    let response = download(&app, "sealed", "t", None).await;
    assert_eq!(response.status().as_u16(), 500);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(code(&answer), "FILE_UNREADABLE", "{answer}");

    // In the last chunk, the chunks swapped, or the file cut at a chunk boundary:
    // the body never completes as the source.
    let sealed_chunk = 16 + CHUNK + 16;
    let mut last = original.clone();
    let at = original.len() - 50;
    last[at] ^= 0x80;
    let mut swapped = original.clone();
    swapped[13 + sealed_chunk..13 + 2 * sealed_chunk]
        .copy_from_slice(&original[13 + 2 * sealed_chunk..13 + 3 * sealed_chunk]);
    swapped[13 + 2 * sealed_chunk..13 + 3 * sealed_chunk]
        .copy_from_slice(&original[13 + sealed_chunk..13 + 2 * sealed_chunk]);
    let cut = original[..13 + 2 * sealed_chunk].to_vec();
    for (what, bytes) in [
        ("a flipped bit", last),
        ("swapped chunks", swapped),
        ("a cut", cut),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        // The server may hold a short answer's head back with its first bytes until
        // more of the body is ready; when what follows fails, the connection closes
        // with nothing sent.
        let response = app
            .client
            .get(format!(
                "{}/v1/storage/buckets/sealed/files/t/download",
                app.url
            ))
            .header("x-nimbus-key", &app.admin_key)
            .send()
            .await;
        let body = match response {
            Ok(response) if response.status().as_u16() == 200 => response.bytes().await.ok(),
            _ => None,
        };
        assert!(
            body.is_none_or(|body| body[..] != source[..]),
            "{what} went unnoticed"
        );
    }
    std::fs::write(&path, &original).unwrap();
    assert!(downloaded(&app, "sealed", "t").await == source);
    app.shutdown().await;
}

/// A body that sends `first`, then waits for `release` and fails: a client that
/// broke off mid-chunk, held open until the test has looked at the disk.
fn broken_body(first: Vec<u8>, release: tokio::sync::oneshot::Receiver<()>) -> reqwest::Body {
    use futures_util::StreamExt as _;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
        futures_util::stream::once(async move {
            let _ = release.await;
            Err(std::io::Error::other("the client broke off"))
        }),
    );
    reqwest::Body::wrap_stream(stream)
}

/// Waits until `path` holds at least `length` bytes and answers them.
async fn wait_for_bytes(path: &std::path::Path, length: usize) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(bytes) = std::fs::read(path)
            && bytes.len() >= length
        {
            return bytes;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never reached {length} bytes",
            path.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Sends chunk `index` of a file of `total` bytes from `bytes`, breaks it off once
/// more than 1 MiB of it is on disk, and answers what was on disk of its place.
async fn broken_attempt(
    app: &TestApp,
    url: &str,
    assembly: &std::path::Path,
    (index, chunk, total): (usize, usize, usize),
    bytes: &[u8],
) -> Vec<u8> {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let sent = (1 << 20) + 4096;
    let start = index * chunk;
    let end = (start + chunk).min(total) - 1;
    let body = broken_body(bytes[..sent].to_vec(), released);
    let request = range_request(app, url, (start, end, total), body).send();
    let request = tokio::spawn(request);
    // The sealed place of chunk `index`: after the header and the chunks before it.
    let sealed_chunk = 16 + chunk + chunk.div_ceil(CHUNK) * 16;
    let place = 13 + index * sealed_chunk;
    let on_disk = wait_for_bytes(assembly, place + (1 << 20)).await;
    let _ = release.send(());
    let _ = request.await.unwrap();
    // The server cuts the broken chunk off and lets go of the upload.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let file = std::fs::File::open(assembly).unwrap();
        let cut = file.metadata().unwrap().len() <= place as u64;
        if cut && file.try_lock().is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broken chunk was never cut off"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    on_disk[place..place + (1 << 20)].to_vec()
}

/// Sends `bytes` as chunk `index`, again while the server is still letting go of a
/// request that broke off (`UPLOAD_CHUNK_OUT_OF_ORDER` while it holds the upload).
async fn put_chunk_when_free(
    app: &TestApp,
    url: &str,
    bytes: &[u8],
    chunk: usize,
    index: usize,
) -> (u16, Value) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = put_chunk(app, url, bytes, chunk, index).await;
        if answer.0 != 409 || tokio::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_retried_chunk_is_sealed_under_a_fresh_key_and_the_file_holds_the_last_bytes_sent() {
    // Chunks above 1 MiB, so that a broken attempt leaves sealed bytes on disk.
    let chunk = 24 * CHUNK;
    let app = app_with(chunk, true).await;
    let size = 2 * chunk + 100;
    let first_try = content(size, 3);
    let last_try = content(size, 4);
    let url = started(&app, "sealed", "r", size).await;
    let assembly = upload_dir(&app, "sealed", "r").join("assembly");
    let (status, answer) = put_chunk(&app, &url, &first_try, chunk, 0).await;
    assert_eq!(status, 200, "{answer}");

    // Twice the same bytes at the same place, both broken off: what reached the disk
    // differs past the seed, so no key and nonce sealed two plaintexts.
    let one = broken_attempt(&app, &url, &assembly, (1, chunk, size), &first_try[chunk..]).await;
    let two = broken_attempt(&app, &url, &assembly, (1, chunk, size), &first_try[chunk..]).await;
    assert_ne!(one[..16], two[..16], "each attempt draws its own seed");
    let differing = one[16..]
        .iter()
        .zip(&two[16..])
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        differing > (1 << 20) / 2,
        "the same plaintext sealed alike under two attempts ({differing} bytes differ)"
    );

    // Then other bytes, whole: the file holds them.
    let (status, answer) = put_chunk_when_free(&app, &url, &last_try, chunk, 1).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = put_chunk(&app, &url, &last_try, chunk, 2).await;
    assert_eq!(status, 201, "{answer}");
    let mut expected = first_try[..chunk].to_vec();
    expected.extend_from_slice(&last_try[chunk..]);
    assert_eq!(
        answer["checksum"],
        sha256_hex(&expected),
        "the checksum of the bytes kept"
    );
    assert!(
        downloaded(&app, "sealed", "r").await == expected,
        "the bytes read back are the last sent for every place"
    );
    app.shutdown().await;
}

/// The paths every store takes: out of order, interrupted and resumed, too long,
/// after completion.
async fn refusals_and_resumption(local: bool) {
    let app = app_with(CHUNK, local).await;
    for bucket in ["plain", "sealed"] {
        let size = 3 * CHUNK + 9;
        let source = content(size, 5);
        let url = started(&app, bucket, "o", size).await;
        let (status, answer) = put_chunk(&app, &url, &source, CHUNK, 0).await;
        assert_eq!(status, 200, "{bucket}: {answer}");

        // Out of order: refused, and nothing recorded.
        let (status, answer) = put_chunk(&app, &url, &source, CHUNK, 2).await;
        assert_eq!(status, 409, "{bucket}: {answer}");
        assert_eq!(code(&answer), "UPLOAD_CHUNK_OUT_OF_ORDER");
        // Over the declared size, as a total or as a body: refused.
        let (status, answer) = put_range(
            &app,
            &url,
            (CHUNK, 2 * CHUNK - 1, size + 1),
            source[CHUNK..2 * CHUNK].to_vec(),
        )
        .await;
        assert_eq!(status, 400, "{bucket}: {answer}");
        assert_eq!(code(&answer), "UPLOAD_CHUNK_INVALID");
        let (status, answer) =
            put_range(&app, &url, (CHUNK, size, size), source[CHUNK..].to_vec()).await;
        assert_eq!(status, 400, "{bucket}: {answer}");
        assert_eq!(code(&answer), "UPLOAD_CHUNK_INVALID");
        let mut longer = source[CHUNK..2 * CHUNK].to_vec();
        longer.extend_from_slice(b"more");
        let (status, answer) = put_range(&app, &url, (CHUNK, 2 * CHUNK - 1, size), longer).await;
        assert_eq!(status, 400, "{bucket}: {answer}");
        assert_eq!(code(&answer), "UPLOAD_CHUNK_INVALID");
        // Interrupted: a body shorter than its range.
        let (status, answer) = put_range(
            &app,
            &url,
            (CHUNK, 2 * CHUNK - 1, size),
            source[CHUNK..2 * CHUNK - 100].to_vec(),
        )
        .await;
        assert_eq!(status, 400, "{bucket}: {answer}");
        assert_eq!(code(&answer), "UPLOAD_CHUNK_INVALID");

        // Resumed where the upload says it stands.
        let stands = app
            .admin(
                "{ fileUpload(bucketId: $b, fileId: \"o\") { status chunksUploaded } }"
                    .replace("$b", &format!("\"{bucket}\""))
                    .as_str(),
                json!({}),
            )
            .await
            .ok()["fileUpload"]
            .clone();
        assert_eq!(stands["status"], "UPLOADING", "{bucket}: {stands}");
        assert_eq!(
            stands["chunksUploaded"], 1,
            "{bucket}: nothing recorded by the refusals"
        );
        for index in 1..4 {
            let (status, answer) = put_chunk(&app, &url, &source, CHUNK, index).await;
            assert_eq!(
                status,
                if index == 3 { 201 } else { 200 },
                "{bucket}: {answer}"
            );
            if index == 3 {
                assert_eq!(answer["checksum"], sha256_hex(&source), "{bucket}");
            }
        }
        assert!(
            downloaded(&app, bucket, "o").await == source,
            "{bucket}: the bytes read back are the source's"
        );

        // After completion: refused, and the file unchanged.
        let (status, answer) = put_chunk(&app, &url, &content(size, 6), CHUNK, 3).await;
        assert_eq!(status, 409, "{bucket}: {answer}");
        assert_eq!(code(&answer), "UPLOAD_COMPLETE");
        let (_, answer) = put_chunk(&app, &url, &content(size, 6), CHUNK, 0).await;
        assert_eq!(code(&answer), "UPLOAD_COMPLETE");
        assert!(downloaded(&app, bucket, "o").await == source, "{bucket}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn chunks_out_of_order_too_long_interrupted_or_after_completion_are_refused_in_a_local_store()
{
    refusals_and_resumption(true).await;
}

/// The same in the store the suite runs with (S3 keeps chunks as objects).
#[tokio::test]
async fn chunks_out_of_order_too_long_interrupted_or_after_completion_are_refused_in_any_store() {
    refusals_and_resumption(false).await;
}

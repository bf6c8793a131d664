//! Uploads written in one pass: a multipart part is hashed while it is spooled and,
//! in a local store, becomes the stored object itself; resumable chunks are written
//! in place into one file per upload with a running hash. What must hold whatever
//! the path: the stored bytes and checksum are exactly the source's, at every size
//! around a chunk boundary and in every bucket kind, across a server restart in the
//! middle of an upload, and when two requests race with the same chunk.

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::helpers::{TestApp, WAIT, spawn_app, spawn_with, test_config};
use crate::storage::{stored_objects, upload};
use crate::uploads;

const CHUNK: usize = 65_536;

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Bytes that differ at every offset and between files of the same size.
pub(crate) fn content(size: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

async fn buckets(app: &TestApp) {
    for (id, extra) in [
        ("plain", json!({"encryption": false})),
        ("sealed", json!({"encryption": true})),
        (
            "packed",
            json!({"encryption": false, "compression": "GZIP"}),
        ),
    ] {
        let mut input = json!({"id": id, "name": id, "antivirus": false});
        input
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        app.admin(
            "mutation($i: CreateBucketInput!) { createBucket(input: $i) { id } }",
            json!({"i": input}),
        )
        .await
        .ok();
    }
}

/// Starts a resumable upload: its URL.
async fn started(app: &TestApp, bucket: &str, id: &str, size: usize) -> String {
    uploads::start_upload(app, bucket, id, size).await["uploadUrl"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `PUT`s chunk `index` of `bytes` to `base` + `upload_url`: status and answer.
async fn put_chunk(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    upload_url: &str,
    bytes: &[u8],
    index: usize,
) -> (u16, Value) {
    let start = index * CHUNK;
    let end = (start + CHUNK).min(bytes.len());
    let response = client
        .put(format!("{base}{upload_url}"))
        .header("x-nimbus-key", key)
        .header(
            "content-range",
            format!("bytes {start}-{}/{}", end - 1, bytes.len()),
        )
        .body(bytes[start..end].to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn download(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    bucket: &str,
    id: &str,
) -> Vec<u8> {
    let response = client
        .get(format!(
            "{base}/v1/storage/buckets/{bucket}/files/{id}/download"
        ))
        .header("x-nimbus-key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "download of {bucket}/{id}");
    response.bytes().await.unwrap().to_vec()
}

/// Nothing under any upload prefix: the chunks went with the completed uploads.
async fn no_upload_leftovers(app: &TestApp) {
    let left: Vec<String> = stored_objects(app)
        .await
        .into_iter()
        .filter(|path| path.contains("/uploads/"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "upload leftovers");
}

#[tokio::test]
async fn chunked_uploads_around_chunk_boundaries_store_exactly_the_source_bytes_and_checksum() {
    chunk_boundaries(false).await;
}

/// The same in a local store whatever store the suite uses, so that writing chunks
/// in place runs on every database.
#[tokio::test]
async fn chunked_uploads_around_chunk_boundaries_in_a_local_store() {
    chunk_boundaries(true).await;
}

async fn chunk_boundaries(local: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.upload_chunk_size = CHUNK as u64;
    if local {
        config.storage = None;
    }
    let app = spawn_with(config, dir).await;
    buckets(&app).await;
    let sizes = [
        1,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        2 * CHUNK,
        3 * CHUNK - 1,
        3 * CHUNK + 7,
    ];
    for bucket in ["plain", "sealed", "packed"] {
        for (n, size) in sizes.into_iter().enumerate() {
            let bytes = content(size, n as u32 + 1);
            let id = format!("f{n}");
            let url = started(&app, bucket, &id, size).await;
            let chunks = size.div_ceil(CHUNK);
            let mut last = (0, Value::Null);
            for index in 0..chunks {
                last = put_chunk(&app.client, &app.url, &app.admin_key, &url, &bytes, index).await;
                let expected = if index + 1 == chunks { 201 } else { 200 };
                assert_eq!(
                    last.0, expected,
                    "{bucket} size {size} chunk {index}: {}",
                    last.1
                );
            }
            assert_eq!(last.1["status"], "READY");
            assert_eq!(last.1["size"], size, "{bucket} size {size}");
            assert_eq!(
                last.1["checksum"],
                sha256_hex(&bytes),
                "{bucket} size {size}: the checksum of the whole source"
            );
            let got = download(&app.client, &app.url, &app.admin_key, bucket, &id).await;
            assert!(
                got == bytes,
                "{bucket} size {size}: the bytes read back are the source's"
            );
        }
    }
    no_upload_leftovers(&app).await;
    app.shutdown().await;
}

#[tokio::test]
async fn multipart_uploads_store_the_source_bytes_and_one_part_can_make_two_files() {
    let app = spawn_app().await;
    buckets(&app).await;
    let admin = [("x-nimbus-key", app.admin_key.as_str())];
    for bucket in ["plain", "sealed", "packed"] {
        let bytes = content(300_001, 7);
        let answer = upload(
            &app,
            &admin,
            json!({"bucketId": bucket, "fileId": "one", "file": null}),
            "one.bin",
            "application/octet-stream",
            &bytes,
        )
        .await
        .ok();
        assert_eq!(answer["createFile"]["size"], bytes.len());
        assert_eq!(
            answer["createFile"]["checksum"],
            sha256_hex(&bytes),
            "{bucket}"
        );
        let got = download(&app.client, &app.url, &app.admin_key, bucket, "one").await;
        assert!(
            got == bytes,
            "{bucket}: the bytes read back are the source's"
        );
    }

    // One part mapped to two files: both are whole, and each lives on alone.
    let bytes = content(200_000, 9);
    let boundary = "nimbus-two-files-boundary";
    let operations = json!({
        "query": "mutation($a: CreateFileInput!, $b: CreateFileInput!) { a: createFile(input: $a) { checksum } b: createFile(input: $b) { checksum } }",
        "variables": {
            "a": {"bucketId": "plain", "fileId": "a", "file": null},
            "b": {"bucketId": "plain", "fileId": "b", "file": null},
        },
    });
    let mut body = Vec::new();
    for (headers, part) in [
        ("Content-Disposition: form-data; name=\"operations\"".to_string(), operations.to_string().into_bytes()),
        ("Content-Disposition: form-data; name=\"map\"".to_string(), br#"{"0": ["variables.a.file", "variables.b.file"]}"#.to_vec()),
        ("Content-Disposition: form-data; name=\"0\"; filename=\"two.bin\"\r\nContent-Type: application/octet-stream".to_string(), bytes.clone()),
    ] {
        body.extend_from_slice(format!("--{boundary}\r\n{headers}\r\n\r\n").as_bytes());
        body.extend_from_slice(&part);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let response = app
        .multipart_post(boundary)
        .header("x-nimbus-key", &app.admin_key)
        .body(body)
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["data"]["a"]["checksum"],
        sha256_hex(&bytes),
        "{answer}"
    );
    assert_eq!(
        answer["data"]["b"]["checksum"],
        sha256_hex(&bytes),
        "{answer}"
    );
    app.admin(
        "mutation { deleteFile(input: {bucketId: \"plain\", fileId: \"a\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    let got = download(&app.client, &app.url, &app.admin_key, "plain", "b").await;
    assert!(got == bytes, "the second file outlives the first");
    let spool = app.config.upload_spool_dir();
    let spooled = std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
    assert_eq!(spooled, 0, "the spool files went with their request");
    app.shutdown().await;
}

#[tokio::test]
async fn a_chunked_upload_broken_by_a_restart_resumes_and_completes_with_the_right_checksum() {
    resume_after_restart(false).await;
}

#[tokio::test]
async fn a_chunked_upload_broken_by_a_restart_resumes_in_a_local_store() {
    resume_after_restart(true).await;
}

async fn resume_after_restart(local: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.upload_chunk_size = CHUNK as u64;
    if local {
        config.storage = None;
    }
    let app = spawn_with(config.clone(), dir).await;
    buckets(&app).await;
    let size = 4 * CHUNK + 123;
    let mut urls = Vec::new();
    let sources: Vec<Vec<u8>> = (0..3).map(|n| content(size, 20 + n)).collect();
    for (n, bucket) in ["plain", "sealed", "packed"].into_iter().enumerate() {
        let url = started(&app, bucket, "resumed", size).await;
        for index in 0..2 {
            let (status, answer) = put_chunk(
                &app.client,
                &app.url,
                &app.admin_key,
                &url,
                &sources[n],
                index,
            )
            .await;
            assert_eq!(status, 200, "{answer}");
        }
        urls.push(url);
    }
    let admin_key = app.admin_key.clone();
    let TestApp { server, client, .. } = app;
    server.unwrap().shutdown().await.unwrap();

    let server = nimbus::Server::start(config.clone()).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    for (n, bucket) in ["plain", "sealed", "packed"].into_iter().enumerate() {
        let mut last = (0, Value::Null);
        for index in 2..size.div_ceil(CHUNK) {
            last = put_chunk(&client, &base, &admin_key, &urls[n], &sources[n], index).await;
        }
        assert_eq!(last.0, 201, "{bucket}: {}", last.1);
        assert_eq!(
            last.1["checksum"],
            sha256_hex(&sources[n]),
            "{bucket}: the checksum covers the chunks sent before the restart"
        );
        let got = download(&client, &base, &admin_key, bucket, "resumed").await;
        assert!(
            got == sources[n],
            "{bucket}: the bytes read back are the source's"
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_requests_racing_with_the_same_chunk_leave_exactly_one_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.upload_chunk_size = CHUNK as u64;
    let app = spawn_with(config, dir).await;
    buckets(&app).await;
    let size = 2 * CHUNK;
    let url = started(&app, "plain", "raced", size).await;
    let first = content(size, 31);
    let second = content(size, 32);

    // The first request sends half its chunk, then waits; the second sends its own
    // whole chunk meanwhile; then the first finishes.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let half = first[..CHUNK / 2].to_vec();
    let rest = first[CHUNK / 2..CHUNK].to_vec();
    use futures_util::StreamExt as _;
    let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(half) }).chain(
        futures_util::stream::once(async move {
            let _ = released.await;
            Ok::<_, std::io::Error>(rest)
        }),
    );
    let slow = app
        .client
        .put(format!("{}{url}", app.url))
        .header("x-nimbus-key", &app.admin_key)
        .header("content-range", format!("bytes 0-{}/{size}", CHUNK - 1))
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let slow = tokio::spawn(slow);
    // In a local store, the slow request holds the upload's file once it exists.
    if app.config.storage.is_none() {
        let assembly = app
            .config
            .data_dir
            .join("files/projects/default/buckets/plain/uploads/raced/assembly");
        let deadline = tokio::time::Instant::now() + WAIT;
        while !assembly.exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the slow chunk never arrived"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    // Whichever order the two meet the server in, one is taken and one refused.
    let fast = put_chunk(&app.client, &app.url, &app.admin_key, &url, &second, 0).await;
    let _ = release.send(());
    let slow = slow.await.unwrap().unwrap();
    let slow_status = slow.status().as_u16();
    let slow_answer: Value = slow.json().await.unwrap_or(Value::Null);
    let statuses = [slow_status, fast.0];
    assert!(
        statuses.contains(&200) && statuses.contains(&409),
        "one chunk taken, one refused: slow {slow_status} {slow_answer}, fast {} {}",
        fast.0,
        fast.1
    );
    let refused = if slow_status == 409 {
        &slow_answer
    } else {
        &fast.1
    };
    assert_eq!(
        refused["errors"][0]["extensions"]["code"],
        "UPLOAD_CHUNK_OUT_OF_ORDER"
    );
    let winner = if slow_status == 200 { &first } else { &second };
    let mut whole = winner[..CHUNK].to_vec();
    whole.extend_from_slice(&winner[CHUNK..]);
    let (status, done) = put_chunk(&app.client, &app.url, &app.admin_key, &url, &whole, 1).await;
    assert_eq!(status, 201, "{done}");
    assert_eq!(done["checksum"], sha256_hex(&whole));
    let got = download(&app.client, &app.url, &app.admin_key, "plain", "raced").await;
    assert!(
        got == whole,
        "the stored bytes are the winning request's, whole"
    );
    no_upload_leftovers(&app).await;
    app.shutdown().await;
}

//! Transfers at disk speed: a multipart upload into an encrypted bucket of a local
//! store is sealed while it is spooled and the spool file becomes the stored object;
//! downloads read a piece ahead. What must hold: the stored bytes are sealed (no
//! plaintext on disk) and open to exactly the source, whose checksum is the one
//! answered; ranges across the pieces of a read are exact; and a client that breaks
//! off in the middle of a multipart upload leaves no file, no spool file and no
//! stored object behind.

use serde_json::{Value, json};

use crate::helpers::{TestApp, WAIT, spawn_with, test_config};
use crate::storage::{stored_objects, upload};
use crate::uploads::{contains, download, stored_object};
use crate::uploads_fast::{content, sha256_hex};

/// Pieces in which local files are read for downloads.
const PIECE: usize = 512 * 1024;
/// Plaintext bytes per sealed segment, and the tag after each.
const SEGMENT: usize = 65_536;
const TAG: usize = 16;

/// A server with a plain and an encrypted bucket, in a local store when `local`.
async fn app_with(local: bool) -> TestApp {
    app_with_buckets(local, |_| {}).await
}

/// A server with a plain and an encrypted bucket, in a local store when `local`,
/// its settings changed by `adjust` first.
pub(crate) async fn app_with_buckets(
    local: bool,
    adjust: impl FnOnce(&mut nimbus::config::Config),
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    if local {
        config.storage = None;
    }
    adjust(&mut config);
    let app = spawn_with(config, dir).await;
    for (id, encryption) in [("plain", false), ("sealed", true)] {
        app.admin(
            "mutation($i: CreateBucketInput!) { createBucket(input: $i) { id } }",
            json!({"i": {"id": id, "name": id, "antivirus": false, "encryption": encryption}}),
        )
        .await
        .ok();
    }
    app
}

async fn get(app: &TestApp, bucket: &str, id: &str, range: Option<&str>) -> (u16, Vec<u8>) {
    let response = download(app, bucket, id, range).await;
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

/// Files in the upload spool directory.
fn spooled(app: &TestApp) -> usize {
    std::fs::read_dir(app.config.upload_spool_dir())
        .map(|entries| entries.count())
        .unwrap_or(0)
}

async fn transfers_round_trip(local: bool) {
    let app = app_with(local).await;
    let admin = [("x-nimbus-key", app.admin_key.as_str())];
    // Two pieces and a bit, so a download takes three reads and ranges cross them.
    let bytes = content(2 * PIECE + 3 * SEGMENT + 7, 41);
    for bucket in ["plain", "sealed"] {
        let answer = upload(
            &app,
            &admin,
            json!({"bucketId": bucket, "fileId": "big", "file": null}),
            "big.bin",
            "application/octet-stream",
            &bytes,
        )
        .await
        .ok();
        assert_eq!(answer["createFile"]["size"], bytes.len(), "{bucket}");
        assert_eq!(
            answer["createFile"]["checksum"],
            sha256_hex(&bytes),
            "{bucket}"
        );
        let (status, got) = get(&app, bucket, "big", None).await;
        assert_eq!(status, 200, "{bucket}");
        assert!(
            got == bytes,
            "{bucket}: the bytes read back are the source's"
        );
        for (start, end) in [
            (0, 0),
            (PIECE - 1, PIECE),
            (PIECE - 3, 2 * PIECE + 2),
            (SEGMENT - 1, SEGMENT + 1),
            (bytes.len() - 5, bytes.len() - 1),
        ] {
            let (status, got) =
                get(&app, bucket, "big", Some(&format!("bytes={start}-{end}"))).await;
            assert_eq!(status, 206, "{bucket} {start}-{end}");
            assert!(
                got == bytes[start..=end],
                "{bucket}: bytes {start}-{end} are the source's"
            );
        }
    }
    if local {
        // Sealed as it was spooled: version 1 of the layout, one tag per segment, no
        // plaintext anywhere in the stored object.
        let objects = stored_objects(&app).await;
        let sealed = std::fs::read(stored_object(&objects, "sealed", "big")).unwrap();
        assert_eq!(&sealed[..5], b"NBFE\x01");
        let segments = bytes.len().div_ceil(SEGMENT);
        assert_eq!(sealed.len(), 12 + bytes.len() + segments * TAG);
        assert!(!contains(&sealed, &bytes[PIECE..PIECE + 64]));
        let plain = std::fs::read(stored_object(&objects, "plain", "big")).unwrap();
        assert!(plain == bytes, "a plain bucket stores the bytes as sent");
        let stored = app
            .admin(
                "query { file(bucketId: \"sealed\", fileId: \"big\") { size storedSize encrypted } }",
                json!({}),
            )
            .await
            .ok();
        assert_eq!(stored["file"]["size"], bytes.len());
        assert_eq!(stored["file"]["storedSize"], sealed.len());
        assert_eq!(stored["file"]["encrypted"], true);
    }
    assert_eq!(spooled(&app), 0, "the spool files went with their request");
    app.shutdown().await;
}

#[tokio::test]
async fn uploads_and_downloads_across_read_pieces_are_exact_in_a_local_store() {
    transfers_round_trip(true).await;
}

#[tokio::test]
async fn uploads_and_downloads_across_read_pieces_are_exact_in_any_store() {
    transfers_round_trip(false).await;
}

/// A multipart body that sends `head` and the first `sent` bytes of the file part,
/// then waits for `release` and fails: a client that broke off mid-upload.
fn broken_multipart(head: Vec<u8>, release: tokio::sync::oneshot::Receiver<()>) -> reqwest::Body {
    use futures_util::StreamExt as _;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(
        futures_util::stream::once(async move {
            let _ = release.await;
            Err(std::io::Error::other("the client broke off"))
        }),
    );
    reqwest::Body::wrap_stream(stream)
}

async fn broken_off(local: bool) {
    let app = app_with(local).await;
    let bytes = content(3 << 20, 5);
    for bucket in ["plain", "sealed"] {
        let boundary = "nimbus-broken-boundary";
        let operations = json!({
            "query": "mutation($i: CreateFileInput!) { createFile(input: $i) { id } }",
            "variables": {"i": {"bucketId": bucket, "fileId": "gone", "file": null}},
        });
        let mut head = Vec::new();
        for (headers, part) in [
            (
                "Content-Disposition: form-data; name=\"operations\"".to_string(),
                operations.to_string().into_bytes(),
            ),
            (
                "Content-Disposition: form-data; name=\"map\"".to_string(),
                br#"{"0": ["variables.i.file"]}"#.to_vec(),
            ),
        ] {
            head.extend_from_slice(format!("--{boundary}\r\n{headers}\r\n\r\n").as_bytes());
            head.extend_from_slice(&part);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"gone.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        // More than a spool batch, so some of it is on disk when the client goes.
        head.extend_from_slice(&bytes[..(2 << 20) + 5]);
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let request = app
            .multipart_post(boundary)
            .header("x-nimbus-key", &app.admin_key)
            .body(broken_multipart(head, released))
            .send();
        let request = tokio::spawn(request);
        // Wait until the part is being spooled, then break off.
        let deadline = tokio::time::Instant::now() + WAIT;
        while spooled(&app) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{bucket}: the part was never spooled"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let _ = release.send(());
        let _ = request.await.unwrap();
        // The spool file goes with the request, and no file was made.
        let deadline = tokio::time::Instant::now() + WAIT;
        while spooled(&app) != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{bucket}: the spool file outlived its request"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let answer = app
            .admin(
                "query($b: ID!) { file(bucketId: $b, fileId: \"gone\") { id } }",
                json!({"b": bucket}),
            )
            .await;
        assert_eq!(answer.code(), "FILE_NOT_FOUND", "{bucket}");
        let left: Vec<String> = stored_objects(&app)
            .await
            .into_iter()
            .filter(|path| path.contains(&format!("/buckets/{bucket}/")))
            .collect();
        assert_eq!(left, Vec::<String>::new(), "{bucket}: nothing stored");
        // The server goes on: the same id uploads whole afterwards.
        let admin = [("x-nimbus-key", app.admin_key.as_str())];
        let small = content(70_000, 6);
        let answer: Value = upload(
            &app,
            &admin,
            json!({"bucketId": bucket, "fileId": "gone", "file": null}),
            "gone.bin",
            "application/octet-stream",
            &small,
        )
        .await
        .ok();
        assert_eq!(answer["createFile"]["checksum"], sha256_hex(&small));
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_client_that_breaks_off_a_multipart_upload_leaves_nothing_in_a_local_store() {
    broken_off(true).await;
}

#[tokio::test]
async fn a_client_that_breaks_off_a_multipart_upload_leaves_nothing_in_any_store() {
    broken_off(false).await;
}

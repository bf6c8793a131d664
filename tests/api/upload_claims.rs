//! An upload's steps after its claim act on that claim only. A chunk that passed its
//! checks, and whose body is still arriving when its upload is deleted and the id
//! claimed again by another user, ends with `UPLOAD_NOT_FOUND`: the newer upload
//! keeps its row and its place, completes with its own bytes, and nothing of the
//! older one is left in the store. Both ways a chunk is kept are driven: written in
//! place (a local store) and as an object of its own (S3, when the suite has one).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, WAIT};
use crate::storage::{error_code, stored_objects};
use crate::storage_transfers::app_with_buckets;
use crate::uploads::downloaded;
use crate::uploads_fast::{content, sha256_hex};

/// One chunk, over the 5 MiB an S3 write buffers before it starts a multipart upload
/// (which is how the test sees a chunk object being written).
const CHUNK: usize = 6 * 1024 * 1024;
/// What the first user sends of its chunk before its upload is deleted: over a
/// spool batch (1 MiB, what a local store writes at once) and an S3 part.
const SENT_FIRST: usize = 5 * 1024 * 1024 + 512 * 1024;

const START_UPLOAD: &str = "mutation($input: CreateFileUploadInput!) { createFileUpload(input: $input) { uploadUrl chunksTotal } }";
const UPLOAD_STATUS: &str = "query($b: ID!, $f: ID!) { fileUpload(bucketId: $b, fileId: $f) { status size chunksUploaded } }";
const DELETE_FILE: &str =
    "mutation($b: ID!, $f: ID!) { deleteFile(input: {bucketId: $b, fileId: $f}) { deletedId } }";

/// A server with chunks of [`CHUNK`] bytes and a bucket `shared` where signed-in
/// users create files only they read; in a local store when `local`.
async fn app_with(local: bool) -> TestApp {
    let app = app_with_buckets(local, |config| config.upload_chunk_size = CHUNK as u64).await;
    app.admin(
        "mutation($i: CreateBucketInput!) { createBucket(input: $i) { id } }",
        json!({"i": {"id": "shared", "name": "shared", "antivirus": false,
            "permissions": ["create(\"users\")"], "fileSecurity": true}}),
    )
    .await
    .ok();
    app
}

/// Starts a resumable upload of `size` bytes as the user of `session`: its URL.
async fn start_as(app: &TestApp, session: &str, id: &str, size: usize) -> String {
    let started = app
        .as_session(
            session,
            START_UPLOAD,
            json!({"input": {"bucketId": "shared", "fileId": id, "name": "avatar.bin", "size": size}}),
        )
        .await
        .ok();
    started["createFileUpload"]["uploadUrl"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Keys of the multipart uploads under way in the test S3 bucket, under this
/// server's prefix (listed over plain HTTP, as the test S3 server allows).
async fn multipart_uploads(app: &TestApp, location: &str) -> Vec<String> {
    crate::storage::s3_keys(app, location, "uploads").await
}

/// Whether the store shows bytes of a chunk of upload `id` being written: its
/// assembly holding some (a local store), or its object's multipart upload begun
/// (S3). Either comes only after the chunk's request has passed every check.
async fn chunk_being_written(app: &TestApp, id: &str) -> bool {
    let marker = format!("/uploads/{id}/");
    match &app.config.storage {
        None => stored_objects(app).await.iter().any(|path| {
            path.contains(&marker) && std::fs::metadata(path).is_ok_and(|meta| meta.len() > 0)
        }),
        Some(location) => multipart_uploads(app, location)
            .await
            .iter()
            .any(|key| key.contains(&marker)),
    }
}

async fn a_chunk_of_a_deleted_upload_leaves_the_ids_next_claim_alone(local: bool) {
    let app = app_with(local).await;
    let attacker = app.signed_in("attacker@example.com").await;
    let victim = app.signed_in("victim@example.com").await;
    let id = "avatar-v";

    // The attacker's chunk passes its checks, and its body keeps arriving.
    let url = start_as(&app, &attacker, id, CHUNK).await;
    let theirs = content(CHUNK, 7);
    let (body, rest) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    body.send(Ok(theirs[..SENT_FIRST].to_vec())).await.unwrap();
    let chunk = app
        .client
        .put(format!("{}{url}", app.url))
        .header("authorization", format!("Bearer {attacker}"))
        .header("content-range", format!("bytes 0-{}/{CHUNK}", CHUNK - 1))
        .body(reqwest::Body::wrap_stream(
            tokio_stream::wrappers::ReceiverStream::new(rest),
        ))
        .send();
    let chunk = tokio::spawn(chunk);
    let deadline = Instant::now() + WAIT;
    while !chunk_being_written(&app, id).await {
        assert!(
            Instant::now() < deadline,
            "the chunk never started being written: {:?}",
            stored_objects(&app).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The attacker deletes its own upload, and the victim claims the id.
    app.as_session(&attacker, DELETE_FILE, json!({"b": "shared", "f": id}))
        .await
        .ok();
    let mine = content(100_000, 9);
    let victims_url = start_as(&app, &victim, id, mine.len()).await;

    // The attacker's last bytes arrive: the chunk is refused, clearly.
    body.send(Ok(theirs[SENT_FIRST..].to_vec())).await.unwrap();
    drop(body);
    let answer = tokio::time::timeout(WAIT, chunk)
        .await
        .expect("the chunk is answered")
        .unwrap()
        .expect("the chunk's request went through");
    let status = answer.status().as_u16();
    let answer = answer.bytes().await.unwrap();
    assert_eq!(
        (status, error_code(&answer).as_str()),
        (404, "UPLOAD_NOT_FOUND"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // The victim's upload is as it was started, and completes with its own bytes.
    let standing = app
        .as_session(&victim, UPLOAD_STATUS, json!({"b": "shared", "f": id}))
        .await
        .ok();
    assert_eq!(
        standing["fileUpload"],
        json!({"status": "UPLOADING", "size": mine.len(), "chunksUploaded": 0})
    );
    let done = app
        .client
        .put(format!("{}{victims_url}", app.url))
        .header("authorization", format!("Bearer {victim}"))
        .header(
            "content-range",
            format!("bytes 0-{}/{}", mine.len() - 1, mine.len()),
        )
        .body(mine.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(done.status().as_u16(), 201);
    let done: Value = done.json().await.unwrap();
    assert_eq!(done["checksum"], sha256_hex(&mine), "{done}");
    assert!(downloaded(&app, "shared", id).await == mine);
    let left: Vec<String> = stored_objects(&app)
        .await
        .into_iter()
        .filter(|path| path.contains("/buckets/shared/"))
        .collect();
    assert_eq!(left.len(), 1, "only the victim's file is kept: {left:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_chunk_of_a_deleted_upload_leaves_the_ids_next_claim_alone_in_a_local_store() {
    a_chunk_of_a_deleted_upload_leaves_the_ids_next_claim_alone(true).await;
}

#[tokio::test]
async fn a_chunk_of_a_deleted_upload_leaves_the_ids_next_claim_alone_in_any_store() {
    a_chunk_of_a_deleted_upload_leaves_the_ids_next_claim_alone(false).await;
}

/// Refuses, until dropped, every upload's move to `finishing`: the database
/// going away between the last chunk's record and its completion.
async fn refuse_finishing(app: &TestApp, refuse: bool) {
    let db = &app.server.as_ref().unwrap().state().db;
    let mysql = db.dialect() == nimbus::db::Dialect::MySql;
    let statement = match (refuse, mysql) {
        (true, false) => {
            "CREATE TRIGGER refuse_finishing BEFORE UPDATE OF status ON storage_files \
             WHEN NEW.status = 'finishing' BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
        }
        (true, true) => {
            "CREATE TRIGGER refuse_finishing BEFORE UPDATE ON storage_files FOR EACH ROW \
             BEGIN IF NEW.status = 'finishing' THEN \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected fault'; END IF; END"
        }
        (false, _) => "DROP TRIGGER refuse_finishing",
    };
    sqlx::raw_sql(statement).execute(db.pool()).await.unwrap();
}

/// An upload whose last chunk was recorded but whose completion broke off (the
/// database went away in between; a server killed there leaves the same) is
/// completed when the client sends that chunk again, from the bytes received,
/// plain and encrypted: before, it stayed "uploading, every chunk received",
/// refused the chunk as out of order, and was never a file.
async fn an_upload_whose_completion_broke_off_completes_when_its_last_chunk_comes_again(
    local: bool,
) {
    use crate::uploads::{put_bytes, start_upload};
    let app = app_with(local).await;
    for bucket in ["plain", "sealed"] {
        let id = format!("broken-{bucket}");
        let bytes = content(CHUNK + 100_000, 3);
        let url = start_upload(&app, bucket, &id, bytes.len()).await["uploadUrl"]
            .as_str()
            .unwrap()
            .to_string();
        let (status, _) = put_bytes(&app, &url, &bytes, 0, CHUNK).await;
        assert_eq!(status, 200);
        refuse_finishing(&app, true).await;
        let (status, broke) = put_bytes(&app, &url, &bytes, CHUNK, bytes.len()).await;
        refuse_finishing(&app, false).await;
        assert_eq!(status, 500, "{broke}");
        let standing = app
            .admin(UPLOAD_STATUS, json!({"b": bucket, "f": id}))
            .await
            .ok();
        assert_eq!(
            standing["fileUpload"],
            json!({"status": "UPLOADING", "size": bytes.len(), "chunksUploaded": 2})
        );
        let (status, done) = put_bytes(&app, &url, &bytes, CHUNK, bytes.len()).await;
        assert_eq!(status, 201, "{done}");
        assert_eq!(done["checksum"], sha256_hex(&bytes), "{done}");
        assert!(downloaded(&app, bucket, &id).await == bytes, "{bucket}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn an_upload_whose_completion_broke_off_completes_when_its_last_chunk_comes_again_in_a_local_store()
 {
    an_upload_whose_completion_broke_off_completes_when_its_last_chunk_comes_again(true).await;
}

#[tokio::test]
async fn an_upload_whose_completion_broke_off_completes_when_its_last_chunk_comes_again_in_any_store()
 {
    an_upload_whose_completion_broke_off_completes_when_its_last_chunk_comes_again(false).await;
}

//! What the upload tests share: starting a resumable upload, sending a byte range of
//! it, downloading a file as the admin, and finding a file's stored object.

use serde_json::{Value, json};

use crate::helpers::TestApp;

const START_UPLOAD: &str = "mutation($input: CreateFileUploadInput!) { createFileUpload(input: $input) { uploadUrl chunkSize chunksTotal encrypted } }";

/// Starts a resumable upload of `size` bytes as the admin: the `createFileUpload`
/// answer (`uploadUrl`, `chunkSize`, `chunksTotal`, `encrypted`).
pub(crate) async fn start_upload(app: &TestApp, bucket: &str, id: &str, size: usize) -> Value {
    app.admin(
        START_UPLOAD,
        json!({"input": {"bucketId": bucket, "fileId": id, "name": "data.bin", "size": size}}),
    )
    .await
    .ok()["createFileUpload"]
        .clone()
}

/// The admin's `PUT` of `body` as the bytes `start..=end` of a file of `total`,
/// not sent yet.
pub(crate) fn range_request(
    app: &TestApp,
    url: &str,
    (start, end, total): (usize, usize, usize),
    body: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    app.client
        .put(format!("{}{url}", app.url))
        .header("x-nimbus-key", &app.admin_key)
        .header("content-range", format!("bytes {start}-{end}/{total}"))
        .body(body)
}

/// `PUT`s `body` as the bytes `start..=end` of a file of `total`: status and answer.
pub(crate) async fn put_range(
    app: &TestApp,
    url: &str,
    range: (usize, usize, usize),
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let response = range_request(app, url, range, body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `PUT`s `bytes[start..end]` as that range of `bytes`: status and answer.
pub(crate) async fn put_bytes(
    app: &TestApp,
    url: &str,
    bytes: &[u8],
    start: usize,
    end: usize,
) -> (u16, Value) {
    put_range(
        app,
        url,
        (start, end - 1, bytes.len()),
        bytes[start..end].to_vec(),
    )
    .await
}

/// `GET`s file `id`'s download as the admin, with a `Range` header when given.
pub(crate) async fn download(
    app: &TestApp,
    bucket: &str,
    id: &str,
    range: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .get(format!(
            "{}/v1/storage/buckets/{bucket}/files/{id}/download",
            app.url
        ))
        .header("x-nimbus-key", &app.admin_key);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    request.send().await.unwrap()
}

/// File `id`'s whole content, which must download.
pub(crate) async fn downloaded(app: &TestApp, bucket: &str, id: &str) -> Vec<u8> {
    let response = download(app, bucket, id, None).await;
    assert_eq!(response.status().as_u16(), 200, "download of {bucket}/{id}");
    response.bytes().await.unwrap().to_vec()
}

/// The one stored object of file `id` in `bucket` (a local store), among `objects`.
pub(crate) fn stored_object(objects: &[String], bucket: &str, id: &str) -> std::path::PathBuf {
    let found: Vec<&String> = objects
        .iter()
        .filter(|path| path.contains(&format!("/buckets/{bucket}/")) && path.ends_with(id))
        .collect();
    assert_eq!(found.len(), 1, "one object for {bucket}/{id}: {objects:?}");
    found[0].into()
}

/// Whether `needle` occurs in `haystack`.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

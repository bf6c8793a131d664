//! Storage: buckets, uploads (multipart and resumable), downloads, views with
//! ranges, previews, signed URLs, compression, encryption, antivirus, permissions
//! and events.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::helpers::{
    Answer, ServeOptions, ServeProcess, TestApp, WAIT, WsClient, spawn_app, spawn_with, test_config,
};

const CREATE_BUCKET: &str = "mutation($input: CreateBucketInput!) { createBucket(input: $input) { id name enabled fileSecurity permissions maximumFileSize allowedFileExtensions compression encryption antivirus } }";
const FILE_FIELDS: &str = "id bucketId name status mimeType size storedSize checksum compression encrypted chunkSize chunksTotal chunksUploaded permissions downloadUrl viewUrl previewUrl uploadUrl";

async fn bucket(app: &TestApp, input: Value) -> Value {
    app.admin(CREATE_BUCKET, json!({ "input": input }))
        .await
        .ok()["createBucket"]
        .clone()
}

/// A multipart `createFile` request (the GraphQL multipart request spec).
pub(crate) async fn upload(
    app: &TestApp,
    headers: &[(&str, &str)],
    input: Value,
    filename: &str,
    content_type: &str,
    bytes: &[u8],
) -> Answer {
    let boundary = "nimbus-test-boundary-7d3f";
    let operations = json!({
        "query": format!("mutation($input: CreateFileInput!) {{ createFile(input: $input) {{ {FILE_FIELDS} }} }}"),
        "variables": { "input": input },
    });
    let mut body = Vec::new();
    let mut part = |headers: &str, content: &[u8]| {
        body.extend_from_slice(format!("--{boundary}\r\n{headers}\r\n\r\n").as_bytes());
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    };
    part(
        "Content-Disposition: form-data; name=\"operations\"",
        operations.to_string().as_bytes(),
    );
    part(
        "Content-Disposition: form-data; name=\"map\"",
        br#"{"0": ["variables.input.file"]}"#,
    );
    part(
        &format!(
            "Content-Disposition: form-data; name=\"0\"; filename=\"{filename}\"\r\nContent-Type: {content_type}"
        ),
        bytes,
    );
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let mut request = app.multipart_post(boundary).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

/// A bucket where users may create files that only they (and whom they share them
/// with) can read, and two signed-in users: Ann and Bob.
async fn users_bucket(app: &TestApp, id: &str) -> (String, String) {
    bucket(
        app,
        json!({"id": id, "name": id, "permissions": ["create(\"users\")"], "fileSecurity": true}),
    )
    .await;
    (
        app.signed_in("ann@example.com").await,
        app.signed_in("bob@example.com").await,
    )
}

fn admin_headers(app: &TestApp) -> Vec<(&'static str, String)> {
    vec![("x-nimbus-key", app.admin_key.clone())]
}

fn bearer(secret: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {secret}"))
}

fn borrowed<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Uploads `photo.png`, a PNG of `width`×`height`, as the file `photo` of
/// `bucket`: the file as `createFile` answers it.
async fn upload_photo(
    app: &TestApp,
    headers: &[(&str, &str)],
    bucket: &str,
    (width, height): (u32, u32),
) -> Value {
    upload(
        app,
        headers,
        json!({"bucketId": bucket, "fileId": "photo", "file": null}),
        "photo.png",
        "image/png",
        &png(width, height),
    )
    .await
    .ok()["createFile"]
        .clone()
}

/// A GET of `path` (absolute URL or server path): status, headers and body.
async fn fetch(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let url = if path.starts_with("http") {
        path.to_string()
    } else {
        format!("{}{path}", app.url)
    };
    let mut request = app.client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

pub(crate) fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v["errors"][0]["extensions"]["code"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("<not an error: {}>", String::from_utf8_lossy(body)))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn user_id(app: &TestApp, secret: &str) -> String {
    app.as_session(secret, "{ account { id } }", json!({}))
        .await
        .ok()["account"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn servers_create_list_update_and_delete_buckets_and_bad_settings_are_refused() {
    let app = spawn_app().await;
    let created = bucket(
        &app,
        json!({"id": "photos", "name": "Photos", "permissions": ["read(\"any\")", "create(\"users\")"], "fileSecurity": true,
               "maximumFileSize": 1048576, "allowedFileExtensions": ["PNG", ".jpg"], "compression": "GZIP", "encryption": false}),
    )
    .await;
    assert_eq!(created["id"], "photos");
    assert_eq!(created["fileSecurity"], true);
    assert_eq!(created["maximumFileSize"], 1048576);
    assert_eq!(created["allowedFileExtensions"], json!(["png", "jpg"]));
    assert_eq!(created["compression"], "GZIP");
    assert_eq!(created["encryption"], false);
    assert_eq!(created["antivirus"], true);
    assert_eq!(
        created["permissions"],
        json!(["read(\"any\")", "create(\"users\")"])
    );

    let other = bucket(&app, json!({"name": "Docs"})).await;
    assert_eq!(
        other["maximumFileSize"],
        30 * 1024 * 1024,
        "Appwrite's default"
    );
    assert_eq!(other["encryption"], true);
    let list = app
        .admin(
            "{ buckets(first: 10) { totalCount nodes { id } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(list["buckets"]["totalCount"], 2);

    let updated = app
        .admin(
            "mutation { updateBucket(input: {id: \"photos\", name: \"Pictures\", compression: ZSTD, enabled: false}) { name compression enabled fileSecurity } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        updated["updateBucket"],
        json!({"name": "Pictures", "compression": "ZSTD", "enabled": false, "fileSecurity": true})
    );

    for (input, code) in [
        (json!({"name": "x", "maximumFileSize": 0}), "BAD_USER_INPUT"),
        (
            json!({"name": "x", "allowedFileExtensions": ["p/ng"]}),
            "BAD_USER_INPUT",
        ),
        (json!({"name": ""}), "BAD_USER_INPUT"),
        (
            json!({"name": "x", "permissions": ["read(\"nobody-role\")"]}),
            "INVALID_PERMISSION",
        ),
        (json!({"id": "../etc", "name": "x"}), "INVALID_ID"),
        (
            json!({"id": "photos", "name": "again"}),
            "BUCKET_ALREADY_EXISTS",
        ),
    ] {
        let answer = app.admin(CREATE_BUCKET, json!({ "input": input })).await;
        assert_eq!(answer.code(), code, "{input}: {:#}", answer.body);
    }

    let ann = app.signed_in("ann@example.com").await;
    let denied = app
        .as_session(&ann, CREATE_BUCKET, json!({"input": {"name": "mine"}}))
        .await;
    assert_eq!(denied.code(), "PERMISSION_DENIED");
    let key = app.create_key("default", &["buckets.read"]).await;
    let scoped = app
        .as_key(
            &key,
            "default",
            CREATE_BUCKET,
            json!({"input": {"name": "mine"}}),
        )
        .await;
    assert_eq!(scoped.code(), "SCOPE_MISSING");

    let deleted = app
        .admin(
            "mutation { deleteBucket(input: {id: \"photos\"}) { deletedId } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(deleted["deleteBucket"]["deletedId"], "photos");
    let gone = app
        .admin("{ bucket(id: \"photos\") { id } }", json!({}))
        .await;
    assert_eq!(gone.code(), "BUCKET_NOT_FOUND");
    app.shutdown().await;
}

#[tokio::test]
async fn files_upload_download_view_and_list_under_bucket_and_file_permissions() {
    let app = spawn_app().await;
    let (ann, bob) = users_bucket(&app, "docs").await;
    let ann_id = user_id(&app, &ann).await;
    let content = "Hello, Nimbus! ✓ — plain text that claims to be a PNG.\n".repeat(20);

    let created = upload(
        &app,
        &borrowed(&[bearer(&ann)]),
        json!({"bucketId": "docs", "fileId": "hello", "file": null}),
        "hello.txt",
        "image/png",
        content.as_bytes(),
    )
    .await
    .ok()["createFile"]
        .clone();
    assert_eq!(created["name"], "hello.txt");
    assert_eq!(created["status"], "READY");
    assert_eq!(
        created["mimeType"], "text/plain",
        "sniffed, not the client's image/png"
    );
    assert_eq!(created["size"], content.len());
    assert_eq!(created["checksum"], sha256_hex(content.as_bytes()));
    assert_eq!(created["encrypted"], true, "buckets encrypt by default");
    assert_eq!(
        created["permissions"],
        json!([
            format!("read(\"user:{ann_id}\")"),
            format!("update(\"user:{ann_id}\")"),
            format!("delete(\"user:{ann_id}\")")
        ]),
        "the uploader's own by default"
    );
    assert!(created["uploadUrl"].is_null());
    let download_url = created["downloadUrl"].as_str().unwrap().to_string();
    let view_url = created["viewUrl"].as_str().unwrap().to_string();
    assert_eq!(
        download_url,
        "/v1/storage/buckets/docs/files/hello/download?project=default"
    );

    let (status, headers, body) = fetch(&app, &download_url, &borrowed(&[bearer(&ann)])).await;
    assert_eq!(status, 200);
    assert_eq!(body, content.as_bytes());
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"hello.txt\"")
    );
    // A plain name is given once, as Appwrite gives it; the file's type comes with it.
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"hello.txt\""
    );
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(
        headers["content-length"],
        content.len().to_string().as_str()
    );
    assert!(
        headers["repr-digest"]
            .to_str()
            .unwrap()
            .starts_with("sha-256=:")
    );
    let etag = headers["etag"].to_str().unwrap().to_string();

    let (status, headers, body) = fetch(&app, &view_url, &borrowed(&[bearer(&ann)])).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(body, content.as_bytes());
    let (status, headers, body) = fetch(
        &app,
        &view_url,
        &borrowed(&[bearer(&ann), ("range", "bytes=7-12".into())]),
    )
    .await;
    assert_eq!(status, 206);
    assert_eq!(body, &content.as_bytes()[7..13]);
    assert_eq!(
        headers["content-range"],
        format!("bytes 7-12/{}", content.len()).as_str()
    );
    let (status, _, body) = fetch(
        &app,
        &view_url,
        &borrowed(&[bearer(&ann), ("range", "bytes=-5".into())]),
    )
    .await;
    assert_eq!(
        (status, body.as_slice()),
        (206, &content.as_bytes()[content.len() - 5..])
    );
    // Past the end, or not a range at all: 416, with the size the client can ask within.
    for unreadable in ["bytes=99999-", "bytes=7", "bytes=12-7", "bytes=x-y"] {
        let (status, headers, body) = fetch(
            &app,
            &view_url,
            &borrowed(&[bearer(&ann), ("range", unreadable.into())]),
        )
        .await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (416, "RANGE_NOT_SATISFIABLE"),
            "{unreadable}"
        );
        assert_eq!(
            headers["content-range"],
            format!("bytes */{}", content.len()).as_str()
        );
    }
    let (status, _, _) = fetch(
        &app,
        &view_url,
        &borrowed(&[bearer(&ann), ("if-none-match", etag.clone())]),
    )
    .await;
    assert_eq!(status, 304);

    // A browser's session cookie does as well as the bearer token (an <img> sends it).
    let cookie = format!("nimbus_session_default={ann}");
    let (status, _, body) = fetch(&app, &view_url, &[("cookie", cookie.as_str())]).await;
    assert_eq!((status, body.as_slice()), (200, content.as_bytes()));

    // Bob may read nothing of it, and learns nothing of it.
    let (status, _, body) = fetch(&app, &download_url, &borrowed(&[bearer(&bob)])).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (404, "FILE_NOT_FOUND")
    );
    let (status, _, body) = fetch(&app, &download_url, &[]).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (404, "FILE_NOT_FOUND")
    );
    let list = "query($b: ID!) { files(bucketId: $b) { totalCount nodes { id name } } }";
    let bobs = app.as_session(&bob, list, json!({"b": "docs"})).await.ok();
    assert_eq!(bobs["files"], json!({"totalCount": 0, "nodes": []}));
    let anns = app.as_session(&ann, list, json!({"b": "docs"})).await.ok();
    assert_eq!(anns["files"]["totalCount"], 1);
    let found = app
        .as_session(&ann, "{ files(bucketId: \"docs\", search: \"HELLO\") { totalCount } other: files(bucketId: \"docs\", search: \"%\") { totalCount } texts: files(bucketId: \"docs\", mimeType: \"text/\") { totalCount } }", json!({}))
        .await
        .ok();
    assert_eq!(
        found,
        json!({"files": {"totalCount": 1}, "other": {"totalCount": 0}, "texts": {"totalCount": 1}})
    );
    let denied = app
        .as_session(
            &bob,
            "mutation { deleteFile(input: {bucketId: \"docs\", fileId: \"hello\"}) { deletedId } }",
            json!({}),
        )
        .await;
    assert_eq!(denied.code(), "FILE_NOT_FOUND");
    let not_grantable = app
        .as_session(&ann, "mutation { updateFile(input: {bucketId: \"docs\", fileId: \"hello\", permissions: [\"read(\\\"user:someone-else\\\")\"]}) { id } }", json!({}))
        .await;
    assert_eq!(not_grantable.code(), "PERMISSION_DENIED");

    // Shared with everyone: Bob and guests (project in the URL, as an <img> sends it) read it.
    let shared = app
        .as_session(&ann, "mutation { updateFile(input: {bucketId: \"docs\", fileId: \"hello\", name: \"greeting.txt\", permissions: [\"read(\\\"any\\\")\"]}) { name permissions } }", json!({}))
        .await
        .ok();
    assert_eq!(
        shared["updateFile"],
        json!({"name": "greeting.txt", "permissions": ["read(\"any\")"]})
    );
    let (status, _, body) = fetch(&app, &view_url, &[]).await;
    assert_eq!((status, body.as_slice()), (200, content.as_bytes()));
    let bob_delete = app
        .as_session(
            &bob,
            "mutation { deleteFile(input: {bucketId: \"docs\", fileId: \"hello\"}) { deletedId } }",
            json!({}),
        )
        .await;
    assert_eq!(bob_delete.code(), "PERMISSION_DENIED");
    // Ann kept no update right for herself, so the rename was her last change.
    let ann_rename = app
        .as_session(&ann, "mutation { updateFile(input: {bucketId: \"docs\", fileId: \"hello\", name: \"again.txt\"}) { name } }", json!({}))
        .await;
    assert_eq!(ann_rename.code(), "PERMISSION_DENIED");

    // A server deletes it: gone everywhere.
    let deleted = app
        .admin(
            "mutation { deleteFile(input: {bucketId: \"docs\", fileId: \"hello\"}) { deletedId } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(deleted["deleteFile"]["deletedId"], "hello");
    let (status, _, _) = fetch(&app, &view_url, &[]).await;
    assert_eq!(status, 404);
    app.shutdown().await;
}

#[tokio::test]
async fn signed_urls_open_one_file_until_they_expire() {
    let app = spawn_app().await;
    bucket(&app, json!({"id": "private", "name": "Private"})).await;
    let admin = admin_headers(&app);
    upload(
        &app,
        &borrowed(&admin),
        json!({"bucketId": "private", "fileId": "secret", "file": null}),
        "secret.txt",
        "text/plain",
        b"top secret",
    )
    .await
    .ok();
    upload(
        &app,
        &borrowed(&admin),
        json!({"bucketId": "private", "fileId": "other", "file": null}),
        "other.txt",
        "text/plain",
        b"other",
    )
    .await
    .ok();
    let (status, _, _) = fetch(&app, "/v1/storage/buckets/private/files/secret/view", &[]).await;
    assert_eq!(status, 404, "guests cannot read it");

    let minted = app
        .admin("mutation { createFileToken(input: {bucketId: \"private\", fileId: \"secret\", expiresIn: 60}) { token expiresAt viewUrl downloadUrl previewUrl } }", json!({}))
        .await
        .ok()["createFileToken"]
        .clone();
    let view_url = minted["viewUrl"].as_str().unwrap();
    assert!(view_url.ends_with(&format!("&token={}", minted["token"].as_str().unwrap())));
    let (status, _, body) = fetch(&app, view_url, &[]).await;
    assert_eq!((status, body.as_slice()), (200, b"top secret".as_slice()));
    let (status, _, _) = fetch(&app, minted["downloadUrl"].as_str().unwrap(), &[]).await;
    assert_eq!(status, 200);

    let token = minted["token"].as_str().unwrap();
    let (status, _, body) = fetch(
        &app,
        &format!("/v1/storage/buckets/private/files/other/view?token={token}"),
        &[],
    )
    .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "INVALID_FILE_TOKEN")
    );
    let forged = format!("{}x", &token[..token.len() - 1]);
    let (_, _, body) = fetch(
        &app,
        &format!("/v1/storage/buckets/private/files/secret/view?token={forged}"),
        &[],
    )
    .await;
    assert_eq!(error_code(&body), "INVALID_FILE_TOKEN");
    for bad in [0, 604801] {
        let answer = app
            .admin("mutation($s: Int!) { createFileToken(input: {bucketId: \"private\", fileId: \"secret\", expiresIn: $s}) { token } }", json!({"s": bad}))
            .await;
        assert_eq!(answer.code(), "BAD_USER_INPUT");
    }
    app.admin(
        "mutation { updateBucket(input: {id: \"private\", enabled: false}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let (status, _, _) = fetch(&app, view_url, &[]).await;
    assert_eq!(status, 404, "a disabled bucket serves no signed URL");
    let short = app
        .admin("mutation { createFileToken(input: {bucketId: \"private\", fileId: \"secret\", expiresIn: 1}) { viewUrl } }", json!({}))
        .await
        .ok();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, _, body) = fetch(
        &app,
        short["createFileToken"]["viewUrl"].as_str().unwrap(),
        &[],
    )
    .await;
    assert_eq!(error_code(&body), "FILE_TOKEN_EXPIRED");
    app.shutdown().await;
}

#[tokio::test]
async fn buckets_enforce_size_extension_name_and_id_rules_leaving_nothing_behind() {
    let app = spawn_app().await;
    bucket(
        &app,
        json!({"id": "small", "name": "Small", "maximumFileSize": 1000, "allowedFileExtensions": ["txt"]}),
    )
    .await;
    let admin = admin_headers(&app);
    let admin = borrowed(&admin);
    let input = |id: &str| json!({"bucketId": "small", "fileId": id, "file": null});

    let too_large = upload(
        &app,
        &admin,
        input("big"),
        "big.txt",
        "text/plain",
        &[b'a'; 1001],
    )
    .await;
    assert_eq!(too_large.code(), "FILE_TOO_LARGE", "{:#}", too_large.body);
    let exact = upload(
        &app,
        &admin,
        input("big"),
        "big.txt",
        "text/plain",
        &[b'a'; 1000],
    )
    .await;
    assert_eq!(
        exact.ok()["createFile"]["size"],
        1000,
        "the refused upload left its id free"
    );
    let duplicate = upload(&app, &admin, input("big"), "big.txt", "text/plain", b"x").await;
    assert_eq!(duplicate.code(), "FILE_ALREADY_EXISTS");
    let extension = upload(&app, &admin, input("pic"), "pic.png", "image/png", b"x").await;
    assert_eq!(extension.code(), "FILE_EXTENSION_NOT_ALLOWED");
    for id in ["../etc", "a/b", "a\u{0}b", ".hidden"] {
        let bad = upload(&app, &admin, input(id), "x.txt", "text/plain", b"x").await;
        assert_eq!(bad.code(), "INVALID_ID", "{id:?}");
    }
    let named = upload(
        &app,
        &admin,
        json!({"bucketId": "small", "fileId": "nul", "name": "a\u{0}b.txt", "file": null}),
        "x.txt",
        "text/plain",
        b"x",
    )
    .await;
    assert_eq!(named.code(), "BAD_USER_INPUT");
    let unicode = upload(
        &app,
        &admin,
        json!({"bucketId": "small", "fileId": "unicode", "file": null}),
        "שלום 👋.txt",
        "text/plain",
        "emoji 👋 and RTL שלום".as_bytes(),
    )
    .await
    .ok();
    assert_eq!(unicode["createFile"]["name"], "שלום 👋.txt");
    let (_, headers, _) = fetch(
        &app,
        unicode["createFile"]["downloadUrl"].as_str().unwrap(),
        &admin,
    )
    .await;
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains("filename*=UTF-8''%D7%A9"),
        "{:?}",
        headers["content-disposition"]
    );
    let missing = upload(
        &app,
        &admin,
        json!({"bucketId": "nowhere", "file": null}),
        "x.txt",
        "text/plain",
        b"x",
    )
    .await;
    assert_eq!(missing.code(), "BUCKET_NOT_FOUND");

    let listed = app
        .admin(
            "{ files(bucketId: \"small\") { totalCount nodes { id } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(listed["files"]["totalCount"], 2, "{listed}");
    let objects = stored_objects(&app).await;
    assert_eq!(
        objects.len(),
        2,
        "only the two stored files are kept: {objects:?}"
    );
    app.shutdown().await;
}

/// Every object in the server's file store: files under the local directory, or the
/// keys under the server's prefix in the S3 bucket (listed over plain HTTP, as the
/// test S3 server allows).
pub(crate) async fn stored_objects(app: &TestApp) -> Vec<String> {
    fn walk(dir: &std::path::Path, into: &mut Vec<String>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, into);
                } else if !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".health-"))
                {
                    into.push(path.to_string_lossy().into_owned());
                }
            }
        }
    }
    let Some(location) = &app.config.storage else {
        let mut found = Vec::new();
        walk(&app.config.data_dir.join("files"), &mut found);
        return found;
    };
    s3_keys(app, location, "list-type=2")
        .await
        .into_iter()
        .filter(|key| !key.contains(".health-"))
        .collect()
}

/// The keys an S3 listing (`list` names which: objects, or multipart uploads
/// under way) shows under this server's prefix of the test store at
/// `location`, asked over plain HTTP as the test S3 server allows.
pub(crate) async fn s3_keys(app: &TestApp, location: &str, list: &str) -> Vec<String> {
    let url = url::Url::parse(location).unwrap();
    let bucket = url.host_str().unwrap();
    let prefix = url.path().trim_start_matches('/');
    let endpoint = url
        .query_pairs()
        .find(|(k, _)| k == "endpoint")
        .map(|(_, v)| v.into_owned())
        .expect("the test store names its endpoint");
    let listing = app
        .client
        .get(format!("{endpoint}/{bucket}?{list}&prefix={prefix}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    listing
        .split("<Key>")
        .skip(1)
        .filter_map(|rest| rest.split("</Key>").next())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn compressed_and_encrypted_files_are_stored_transformed_and_read_back_whole() {
    let app = spawn_app().await;
    let admin = admin_headers(&app);
    let admin = borrowed(&admin);
    let text = "All work and no play makes Jack a dull boy. ".repeat(5000);
    for (id, compression, encryption) in [
        ("gzip", "GZIP", true),
        ("zstd", "ZSTD", false),
        ("plain", "NONE", true),
    ] {
        bucket(
            &app,
            json!({"id": id, "name": id, "compression": compression, "encryption": encryption}),
        )
        .await;
        let file = upload(
            &app,
            &admin,
            json!({"bucketId": id, "fileId": "jack", "file": null}),
            "jack.txt",
            "text/plain",
            text.as_bytes(),
        )
        .await
        .ok()["createFile"]
            .clone();
        assert_eq!(file["compression"], compression);
        assert_eq!(file["encrypted"], encryption);
        assert_eq!(file["size"], text.len());
        let stored = file["storedSize"].as_u64().unwrap();
        if compression == "NONE" {
            assert!(stored >= text.len() as u64, "{id}: {stored}");
        } else {
            assert!(
                stored < text.len() as u64 / 20,
                "{id}: {stored} of {}",
                text.len()
            );
        }
        let (status, _, body) = fetch(&app, file["downloadUrl"].as_str().unwrap(), &admin).await;
        assert_eq!(status, 200);
        assert!(body == text.as_bytes(), "{id}: the download differs");
        let (status, _, body) = fetch(
            &app,
            file["viewUrl"].as_str().unwrap(),
            &[admin[0], ("range", "bytes=100000-100099")],
        )
        .await;
        assert_eq!(status, 206);
        assert_eq!(body, &text.as_bytes()[100_000..100_100], "{id}");
    }
    if app.config.storage.is_none() {
        let encrypted: Vec<_> = stored_objects(&app)
            .await
            .into_iter()
            .filter(|p| !p.contains("/buckets/zstd/"))
            .collect();
        assert_eq!(encrypted.len(), 2);
        for path in encrypted {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(20).any(|w| w == b"makes Jack a dull bo"),
                "{path} holds the plain text"
            );
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_file_encrypted_under_another_server_secret_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.secret = Some("first-secret-first-secret-first-secret".into());
    let app = spawn_with(config.clone(), dir).await;
    bucket(&app, json!({"id": "vault", "name": "Vault"})).await;
    let admin = admin_headers(&app);
    let file = upload(
        &app,
        &borrowed(&admin),
        json!({"bucketId": "vault", "fileId": "f", "file": null}),
        "f.txt",
        "text/plain",
        b"sealed under the first secret",
    )
    .await
    .ok()["createFile"]
        .clone();
    let admin_key = app.admin_key.clone();
    let TestApp { server, .. } = app;
    server.unwrap().shutdown().await.unwrap();

    config.secret = Some("second-secret-second-secret-second-secret".into());
    let server = nimbus::Server::start(config.clone()).await.unwrap();
    let url = format!("http://{}", server.local_addr());
    let client = reqwest::Client::new();
    let response = client
        .get(format!("{url}{}", file["downloadUrl"].as_str().unwrap()))
        .header("x-nimbus-key", &admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 500);
    let body = response.bytes().await.unwrap();
    assert_eq!(error_code(&body), "FILE_UNREADABLE");
    assert!(
        !String::from_utf8_lossy(&body).contains("aes"),
        "no internals"
    );
    server.shutdown().await.unwrap();
}

/// `PUT` of one chunk of a resumable upload.
async fn put_chunk(
    app: &TestApp,
    upload_url: &str,
    headers: &[(&str, &str)],
    range: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    let mut request = app
        .client
        .put(format!("{}{upload_url}", app.url))
        .header("content-range", range)
        .body(bytes);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

const START_UPLOAD: &str = "mutation($input: CreateFileUploadInput!) { createFileUpload(input: $input) { id status size chunkSize chunksTotal chunksUploaded uploadUrl downloadUrl } }";

#[tokio::test]
async fn resumable_uploads_take_chunks_in_order_from_their_uploader_and_appear_when_complete() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.upload_chunk_size = 65_536;
    let app = spawn_with(config, dir).await;
    bucket(
        &app,
        json!({"id": "videos", "name": "Videos", "permissions": ["create(\"users\")", "read(\"users\")"], "compression": "ZSTD"}),
    )
    .await;
    let ann = app.signed_in("ann@example.com").await;
    let bob = app.signed_in("bob@example.com").await;
    let content: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let started = app
        .as_session(
            &ann,
            START_UPLOAD,
            json!({"input": {"bucketId": "videos", "fileId": "clip", "name": "clip.bin", "size": content.len()}}),
        )
        .await
        .ok()["createFileUpload"]
        .clone();
    assert_eq!(started["status"], "UPLOADING");
    assert_eq!(started["chunkSize"], 65_536);
    assert_eq!(started["chunksTotal"], 4);
    assert!(started["downloadUrl"].is_null());
    let url = started["uploadUrl"].as_str().unwrap().to_string();
    assert_eq!(
        url,
        "/v1/storage/buckets/videos/files/clip/upload?project=default"
    );
    let ann_auth = [bearer(&ann)];
    let ann_auth = borrowed(&ann_auth);
    let range = |start: usize, end: usize| format!("bytes {start}-{}/{}", end - 1, content.len());
    let chunk = |start: usize, end: usize| content[start..end].to_vec();

    let (status, state) =
        put_chunk(&app, &url, &ann_auth, &range(0, 65_536), chunk(0, 65_536)).await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["chunksUploaded"], 1);
    assert_eq!(state["nextOffset"], 65_536);

    // Out of order, overlapping, misdeclared, short, someone else's: each refused.
    let (status, body) = put_chunk(
        &app,
        &url,
        &ann_auth,
        &range(131_072, 196_608),
        chunk(131_072, 196_608),
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (409, Some("UPLOAD_CHUNK_OUT_OF_ORDER"))
    );
    let (status, body) =
        put_chunk(&app, &url, &ann_auth, &range(0, 65_536), chunk(0, 65_536)).await;
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (409, Some("UPLOAD_CHUNK_OUT_OF_ORDER"))
    );
    let (status, body) = put_chunk(
        &app,
        &url,
        &ann_auth,
        &range(60_000, 125_536),
        chunk(60_000, 125_536),
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (400, Some("UPLOAD_CHUNK_INVALID"))
    );
    let (status, body) = put_chunk(
        &app,
        &url,
        &ann_auth,
        "bytes 65536-131071/999999",
        chunk(65_536, 131_072),
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (400, Some("UPLOAD_CHUNK_INVALID"))
    );
    let (status, body) = put_chunk(
        &app,
        &url,
        &ann_auth,
        &range(65_536, 131_072),
        chunk(65_536, 100_000),
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (400, Some("UPLOAD_CHUNK_INVALID")),
        "{body}"
    );
    let (status, body) = put_chunk(&app, &url, &ann_auth, "bytes=0-10", vec![0; 11]).await;
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (400, Some("UPLOAD_CHUNK_INVALID"))
    );
    let (status, body) = put_chunk(
        &app,
        &url,
        &borrowed(&[bearer(&bob)]),
        &range(65_536, 131_072),
        chunk(65_536, 131_072),
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (404, Some("UPLOAD_NOT_FOUND"))
    );
    let (status, _) = put_chunk(
        &app,
        &url,
        &[],
        &range(65_536, 131_072),
        chunk(65_536, 131_072),
    )
    .await;
    assert_eq!(status, 404, "guests cannot send chunks");

    // Not a file yet for anyone, but its uploader can see where it stands.
    let hidden = app
        .as_session(
            &ann,
            "{ file(bucketId: \"videos\", fileId: \"clip\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(hidden.code(), "FILE_NOT_FOUND");
    let listed = app
        .as_session(
            &ann,
            "{ files(bucketId: \"videos\") { totalCount } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(listed["files"]["totalCount"], 0);
    let resumed = app
        .as_session(&ann, "{ fileUpload(bucketId: \"videos\", fileId: \"clip\") { chunksUploaded chunksTotal status } }", json!({}))
        .await
        .ok();
    assert_eq!(
        resumed["fileUpload"],
        json!({"chunksUploaded": 1, "chunksTotal": 4, "status": "UPLOADING"})
    );
    let bobs_view = app
        .as_session(
            &bob,
            "{ fileUpload(bucketId: \"videos\", fileId: \"clip\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(bobs_view.code(), "UPLOAD_NOT_FOUND");
    let taken = app
        .as_session(
            &bob,
            START_UPLOAD,
            json!({"input": {"bucketId": "videos", "fileId": "clip", "name": "x.bin", "size": 10}}),
        )
        .await;
    assert_eq!(taken.code(), "FILE_ALREADY_EXISTS");

    for start in [65_536usize, 131_072] {
        let (status, _) = put_chunk(
            &app,
            &url,
            &ann_auth,
            &range(start, start + 65_536),
            chunk(start, start + 65_536),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, done) = put_chunk(
        &app,
        &url,
        &ann_auth,
        &range(196_608, 200_000),
        chunk(196_608, 200_000),
    )
    .await;
    assert_eq!(status, 201, "{done}");
    assert_eq!(done["status"], "READY");
    assert_eq!(done["checksum"], sha256_hex(&content));
    let (status, _) = put_chunk(
        &app,
        &url,
        &ann_auth,
        &range(196_608, 200_000),
        chunk(196_608, 200_000),
    )
    .await;
    assert_eq!(status, 409, "a complete file takes no more chunks");

    let file = app
        .as_session(
            &bob,
            &format!("{{ file(bucketId: \"videos\", fileId: \"clip\") {{ {FILE_FIELDS} }} }}"),
            json!({}),
        )
        .await
        .ok()["file"]
        .clone();
    assert_eq!(file["status"], "READY");
    assert_eq!(file["chunksUploaded"], 4);
    assert_eq!(file["compression"], "ZSTD");
    let (status, _, body) = fetch(
        &app,
        file["downloadUrl"].as_str().unwrap(),
        &borrowed(&[bearer(&bob)]),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body == content, "the assembled file differs");
    let objects = stored_objects(&app).await;
    assert_eq!(objects.len(), 1, "the chunks are gone: {objects:?}");

    let guest = app
        .post(json!({"query": START_UPLOAD, "variables": {"input": {"bucketId": "videos", "name": "x.bin", "size": 10}}}), &[])
        .await;
    assert_eq!(guest.code(), "PERMISSION_DENIED");
    let too_big = app
        .as_session(
            &ann,
            START_UPLOAD,
            json!({"input": {"bucketId": "videos", "name": "x.bin", "size": 31 * 1024 * 1024}}),
        )
        .await;
    assert_eq!(
        too_big.code(),
        "FILE_TOO_LARGE",
        "refused before a byte is sent"
    );

    // An abandoned upload is the uploader's to delete.
    let abandoned = app
        .as_session(&ann, START_UPLOAD, json!({"input": {"bucketId": "videos", "fileId": "gone", "name": "gone.bin", "size": 100_000}}))
        .await
        .ok()["createFileUpload"]["uploadUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = put_chunk(
        &app,
        &abandoned,
        &ann_auth,
        "bytes 0-65535/100000",
        content[..65_536].to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    let deleted = app
        .as_session(&ann, "mutation { deleteFile(input: {bucketId: \"videos\", fileId: \"gone\"}) { deletedId } }", json!({}))
        .await
        .ok();
    assert_eq!(deleted["deleteFile"]["deletedId"], "gone");
    assert_eq!(
        stored_objects(&app).await.len(),
        1,
        "its chunk went with it"
    );
    app.shutdown().await;
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 128])
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}

/// A PNG whose header claims `width` × `height` pixels, with no pixel data.
pub(crate) fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&width.to_be_bytes());
    chunk.extend_from_slice(&height.to_be_bytes());
    chunk.extend_from_slice(&[8, 2, 0, 0, 0]);
    bytes.extend_from_slice(&13u32.to_be_bytes());
    bytes.extend_from_slice(&chunk);
    bytes.extend_from_slice(&crc32(&chunk).to_be_bytes());
    bytes
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test]
async fn the_previews_of_encrypted_files_are_cached_sealed_and_rendered_again_if_damaged() {
    let app = spawn_app().await;
    let admin = admin_headers(&app);
    let admin = borrowed(&admin);
    for (id, encryption) in [("sealed", true), ("open", false)] {
        bucket(
            &app,
            json!({"id": id, "name": id, "encryption": encryption, "permissions": ["read(\"any\")"]}),
        )
        .await;
        let file = upload_photo(&app, &admin, id, (320, 240)).await;
        assert_eq!(file["encrypted"], encryption);
        let preview = format!("{}&width=80", file["previewUrl"].as_str().unwrap());
        let (status, _, rendered) = fetch(&app, &preview, &[]).await;
        assert_eq!(status, 200);
        let cache = app
            .config
            .preview_cache_dir()
            .join("default")
            .join(id)
            .join("photo");
        let kept: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        let stored = std::fs::read(&kept[0]).unwrap();
        // An encrypted file's preview is no plaintext on disk; a plain one's is.
        assert_eq!(stored == rendered, !encryption, "{id}");
        assert_eq!(
            stored.windows(4).any(|w| w == b"IDAT"),
            !encryption,
            "{id}: the PNG's image data is readable on disk"
        );
        let hits = app.metric("nimbus_previews_total{source=\"cache\"}").await;
        let (status, _, again) = fetch(&app, &preview, &[]).await;
        assert_eq!((status, again == rendered), (200, true), "{id}");
        assert_eq!(
            app.metric("nimbus_previews_total{source=\"cache\"}").await,
            hits + 1.0,
            "{id}: the second request read the cache"
        );
        if encryption {
            // A damaged sealed preview is not served: it is rendered again.
            let mut damaged = stored.clone();
            let last = damaged.len() - 1;
            damaged[last] ^= 1;
            std::fs::write(&kept[0], &damaged).unwrap();
            let (status, _, redone) = fetch(&app, &preview, &[]).await;
            assert_eq!((status, redone == rendered), (200, true));
            assert_ne!(std::fs::read(&kept[0]).unwrap(), damaged);
        }
    }
}

/// A bucket with `transformations` off (Appwrite's) makes no previews for
/// clients, whoever they are, while its files still download; API keys preview
/// as before, and turning it back on serves clients again.
#[tokio::test]
async fn a_bucket_without_transformations_makes_no_previews_for_clients() {
    let app = spawn_app().await;
    let made = app
        .admin(
            "mutation { createBucket(input: {id: \"raw\", name: \"Raw\", permissions: [\"read(\\\"any\\\")\"], transformations: false}) { transformations } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(made["createBucket"]["transformations"], false);
    let admin = admin_headers(&app);
    let admin = borrowed(&admin);
    let photo = upload_photo(&app, &admin, "raw", (64, 48)).await;
    let preview = format!("{}&width=32", photo["previewUrl"].as_str().unwrap());
    let (status, _, body) = fetch(&app, &preview, &[]).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert_eq!(error_code(&body), "TRANSFORMATIONS_DISABLED");
    let (status, _, _) = fetch(&app, photo["downloadUrl"].as_str().unwrap(), &[]).await;
    assert_eq!(status, 200, "a download is no transformation");
    let (status, _, body) = fetch(&app, &preview, &admin).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(image::load_from_memory(&body).unwrap().width(), 32);
    app.admin(
        "mutation { updateBucket(input: {id: \"raw\", transformations: true}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let (status, _, _) = fetch(&app, &preview, &[]).await;
    assert_eq!(status, 200);
    app.shutdown().await;
}

#[tokio::test]
async fn previews_resize_images_once_and_refuse_bad_images_and_parameters() {
    let app = spawn_app().await;
    bucket(
        &app,
        json!({"id": "pics", "name": "Pictures", "permissions": ["read(\"any\")"]}),
    )
    .await;
    let admin = admin_headers(&app);
    let admin = borrowed(&admin);
    let put = |id: &'static str, name: &'static str, bytes: Vec<u8>| {
        let app = &app;
        let admin = admin.clone();
        async move {
            upload(
                app,
                &admin,
                json!({"bucketId": "pics", "fileId": id, "file": null}),
                name,
                "application/octet-stream",
                &bytes,
            )
            .await
            .ok()["createFile"]
                .clone()
        }
    };
    let photo = put("photo", "photo.png", png(640, 480)).await;
    assert_eq!(photo["mimeType"], "image/png");
    let preview = photo["previewUrl"].as_str().unwrap().to_string();

    let cached_before = app.metric("nimbus_previews_total{source=\"cache\"}").await;
    let (status, headers, body) = fetch(&app, &format!("{preview}&width=100"), &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "image/png");
    let image = image::load_from_memory(&body).unwrap();
    assert_eq!((image.width(), image.height()), (100, 75));
    let (status, _, again) = fetch(&app, &format!("{preview}&width=100"), &[]).await;
    assert_eq!((status, again == body), (200, true));
    assert_eq!(
        app.metric("nimbus_previews_total{source=\"cache\"}").await,
        cached_before + 1.0,
        "the second request read the cached preview"
    );

    let (_, headers, body) = fetch(
        &app,
        &format!("{preview}&width=64&height=64&output=webp&gravity=top-left"),
        &[],
    )
    .await;
    assert_eq!(headers["content-type"], "image/webp");
    let image = image::load_from_memory(&body).unwrap();
    assert_eq!((image.width(), image.height()), (64, 64));
    let (_, headers, body) = fetch(
        &app,
        &format!("{preview}&width=50&output=jpg&rotation=90"),
        &[],
    )
    .await;
    assert_eq!(headers["content-type"], "image/jpeg");
    let image = image::load_from_memory(&body).unwrap();
    assert_eq!(
        (image.width(), image.height()),
        (38, 50),
        "rotated a quarter turn"
    );

    for (params, code) in [
        ("width=100000", "INVALID_PREVIEW_PARAMETER"),
        ("output=bmp", "INVALID_PREVIEW_PARAMETER"),
        ("gravity=sideways", "INVALID_PREVIEW_PARAMETER"),
    ] {
        let (status, _, body) = fetch(&app, &format!("{preview}&{params}"), &[]).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (400, code),
            "{params}"
        );
    }
    // A key previews do not know (a cache-buster) is left alone, as Appwrite
    // leaves it.
    let (status, headers, body) = fetch(
        &app,
        &format!("{preview}&width=50&output=jpg&rotation=90&v=17"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/jpeg");
    let image = image::load_from_memory(&body).unwrap();
    assert_eq!((image.width(), image.height()), (38, 50));

    let bomb = put("bomb", "bomb.png", png_header_only(100_000, 100_000)).await;
    let (status, _, body) = fetch(
        &app,
        &format!("{}&width=100", bomb["previewUrl"].as_str().unwrap()),
        &[],
    )
    .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "IMAGE_TOO_LARGE")
    );
    let mut corrupt = png(64, 64);
    corrupt.truncate(corrupt.len() / 2);
    let corrupt = put("corrupt", "corrupt.png", corrupt).await;
    let (status, _, body) = fetch(
        &app,
        &format!("{}&width=10", corrupt["previewUrl"].as_str().unwrap()),
        &[],
    )
    .await;
    assert_eq!((status, error_code(&body).as_str()), (400, "IMAGE_CORRUPT"));

    // Ever new sizes do not pile up: a file keeps at most 32 previews.
    for width in 1..=40 {
        let (status, _, _) = fetch(&app, &format!("{preview}&width={width}"), &[]).await;
        assert_eq!(status, 200);
    }
    let cached = std::fs::read_dir(
        app.config
            .preview_cache_dir()
            .join("default")
            .join("pics")
            .join("photo"),
    )
    .unwrap()
    .count();
    assert_eq!(cached, 32);

    let text = put("notes", "notes.txt", b"just some text".to_vec()).await;
    let (status, headers, body) = fetch(&app, text["previewUrl"].as_str().unwrap(), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/png", "a type icon");
    let icon = image::load_from_memory(&body).unwrap();
    assert_eq!((icon.width(), icon.height()), (100, 100));
    app.shutdown().await;
}

#[tokio::test]
async fn a_client_has_a_bounded_number_of_previews_rendered_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.preview_renders_per_minute = 2;
    let app = spawn_with(config, dir).await;
    bucket(
        &app,
        json!({"id": "pics", "name": "Pictures", "permissions": ["read(\"any\")"]}),
    )
    .await;
    let admin = admin_headers(&app);
    let file = upload_photo(&app, &borrowed(&admin), "pics", (64, 48)).await;
    let preview = file["previewUrl"].as_str().unwrap().to_string();
    for width in [10, 20] {
        let (status, _, body) = fetch(&app, &format!("{preview}&width={width}"), &[]).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    // A third size would be rendered: refused, with when to ask again.
    let (status, headers, body) = fetch(&app, &format!("{preview}&width=30"), &[]).await;
    assert_eq!((status, error_code(&body).as_str()), (429, "RATE_LIMITED"));
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    // One already rendered is read from the cache, uncounted.
    let (status, _, body) = fetch(&app, &format!("{preview}&width=10"), &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(image::load_from_memory(&body).unwrap().width(), 10);
    app.shutdown().await;
}

#[tokio::test]
async fn file_changes_reach_subscribers_who_may_read_them() {
    let app = spawn_app().await;
    let (ann, bob) = users_bucket(&app, "shared").await;
    let mut ann_ws = WsClient::connect(&app.ws_url, false).await;
    ann_ws
        .init(json!({"Authorization": format!("Bearer {ann}")}))
        .await
        .unwrap();
    ann_ws
        .subscribe("files", "subscription { realtime(channels: [\"buckets.shared.files\"]) { events channels payload } }")
        .await;
    let mut bob_ws = WsClient::connect(&app.ws_url, false).await;
    bob_ws
        .init(json!({"Authorization": format!("Bearer {bob}")}))
        .await
        .unwrap();
    bob_ws
        .subscribe(
            "files",
            "subscription { realtime(channels: [\"files\"]) { events } }",
        )
        .await;
    // Appwrite's action channels: this one takes deletions only.
    let mut deletions = WsClient::connect(&app.ws_url, false).await;
    deletions
        .init(json!({"Authorization": format!("Bearer {ann}")}))
        .await
        .unwrap();
    deletions
        .subscribe(
            "deletions",
            "subscription { realtime(channels: [\"files.delete\"]) { events channels } }",
        )
        .await;
    ann_ws.ping_pong().await;
    bob_ws.ping_pong().await;
    deletions.ping_pong().await;

    upload(
        &app,
        &borrowed(&[bearer(&ann)]),
        json!({"bucketId": "shared", "fileId": "note", "file": null}),
        "note.txt",
        "text/plain",
        b"for Ann only",
    )
    .await
    .ok();
    let event = next_event(&mut ann_ws).await;
    // Every name Appwrite gives the event, and its channels with their action.
    assert_eq!(
        event["events"],
        json!([
            "buckets.shared.files.note.create",
            "buckets.*.files.*.create",
            "buckets.shared.files.*.create",
            "buckets.*.files.note.create",
            "buckets.shared.files.note",
            "buckets.*.files.*",
            "buckets.shared.files.*",
            "buckets.*.files.note",
            "buckets.shared",
            "buckets.*"
        ])
    );
    let mut channels: Vec<String> = serde_json::from_value(event["channels"].clone()).unwrap();
    channels.sort();
    assert_eq!(
        channels,
        [
            "buckets.shared.files",
            "buckets.shared.files.create",
            "buckets.shared.files.note",
            "buckets.shared.files.note.create",
            "files",
            "files.create"
        ]
    );
    assert_eq!(event["payload"]["name"], "note.txt");
    assert_eq!(event["payload"]["size"], 12);

    app.as_session(&ann, "mutation { updateFile(input: {bucketId: \"shared\", fileId: \"note\", permissions: [\"read(\\\"users\\\")\", \"delete(\\\"users\\\")\"]}) { id } }", json!({}))
        .await
        .ok();
    assert_eq!(
        next_event(&mut ann_ws).await["events"][0],
        "buckets.shared.files.note.update"
    );
    // Bob saw neither the create nor... now he may read it: the update reached him.
    assert_eq!(
        next_event(&mut bob_ws).await["events"][0],
        "buckets.shared.files.note.update"
    );
    let mut typed = WsClient::connect(&app.ws_url, false).await;
    typed
        .init(json!({"Authorization": format!("Bearer {bob}")}))
        .await
        .unwrap();
    typed
        .subscribe("typed", "subscription { fileChanged(bucketId: \"shared\", fileId: \"note\") { type node { id name status compression size } } }")
        .await;
    typed.ping_pong().await;
    app.as_session(
        &bob,
        "mutation { deleteFile(input: {bucketId: \"shared\", fileId: \"note\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(
        next_event(&mut ann_ws).await["events"][0],
        "buckets.shared.files.note.delete"
    );
    // The first event on the action channel is the deletion: neither the create
    // nor the update came on it.
    let deleted = next_event(&mut deletions).await;
    assert_eq!(deleted["events"][0], "buckets.shared.files.note.delete");
    assert!(
        deleted["channels"]
            .as_array()
            .unwrap()
            .contains(&json!("files.delete")),
        "{deleted}"
    );
    let change = loop {
        let message = tokio::time::timeout(WAIT, typed.next_json())
            .await
            .expect("an event in time")
            .expect("the socket stays open");
        if message["type"] == "next" {
            break message["payload"].clone();
        }
    };
    assert_eq!(
        change,
        json!({"data": {"fileChanged": {"type": "DELETE", "node": {"id": "note", "name": "note.txt", "status": "READY", "compression": "NONE", "size": 12}}}})
    );
    app.shutdown().await;
}

async fn next_event(ws: &mut WsClient) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next_json())
            .await
            .expect("an event in time")
            .expect("the socket stays open");
        if message["type"] == "next" {
            return message["payload"]["data"]["realtime"].clone();
        }
    }
}

/// A stand-in ClamAV daemon: answers `INSTREAM` scans, finding the EICAR test
/// string when it is in the stream.
async fn fake_clamd() -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut command = [0u8; 10];
                if socket.read_exact(&mut command).await.is_err() || &command != b"zINSTREAM\0" {
                    let _ = socket.write_all(b"UNKNOWN COMMAND\0").await;
                    return;
                }
                let mut data = Vec::new();
                loop {
                    let mut length = [0u8; 4];
                    if socket.read_exact(&mut length).await.is_err() {
                        return;
                    }
                    let length = u32::from_be_bytes(length) as usize;
                    if length == 0 {
                        break;
                    }
                    let mut chunk = vec![0; length];
                    if socket.read_exact(&mut chunk).await.is_err() {
                        return;
                    }
                    data.extend_from_slice(&chunk);
                }
                let infected = data.windows(EICAR.len()).any(|w| w == EICAR);
                let reply: &[u8] = if infected {
                    b"stream: Eicar-Test-Signature FOUND\0"
                } else {
                    b"stream: OK\0"
                };
                let _ = socket.write_all(reply).await;
            });
        }
    });
    (address, task)
}

const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

#[tokio::test]
async fn with_a_virus_scanner_infected_uploads_are_refused_and_clean_ones_kept() {
    let (clamd, scanner) = fake_clamd().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.clamd = Some(clamd);
    // Larger files are kept unscanned, as Appwrite keeps those over 20 MB.
    config.antivirus_max_bytes = 200;
    let app = spawn_with(config, dir).await;
    bucket(
        &app,
        json!({"id": "inbox", "name": "Inbox", "compression": "GZIP"}),
    )
    .await;
    bucket(
        &app,
        json!({"id": "raw", "name": "Raw", "antivirus": false}),
    )
    .await;
    let admin = admin_headers(&app);
    let admin = borrowed(&admin);
    let infected = upload(
        &app,
        &admin,
        json!({"bucketId": "inbox", "fileId": "eicar", "file": null}),
        "eicar.txt",
        "text/plain",
        EICAR,
    )
    .await;
    assert_eq!(infected.code(), "FILE_INFECTED", "{:#}", infected.body);
    assert!(
        infected.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Eicar-Test-Signature")
    );
    let clean = upload(
        &app,
        &admin,
        json!({"bucketId": "inbox", "fileId": "eicar", "file": null}),
        "clean.txt",
        "text/plain",
        b"clean",
    )
    .await;
    assert_eq!(
        clean.ok()["createFile"]["id"],
        "eicar",
        "the refused file left its id free"
    );
    let unscanned = upload(
        &app,
        &admin,
        json!({"bucketId": "raw", "file": null}),
        "eicar.txt",
        "text/plain",
        EICAR,
    )
    .await;
    assert_eq!(
        unscanned.ok()["createFile"]["size"],
        EICAR.len(),
        "antivirus off for this bucket"
    );
    let mut large = EICAR.to_vec();
    large.extend_from_slice(&[b' '; 300]);
    let over = upload(
        &app,
        &admin,
        json!({"bucketId": "inbox", "fileId": "large", "file": null}),
        "large.txt",
        "text/plain",
        &large,
    )
    .await;
    assert_eq!(
        over.ok()["createFile"]["size"],
        large.len(),
        "over the scanned size, kept unscanned"
    );
    scanner.abort();
    let unavailable = upload(
        &app,
        &admin,
        json!({"bucketId": "inbox", "file": null}),
        "late.txt",
        "text/plain",
        b"clean",
    )
    .await;
    assert_eq!(unavailable.code(), "ANTIVIRUS_UNAVAILABLE");
    let listed = app
        .admin("{ files(bucketId: \"inbox\") { totalCount } }", json!({}))
        .await
        .ok();
    assert_eq!(listed["files"]["totalCount"], 2);
    app.shutdown().await;
}

#[tokio::test]
async fn a_disk_filling_up_mid_upload_keeps_nothing_and_frees_the_space() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    if config.storage.is_some() {
        eprintln!("skipped: the store is not a local disk");
        return;
    }
    config.secret = Some("shared-secret-shared-secret-shared-secret".into());
    let data_dir = dir.path().to_path_buf();
    let app = spawn_with(config, dir).await;
    bucket(
        &app,
        json!({"id": "big", "name": "Big", "encryption": false}),
    )
    .await;
    let ann = app.signed_in("ann@example.com").await;
    app.admin("mutation { updateBucket(input: {id: \"big\", permissions: [\"create(\\\"users\\\")\", \"read(\\\"users\\\")\"]}) { id } }", json!({}))
        .await
        .ok();
    // A server on the same data dir whose files may not grow past 6 MiB, as if the
    // disk were full: the chunks go into one file per upload, so the first 5 MiB
    // chunk fits and the second one fills the disk part-way.
    let full = ServeProcess::start(
        &app,
        ServeOptions {
            data_dir: Some(data_dir),
            file_size_limit: Some(6 * 1024 * 1024),
            ..Default::default()
        },
    )
    .await;
    let content: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let started = app
        .post(
            json!({"query": START_UPLOAD, "variables": {"input": {"bucketId": "big", "fileId": "huge", "name": "huge.bin", "size": content.len()}}}),
            &[("authorization", &format!("Bearer {ann}"))],
        )
        .await
        .ok()["createFileUpload"]
        .clone();
    assert_eq!(started["chunksTotal"], 3);
    let url = started["uploadUrl"].as_str().unwrap();
    let chunk = 5 * 1024 * 1024;
    let mut answers = Vec::new();
    for start in (0..content.len()).step_by(chunk).take(2) {
        let end = (start + chunk).min(content.len());
        let response = app
            .client
            .put(format!("{}{url}", full.url))
            .header("authorization", format!("Bearer {ann}"))
            .header(
                "content-range",
                format!("bytes {start}-{}/{}", end - 1, content.len()),
            )
            .body(content[start..end].to_vec())
            .send()
            .await
            .unwrap();
        answers.push((
            response.status().as_u16(),
            response.json::<Value>().await.unwrap_or(Value::Null),
        ));
    }
    assert_eq!(answers[0].0, 200, "{}: {}", answers[0].1, full.log_text());
    assert_eq!(answers[1].0, 507, "{}", answers[1].1);
    assert_eq!(
        answers[1].1["errors"][0]["extensions"]["code"],
        "STORAGE_FULL"
    );
    let listed = app
        .as_session(
            &ann,
            "{ files(bucketId: \"big\") { totalCount } fileUpload(bucketId: \"big\", fileId: \"huge\") { chunksUploaded } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        listed["files"]["totalCount"], 0,
        "no partial file is visible"
    );
    assert_eq!(
        listed["fileUpload"]["chunksUploaded"], 1,
        "the upload resumes from the chunk that did not fit"
    );
    let kept = stored_objects(&app).await;
    assert_eq!(kept.len(), 1, "only the upload's received bytes: {kept:?}");
    assert_eq!(
        std::fs::metadata(&kept[0]).unwrap().len(),
        chunk as u64,
        "what the failed chunk wrote is given back"
    );
    app.as_session(
        &ann,
        "mutation { deleteFile(input: {bucketId: \"big\", fileId: \"huge\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(
        stored_objects(&app).await,
        Vec::<String>::new(),
        "abandoning the upload removes its bytes"
    );
    let again = app
        .as_session(
            &ann,
            START_UPLOAD,
            json!({"input": {"bucketId": "big", "fileId": "huge", "name": "huge.bin", "size": 10}}),
        )
        .await;
    assert_eq!(
        again.ok()["createFileUpload"]["status"],
        "UPLOADING",
        "its id is free again"
    );
    drop(full);
    app.shutdown().await;
}

#[tokio::test]
async fn two_clients_uploading_the_same_file_id_at_once_get_one_file_and_one_clear_error() {
    let app = spawn_app().await;
    bucket(&app, json!({"id": "race", "name": "Race"})).await;
    let admin = admin_headers(&app);
    let admin = borrowed(&admin);
    let first: Vec<u8> = vec![b'1'; 300_000];
    let second: Vec<u8> = vec![b'2'; 300_000];
    let input = json!({"bucketId": "race", "fileId": "same", "file": null});
    let (a, b) = tokio::join!(
        upload(&app, &admin, input.clone(), "a.txt", "text/plain", &first),
        upload(&app, &admin, input.clone(), "b.txt", "text/plain", &second),
    );
    let (winner, loser, bytes) = if a.body.get("errors").is_none() {
        (a, b, &first)
    } else {
        (b, a, &second)
    };
    assert_eq!(loser.code(), "FILE_ALREADY_EXISTS", "{:#}", loser.body);
    let file = winner.ok()["createFile"].clone();
    assert_eq!(file["checksum"], sha256_hex(bytes));
    let (status, _, body) = fetch(&app, file["downloadUrl"].as_str().unwrap(), &admin).await;
    assert_eq!(status, 200);
    assert!(&body == bytes, "the stored bytes are the winner's, whole");
    assert_eq!(stored_objects(&app).await.len(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn deleting_a_project_removes_its_files_bytes_and_cached_previews() {
    let app = spawn_app().await;
    app.create_project("doomed").await;
    let headers = [
        ("x-nimbus-key", app.admin_key.as_str()),
        ("x-nimbus-project", "doomed"),
    ];
    app.as_key(
        &app.admin_key,
        "doomed",
        CREATE_BUCKET,
        json!({"input": {"id": "pics", "name": "Pictures"}}),
    )
    .await
    .ok();
    let file = upload_photo(&app, &headers, "pics", (64, 48)).await;
    let (status, _, _) = fetch(
        &app,
        &format!("{}&width=32", file["previewUrl"].as_str().unwrap()),
        &headers,
    )
    .await;
    assert_eq!(status, 200);
    let previews = app.config.preview_cache_dir().join("doomed");
    assert!(previews.exists(), "the preview was cached");
    assert_eq!(stored_objects(&app).await.len(), 1);

    app.admin(
        "mutation { deleteProject(input: {id: \"doomed\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(stored_objects(&app).await, Vec::<String>::new());
    assert!(!previews.exists(), "its cached previews are gone");
    app.shutdown().await;
}

#[tokio::test]
async fn bucket_changes_are_events_for_keys_and_not_for_users() {
    let app = spawn_app().await;
    let (ann, _) = users_bucket(&app, "shared").await;
    let mut admin_ws = WsClient::connect(&app.ws_url, false).await;
    admin_ws
        .init(json!({"X-Nimbus-Key": app.admin_key}))
        .await
        .unwrap();
    admin_ws
        .subscribe(
            "buckets",
            "subscription { realtime(channels: [\"buckets\"]) { events channels payload } }",
        )
        .await;
    let mut ann_ws = WsClient::connect(&app.ws_url, false).await;
    ann_ws
        .init(json!({"Authorization": format!("Bearer {ann}")}))
        .await
        .unwrap();
    ann_ws
        .subscribe(
            "all",
            "subscription { realtime(channels: [\"buckets\", \"files\"]) { events } }",
        )
        .await;
    admin_ws.ping_pong().await;
    ann_ws.ping_pong().await;

    bucket(&app, json!({"id": "more", "name": "more"})).await;
    let created = next_event(&mut admin_ws).await;
    assert_eq!(
        created["events"],
        json!([
            "buckets.more.create",
            "buckets.*.create",
            "buckets.more",
            "buckets.*"
        ])
    );
    assert_eq!(created["channels"], json!(["buckets", "buckets.more"]));
    assert_eq!(created["payload"]["name"], "more");
    app.admin(
        "mutation { updateBucket(input: {id: \"more\", name: \"renamed\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let updated = next_event(&mut admin_ws).await;
    assert_eq!(updated["events"][0], "buckets.more.update");
    assert_eq!(updated["payload"]["name"], "renamed");
    app.admin(
        "mutation { deleteBucket(input: {id: \"more\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(
        next_event(&mut admin_ws).await["events"][0],
        "buckets.more.delete"
    );

    // A bucket is configuration: a signed-in user on the same channels hears
    // nothing of it, and the first event she gets is her own file's.
    upload(
        &app,
        &borrowed(&[bearer(&ann)]),
        json!({"bucketId": "shared", "fileId": "mine", "file": null}),
        "mine.txt",
        "text/plain",
        b"hers",
    )
    .await
    .ok();
    assert_eq!(
        next_event(&mut ann_ws).await["events"][0],
        "buckets.shared.files.mine.create"
    );
    app.shutdown().await;
}

/// A viewed file runs no script in the server's origin: HTML and SVG in a
/// sandbox, a PDF (which a sandbox would not let its viewer show) with no script.
#[tokio::test]
async fn a_viewed_pdf_is_shown_without_script_and_html_stays_sandboxed() {
    let app = spawn_app().await;
    bucket(&app, json!({"id": "docs", "name": "Docs"})).await;
    let admin = admin_headers(&app);
    let admin = borrowed(&admin);
    let pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";
    let html = b"<!doctype html><html><body><script>alert(1)</script></body></html>";
    for (id, name, bytes) in [
        ("paper", "paper.pdf", &pdf[..]),
        ("page", "page.html", &html[..]),
    ] {
        upload(
            &app,
            &admin,
            json!({"bucketId": "docs", "fileId": id, "file": null}),
            name,
            "application/octet-stream",
            bytes,
        )
        .await
        .ok();
    }
    let view = |id: &str| format!("/v1/storage/buckets/docs/files/{id}/view");
    let (status, headers, _) = fetch(&app, &view("paper"), &admin).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/pdf");
    assert_eq!(headers["content-security-policy"], "script-src 'none'");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let (status, headers, _) = fetch(&app, &view("page"), &admin).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-security-policy"], "sandbox");
    app.shutdown().await;
}

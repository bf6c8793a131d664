//! Uploads and previews cannot stall a replica: a multipart upload is authorised
//! (project, caller, the bucket's `create` permission and rules) before any of its
//! files is spooled, a multipart request is capped as a whole and in files, and
//! previews render a bounded number at a time with a bounded queue, so memory stays
//! bounded however many arrive.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{
    ServeOptions, ServeProcess, TestApp, WAIT, spawn_app, spawn_with, test_config,
};

const BOUNDARY: &str = "nimbus-upload-boundary-41c7";
const CREATE_FILE: &str =
    "mutation($input: CreateFileInput!) { createFile(input: $input) { id size } }";
const CREATE_BUCKET: &str =
    "mutation($input: CreateBucketInput!) { createBucket(input: $input) { id } }";

async fn bucket(app: &TestApp, input: Value) {
    app.admin(CREATE_BUCKET, json!({ "input": input }))
        .await
        .ok();
}

/// One multipart part: its headers and content.
fn part(headers: &str, content: &[u8]) -> Vec<u8> {
    let mut bytes = format!("--{BOUNDARY}\r\n{headers}\r\n\r\n").into_bytes();
    bytes.extend_from_slice(content);
    bytes.extend_from_slice(b"\r\n");
    bytes
}

fn operations(query: &str, variables: Value) -> Vec<u8> {
    part(
        "Content-Disposition: form-data; name=\"operations\"",
        json!({ "query": query, "variables": variables })
            .to_string()
            .as_bytes(),
    )
}

fn map(map: Value) -> Vec<u8> {
    part(
        "Content-Disposition: form-data; name=\"map\"",
        map.to_string().as_bytes(),
    )
}

/// The head of a file part (its content follows).
fn file_head(name: &str, filename: &str) -> Vec<u8> {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes()
}

/// Starts a multipart POST announcing `length` bytes of body and sends `sent` of it.
async fn start_post(
    app: &TestApp,
    headers: &[(&str, &str)],
    length: usize,
    sent: &[u8],
) -> TcpStream {
    let addr = app.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST /v1/graphql HTTP/1.1\r\nHost: nimbus\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\nApollo-Require-Preflight: true\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and stop reading before all of this is written.
    let _ = stream.write_all(sent).await;
    stream
}

/// The answer on `stream`, read within [`WAIT`]: status, headers and JSON body.
async fn answer(stream: &mut TcpStream) -> (u16, Vec<(String, String)>, Value) {
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    let read = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|l| l.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if received.len() >= end + 4 + length {
                    return;
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer while the body was still unsent: the server waited for it; got {:?}",
        String::from_utf8_lossy(&received)
    );
    let (status, headers, body) = crate::security_limits::parse_answer(&received);
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, headers, body)
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<no code>")
}

/// The files spooled right now.
fn spooled(app: &TestApp) -> Vec<String> {
    match std::fs::read_dir(app.config.upload_spool_dir()) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Waits (within [`WAIT`]) until `dir` holds `count` spooled files.
async fn wait_for_spooled(app: &TestApp, count: usize) {
    let deadline = Instant::now() + WAIT;
    while spooled(app).len() != count {
        assert!(
            Instant::now() < deadline,
            "the spool dir holds {:?}, not {count} files",
            spooled(app)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `createFile` whose file part starts and then stops, with 50 MB announced: the
/// answer must come while the body is unsent.
async fn stalled_create(
    app: &TestApp,
    headers: &[(&str, &str)],
    input: Value,
    filename: &str,
    file_bytes: usize,
) -> (u16, Value) {
    let mut sent = operations(CREATE_FILE, json!({ "input": input }));
    sent.extend(map(json!({"0": ["variables.input.file"]})));
    sent.extend(file_head("0", filename));
    sent.extend(std::iter::repeat_n(b'a', file_bytes));
    let mut stream = start_post(app, headers, 50_000_000, &sent).await;
    let (status, _, body) = answer(&mut stream).await;
    assert!(
        spooled(app).is_empty(),
        "a refused upload left {:?}",
        spooled(app)
    );
    (status, body)
}

#[tokio::test]
async fn multipart_uploads_are_authorised_before_their_files_are_spooled() {
    let app = spawn_app().await;
    bucket(
        &app,
        json!({"id": "closed", "name": "Closed", "permissions": []}),
    )
    .await;
    bucket(
        &app,
        json!({"id": "open", "name": "Open", "permissions": ["create(\"users\")", "read(\"users\")"]}),
    )
    .await;
    bucket(
        &app,
        json!({"id": "small", "name": "Small", "maximumFileSize": 1000, "allowedFileExtensions": ["txt"]}),
    )
    .await;
    let ann = app.signed_in("ann@example.com").await;
    let ann_auth = format!("Bearer {ann}");
    let ann_headers = [("Authorization", ann_auth.as_str())];
    let admin_headers = [("X-Nimbus-Key", app.admin_key.as_str())];
    let input = |bucket: &str| json!({"bucketId": bucket, "fileId": "unique()", "file": null});

    // The bucket's create permission, the bucket itself, the caller's credential.
    let (status, body) = stalled_create(&app, &ann_headers, input("closed"), "a.txt", 4096).await;
    assert_eq!((status, code(&body)), (403, "PERMISSION_DENIED"), "{body}");
    let (status, body) = stalled_create(&app, &ann_headers, input("nowhere"), "a.txt", 4096).await;
    assert_eq!((status, code(&body)), (404, "BUCKET_NOT_FOUND"), "{body}");
    let (status, body) = stalled_create(&app, &[], input("open"), "a.txt", 4096).await;
    assert_eq!(status, 403, "guests may not create in `open`: {body}");
    let (status, body) = stalled_create(
        &app,
        &[("Authorization", "Bearer not-a-session")],
        input("open"),
        "a.txt",
        4096,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = stalled_create(
        &app,
        &[("X-Nimbus-Project", "no-such-project")],
        input("open"),
        "a.txt",
        4096,
    )
    .await;
    assert_eq!((status, code(&body)), (404, "PROJECT_NOT_FOUND"), "{body}");

    // The bucket's rules: the extension of the part's filename or of `name`, and
    // the size, counted as the part arrives.
    let (status, body) = stalled_create(&app, &admin_headers, input("small"), "a.png", 10).await;
    assert_eq!(code(&body), "FILE_EXTENSION_NOT_ALLOWED", "{status} {body}");
    let named = json!({"bucketId": "small", "name": "a.exe", "file": null});
    let (_, body) = stalled_create(&app, &admin_headers, named, "a.txt", 10).await;
    assert_eq!(code(&body), "FILE_EXTENSION_NOT_ALLOWED", "{body}");
    let (status, body) = stalled_create(&app, &admin_headers, input("small"), "a.txt", 1001).await;
    assert_eq!((status, code(&body)), (400, "FILE_TOO_LARGE"), "{body}");

    // A file whose operation names no bucket is not spooled past a small bound.
    let mut sent = operations(
        "mutation($input: CreateFileInput!, $other: Upload) { createFile(input: $input) { id } }",
        json!({"input": input("open"), "other": null}),
    );
    sent.extend(map(json!({"0": ["variables.other"]})));
    sent.extend(file_head("0", "a.txt"));
    sent.extend(std::iter::repeat_n(b'a', 70 * 1024));
    let mut stream = start_post(&app, &ann_headers, 50_000_000, &sent).await;
    let (status, _, body) = answer(&mut stream).await;
    assert_eq!((status, code(&body)), (413, "REQUEST_TOO_LARGE"), "{body}");
    assert!(spooled(&app).is_empty());

    // `operations` and `map` come first, and the files are counted.
    let mut sent = map(json!({"0": ["variables.input.file"]}));
    sent.extend(operations(CREATE_FILE, json!({"input": input("open")})));
    let mut stream = start_post(&app, &ann_headers, 50_000_000, &sent).await;
    let (status, _, body) = answer(&mut stream).await;
    assert_eq!((status, code(&body)), (400, "BAD_REQUEST"), "{body}");
    let many: serde_json::Map<String, Value> = (0..17)
        .map(|i| (i.to_string(), json!([format!("variables.f{i}")])))
        .collect();
    let mut sent = operations(CREATE_FILE, json!({"input": input("open")}));
    sent.extend(map(Value::Object(many)));
    sent.extend(file_head("0", "a.txt"));
    let mut stream = start_post(&app, &ann_headers, 50_000_000, &sent).await;
    let (status, _, body) = answer(&mut stream).await;
    assert_eq!((status, code(&body)), (413, "TOO_MANY_FILES"), "{body}");
    // One file is one upload per path: a few paths, each named once.
    let many_paths: Vec<String> = (0..9).map(|i| format!("variables.f{i}")).collect();
    let mut sent = operations(CREATE_FILE, json!({"input": input("open")}));
    sent.extend(map(json!({"0": many_paths})));
    sent.extend(file_head("0", "a.txt"));
    let mut stream = start_post(&app, &ann_headers, 50_000_000, &sent).await;
    let (status, _, body) = answer(&mut stream).await;
    assert_eq!((status, code(&body)), (413, "TOO_MANY_FILES"), "{body}");
    let mut sent = operations(CREATE_FILE, json!({"input": input("open")}));
    sent.extend(map(
        json!({"0": ["variables.input.file"], "1": ["variables.input.file"]}),
    ));
    sent.extend(file_head("0", "a.txt"));
    let mut stream = start_post(&app, &ann_headers, 50_000_000, &sent).await;
    let (status, _, body) = answer(&mut stream).await;
    assert_eq!((status, code(&body)), (400, "BAD_REQUEST"), "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|message| message.contains("`variables.input.file` more than once")),
        "{body}"
    );
    assert!(spooled(&app).is_empty(), "{:?}", spooled(&app));

    // An allowed upload is spooled as it arrives, and its spool file goes when the
    // client gives up halfway...
    let mut sent = operations(CREATE_FILE, json!({"input": input("open")}));
    sent.extend(map(json!({"0": ["variables.input.file"]})));
    sent.extend(file_head("0", "a.txt"));
    sent.extend(std::iter::repeat_n(b'a', 4096));
    let stream = start_post(&app, &ann_headers, 50_000_000, &sent).await;
    wait_for_spooled(&app, 1).await;
    drop(stream);
    wait_for_spooled(&app, 0).await;
    // ... or once the request is done.
    let mut sent = operations(CREATE_FILE, json!({"input": input("open")}));
    sent.extend(map(json!({"0": ["variables.input.file"]})));
    sent.extend(file_head("0", "a.txt"));
    sent.extend(std::iter::repeat_n(b'a', 4096));
    sent.extend(format!("\r\n--{BOUNDARY}--\r\n").into_bytes());
    let mut stream = start_post(&app, &ann_headers, sent.len(), &sent).await;
    let (status, _, body) = answer(&mut stream).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["createFile"]["size"], 4096, "{body}");
    assert!(spooled(&app).is_empty(), "{:?}", spooled(&app));
    app.shutdown().await;
}

/// A noise PNG (it compresses badly, so it is about `width`×`height`×3 bytes).
fn noise_png(width: u32, height: u32) -> Vec<u8> {
    use image::ImageEncoder as _;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let pixels: Vec<u8> = (0..width as usize * height as usize * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let mut bytes = Vec::with_capacity(pixels.len() + 1024);
    image::codecs::png::PngEncoder::new_with_quality(
        &mut bytes,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::NoFilter,
    )
    .write_image(&pixels, width, height, image::ExtendedColorType::Rgb8)
    .unwrap();
    bytes
}

/// Uploads `bytes` as `photo.png` into a new bucket `photos`; the file's id.
async fn upload_png(app: &TestApp, bytes: &[u8]) -> String {
    bucket(
        app,
        json!({"id": "photos", "name": "Photos", "maximumFileSize": 64 * 1024 * 1024}),
    )
    .await;
    let mut body = operations(
        CREATE_FILE,
        json!({"input": {"bucketId": "photos", "fileId": "photo", "file": null}}),
    );
    body.extend(map(json!({"0": ["variables.input.file"]})));
    body.extend(part(
        "Content-Disposition: form-data; name=\"0\"; filename=\"photo.png\"\r\nContent-Type: image/png",
        bytes,
    ));
    body.extend(format!("--{BOUNDARY}--\r\n").into_bytes());
    let response = app
        .client
        .post(format!("{}/v1/graphql", app.url))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header("x-nimbus-key", &app.admin_key)
        .body(body)
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    answer["data"]["createFile"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("upload failed: {answer}"))
        .to_string()
}

/// `count` previews of the photo at once, each of another width (so none is
/// cached): their statuses, and the `Retry-After` and code of the refused ones.
async fn previews_at_once(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    count: u32,
) -> Vec<(u16, Option<String>, String)> {
    let requests = (0..count).map(|i| {
        let request = client
            .get(format!(
                "{url}/v1/storage/buckets/photos/files/photo/preview?width={}",
                100 + i
            ))
            .header("x-nimbus-key", key)
            .timeout(Duration::from_secs(120))
            .send();
        async move {
            let response = request.await.expect("an answer");
            let status = response.status().as_u16();
            let retry = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let body = response.bytes().await.unwrap();
            let code = serde_json::from_slice::<Value>(&body)
                .map(|v| code(&v).to_string())
                .unwrap_or_default();
            (status, retry, code)
        }
    });
    futures_util::future::join_all(requests).await
}

#[tokio::test]
async fn previews_past_the_queue_are_refused_with_a_coded_503_and_multipart_requests_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.preview_concurrency = 1;
    config.preview_queue = 1;
    config.max_multipart_bytes = Some(12 * 1024 * 1024);
    let app = spawn_with(config, dir).await;
    let id = upload_png(&app, &noise_png(1500, 1500)).await;
    assert_eq!(id, "photo");

    let answers = previews_at_once(&app.client, &app.url, &app.admin_key, 12).await;
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, ..)| *status == 503)
        .collect();
    let served = answers.iter().filter(|(status, ..)| *status == 200).count();
    assert_eq!(refused.len() + served, answers.len(), "{answers:?}");
    assert!(served >= 2, "one renders, one waits: {answers:?}");
    assert!(
        !refused.is_empty(),
        "one renders, one waits, the rest are refused: {answers:?}"
    );
    for (_, retry, code) in refused {
        assert_eq!(code, "SERVICE_UNAVAILABLE");
        assert_eq!(retry.as_deref(), Some("1"));
    }
    // The turns are given back.
    let again = previews_at_once(&app.client, &app.url, &app.admin_key, 1).await;
    assert_eq!(again[0].0, 200, "{again:?}");

    // A request over NIMBUS_MAX_MULTIPART_BYTES as a whole is refused.
    let mut sent = operations(
        CREATE_FILE,
        json!({"input": {"bucketId": "photos", "file": null}}),
    );
    sent.extend(map(json!({"0": ["variables.input.file"]})));
    sent.extend(file_head("0", "big.bin"));
    sent.extend(std::iter::repeat_n(b'a', 12 * 1024 * 1024 + 1));
    let mut stream = start_post(&app, &[("X-Nimbus-Key", &app.admin_key)], 50_000_000, &sent).await;
    let (status, _, body) = answer(&mut stream).await;
    assert_eq!((status, code(&body)), (413, "REQUEST_TOO_LARGE"), "{body}");
    assert!(spooled(&app).is_empty(), "{:?}", spooled(&app));
    app.shutdown().await;
}

/// The peak resident memory of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        .expect("a /proc/PID/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib * 1024
}

#[tokio::test]
async fn sixteen_previews_of_a_fifteen_mebibyte_png_at_once_grow_the_server_by_two_renders() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    // The replica shares the file store: through the data dir, or NIMBUS_STORAGE.
    config.secret = Some("shared-secret-shared-secret-shared-secret".into());
    let data_dir = dir.path().to_path_buf();
    let app = spawn_with(config, dir).await;
    let png = noise_png(2300, 2300);
    assert!(png.len() > 15 * 1024 * 1024, "{} bytes", png.len());
    upload_png(&app, &png).await;
    let replica = ServeProcess::start(
        &app,
        ServeOptions {
            data_dir: Some(data_dir),
            env: vec![
                ("NIMBUS_PREVIEW_CONCURRENCY", "2".into()),
                ("NIMBUS_PREVIEW_QUEUE", "32".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    let started = peak_rss(replica.pid());
    let answers = previews_at_once(&app.client, &replica.url, &app.admin_key, 16).await;
    assert!(
        answers.iter().all(|(status, ..)| *status == 200),
        "{answers:?}: {}",
        replica.log_text()
    );
    // A render holds the file (15 MiB) and its pixels (15 MiB) and little more: two
    // at a time grow the replica by about 75 MiB, sixteen would by about 600. The
    // bound leaves the allocator room for a third render's worth not yet given back.
    let peak = peak_rss(replica.pid());
    assert!(
        peak - started < 128 * 1024 * 1024,
        "the replica grew from {} MiB to {} MiB",
        started / (1024 * 1024),
        peak / (1024 * 1024)
    );
    app.shutdown().await;
}

/// A multipart request of `query` with `variables`, whose one file (`bytes`) the
/// map puts at `paths`, sent as the admin: the answer's body.
async fn one_file_at(
    app: &TestApp,
    query: &str,
    variables: Value,
    paths: &[&str],
    bytes: &[u8],
) -> Value {
    let mut body = operations(query, variables);
    body.extend(map(json!({ "0": paths })));
    body.extend(file_head("0", "big.bin"));
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    app.client
        .post(format!("{}/v1/graphql", app.url))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header("apollo-require-preflight", "true")
        .header("x-nimbus-key", &app.admin_key)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The ids of the files in bucket `id`.
async fn file_ids(app: &TestApp, id: &str) -> Vec<String> {
    let listed = app
        .admin(
            "query($b: ID!) { files(bucketId: $b) { nodes { id } } }",
            json!({ "b": id }),
        )
        .await
        .ok();
    listed["files"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| file["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn an_upload_becomes_one_file_however_many_aliases_name_it() {
    let app = spawn_app().await;
    bucket(
        &app,
        json!({"id": "packed", "name": "Packed", "compression": "GZIP", "antivirus": false}),
    )
    .await;
    let bytes = vec![b'z'; 200_000];

    // Aliases of one field, with one variable.
    let aliased = one_file_at(
        &app,
        "mutation($input: CreateFileInput!) { a: createFile(input: $input) { id } b: createFile(input: $input) { id } c: createFile(input: $input) { id } }",
        json!({"input": {"bucketId": "packed", "file": null}}),
        &["variables.input.file"],
        &bytes,
    )
    .await;
    let first = aliased["data"]["a"]["id"]
        .as_str()
        .expect("the first alias takes the upload")
        .to_string();
    assert_eq!(aliased["data"]["b"], Value::Null, "{aliased:#}");
    assert_eq!(aliased["data"]["c"], Value::Null, "{aliased:#}");
    let errors = aliased["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{aliased:#}");
    for (error, alias) in errors.iter().zip(["b", "c"]) {
        assert_eq!(error["path"], json!([alias]), "{aliased:#}");
        assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{aliased:#}");
        assert_eq!(error["extensions"]["field"], "file", "{aliased:#}");
    }
    assert_eq!(file_ids(&app, "packed").await, std::slice::from_ref(&first));

    // A part the map puts at two variables is two uploads (as the spec has it, and
    // the map allows 8 at most): each makes one file, whatever aliases name it.
    let mapped = one_file_at(
        &app,
        "mutation($x: CreateFileInput!, $y: CreateFileInput!) { x: createFile(input: $x) { id } x2: createFile(input: $x) { id } y: createFile(input: $y) { id } y2: createFile(input: $y) { id } }",
        json!({"x": {"bucketId": "packed", "fileId": "x", "file": null},
               "y": {"bucketId": "packed", "fileId": "y", "file": null}}),
        &["variables.x.file", "variables.y.file"],
        &bytes,
    )
    .await;
    assert_eq!(mapped["data"]["x"]["id"], "x", "{mapped:#}");
    assert_eq!(mapped["data"]["y"]["id"], "y", "{mapped:#}");
    assert_eq!(mapped["data"]["x2"], Value::Null, "{mapped:#}");
    assert_eq!(mapped["data"]["y2"], Value::Null, "{mapped:#}");
    assert_eq!(mapped["errors"].as_array().unwrap().len(), 2, "{mapped:#}");
    let mut ids = file_ids(&app, "packed").await;
    ids.sort();
    let mut expected = vec![first, "x".to_string(), "y".to_string()];
    expected.sort();
    assert_eq!(ids, expected, "nothing stored for the refused fields");
    app.shutdown().await;
}

const START_UPLOAD: &str =
    "mutation($input: CreateFileUploadInput!) { createFileUpload(input: $input) { id } }";

#[tokio::test]
async fn unfinished_resumable_uploads_are_capped_per_uploader() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.upload_max_pending = 2;
    config.upload_max_pending_bytes = 1_000_000;
    let app = spawn_with(config, dir).await;
    bucket(
        &app,
        json!({"id": "videos", "name": "Videos", "permissions": ["create(\"users\")"]}),
    )
    .await;
    let ann = app.signed_in("ann@example.com").await;
    let bob = app.signed_in("bob@example.com").await;
    let start = |secret: &str, id: &str, size: u64| {
        let secret = secret.to_string();
        let input = json!({"input": {"bucketId": "videos", "fileId": id, "name": format!("{id}.bin"), "size": size}});
        let app = &app;
        async move { app.as_session(&secret, START_UPLOAD, input).await }
    };

    start(&ann, "a1", 100).await.ok();
    start(&ann, "a2", 100).await.ok();
    let third = start(&ann, "a3", 100).await;
    assert_eq!(third.code(), "TOO_MANY_PENDING_UPLOADS", "{:#}", third.body);
    // Per uploader: Bob has room, but not for more bytes than allowed.
    let huge = start(&bob, "b1", 1_000_001).await;
    assert_eq!(huge.code(), "TOO_MANY_PENDING_UPLOADS", "{:#}", huge.body);
    start(&bob, "b1", 999_000).await.ok();
    let over = start(&bob, "b2", 1_001).await;
    assert_eq!(over.code(), "TOO_MANY_PENDING_UPLOADS", "{:#}", over.body);
    // A chunk is authorised before its body is read: Bob's chunk for Ann's upload
    // is answered while 5 MB of it are still unsent.
    let addr = app.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT /v1/storage/buckets/videos/files/a2/upload HTTP/1.1\r\nHost: nimbus\r\nAuthorization: Bearer {bob}\r\nContent-Range: bytes 0-99/100\r\nContent-Length: 5000000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'a'; 1000]).await.unwrap();
    let (status, _, body) = answer(&mut stream).await;
    assert_eq!((status, code(&body)), (404, "UPLOAD_NOT_FOUND"), "{body}");

    // An abandoned upload frees its place.
    app.as_session(
        &ann,
        "mutation { deleteFile(input: {bucketId: \"videos\", fileId: \"a1\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    start(&ann, "a3", 100).await.ok();

    // Started all at once, uploads still stay within the limit; the refused ones
    // leave nothing holding their ids.
    let cat = app.signed_in("cat@example.com").await;
    let ids: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
    let answers = futures_util::future::join_all(ids.iter().map(|id| start(&cat, id, 100))).await;
    let started: Vec<&String> = ids
        .iter()
        .zip(&answers)
        .filter(|(_, answer)| answer.code() == "<none>")
        .map(|(id, _)| id)
        .collect();
    for answer in &answers {
        assert!(
            ["<none>", "TOO_MANY_PENDING_UPLOADS"].contains(&answer.code()),
            "{:#}",
            answer.body
        );
    }
    assert!(started.len() <= 2, "{started:?} started past a limit of 2");
    let refused = ids.iter().find(|id| !started.contains(id)).unwrap();
    let retried = start(&ann, refused, 100).await;
    assert_eq!(
        retried.code(),
        "TOO_MANY_PENDING_UPLOADS",
        "Ann's own limit refuses, not a claim left on the id: {:#}",
        retried.body
    );
    app.shutdown().await;
}

#[tokio::test]
async fn spool_files_a_crash_left_behind_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path()).await;
    let spool = config.upload_spool_dir();
    std::fs::create_dir_all(&spool).unwrap();
    let day = Duration::from_secs(24 * 3600);
    let old = std::fs::File::create(spool.join("upload-old")).unwrap();
    old.set_modified(std::time::SystemTime::now() - 2 * day)
        .unwrap();
    drop(old);
    std::fs::File::create(spool.join("upload-recent")).unwrap();
    let app = spawn_with(config, dir).await;
    let deadline = Instant::now() + WAIT;
    while spooled(&app).contains(&"upload-old".to_string()) {
        assert!(Instant::now() < deadline, "the leftover is still there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        spooled(&app),
        ["upload-recent"],
        "a file a running replica may be using stays"
    );
    app.shutdown().await;
}

/// One client starts a bounded number of uploads a minute, in one request or
/// resumable, so it cannot fill the disk every project shares; servers' keys are
/// not counted.
#[tokio::test]
async fn a_client_starts_a_bounded_number_of_uploads_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.uploads_per_minute = 3;
    let app = spawn_with(config, dir).await;
    bucket(
        &app,
        json!({"id": "drop", "name": "Drop", "permissions": ["create(\"users\")", "create(\"any\")"]}),
    )
    .await;
    let upload_as = |headers: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let answer = crate::storage::upload(
                app,
                &headers,
                json!({"bucketId": "drop", "file": null}),
                "a.txt",
                "text/plain",
                b"a",
            )
            .await;
            answer.code().to_string()
        }
    };
    let ann = app.signed_in("ann@example.com").await;
    let as_ann = || vec![("authorization", format!("Bearer {ann}"))];
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(upload_as(as_ann()).await);
    }
    assert_eq!(codes, ["<none>", "<none>", "<none>", "RATE_LIMITED"]);
    // A resumable upload is one more, refused alike.
    let resumable = app
        .as_session(
            &ann,
            "mutation { createFileUpload(input: {bucketId: \"drop\", name: \"b.txt\", size: 10}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(resumable.code(), "RATE_LIMITED");
    // However the request names its createFile: here inside an inline fragment.
    let mut body = operations(
        "mutation($f: Upload!) { ... on Mutation { createFile(input: {bucketId: \"drop\", file: $f}) { id } } }",
        json!({"f": null}),
    );
    body.extend(map(json!({"0": ["variables.f"]})));
    body.extend(part(
        "Content-Disposition: form-data; name=\"0\"; filename=\"f.txt\"\r\nContent-Type: text/plain",
        b"f",
    ));
    body.extend(format!("--{BOUNDARY}--\r\n").into_bytes());
    let bearer = format!("Bearer {ann}");
    let mut stream = start_post(&app, &[("authorization", &bearer)], body.len(), &body).await;
    let (_, _, fragment) = answer(&mut stream).await;
    assert_eq!(code(&fragment), "RATE_LIMITED", "{fragment:#}");
    // Guests count by their address, apart from Ann; a server is not counted.
    for _ in 0..3 {
        assert_eq!(upload_as(Vec::new()).await, "<none>");
    }
    for _ in 0..5 {
        assert_eq!(
            upload_as(vec![("x-nimbus-key", app.admin_key.clone())]).await,
            "<none>"
        );
    }
    app.shutdown().await;
}

//! GraphQL multipart requests (the GraphQL multipart request spec: `operations`,
//! `map`, then the file parts), received so that no byte of a file is written
//! anywhere before the request is authorised.
//!
//! `operations` and `map` must come first, as the spec orders them. For every file
//! a `createFile` names the bucket of, the caller's `create` permission on that
//! bucket and its name rules are checked before the file part is read, and the
//! part is spooled only up to the bucket's `maximumFileSize`. A file part whose
//! operation cannot be read that way (another shape, another field) may have
//! `NIMBUS_MAX_UNAUTHORISED_UPLOAD_BYTES` only: it is checked at execution, too
//! late to bound what was spooled. The request as a whole is capped by
//! `NIMBUS_MAX_MULTIPART_BYTES`, its files by `NIMBUS_MAX_UPLOAD_FILES`.
//!
//! A part whose one `createFile` goes into an encrypted, uncompressed bucket is
//! sealed (AES-256-GCM, under a fresh salt) as it is spooled, on the thread that
//! writes it while another hashes it: the spool file is then what the bucket stores,
//! and becomes the object by a link (a local store) or is copied as it is (S3); no
//! plaintext reaches the disk.
//!
//! Spooled files live under `DATA_DIR/tmp/uploads` while their request runs and
//! are removed when it ends, refused or not; those a crash left behind are
//! removed at the next start once a day old (replicas may share the directory). This module decides nothing about
//! files beyond that: the service checks everything again when the operation runs.

use std::collections::{HashMap, HashSet};
use std::io::{Seek as _, SeekFrom};
use std::sync::atomic::Ordering;

use async_graphql::parser::types::{DocumentOperations, OperationType, Selection};
use async_graphql::{BatchRequest, Request, UploadValue};
use async_graphql_value::{ConstValue, Value};
use axum::body::Body;

use crate::AppState;
use crate::auth::Caller;
use crate::auth::ScopedAccess;
use crate::error::{AppError, codes};
use crate::files::{Compression, Digest, FileError, Fingerprint, SpoolWriter};
use crate::services::storage::Bucket;
use crate::services::storage::service::{self, Spooled, SpooledUploads, file_error};

/// The mutation whose file's bucket is known before the file arrives.
const CREATE_FILE: &str = "createFile";

/// A request whose files are spooled.
pub struct Received {
    pub batch: BatchRequest,
    /// Removes the spooled files when dropped.
    pub spooled: Vec<tempfile::TempPath>,
}

/// Why a multipart request was refused before it ran.
pub enum Refusal {
    /// Authorisation or a bucket rule failed.
    App(AppError),
    /// The request is malformed or over a limit; the code's status is the answer's.
    Plain { code: &'static str, message: String },
    /// The body stopped arriving.
    TimedOut,
}

fn bad(message: impl Into<String>) -> Refusal {
    Refusal::Plain {
        code: codes::BAD_REQUEST,
        message: message.into(),
    }
}

fn too_large(message: String) -> Refusal {
    Refusal::Plain {
        code: codes::REQUEST_TOO_LARGE,
        message,
    }
}

/// What a `createFile` says about its file before the file arrives.
struct Target {
    bucket_id: String,
    name: Option<String>,
}

/// How one file part is received.
struct Rule {
    /// Where the file goes in the request(s): the map's paths.
    paths: Vec<String>,
    /// Most bytes the part may have.
    limit: u64,
    /// Whether `limit` is a bucket's `maximumFileSize`.
    bucket_limit: bool,
    /// Buckets whose extension rules apply to the part's filename (the operation
    /// gave no `name`).
    check_filename: Vec<Bucket>,
    /// The salt to seal the part under as it is spooled: its one `createFile` is
    /// into an encrypted bucket of a local store, so the spool file can become the
    /// stored object as it is.
    seal: Option<String>,
}

/// Reads the multipart `body`, authorising every file `caller` sends before it is
/// spooled.
pub async fn receive(
    state: &AppState,
    caller: &Caller,
    content_type: &str,
    body: Body,
) -> Result<Received, Refusal> {
    let config = &state.config;
    let boundary = multer::parse_boundary(content_type)
        .map_err(|_| bad("the multipart Content-Type has no boundary"))?;
    let stall = std::time::Duration::from_secs(config.http_body_timeout_secs);
    let (stream, stalled) = crate::http::stall_limited(body, stall);
    let head_limit = config.max_body_bytes as u64;
    let whole_limit = config.multipart_limit();
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(whole_limit)
            .for_field("operations", head_limit)
            .for_field("map", head_limit),
    );
    let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
    let unreadable = |err: multer::Error| {
        if stalled.load(Ordering::Relaxed) {
            return Refusal::TimedOut;
        }
        match err {
            multer::Error::StreamSizeExceeded { .. } => {
                too_large(format!("the multipart request exceeds {whole_limit} bytes"))
            }
            multer::Error::FieldSizeExceeded { .. } => too_large(format!(
                "`operations` and `map` may have {head_limit} bytes each"
            )),
            err => bad(format!("invalid multipart request: {err}")),
        }
    };

    let (mut batch, map) = head(state, &mut multipart, &unreadable).await?;
    let targets = targets(state, &mut batch);
    let rules = rules(state, caller, &targets, map).await?;

    let spool_dir = config.upload_spool_dir();
    tokio::fs::create_dir_all(&spool_dir)
        .await
        .map_err(internal)?;
    let mut spooled = Vec::with_capacity(rules.len());
    let mut fingerprints: HashMap<usize, SpooledUploads> = HashMap::new();
    let mut received = HashSet::with_capacity(rules.len());
    while let Some(mut field) = multipart.next_field().await.map_err(&unreadable)? {
        let rule = accept_part(&field, &rules, &mut received)?;
        let filename = field.file_name().unwrap_or_default().to_string();
        let content_type = field.content_type().map(|mime| mime.to_string());
        for bucket in &rule.check_filename {
            service::check_new_name(bucket, &filename).map_err(Refusal::App)?;
        }
        let (file, path, fingerprint) =
            spool(&mut field, rule, &spool_dir, &state.secret, &unreadable).await?;
        let known = Spooled::new(path.to_path_buf(), fingerprint, rule.seal.clone());
        spooled.push(path);
        attach(
            &mut batch,
            &rule.paths,
            &filename,
            content_type,
            &file,
            &known,
            &mut fingerprints,
        )?;
    }
    if received.len() != rules.len() {
        return Err(bad("a file named in `map` is missing"));
    }
    // What the spooling learnt travels with each request, by upload index.
    match &mut batch {
        BatchRequest::Single(request) => {
            if let Some(known) = fingerprints.remove(&0) {
                request.data.insert(known);
            }
        }
        BatchRequest::Batch(requests) => {
            for (index, request) in requests.iter_mut().enumerate() {
                if let Some(known) = fingerprints.remove(&index) {
                    request.data.insert(known);
                }
            }
        }
    }
    Ok(Received { batch, spooled })
}

/// The `operations` and `map` parts, which come first, and a map of no more
/// files than a request may carry.
async fn head(
    state: &AppState,
    multipart: &mut multer::Multipart<'_>,
    unreadable: &impl Fn(multer::Error) -> Refusal,
) -> Result<(BatchRequest, HashMap<String, Vec<String>>), Refusal> {
    let config = &state.config;
    let operations = leading_part(multipart, "operations", unreadable).await?;
    if let Some(message) = super::graphql::too_many_values(state, &operations) {
        return Err(Refusal::Plain {
            code: codes::VARIABLES_TOO_LARGE,
            message,
        });
    }
    let batch = super::graphql::batch_from_json(&operations)
        .map_err(|_| bad("the `operations` part is not a GraphQL request"))?;
    let map = leading_part(multipart, "map", unreadable).await?;
    let map: HashMap<String, Vec<String>> = serde_json::from_slice(&map).map_err(|_| {
        bad("the `map` part must be a JSON object of file names to lists of variable paths")
    })?;
    if map.len() > config.max_upload_files {
        return Err(Refusal::Plain {
            code: codes::TOO_MANY_FILES,
            message: format!(
                "a request may carry {} files; this one maps {}",
                config.max_upload_files,
                map.len()
            ),
        });
    }
    // Each path is an upload value of its own, with its own handle on the spool
    // file: a few per file at most, and never the same path twice.
    let mut seen = std::collections::HashSet::new();
    for paths in map.values() {
        if paths.len() > MAX_PATHS_PER_FILE {
            return Err(Refusal::Plain {
                code: codes::TOO_MANY_FILES,
                message: format!(
                    "a file may be used at {MAX_PATHS_PER_FILE} variable paths; one is mapped to {}",
                    paths.len()
                ),
            });
        }
        if let Some(twice) = paths.iter().find(|path| !seen.insert(path.as_str())) {
            return Err(bad(format!(
                "the `map` part names the path `{}` more than once",
                truncated(twice)
            )));
        }
    }
    Ok((batch, map))
}

/// The most variable paths one file of a multipart request may be put at.
const MAX_PATHS_PER_FILE: usize = 8;

/// A client's text quoted in an answer, cut to a readable length.
fn truncated(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// How each part of the map is received. Every bucket a `createFile` names is
/// authorised (once) and its name rules checked before any file is read.
async fn rules(
    state: &AppState,
    caller: &Caller,
    targets: &HashMap<String, Target>,
    map: HashMap<String, Vec<String>>,
) -> Result<HashMap<String, Rule>, Refusal> {
    let config = &state.config;
    let mut rules = HashMap::with_capacity(map.len());
    let mut authorised: HashMap<String, Bucket> = HashMap::new();
    for (part, paths) in map {
        let mut rule = Rule {
            paths,
            limit: config.max_upload_bytes as u64,
            bucket_limit: false,
            check_filename: Vec::new(),
            seal: None,
        };
        for path in &rule.paths {
            let Some(target) = targets.get(path) else {
                if rule.limit > config.max_unauthorised_upload_bytes {
                    rule.limit = config.max_unauthorised_upload_bytes;
                    rule.bucket_limit = false;
                }
                continue;
            };
            let bucket = match authorised.get(&target.bucket_id) {
                Some(bucket) => bucket.clone(),
                None => {
                    let access = ScopedAccess::of(caller).map_err(Refusal::App)?;
                    let bucket = service::authorise_upload(state, &access, &target.bucket_id, None)
                        .await
                        .map_err(Refusal::App)?;
                    authorised.insert(target.bucket_id.clone(), bucket.clone());
                    bucket
                }
            };
            match &target.name {
                Some(name) => {
                    service::check_new_name(&bucket, name).map_err(Refusal::App)?;
                }
                None => rule.check_filename.push(bucket.clone()),
            }
            if bucket.maximum_file_size < rule.limit {
                rule.limit = bucket.maximum_file_size;
                rule.bucket_limit = true;
            }
            if rule.paths.len() == 1 && bucket.encryption && bucket.compression == Compression::None
            {
                rule.seal = Some(crate::files::new_salt());
            }
        }
        rules.insert(part, rule);
    }
    Ok(rules)
}

/// The rule of a file part: it must be named in the map, and sent once.
fn accept_part<'r>(
    field: &multer::Field<'_>,
    rules: &'r HashMap<String, Rule>,
    received: &mut HashSet<String>,
) -> Result<&'r Rule, Refusal> {
    let part = field.name().unwrap_or_default().to_string();
    let Some(rule) = rules.get(&part) else {
        return Err(bad(format!(
            "the part `{}` is not named in `map`",
            part.chars().take(64).collect::<String>()
        )));
    };
    if !received.insert(part) {
        return Err(bad("a file part is sent twice"));
    }
    Ok(rule)
}

fn internal(err: std::io::Error) -> Refusal {
    Refusal::App(AppError::Internal(err.into()))
}

/// Writes a file part to a spool file, hashing it on the way (and sealing it, when
/// its rule says so), refusing it once it is over its rule's limit; the file is
/// removed when its path is dropped.
async fn spool(
    field: &mut multer::Field<'_>,
    rule: &Rule,
    spool_dir: &std::path::Path,
    secret: &str,
    unreadable: &impl Fn(multer::Error) -> Refusal,
) -> Result<(std::fs::File, tempfile::TempPath, Fingerprint), Refusal> {
    let (file, path) = tempfile::Builder::new()
        .prefix("upload-")
        .tempfile_in(spool_dir)
        .map_err(internal)?
        .into_parts();
    let mut writer = SpoolWriter::new(file, 0, Some(Digest::default())).map_err(internal)?;
    if let Some(salt) = &rule.seal {
        writer = writer
            .sealing_file(secret, salt)
            .ok_or_else(|| internal(std::io::Error::other("a spool salt is malformed")))?;
    }
    let mut size = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(unreadable)? {
        size += chunk.len() as u64;
        if size > rule.limit {
            return Err(if rule.bucket_limit {
                Refusal::App(file_error(FileError::TooLarge { limit: rule.limit }))
            } else {
                too_large(format!(
                    "a file of this request may have {} bytes",
                    rule.limit
                ))
            });
        }
        writer.push(chunk).await.map_err(spool_failed)?;
    }
    let (mut file, digest) = writer.finish().await.map_err(spool_failed)?;
    file.seek(SeekFrom::Start(0)).map_err(internal)?;
    let fingerprint = digest.unwrap_or_default().finish();
    Ok((file, path, fingerprint))
}

/// A spool write that failed: a full disk is said so, anything else is internal.
fn spool_failed(err: std::io::Error) -> Refusal {
    let err = file_error(crate::files::FileError::from_io(err));
    Refusal::App(err)
}

/// Puts the spooled file at each of its map paths in the request(s), noting what
/// the spooling learnt under the upload index each path gets.
fn attach(
    batch: &mut BatchRequest,
    paths: &[String],
    filename: &str,
    content_type: Option<String>,
    file: &std::fs::File,
    known: &Spooled,
    fingerprints: &mut HashMap<usize, SpooledUploads>,
) -> Result<(), Refusal> {
    for var_path in paths {
        let upload = UploadValue {
            filename: filename.to_string(),
            content_type: content_type.clone(),
            content: file.try_clone().map_err(internal)?,
        };
        let (request_index, request, path) = match batch {
            BatchRequest::Single(request) => (0, request, var_path.as_str()),
            BatchRequest::Batch(requests) => {
                let Some((index, path)) = var_path.split_once('.') else {
                    continue;
                };
                let Some((index, request)) = index
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| requests.get_mut(i).map(|request| (i, request)))
                else {
                    continue;
                };
                (index, request, path)
            }
        };
        let before = request.uploads.len();
        request.set_upload(path, upload);
        if request.uploads.len() > before {
            fingerprints
                .entry(request_index)
                .or_default()
                .0
                .insert(before, known.another_upload());
        }
    }
    Ok(())
}

/// The whole of the next part, which must be called `name`.
async fn leading_part(
    multipart: &mut multer::Multipart<'_>,
    name: &str,
    unreadable: &impl Fn(multer::Error) -> Refusal,
) -> Result<axum::body::Bytes, Refusal> {
    let order = || {
        bad(format!(
            "the parts must come in the order `operations`, `map`, then the files; `{name}` is not where it belongs"
        ))
    };
    let field = multipart
        .next_field()
        .await
        .map_err(unreadable)?
        .ok_or_else(order)?;
    if field.name() != Some(name) {
        return Err(order());
    }
    field.bytes().await.map_err(unreadable)
}

/// The `createFile`s of the batch's mutations, by the map path of their file
/// (`variables.input.file`, or `1.variables.input.file` in a batch).
fn targets(state: &AppState, batch: &mut BatchRequest) -> HashMap<String, Target> {
    let mut found = HashMap::new();
    match batch {
        BatchRequest::Single(request) => targets_of(state, request, "", &mut found),
        BatchRequest::Batch(requests) => {
            for (index, request) in requests.iter_mut().enumerate() {
                targets_of(state, request, &format!("{index}."), &mut found);
            }
        }
    }
    found
}

fn targets_of(
    state: &AppState,
    request: &mut Request,
    prefix: &str,
    found: &mut HashMap<String, Target>,
) {
    // A query over the limits is refused at execution; it is not parsed here.
    if request.query.len() > state.config.graphql_max_query_bytes
        || state.parsed_queries.prepare(request).is_err()
    {
        return;
    }
    // Read where they stand, never copied: an input may name a large variable,
    // and a mutation may hold thousands of `createFile`s.
    let variables = std::mem::take(&mut request.variables);
    let name = request.operation_name.clone();
    if let Ok(document) = request.parsed_query() {
        targets_in(document, name, &variables, prefix, found);
    }
    request.variables = variables;
}

fn targets_in(
    document: &async_graphql::parser::types::ExecutableDocument,
    name: Option<String>,
    variables: &async_graphql::Variables,
    prefix: &str,
    found: &mut HashMap<String, Target>,
) {
    let operation = match (&document.operations, name) {
        (DocumentOperations::Single(op), _) => op,
        (DocumentOperations::Multiple(ops), Some(name)) => match ops.get(name.as_str()) {
            Some(op) => op,
            None => return,
        },
        _ => return,
    };
    if operation.node.ty != OperationType::Mutation {
        return;
    }
    for item in &operation.node.selection_set.node.items {
        let Selection::Field(field) = &item.node else {
            continue;
        };
        if field.node.name.node != CREATE_FILE {
            continue;
        }
        let Some(input) = field.node.get_argument("input") else {
            continue;
        };
        let (path, input) = match &input.node {
            Value::Variable(variable) => {
                let Some(ConstValue::Object(input)) = variables.get(variable) else {
                    continue;
                };
                (
                    format!("{prefix}variables.{variable}.file"),
                    Input::Sent(input),
                )
            }
            Value::Object(object) => match object.get("file") {
                Some(Value::Variable(variable)) => (
                    format!("{prefix}variables.{variable}"),
                    Input::Written(object, variables),
                ),
                _ => continue,
            },
            _ => continue,
        };
        let Some(bucket_id) = input.text("bucketId") else {
            continue;
        };
        found.insert(
            path,
            Target {
                bucket_id,
                name: input.text("name"),
            },
        );
    }
}

/// A `createFile` input, as sent in a variable or written in the query.
enum Input<'a> {
    Sent(&'a async_graphql::indexmap::IndexMap<async_graphql::Name, ConstValue>),
    Written(
        &'a async_graphql::indexmap::IndexMap<async_graphql::Name, Value>,
        &'a async_graphql::Variables,
    ),
}

impl Input<'_> {
    /// The text of its field `key`, when it is text.
    fn text(&self, key: &str) -> Option<String> {
        let value = match self {
            Input::Sent(input) => input.get(key),
            Input::Written(input, variables) => match input.get(key)? {
                Value::Variable(name) => variables.get(name),
                Value::String(text) => return Some(text.clone()),
                _ => None,
            },
        };
        match value? {
            ConstValue::String(text) => Some(text.clone()),
            _ => None,
        }
    }
}

/// Spool files untouched for this long belong to no running request.
const SPOOL_LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Removes the spool files a crashed process left in `dir`.
pub async fn sweep_spool(dir: std::path::PathBuf) {
    let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let stale = entry
            .metadata()
            .await
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age > SPOOL_LEFTOVER_AGE);
        if stale && tokio::fs::remove_file(entry.path()).await.is_ok() {
            tracing::info!(file = %entry.path().display(), "removed an upload a crash left behind");
        }
    }
}

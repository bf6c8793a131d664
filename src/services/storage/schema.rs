//! GraphQL of storage: `bucket`, `buckets`, `file`, `files`, `fileUpload`,
//! `createBucket`, `updateBucket`, `deleteBucket`, `createFile` (a multipart upload),
//! `createFileUpload` (a resumable upload whose chunks go to `uploadUrl`),
//! `updateFile`, `deleteFile` and `createFileToken` (a signed URL).

use async_graphql::dynamic::{
    Enum, EnumItem, Field, FieldFuture, FieldValue, InputValue, Object, ResolverContext,
    SubscriptionField, SubscriptionFieldFuture, TypeRef,
};
use async_graphql::{Name, Value};

use crate::AppState;
use crate::auth::delegation::Delegation;
use crate::auth::{Credential, ScopedAccess};
use crate::error::AppError;
use crate::files::Compression;
use crate::graphql::SchemaParts;
use crate::graphql::types::{
    DATETIME, app, caller, connection, connection_types, datetime, input, object, opt_string,
    page_request, prop, wants_total_count, with_connection_args,
};
use crate::services::realtime::resume;

use super::service::{self, BucketSettings, FileQuery, NewFile};
use super::{Bucket, FileStatus, StoredFile, tokens, upload};

fn compression_name(compression: Compression) -> &'static str {
    match compression {
        Compression::None => "NONE",
        Compression::Gzip => "GZIP",
        Compression::Zstd => "ZSTD",
    }
}

fn permissions_value(permissions: &[crate::auth::permissions::Permission]) -> Value {
    Value::List(
        permissions
            .iter()
            .map(|p| Value::from(p.to_string()))
            .collect(),
    )
}

pub fn bucket_value(bucket: &Bucket) -> Value {
    object([
        ("id", Value::from(bucket.id.as_str())),
        ("name", Value::from(bucket.name.as_str())),
        ("enabled", Value::from(bucket.enabled)),
        ("fileSecurity", Value::from(bucket.file_security)),
        ("permissions", permissions_value(&bucket.permissions)),
        ("maximumFileSize", Value::from(bucket.maximum_file_size)),
        (
            "allowedFileExtensions",
            Value::List(
                bucket
                    .allowed_file_extensions
                    .iter()
                    .map(|e| Value::from(e.as_str()))
                    .collect(),
            ),
        ),
        (
            "compression",
            Value::Enum(Name::new(compression_name(bucket.compression))),
        ),
        ("encryption", Value::from(bucket.encryption)),
        ("antivirus", Value::from(bucket.antivirus)),
        ("transformations", Value::from(bucket.transformations)),
        ("createdAt", datetime(bucket.created_at)),
        ("updatedAt", datetime(bucket.updated_at)),
    ])
}

/// The path of one of a file's binary endpoints (`download`, `view`, `preview`,
/// `upload`), absolute when `NIMBUS_PUBLIC_URL` is set.
pub fn file_url(state: &AppState, file: &StoredFile, endpoint: &str) -> String {
    let base = state
        .config
        .public_url
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/');
    format!(
        "{base}/v1/storage/buckets/{}/files/{}/{endpoint}?project={}",
        file.bucket_id, file.id, file.project_id
    )
}

pub fn file_value(state: &AppState, file: &StoredFile) -> Value {
    let ready = file.status == FileStatus::Ready;
    let url = |endpoint: &str| {
        if ready {
            Value::from(file_url(state, file, endpoint))
        } else {
            Value::Null
        }
    };
    object([
        ("id", Value::from(file.id.as_str())),
        ("bucketId", Value::from(file.bucket_id.as_str())),
        ("name", Value::from(file.name.as_str())),
        (
            "status",
            Value::Enum(Name::new(if ready { "READY" } else { "UPLOADING" })),
        ),
        ("mimeType", Value::from(file.mime_type.as_str())),
        ("size", Value::from(file.size)),
        ("storedSize", Value::from(file.stored_size)),
        (
            "checksum",
            if ready {
                Value::from(file.checksum.as_str())
            } else {
                Value::Null
            },
        ),
        (
            "compression",
            Value::Enum(Name::new(compression_name(file.encoding.compression))),
        ),
        ("encrypted", Value::from(file.encoding.salt.is_some())),
        ("chunkSize", Value::from(file.chunk_size)),
        ("chunksTotal", Value::from(file.chunks_total)),
        ("chunksUploaded", Value::from(file.chunks_uploaded)),
        ("permissions", permissions_value(&file.permissions)),
        ("downloadUrl", url("download")),
        ("viewUrl", url("view")),
        ("previewUrl", url("preview")),
        (
            "uploadUrl",
            if ready {
                Value::Null
            } else {
                Value::from(file_url(state, file, "upload"))
            },
        ),
        ("createdAt", datetime(file.created_at)),
        ("updatedAt", datetime(file.updated_at)),
    ])
}

crate::graphql_input! {
    "A new bucket."
    struct CreateBucketInput {
        "Id to give the bucket; omitted or `unique()` generates one."
        id: Option<String> as "ID",
        "Display name, 1-128 characters."
        name: String,
        "Bucket permissions, e.g. `[\"create(\\\"users\\\")\", \"read(\\\"any\\\")\"]`."
        permissions: Option<Vec<String>>,
        "Let each file's own permissions count too (default false)."
        file_security: Option<bool>,
        "Default true."
        enabled: Option<bool>,
        "Largest file in bytes (default 30 MiB; at most NIMBUS_STORAGE_MAX_FILE_SIZE)."
        maximum_file_size: Option<i64>,
        "Extensions accepted, like `[\"png\", \"jpg\"]`; empty accepts any (default)."
        allowed_file_extensions: Option<Vec<String>>,
        "Default NONE."
        compression: Option<String> as "FileCompression",
        "Encrypt files at rest (default true)."
        encryption: Option<bool>,
        "Scan files when NIMBUS_CLAMD is set (default true)."
        antivirus: Option<bool>,
        "Let clients have its images made into previews (default true; API keys and the console may either way)."
        transformations: Option<bool>,
    }
}

crate::graphql_input! {
    "A bucket's new settings; omitted fields keep their value."
    struct UpdateBucketInput {
        "The bucket."
        id: String as "ID",
        "Display name, 1-128 characters."
        name: Option<String>,
        "Bucket permissions, e.g. `[\"create(\\\"users\\\")\", \"read(\\\"any\\\")\"]`."
        permissions: Option<Vec<String>>,
        "Let each file's own permissions count too (default false)."
        file_security: Option<bool>,
        "Default true."
        enabled: Option<bool>,
        "Largest file in bytes (default 30 MiB; at most NIMBUS_STORAGE_MAX_FILE_SIZE)."
        maximum_file_size: Option<i64>,
        "Extensions accepted, like `[\"png\", \"jpg\"]`; empty accepts any (default)."
        allowed_file_extensions: Option<Vec<String>>,
        "Default NONE."
        compression: Option<String> as "FileCompression",
        "Encrypt files at rest (default true)."
        encryption: Option<bool>,
        "Scan files when NIMBUS_CLAMD is set (default true)."
        antivirus: Option<bool>,
        "Let clients have its images made into previews (default true; API keys and the console may either way)."
        transformations: Option<bool>,
    }
}

crate::graphql_input! {
    "The bucket to delete, with all its files."
    struct DeleteBucketInput {
        "The bucket."
        id: String as "ID",
    }
}

/// A bucket's id (none: generate one) and settings, from either input.
struct BucketInput {
    id: Option<String>,
    name: Option<String>,
    permissions: Option<Vec<String>>,
    file_security: Option<bool>,
    enabled: Option<bool>,
    maximum_file_size: Option<i64>,
    allowed_file_extensions: Option<Vec<String>>,
    compression: Option<String>,
    encryption: Option<bool>,
    antivirus: Option<bool>,
    transformations: Option<bool>,
}

/// Both bucket inputs carry the same settings; `$id` and `$name` say how each
/// holds the two fields they differ in.
macro_rules! bucket_input_from {
    ($input:ty, $id:expr, $name:expr) => {
        impl From<$input> for BucketInput {
            fn from(given: $input) -> Self {
                BucketInput {
                    id: $id(given.id),
                    name: $name(given.name),
                    permissions: given.permissions,
                    file_security: given.file_security,
                    enabled: given.enabled,
                    maximum_file_size: given.maximum_file_size,
                    allowed_file_extensions: given.allowed_file_extensions,
                    compression: given.compression,
                    encryption: given.encryption,
                    antivirus: given.antivirus,
                    transformations: given.transformations,
                }
            }
        }
    };
}

bucket_input_from!(CreateBucketInput, |id| id, Some);
bucket_input_from!(UpdateBucketInput, Some, |name| name);

impl BucketInput {
    fn into_parts(self) -> Result<(Option<String>, BucketSettings), AppError> {
        let compression = self
            .compression
            .map(|c| {
                c.to_ascii_lowercase()
                    .parse::<Compression>()
                    .map_err(|_| AppError::invalid("compression", "NONE, GZIP or ZSTD"))
            })
            .transpose()?;
        Ok((
            self.id,
            BucketSettings {
                name: self.name,
                permissions: self.permissions,
                file_security: self.file_security,
                enabled: self.enabled,
                maximum_file_size: self.maximum_file_size,
                allowed_file_extensions: self.allowed_file_extensions,
                compression,
                encryption: self.encryption,
                antivirus: self.antivirus,
                transformations: self.transformations,
            },
        ))
    }
}

crate::graphql_input! {
    "A file whose bytes will follow in chunks (`PUT uploadUrl` with `Content-Range`)."
    struct CreateFileUploadInput {
        "The bucket."
        bucket_id: String as "ID",
        "Id to give the file; omitted or `unique()` generates one."
        file_id: Option<String> as "ID",
        "File name, with its extension."
        name: String,
        "Total size in bytes."
        size: i64,
        "The file's permissions: `read`, `update`, `delete` (`write` is update and delete; files are created through the bucket's `create`); default for a signed-in user: read, update and delete for themselves."
        permissions: Option<Vec<String>>,
    }
}

crate::graphql_input! {
    "A file's new name and/or permissions."
    struct UpdateFileInput {
        "The bucket."
        bucket_id: String as "ID",
        "The file."
        file_id: String as "ID",
        "New name."
        name: Option<String>,
        "New permissions (replace the old): `read`, `update`, `delete`, or `write` for update and delete."
        permissions: Option<Vec<String>>,
    }
}

crate::graphql_input! {
    "A file to delete (or an unfinished upload to abandon)."
    struct DeleteFileInput {
        "The bucket."
        bucket_id: String as "ID",
        "The file."
        file_id: String as "ID",
    }
}

crate::graphql_input! {
    "A file to mint a signed URL for."
    struct CreateFileTokenInput {
        "The bucket."
        bucket_id: String as "ID",
        "The file."
        file_id: String as "ID",
        "Seconds it stays valid: 1 to 604800 (a week); default 3600."
        expires_in: Option<i64>,
    }
}

/// The upload of a `createFile` input, from the multipart request, with what the
/// spooling learnt of it.
fn uploaded(
    ctx: &ResolverContext<'_>,
) -> Result<(async_graphql::UploadValue, Option<service::Spooled>), AppError> {
    let missing = || {
        AppError::invalid(
            "file",
            "send the file as a multipart upload (the GraphQL multipart request spec)",
        )
    };
    let input = ctx.args.get("input").ok_or_else(missing)?;
    let input = input.object().map_err(|_| missing())?;
    let upload = input
        .get("file")
        .and_then(|file| file.upload().ok())
        .ok_or_else(missing)?;
    let spooled = ctx
        .data_opt::<service::SpooledUploads>()
        .and_then(|spooled| spooled.0.get(&upload.0))
        .cloned();
    let value = upload.value(ctx.ctx).map_err(|_| missing())?;
    Ok((value, spooled))
}

fn required_string(ctx: &ResolverContext<'_>, name: &str) -> Result<String, AppError> {
    Ok(opt_string(ctx, name)?.unwrap_or_default())
}

crate::graphql_input! {
    "A file uploaded in one multipart request."
    struct CreateFileInput {
        "The bucket."
        bucket_id: String as "ID",
        "Id to give the file; omitted or `unique()` generates one."
        file_id: Option<String> as "ID",
        "File name; default: the uploaded file's name."
        name: Option<String>,
        // Read through the upload API, not serde.
        #[allow(dead_code)]
        "The bytes (multipart request spec)."
        file: serde_json::Value as "Upload",
        "The file's permissions: `read`, `update`, `delete` (`write` is update and delete; files are created through the bucket's `create`); default for a signed-in user: read, update and delete for themselves."
        permissions: Option<Vec<String>>,
    }
}

fn id() -> TypeRef {
    TypeRef::named_nn(TypeRef::ID)
}

fn string() -> TypeRef {
    TypeRef::named_nn(TypeRef::STRING)
}

fn boolean() -> TypeRef {
    TypeRef::named_nn(TypeRef::BOOLEAN)
}

fn int() -> TypeRef {
    TypeRef::named_nn(TypeRef::INT)
}

fn strings() -> TypeRef {
    TypeRef::named_nn_list_nn(TypeRef::STRING)
}

pub fn register(parts: &mut SchemaParts, _project: &crate::services::projects::Project) {
    register_types(parts);
    register_queries(parts);
    register_mutations(parts);
    register_subscription(parts);
}

/// A published file (the JSON of [`file_value`]) as a `File` value again: its enum
/// fields become enums.
fn file_from_payload(payload: &serde_json::Value) -> Value {
    let mut value = Value::from_json(payload.clone()).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        for field in ["status", "compression"] {
            if let Some(Value::String(name)) = map.get(field).cloned() {
                map.insert(Name::new(field), Value::Enum(Name::new(name)));
            }
        }
    }
    value
}

/// A `fileChanged` subscription: the events on one bucket's (or file's) channel.
struct FileWatch {
    channel: String,
    /// The position of `after:`, when resuming.
    after: Option<i64>,
    cursors: std::sync::Arc<resume::Cursors>,
}

impl crate::services::realtime::watch::Watch for FileWatch {
    fn outcome(
        &self,
        event: &crate::bus::Event,
        _caller: &crate::auth::Caller,
    ) -> Option<&'static str> {
        Some(match event.action_on(&self.channel)? {
            "create" => "CREATE",
            "delete" => "DELETE",
            _ => "UPDATE",
        })
    }

    fn value(&self, event: &crate::bus::Event, outcome: &'static str) -> Value {
        object([
            ("type", Value::Enum(Name::new(outcome))),
            ("node", file_from_payload(&event.payload)),
            ("cursor", self.cursors.value(event)),
        ])
    }

    fn resume_after(&self) -> Option<i64> {
        self.after
    }
}

fn register_subscription(parts: &mut SchemaParts) {
    parts.add_type(file_event_type_type());
    parts.add_type(file_event_type());
    parts.subscription(file_changed());
}

fn file_event_type_type() -> Enum {
    Enum::new("FileEventType")
        .description("What happened to a file.")
        .item(
            EnumItem::new("CREATE")
                .description("It was stored (a resumable upload: when its last chunk arrived)."),
        )
        .item(EnumItem::new("UPDATE").description("Its name or permissions changed."))
        .item(EnumItem::new("DELETE").description("It was deleted; `node` is the file as it was."))
}

fn file_event_type() -> Object {
    Object::new("FileEvent")
        .description("A change to a file of a watched bucket.")
        .field(prop(
            "type",
            TypeRef::named_nn("FileEventType"),
            "What happened.",
        ))
        .field(prop(
            "node",
            TypeRef::named_nn("File"),
            "The file after the change (before it, for a delete).",
        ))
        .field(prop(
            "cursor",
            TypeRef::named(TypeRef::STRING),
            resume::CURSOR_DESCRIPTION,
        ))
}

fn file_changed() -> SubscriptionField {
    SubscriptionField::new("fileChanged", TypeRef::named_nn("FileEvent"), |ctx| {
        SubscriptionFieldFuture::new(async move {
            if let Some(rendering) = crate::services::realtime::watch::prepared(&ctx) {
                return Ok(rendering);
            }
            let state = app(&ctx)?.clone();
            let caller = caller(&ctx)?.clone();
            let bucket_id = required_string(&ctx, "bucketId")?;
            crate::db::ids::validate("bucketId", &bucket_id)?;
            let file_id = opt_string(&ctx, "fileId")?;
            if let Some(id) = &file_id {
                crate::db::ids::validate("fileId", id)?;
            }
            let channel = match &file_id {
                Some(id) => format!("buckets.{bucket_id}.files.{id}"),
                None => format!("buckets.{bucket_id}.files"),
            };
            let after = resume::after_argument(&ctx, &caller.project.id)?;
            let cursors = state.cursors.clone();
            let watch = FileWatch { channel, after, cursors };
            Ok(crate::services::realtime::watch::follow(&ctx, state, caller, watch))
        })
    })
    .description("Changes to the files of a bucket (or to one file): CREATE, UPDATE, DELETE, for the files the caller may read at that moment.")
    .argument(InputValue::new("bucketId", TypeRef::named_nn(TypeRef::ID)).description("The bucket."))
    .argument(InputValue::new("fileId", TypeRef::named(TypeRef::ID)).description("Only this file."))
    .argument(resume::after_input())
}

fn register_types(parts: &mut SchemaParts) {
    parts.add_type(file_compression_type());
    parts.add_type(file_status_type());
    parts.add_type(bucket_type());
    parts.add_types(connection_types("Bucket", "buckets"));
    parts.add_type(file_type());
    parts.add_types(connection_types("File", "files"));
    parts.add_type(file_token_type());
    for (name, plural) in [
        ("DeleteBucketPayload", "bucket"),
        ("DeleteFilePayload", "file"),
    ] {
        parts.add_type(
            Object::new(name)
                .description(format!("The result of deleting a {plural}."))
                .field(prop("deletedId", id(), "Id of what was deleted.")),
        );
    }
    parts.add_input::<CreateBucketInput>();
    parts.add_input::<UpdateBucketInput>();
    parts.add_input::<DeleteBucketInput>();
    parts.add_input::<CreateFileInput>();
    parts.add_input::<CreateFileUploadInput>();
    parts.add_input::<UpdateFileInput>();
    parts.add_input::<DeleteFileInput>();
    parts.add_input::<CreateFileTokenInput>();
}

fn file_compression_type() -> Enum {
    Enum::new("FileCompression")
        .description("How a bucket compresses the files it stores.")
        .item(EnumItem::new("NONE").description("Stored as sent."))
        .item(EnumItem::new("GZIP").description("gzip."))
        .item(EnumItem::new("ZSTD").description("Zstandard."))
}

fn file_status_type() -> Enum {
    Enum::new("FileStatus")
        .description("Where a file is in its life.")
        .item(
            EnumItem::new("UPLOADING").description(
                "A resumable upload still receiving chunks; seen only by its uploader.",
            ),
        )
        .item(EnumItem::new("READY").description("Complete: listed and served."))
}

fn bucket_type() -> Object {
    Object::new("Bucket")
        .description("A container of files with its rules: size and extension limits, compression, encryption at rest, antivirus and permissions.")
        .field(prop("id", id(), "Unique id within the project."))
        .field(prop("name", string(), "Display name."))
        .field(prop("enabled", boolean(), "When false, clients can neither read nor write its files."))
        .field(prop("fileSecurity", boolean(), "Whether each file's own permissions count beside the bucket's."))
        .field(prop("permissions", strings(), "Who may `create` files in it and `read`, `update`, `delete` all of them, e.g. `read(\"any\")`."))
        .field(prop("maximumFileSize", int(), "Largest file accepted, in bytes."))
        .field(prop("allowedFileExtensions", strings(), "Extensions accepted (lower case, no dot); empty accepts any."))
        .field(prop("compression", TypeRef::named_nn("FileCompression"), "How new files are compressed at rest."))
        .field(prop("encryption", boolean(), "Whether new files are encrypted at rest (AES-256-GCM)."))
        .field(prop("antivirus", boolean(), "Whether new files are scanned when the server has a virus scanner (`NIMBUS_CLAMD`)."))
        .field(prop("transformations", boolean(), "Whether clients may have its images made into previews (Appwrite's `transformations`); API keys and the console may either way."))
        .field(prop("createdAt", TypeRef::named_nn(DATETIME), "When the bucket was created."))
        .field(prop("updatedAt", TypeRef::named_nn(DATETIME), "When the bucket last changed."))
}

fn file_type() -> Object {
    Object::new("File")
        .description("A file in a bucket. Its bytes are served by the URLs below, never through GraphQL.")
        .field(prop("id", id(), "Unique id within the bucket."))
        .field(prop("bucketId", id(), "The bucket."))
        .field(prop("name", string(), "File name, with its extension."))
        .field(prop("status", TypeRef::named_nn("FileStatus"), "Complete, or still receiving chunks."))
        .field(prop("mimeType", string(), "Sniffed from the content, never taken from the client."))
        .field(prop("size", int(), "Size in bytes (while uploading: the announced size)."))
        .field(prop("storedSize", int(), "Bytes at rest, after compression and encryption."))
        .field(prop("checksum", TypeRef::named(TypeRef::STRING), "SHA-256 of the content, lower-case hex; downloads carry it as `Repr-Digest`."))
        .field(prop("compression", TypeRef::named_nn("FileCompression"), "How it is compressed at rest."))
        .field(prop("encrypted", boolean(), "Whether it is encrypted at rest."))
        .field(prop("chunkSize", int(), "Bytes per chunk of a resumable upload (0 for a single-request upload)."))
        .field(prop("chunksTotal", int(), "Chunks the upload has in all."))
        .field(prop("chunksUploaded", int(), "Chunks received so far."))
        .field(prop("permissions", strings(), "The file's own permissions (they count when the bucket has `fileSecurity`)."))
        .field(prop("downloadUrl", TypeRef::named(TypeRef::STRING), "Serves the bytes as an attachment. Null while uploading."))
        .field(prop("viewUrl", TypeRef::named(TypeRef::STRING), "Serves the bytes inline with their MIME type; supports `Range`. Null while uploading."))
        .field(preview_url_field())
        .field(prop("uploadUrl", TypeRef::named(TypeRef::STRING), "Where the chunks of a resumable upload go (`PUT` with `Content-Range`). Null once complete."))
        .field(prop("createdAt", TypeRef::named_nn(DATETIME), "When the file was created."))
        .field(prop("updatedAt", TypeRef::named_nn(DATETIME), "When the file last changed."))
}

fn preview_url_field() -> Field {
    Field::new("previewUrl", TypeRef::named(TypeRef::STRING), |ctx| {
    let value = preview_url(&ctx);
    FieldFuture::from_value(value)
})
.description("Where an image preview is served (`/preview`), with these parameters; see the README for all of them. Null while uploading.")
.argument(InputValue::new("width", TypeRef::named(TypeRef::INT)).description("0–4000 px."))
.argument(InputValue::new("height", TypeRef::named(TypeRef::INT)).description("0–4000 px."))
.argument(InputValue::new("output", TypeRef::named(TypeRef::STRING)).description("jpg, png, gif or webp."))
}

fn file_token_type() -> Object {
    Object::new("FileToken")
        .description("A signed URL set for one file: anyone holding it may read the file until it expires (for `<img>` tags and links).")
        .field(prop("token", string(), "The token; add it as `token=` to a file URL."))
        .field(prop("expiresAt", TypeRef::named_nn(DATETIME), "When it stops working."))
        .field(prop("downloadUrl", string(), "The download URL with the token."))
        .field(prop("viewUrl", string(), "The view URL with the token."))
        .field(prop("previewUrl", string(), "The preview URL with the token; add preview parameters to it."))
}

/// `previewUrl(width, height, output)`: the parent's preview URL with the given
/// parameters.
fn preview_url(ctx: &ResolverContext<'_>) -> Option<Value> {
    let base = match crate::graphql::types::parent_value(ctx) {
        Some(Value::Object(map)) => match map.get("previewUrl") {
            Some(Value::String(url)) => url.clone(),
            _ => return None,
        },
        _ => return None,
    };
    let mut url = base;
    for name in ["width", "height"] {
        if let Some(n) = ctx.args.get(name).and_then(|v| v.i64().ok()) {
            url.push_str(&format!("&{name}={n}"));
        }
    }
    if let Some(output) = ctx.args.get("output").and_then(|v| v.string().ok()) {
        let output: String = output
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect();
        url.push_str(&format!("&output={output}"));
    }
    Some(Value::from(url))
}

fn register_queries(parts: &mut SchemaParts) {
    parts.query(bucket());
    parts.query(buckets());
    parts.query(file());
    parts.query(files());
    parts.query(file_upload());
}

fn bucket() -> Field {
    Field::new("bucket", TypeRef::named_nn("Bucket"), |ctx| {
        FieldFuture::new(async move {
            let id = required_string(&ctx, "id")?;
            let bucket = service::get_bucket(app(&ctx)?, &caller(&ctx)?.require()?, &id).await?;
            Ok(Some(FieldValue::value(bucket_value(&bucket))))
        })
    })
    .description("A bucket (a server with `buckets.read`).")
    .argument(InputValue::new("id", id()).description("The bucket."))
}

fn buckets() -> Field {
    with_connection_args(Field::new(
        "buckets",
        TypeRef::named_nn("BucketConnection"),
        |ctx| {
            FieldFuture::new(async move {
                let page = page_request(&ctx)?;
                let (buckets, total) = service::list_buckets(
                    app(&ctx)?,
                    &caller(&ctx)?.require()?,
                    &page,
                    wants_total_count(&ctx),
                )
                .await?;
                Ok(Some(FieldValue::value(connection(
                    &page,
                    buckets,
                    total,
                    |b| &b.id,
                    bucket_value,
                ))))
            })
        },
    ))
    .description("Buckets by id (a server with `buckets.read`).")
}

fn file() -> Field {
    Field::new("file", TypeRef::named_nn("File"), |ctx| {
        FieldFuture::new(async move {
            let state = app(&ctx)?;
            let bucket_id = required_string(&ctx, "bucketId")?;
            let file_id = required_string(&ctx, "fileId")?;
            let file = service::get_file(
                state,
                &ScopedAccess::of(caller(&ctx)?)?,
                &bucket_id,
                &file_id,
            )
            .await?;
            Ok(Some(FieldValue::value(file_value(state, &file))))
        })
    })
    .description("A complete file the caller may read.")
    .argument(InputValue::new("bucketId", id()).description("The bucket."))
    .argument(InputValue::new("fileId", id()).description("The file."))
}

fn files() -> Field {
    with_connection_args(Field::new("files", TypeRef::named_nn("FileConnection"), |ctx| {
        FieldFuture::new(async move {
            let state = app(&ctx)?;
            let page = page_request(&ctx)?;
            let bucket_id = required_string(&ctx, "bucketId")?;
            let query = FileQuery {
                search: opt_string(&ctx, "search")?,
                mime_type_prefix: opt_string(&ctx, "mimeType")?,
            };
            let (files, total) = service::list_files(state, &ScopedAccess::of(caller(&ctx)?)?, &bucket_id, &query, &page, wants_total_count(&ctx)).await?;
            Ok(Some(FieldValue::value(connection(&page, files, total, |f| &f.id, |f| file_value(state, f)))))
        })
    }))
    .description("Complete files of a bucket that the caller may read, by id; `totalCount` counts only those.")
    .argument(InputValue::new("bucketId", id()).description("The bucket."))
    .argument(InputValue::new("search", TypeRef::named(TypeRef::STRING)).description("Only files whose name contains this (case-insensitive)."))
    .argument(InputValue::new("mimeType", TypeRef::named(TypeRef::STRING)).description("Only files whose MIME type starts with this, e.g. `image/`."))
}

fn file_upload() -> Field {
    Field::new("fileUpload", TypeRef::named_nn("File"), |ctx| {
        FieldFuture::new(async move {
            let state = app(&ctx)?;
            let bucket_id = required_string(&ctx, "bucketId")?;
            let file_id = required_string(&ctx, "fileId")?;
            let file = upload::status(state, &ScopedAccess::of(caller(&ctx)?)?, &bucket_id, &file_id).await?;
            Ok(Some(FieldValue::value(file_value(state, &file))))
        })
    })
    .description("An unfinished resumable upload of the caller's: how many chunks arrived, so a broken upload resumes from the next one.")
    .argument(InputValue::new("bucketId", id()).description("The bucket."))
    .argument(InputValue::new("fileId", id()).description("The file."))
}

fn register_mutations(parts: &mut SchemaParts) {
    parts.mutation(create_bucket());
    parts.mutation(update_bucket());
    parts.mutation(delete_bucket());
    parts.mutation(create_file());
    parts.mutation(create_file_upload());
    parts.mutation(update_file());
    parts.mutation(delete_file());
    parts.mutation(create_file_token());
}

fn create_bucket() -> Field {
    Field::new("createBucket", TypeRef::named_nn("Bucket"), |ctx| {
        FieldFuture::new(async move {
            let (id, settings) =
                BucketInput::from(input::<CreateBucketInput>(&ctx)?).into_parts()?;
            let bucket =
                service::create_bucket(app(&ctx)?, &caller(&ctx)?.require()?, id, settings).await?;
            Ok(Some(FieldValue::value(bucket_value(&bucket))))
        })
    })
    .description("Creates a bucket (a server with `buckets.write`).")
    .argument(CreateBucketInput::argument())
}

fn update_bucket() -> Field {
    Field::new("updateBucket", TypeRef::named_nn("Bucket"), |ctx| {
        FieldFuture::new(async move {
            let (id, settings) = BucketInput::from(input::<UpdateBucketInput>(&ctx)?).into_parts()?;
            let id = id.unwrap_or_default();
            let bucket = service::update_bucket(app(&ctx)?, &caller(&ctx)?.require()?, &id, settings).await?;
            Ok(Some(FieldValue::value(bucket_value(&bucket))))
        })
    })
    .description("Changes a bucket's settings (a server with `buckets.write`). Compression and encryption apply to files stored from then on.")
    .argument(UpdateBucketInput::argument())
}

fn delete_bucket() -> Field {
    Field::new(
        "deleteBucket",
        TypeRef::named_nn("DeleteBucketPayload"),
        |ctx| {
            FieldFuture::new(async move {
                let input: DeleteBucketInput = input(&ctx)?;
                service::delete_bucket(app(&ctx)?, &caller(&ctx)?.require()?, &input.id).await?;
                Ok(Some(FieldValue::value(object([(
                    "deletedId",
                    Value::from(input.id),
                )]))))
            })
        },
    )
    .description("Deletes a bucket with all its files (a server with `buckets.write`).")
    .argument(DeleteBucketInput::argument())
}

/// The address of the request's client, as rate limits key guests.
fn client_ip(ctx: &async_graphql::dynamic::ResolverContext<'_>) -> String {
    ctx.data::<crate::services::users::service::ClientInfo>()
        .map(|client| client.ip.clone())
        .unwrap_or_default()
}

fn create_file() -> Field {
    Field::new("createFile", TypeRef::named("File"), |ctx| {
        FieldFuture::new(async move {
            let state = app(&ctx)?;
            let given: CreateFileInput = input(&ctx)?;
            let (upload, spooled) = uploaded(&ctx)?;
            let new = NewFile {
                bucket_id: given.bucket_id,
                file_id: given.file_id,
                name: given.name.unwrap_or_else(|| upload.filename.clone()),
                permissions: given.permissions,
            };
            let access = ScopedAccess::of(caller(&ctx)?)?;
            // Counted where a file is made, however the request names it
            // (aliases, fragments, one part for many paths).
            service::count_upload(state, &access, &client_ip(&ctx)).await?;
            let file = service::create_file(state, &access, new, upload.content, spooled.as_ref()).await?;
            Ok(file.map(|file| FieldValue::value(file_value(state, &file))))
        })
    })
    .description("Uploads a file in one multipart request (the GraphQL multipart request spec, as Apollo and urql upload links send it). Clients need the bucket's `create` permission; servers `files.write`. Answers `null` when the caller may not read the file it wrote (the upload stands). Large files: `createFileUpload`.")
    .argument(CreateFileInput::argument())
}

fn create_file_upload() -> Field {
    Field::new("createFileUpload", TypeRef::named_nn("File"), |ctx| {
        FieldFuture::new(async move {
            let state = app(&ctx)?;
            let given: CreateFileUploadInput = input(&ctx)?;
            let new = NewFile {
                bucket_id: given.bucket_id,
                file_id: given.file_id,
                name: given.name,
                permissions: given.permissions,
            };
            let access = ScopedAccess::of(caller(&ctx)?)?;
            service::count_upload(state, &access, &client_ip(&ctx)).await?;
            let file = upload::start(state, &access, new, given.size).await?;
            Ok(Some(FieldValue::value(file_value(state, &file))))
        })
    })
    .description("Starts a resumable upload: send the bytes in `chunkSize` chunks, in order, each as `PUT uploadUrl` with `Content-Range: bytes START-END/SIZE`. The file appears when the last chunk arrives; `fileUpload` tells where a broken upload stands. Needs a signed-in user or an API key.")
    .argument(CreateFileUploadInput::argument())
}

fn update_file() -> Field {
    Field::new("updateFile", TypeRef::named("File"), |ctx| {
        FieldFuture::new(async move {
            let state = app(&ctx)?;
            let given: UpdateFileInput = input(&ctx)?;
            let file = service::update_file(state, &ScopedAccess::of(caller(&ctx)?)?, &given.bucket_id, &given.file_id, given.name, given.permissions).await?;
            Ok(file.map(|file| FieldValue::value(file_value(state, &file))))
        })
    })
    .description("Renames a file and/or replaces its permissions (its `update` permission, or `files.write`). Answers `null` when the caller may not read the file as changed (the change stands).")
    .argument(UpdateFileInput::argument())
}

fn delete_file() -> Field {
    Field::new("deleteFile", TypeRef::named_nn("DeleteFilePayload"), |ctx| {
        FieldFuture::new(async move {
            let given: DeleteFileInput = input(&ctx)?;
            service::delete_file(app(&ctx)?, &ScopedAccess::of(caller(&ctx)?)?, &given.bucket_id, &given.file_id).await?;
            Ok(Some(FieldValue::value(object([("deletedId", Value::from(given.file_id))]))))
        })
    })
    .description("Deletes a file (its `delete` permission, or `files.write`), or abandons an unfinished upload of the caller's.")
    .argument(DeleteFileInput::argument())
}

fn create_file_token() -> Field {
    Field::new("createFileToken", TypeRef::named_nn("FileToken"), |ctx| {
        FieldFuture::new(async move {
            let state = app(&ctx)?;
            let given: CreateFileTokenInput = input(&ctx)?;
            let lifetime = given.expires_in.unwrap_or(tokens::DEFAULT_LIFETIME_SECS);
            if !(1..=tokens::MAX_LIFETIME_SECS).contains(&lifetime) {
                return Err(AppError::invalid("expiresIn", format!("1 to {} seconds", tokens::MAX_LIFETIME_SECS)).into());
            }
            let caller = caller(&ctx)?;
            let file = service::get_file(state, &ScopedAccess::of(caller)?, &given.bucket_id, &given.file_id).await?;
            let minted_by = match (&caller.credential, caller.key()) {
                (Credential::Session(me), _) => tokens::Minter::User {
                    user_id: me.user.id.clone(),
                    session_id: me.session.id.clone(),
                },
                (_, Some(key)) => match Delegation::of(key).key_id() {
                    Some(key_id) => tokens::Minter::Key(key_id.to_string()),
                    None => tokens::Minter::Operator,
                },
                _ => tokens::Minter::Guest,
            };
            // A JWT lends no longer than it lives itself.
            let jwt_ends = match &caller.credential {
                Credential::Session(me) => me.jwt_expires_at,
                _ => None,
            };
            let expires_at = (crate::db::now_millis() + lifetime * 1000).min(jwt_ends.unwrap_or(i64::MAX));
            let grant = tokens::Grant {
                project_id: file.project_id.clone(),
                bucket_id: file.bucket_id.clone(),
                file_id: file.id.clone(),
                file_created_at: file.created_at,
                expires_at,
                minted_by,
            };
            let token = tokens::mint(&state.secret, &grant);
            let with_token = |endpoint: &str| format!("{}&token={token}", file_url(state, &file, endpoint));
            Ok(Some(FieldValue::value(object([
                ("token", Value::from(token.as_str())),
                ("expiresAt", datetime(grant.expires_at)),
                ("downloadUrl", Value::from(with_token("download"))),
                ("viewUrl", Value::from(with_token("view"))),
                ("previewUrl", Value::from(with_token("preview"))),
            ]))))
        })
    })
    .description("Mints a signed URL for a file the caller may read, so that it can be used where no credentials travel (`<img src>`, a shared link). It works until it expires, and only while its maker could still read the file: a user's session must still hold and the user's roles read the file as it is now, a key must still exist (`INVALID_FILE_TOKEN` once they do not).")
    .argument(CreateFileTokenInput::argument())
}

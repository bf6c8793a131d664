//! Storage rules: who may manage buckets (servers with `buckets.*` scopes) and who
//! may create, read, change and delete files (servers with `files.*` scopes; clients
//! through the bucket's permissions and, with `fileSecurity`, the file's own), the
//! limits a bucket sets, and the events every file change publishes.

use std::future::Future;

use tokio::io::{AsyncRead, AsyncSeekExt as _};

use crate::AppState;
use crate::auth::permissions::{Action, Permission, allows};
use crate::auth::scopes::{BucketsRead, BucketsWrite, FilesRead, FilesWrite, ScopeMarker};
use crate::auth::{AdminGrant, Grant, ScopedAccess};
use crate::bus::{BusMessage, log};
use crate::db::{DbErrorExt as _, Page, ids, now_millis};
use crate::error::{AppError, AppResult, codes};
use crate::files::{
    Compression, Encoding, FileError, Fingerprint, Key, OwnInput, WriteOptions, Written,
};

use super::{Bucket, FileStatus, StoredFile, store};

const MAX_NAME: usize = 128;
const MAX_FILE_NAME: usize = 255;
const MAX_EXTENSIONS: usize = 100;
const MAX_EXTENSION_LEN: usize = 32;
/// A bucket's limit when none is given, as in Appwrite.
pub const DEFAULT_MAXIMUM_FILE_SIZE: u64 = 30 * 1024 * 1024;

/// Maps a file store failure to what a client is told; the cause of anything
/// unexpected goes to the log only.
pub fn file_error(err: FileError) -> AppError {
    match err {
        FileError::TooLarge { limit } => AppError::Invalid {
            code: codes::FILE_TOO_LARGE,
            field: "file".into(),
            reason: format!("the file is larger than the bucket's limit of {limit} bytes"),
        },
        FileError::InvalidKey => AppError::Invalid {
            code: codes::INVALID_ID,
            field: "fileId".into(),
            reason: "not a valid id".into(),
        },
        FileError::Full => AppError::StorageFull,
        FileError::Busy => AppError::Invalid {
            code: codes::UPLOAD_CHUNK_OUT_OF_ORDER,
            field: "Content-Range".into(),
            reason: "another request is delivering a chunk of this upload; ask where it stands"
                .into(),
        },
        FileError::Unreadable => AppError::FileUnreadable,
        FileError::Input(cause) => AppError::Invalid {
            code: codes::UPLOAD_INTERRUPTED,
            field: "file".into(),
            reason: format!("the upload broke off: {cause}"),
        },
        FileError::NotFound => {
            AppError::Internal(anyhow::anyhow!("a ready file has no object in the store"))
        }
        FileError::Store(cause) => AppError::Internal(cause),
    }
}

fn bucket_not_found(id: &str) -> AppError {
    AppError::NotFound {
        what: "bucket",
        id: id.chars().take(64).collect(),
    }
}

pub(crate) fn file_not_found(id: &str) -> AppError {
    AppError::NotFound {
        what: "file",
        id: id.chars().take(64).collect(),
    }
}

/// The upload a request was sending was deleted (or swept) meanwhile: nothing of
/// what it sent is kept, and whoever has claimed the id since is left alone.
pub fn claim_lost(id: &str) -> AppError {
    AppError::Invalid {
        code: codes::UPLOAD_NOT_FOUND,
        field: "fileId".into(),
        reason: format!(
            "the upload of `{}` was deleted while this request was sending it; nothing of it was kept",
            id.chars().take(64).collect::<String>()
        ),
    }
}

// ---------------------------------------------------------------------------
// Buckets

/// The settings of a new bucket; `None` takes the default.
#[derive(Debug, Default)]
pub struct BucketSettings {
    pub name: Option<String>,
    pub permissions: Option<Vec<String>>,
    pub file_security: Option<bool>,
    pub enabled: Option<bool>,
    pub maximum_file_size: Option<i64>,
    pub allowed_file_extensions: Option<Vec<String>>,
    pub compression: Option<Compression>,
    pub encryption: Option<bool>,
    pub antivirus: Option<bool>,
    pub transformations: Option<bool>,
}

fn apply_settings(state: &AppState, bucket: &mut Bucket, s: BucketSettings) -> AppResult<()> {
    if let Some(name) = s.name {
        let name = name.trim().to_string();
        if name.is_empty() || name.chars().count() > MAX_NAME {
            return Err(AppError::invalid(
                "name",
                format!("1 to {MAX_NAME} characters"),
            ));
        }
        bucket.name = name;
    }
    if let Some(given) = s.permissions {
        bucket.permissions = Access::container_permissions(&given)?;
    }
    if let Some(flag) = s.file_security {
        bucket.file_security = flag;
    }
    if let Some(flag) = s.enabled {
        bucket.enabled = flag;
    }
    if let Some(size) = s.maximum_file_size {
        let cap = state.config.storage_max_file_size;
        if size < 1 || size as u64 > cap {
            return Err(AppError::invalid(
                "maximumFileSize",
                format!("between 1 and {cap} bytes (NIMBUS_STORAGE_MAX_FILE_SIZE)"),
            ));
        }
        bucket.maximum_file_size = size as u64;
    }
    if let Some(extensions) = s.allowed_file_extensions {
        bucket.allowed_file_extensions = checked_extensions(extensions)?;
    }
    if let Some(compression) = s.compression {
        bucket.compression = compression;
    }
    if let Some(flag) = s.encryption {
        bucket.encryption = flag;
    }
    if let Some(flag) = s.antivirus {
        bucket.antivirus = flag;
    }
    if let Some(flag) = s.transformations {
        bucket.transformations = flag;
    }
    Ok(())
}

fn checked_extensions(given: Vec<String>) -> AppResult<Vec<String>> {
    if given.len() > MAX_EXTENSIONS {
        return Err(AppError::invalid(
            "allowedFileExtensions",
            format!("at most {MAX_EXTENSIONS} extensions"),
        ));
    }
    let mut extensions = Vec::with_capacity(given.len());
    for extension in given {
        let extension = extension
            .trim()
            .trim_start_matches('.')
            .to_ascii_lowercase();
        if extension.is_empty()
            || extension.len() > MAX_EXTENSION_LEN
            || !extension.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(AppError::invalid(
                "allowedFileExtensions",
                format!("an extension has 1 to {MAX_EXTENSION_LEN} letters and digits, like `png`"),
            ));
        }
        if !extensions.contains(&extension) {
            extensions.push(extension);
        }
    }
    Ok(extensions)
}

pub async fn create_bucket(
    state: &AppState,
    grant: &Grant<BucketsWrite>,
    id: Option<String>,
    settings: BucketSettings,
) -> AppResult<Bucket> {
    if settings.name.is_none() {
        return Err(AppError::invalid("name", "a bucket needs a name"));
    }
    let id = ids::resolve("id", id.as_deref())?;
    let now = now_millis();
    let mut bucket = Bucket {
        project_id: grant.project().to_string(),
        id,
        name: String::new(),
        enabled: true,
        file_security: false,
        permissions: Vec::new(),
        maximum_file_size: DEFAULT_MAXIMUM_FILE_SIZE.min(state.config.storage_max_file_size),
        allowed_file_extensions: Vec::new(),
        compression: Compression::None,
        encryption: true,
        antivirus: true,
        transformations: true,
        created_at: now,
        updated_at: now,
    };
    apply_settings(state, &mut bucket, settings)?;
    let mut tx = state.db.pool().begin().await?;
    store::insert_bucket(&mut tx, &bucket)
        .await
        .conflict_as("bucket", &bucket.id)?;
    log::commit(&state.bus, tx, vec![bucket_event(&bucket, "create")]).await?;
    tracing::info!(project = %bucket.project_id, bucket = %bucket.id, "bucket created");
    Ok(bucket)
}

pub async fn update_bucket(
    state: &AppState,
    grant: &Grant<BucketsWrite>,
    id: &str,
    settings: BucketSettings,
) -> AppResult<Bucket> {
    let mut bucket = find_bucket(state, grant.project(), id).await?;
    apply_settings(state, &mut bucket, settings)?;
    bucket.updated_at = now_millis();
    let mut tx = state.db.pool().begin().await?;
    if !store::update_bucket(&mut tx, &bucket).await? {
        return Err(bucket_not_found(id));
    }
    log::commit(&state.bus, tx, vec![bucket_event(&bucket, "update")]).await?;
    Ok(bucket)
}

pub async fn get_bucket(
    state: &AppState,
    grant: &Grant<BucketsRead>,
    id: &str,
) -> AppResult<Bucket> {
    find_bucket(state, grant.project(), id).await
}

pub async fn list_buckets(
    state: &AppState,
    grant: &Grant<BucketsRead>,
    page: &Page,
    want_total: bool,
) -> AppResult<(Vec<Bucket>, i64)> {
    let pool = state.db.pool();
    let buckets = store::list_buckets(pool, grant.project(), page).await?;
    let total = if want_total {
        store::count_buckets(pool, grant.project()).await?
    } else {
        0
    };
    Ok((buckets, total))
}

/// Deletes a bucket with all its files: the rows first, so nothing is served from
/// it any more, then the bytes.
pub async fn delete_bucket(
    state: &AppState,
    grant: &Grant<BucketsWrite>,
    id: &str,
) -> AppResult<()> {
    ids::validate("id", id)?;
    let bucket = find_bucket(state, grant.project(), id).await?;
    let mut tx = state.db.pool().begin().await?;
    if !store::delete_bucket(&mut tx, grant.project(), id).await? {
        return Err(bucket_not_found(id));
    }
    log::commit(&state.bus, tx, vec![bucket_event(&bucket, "delete")]).await?;
    let prefix = Key::bucket_prefix(grant.project(), id).map_err(file_error)?;
    if let Err(err) = state.files.delete_prefix(&prefix).await {
        tracing::error!(project = %grant.project(), bucket = %id, error = ?err,
            "the bucket is deleted but some of its files' bytes could not be removed");
    }
    super::preview::forget_cached_bucket(state, grant.project(), id).await;
    tracing::info!(project = %grant.project(), bucket = %id, "bucket deleted");
    Ok(())
}

/// Removes the bytes and cached previews of a deleted project's files (its rows
/// went with the project).
pub async fn forget_project_files(state: &AppState, admin: &AdminGrant) {
    let project_id = admin.project();
    match Key::project_prefix(project_id) {
        Ok(prefix) => {
            if let Err(err) = state.files.delete_prefix(&prefix).await {
                tracing::error!(project = %project_id, error = ?err,
                    "the project is deleted but some of its files' bytes could not be removed");
            }
        }
        Err(err) => {
            tracing::error!(project = %project_id, error = ?err, "no file key for a project")
        }
    }
    super::preview::forget_cached_project(state, project_id).await;
}

/// The event of a change to a bucket's settings: for API keys holding
/// `buckets.read` (a bucket is configuration, not data any client reads).
fn bucket_event(bucket: &Bucket, action: &str) -> BusMessage {
    BusMessage::Event(crate::bus::Event {
        channels: vec!["buckets".into(), format!("buckets.{}", bucket.id)],
        key_scope: BucketsRead::NAME.into(),
        ..crate::bus::Event::change(
            &bucket.project_id,
            &format!("buckets.{}", bucket.id),
            "buckets.*",
            action,
            super::schema::bucket_value(bucket)
                .into_json()
                .unwrap_or_default(),
        )
    })
}

async fn find_bucket(state: &AppState, project_id: &str, id: &str) -> AppResult<Bucket> {
    ids::validate("bucketId", id).map_err(|_| bucket_not_found(id))?;
    store::find_bucket(state.db.pool(), project_id, id)
        .await?
        .ok_or_else(|| bucket_not_found(id))
}

// ---------------------------------------------------------------------------
// Files

pub use crate::auth::Access;
use crate::auth::{Container, Reach};

fn reach(bucket: &Bucket, access: &Access, action: Action) -> Reach {
    access.reach(
        Container {
            enabled: bucket.enabled,
            permissions: &bucket.permissions,
            // Files are created through the bucket's permissions alone.
            item_security: bucket.file_security && action != Action::Create,
        },
        action,
    )
}

fn may(bucket: &Bucket, access: &Access, action: Action, file: &StoredFile) -> bool {
    match reach(bucket, access, action) {
        Reach::All => true,
        Reach::PerItem(roles) => allows(&roles, action, &file.permissions),
        Reach::None => false,
    }
}

/// A bucket as a client sees it: a disabled bucket, or one it cannot read any file
/// of, does not exist for it.
async fn visible_bucket<S: ScopeMarker>(
    state: &AppState,
    access: &ScopedAccess<S>,
    id: &str,
) -> AppResult<Bucket> {
    let bucket = find_bucket(state, access.project(), id).await?;
    if matches!(**access, Access::Client { .. }) && !bucket.enabled {
        return Err(bucket_not_found(id));
    }
    Ok(bucket)
}

/// A complete file the caller may read, with its bucket.
pub async fn readable_file(
    state: &AppState,
    access: &ScopedAccess<FilesRead>,
    bucket_id: &str,
    id: &str,
) -> AppResult<(Bucket, StoredFile)> {
    let bucket = visible_bucket(state, access, bucket_id).await?;
    let file = find_ready_file(state, &bucket, id).await?;
    if !may(&bucket, access, Action::Read, &file) {
        return Err(file_not_found(id));
    }
    Ok((bucket, file))
}

/// The complete file a verified signed URL grants reading, whoever presents it.
/// A disabled bucket serves no client, signed URL or not; and the file the URL
/// was signed for is gone when another one has its id now.
pub async fn signed_file(
    state: &AppState,
    token: &super::tokens::Grant,
) -> AppResult<(Bucket, StoredFile)> {
    let bucket = find_bucket(state, &token.project_id, &token.bucket_id).await?;
    let file = find_ready_file(state, &bucket, &token.file_id).await?;
    if !bucket.enabled || file.created_at != token.file_created_at {
        return Err(file_not_found(&file.id));
    }
    Ok((bucket, file))
}

async fn find_ready_file(state: &AppState, bucket: &Bucket, id: &str) -> AppResult<StoredFile> {
    ids::validate("fileId", id).map_err(|_| file_not_found(id))?;
    match store::find_file(state.db.pool(), &bucket.project_id, &bucket.id, id).await? {
        Some(file) if file.status == FileStatus::Ready => Ok(file),
        _ => Err(file_not_found(id)),
    }
}

/// What a file list asks for.
#[derive(Debug, Default)]
pub struct FileQuery {
    pub search: Option<String>,
    pub mime_type_prefix: Option<String>,
}

pub async fn list_files(
    state: &AppState,
    access: &ScopedAccess<FilesRead>,
    bucket_id: &str,
    query: &FileQuery,
    page: &Page,
    want_total: bool,
) -> AppResult<(Vec<StoredFile>, i64)> {
    let bucket = visible_bucket(state, access, bucket_id).await?;
    let readable_by = match reach(&bucket, access, Action::Read) {
        Reach::All => None,
        Reach::PerItem(roles) => Some(roles),
        Reach::None => return Ok((Vec::new(), 0)),
    };
    if let Some(search) = &query.search
        && search.chars().count() > 256
    {
        return Err(AppError::invalid("search", "at most 256 characters"));
    }
    let listing = store::FileListing {
        project_id: access.project(),
        bucket_id: &bucket.id,
        readable_by: readable_by.as_ref(),
        search: query.search.as_deref().filter(|s| !s.is_empty()),
        mime_type_prefix: query.mime_type_prefix.as_deref().filter(|s| !s.is_empty()),
    };
    let pool = state.db.pool();
    let files = store::list_files(pool, state.db.dialect(), &listing, page).await?;
    let total = if want_total {
        store::count_files(pool, state.db.dialect(), &listing).await?
    } else {
        0
    };
    Ok((files, total))
}

/// A new file's identity and permissions, before its bytes.
#[derive(Debug)]
pub struct NewFile {
    pub bucket_id: String,
    pub file_id: Option<String>,
    pub name: String,
    pub permissions: Option<Vec<String>>,
}

fn checked_file_name(name: &str) -> AppResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_FILE_NAME {
        return Err(AppError::invalid(
            "name",
            format!("1 to {MAX_FILE_NAME} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "name",
            "control characters (NUL, newlines, …) are not allowed",
        ));
    }
    Ok(name.to_string())
}

fn check_extension(bucket: &Bucket, name: &str) -> AppResult<()> {
    if bucket.allowed_file_extensions.is_empty() {
        return Ok(());
    }
    let extension = name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    if bucket.allowed_file_extensions.contains(&extension) {
        return Ok(());
    }
    Err(AppError::Invalid {
        code: codes::FILE_EXTENSION_NOT_ALLOWED,
        field: "name".into(),
        reason: format!(
            "this bucket accepts only {}",
            bucket
                .allowed_file_extensions
                .iter()
                .map(|e| format!(".{e}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

fn check_size(bucket: &Bucket, size: u64) -> AppResult<()> {
    if size > bucket.maximum_file_size {
        return Err(file_error(FileError::TooLarge {
            limit: bucket.maximum_file_size,
        }));
    }
    Ok(())
}

/// The bucket a new file goes to, when the caller may create files in it.
async fn creatable_bucket(
    state: &AppState,
    access: &ScopedAccess<FilesWrite>,
    bucket_id: &str,
) -> AppResult<Bucket> {
    let bucket = visible_bucket(state, access, bucket_id).await?;
    if !matches!(reach(&bucket, access, Action::Create), Reach::All) {
        return Err(AppError::PermissionDenied {
            reason: "the bucket's permissions do not let you create files".into(),
        });
    }
    Ok(bucket)
}

/// Whether an unfinished upload may take another chunk: each chunk is a write, so
/// a client must still be allowed to create files in the bucket, and the file must
/// still fit the bucket's size and extension rules, which may have changed since
/// the upload started.
pub fn check_upload_allowed(bucket: &Bucket, access: &Access, file: &StoredFile) -> AppResult<()> {
    if !matches!(reach(bucket, access, Action::Create), Reach::All) {
        return Err(AppError::PermissionDenied {
            reason: "the bucket's permissions do not let you create files".into(),
        });
    }
    check_extension(bucket, &file.name)?;
    check_size(bucket, file.size)
}

/// A new file's name, checked against the rules of its bucket.
pub fn check_new_name(bucket: &Bucket, name: &str) -> AppResult<String> {
    let name = checked_file_name(name)?;
    check_extension(bucket, &name)?;
    Ok(name)
}

/// Counts one file a client makes (in one request or resumable) against
/// `NIMBUS_UPLOADS_PER_MINUTE`: a signed-in user by their id, a guest by their
/// address (`client_ip`); keys are servers, and not counted. Without a bound,
/// one client could fill the disk every project shares, a file at a time.
pub async fn count_upload<S: crate::auth::scopes::ScopeMarker>(
    state: &AppState,
    access: &ScopedAccess<S>,
    client_ip: &str,
) -> AppResult<()> {
    let per_minute = state.config.uploads_per_minute;
    let client = match access.actor() {
        _ if per_minute == 0 => return Ok(()),
        Some(actor) if !actor.starts_with("user:") => return Ok(()),
        Some(user) => user.to_string(),
        None => format!("guest:{}", crate::auth::rate_limit::client_key(client_ip)),
    };
    state
        .rate_limiter
        .hit(
            &format!("uploads:{}:{client}", access.project()),
            crate::auth::rate_limit::Limit::per_minute(per_minute),
        )
        .await
}

/// Checks, before a file's bytes arrive, that the caller may create a file in
/// `bucket_id`, named `name` when the name is already known. Answers the bucket,
/// whose `maximum_file_size` bounds what may be received.
pub async fn authorise_upload(
    state: &AppState,
    access: &ScopedAccess<FilesWrite>,
    bucket_id: &str,
    name: Option<&str>,
) -> AppResult<Bucket> {
    let bucket = creatable_bucket(state, access, bucket_id).await?;
    if let Some(name) = name {
        check_new_name(&bucket, name)?;
    }
    Ok(bucket)
}

/// Checks everything about a new file that does not need its bytes, and returns
/// its row (status `uploading`, not yet written) with its bucket.
pub async fn prepare_file(
    state: &AppState,
    access: &ScopedAccess<FilesWrite>,
    new: NewFile,
    announced_size: Option<u64>,
) -> AppResult<(Bucket, StoredFile)> {
    let bucket = creatable_bucket(state, access, &new.bucket_id).await?;
    let id = ids::resolve("fileId", new.file_id.as_deref())?;
    let name = check_new_name(&bucket, &new.name)?;
    if let Some(size) = announced_size {
        check_size(&bucket, size)?;
    }
    let permissions = access.permissions_of_new(new.permissions.as_deref())?;
    let now = now_millis();
    let file = StoredFile {
        project_id: access.project().to_string(),
        bucket_id: bucket.id.clone(),
        id,
        name,
        status: FileStatus::Uploading,
        uploader: access.actor().unwrap_or("guest").to_string(),
        size: announced_size.unwrap_or(0),
        stored_size: 0,
        mime_type: "application/octet-stream".into(),
        checksum: String::new(),
        encoding: Encoding {
            compression: Compression::None,
            salt: None,
        },
        chunk_size: 0,
        chunks_total: 1,
        chunks_uploaded: 0,
        permissions,
        created_at: now,
        updated_at: now,
    };
    Ok((bucket, file))
}

/// Inserts the row of a file whose bytes are about to arrive, claiming its id.
pub async fn claim_file(state: &AppState, file: &StoredFile) -> AppResult<()> {
    let mut conn = state.db.pool().acquire().await?;
    store::insert_file(&mut conn, file)
        .await
        .conflict_as("file", &file.id)
}

/// The options a bucket writes its files with.
pub fn write_options(state: &AppState, bucket: &Bucket) -> WriteOptions {
    WriteOptions {
        max_size: bucket.maximum_file_size,
        compression: bucket.compression,
        encrypt: bucket.encryption,
        secret: state.secret.clone(),
    }
}

/// Writes the bytes of a claimed file, scans them when the bucket asks for it, and
/// marks the file ready. On any failure the row and the bytes are removed, so the
/// id is free again and nothing partial remains.
pub async fn store_bytes(
    state: &AppState,
    bucket: &Bucket,
    file: StoredFile,
    input: impl AsyncRead + Unpin + Send,
) -> AppResult<StoredFile> {
    let options = write_options(state, bucket);
    finish_file(state, bucket, file, |key| async move {
        state.files.write(&key, input, &options).await
    })
    .await
}

/// Stores a claimed file whose bytes a multipart request spooled: the spool file
/// itself becomes the object when it is already what the bucket stores (as sent,
/// or sealed as it was spooled; no second copy), else it is streamed through the
/// bucket's transforms without being hashed again.
pub async fn store_spooled(
    state: &AppState,
    bucket: &Bucket,
    file: StoredFile,
    spooled: &Spooled,
    content: std::fs::File,
) -> AppResult<StoredFile> {
    let options = write_options(state, bucket);
    finish_file(state, bucket, file, |key| async move {
        let salt = spooled.salt.as_deref();
        if let Some(written) = state
            .files
            .adopt(&key, &spooled.path, &spooled.fingerprint, salt, &options)
            .await?
        {
            return Ok(written);
        }
        let mut content = tokio::fs::File::from_std(content);
        content
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(FileError::from_io)?;
        let known = Some(&spooled.fingerprint);
        match salt {
            // Sealed as the bucket stores it, in a store it cannot be linked into.
            Some(salt) if options.encrypt && options.compression == Compression::None => {
                state
                    .files
                    .write_sealed(
                        &key,
                        OwnInput(content),
                        &spooled.fingerprint,
                        salt,
                        &options,
                    )
                    .await
            }
            // The bucket's settings changed since the part was sealed: its bytes
            // are opened on the way into the store.
            Some(salt) => {
                let plain = OwnInput(crate::files::unsealed(content, &options.secret, salt)?);
                state.files.write_known(&key, plain, &options, known).await
            }
            None => {
                state
                    .files
                    .write_known(&key, OwnInput(content), &options, known)
                    .await
            }
        }
    })
    .await
}

/// One upload of a multipart request: a file part, spooled to `path` and
/// fingerprinted on the way, at one variable path of the map (a part the map puts
/// at several paths is as many uploads, each taken once). Its clones share whether
/// a `createFile` has taken it.
#[derive(Debug, Clone)]
pub struct Spooled {
    pub path: std::path::PathBuf,
    pub fingerprint: Fingerprint,
    /// The salt the spool file is sealed under (`crypto`'s version 1), when it was
    /// sealed as it was spooled.
    pub salt: Option<String>,
    taken: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Spooled {
    /// An upload of a part just spooled, not taken yet.
    pub fn new(path: std::path::PathBuf, fingerprint: Fingerprint, salt: Option<String>) -> Self {
        Spooled {
            path,
            fingerprint,
            salt,
            taken: Default::default(),
        }
    }

    /// The same part as an upload of its own (at another variable path).
    pub fn another_upload(&self) -> Self {
        Spooled::new(
            self.path.clone(),
            self.fingerprint.clone(),
            self.salt.clone(),
        )
    }

    /// Takes the upload for one file; fails when a `createFile` took it already.
    /// Each file an upload becomes is a full write of it (compressed, sealed, sent
    /// to S3), and aliases are many: one variable named by every alias of a
    /// `createFile` must not become as many files. The first to ask takes it,
    /// whatever then becomes of its file. (The map puts a part at 8 paths at most.)
    fn take(&self) -> AppResult<()> {
        use std::sync::atomic::Ordering;
        if self.taken.swap(true, Ordering::AcqRel) {
            return Err(AppError::invalid(
                "file",
                "this upload is already used by another `createFile` of the request; map the file to one variable for each file to create",
            ));
        }
        Ok(())
    }
}

/// The spooled parts of one GraphQL request, by upload index (as async-graphql
/// numbers the request's uploads).
#[derive(Debug, Clone, Default)]
pub struct SpooledUploads(pub std::collections::HashMap<usize, Spooled>);

/// Publishes a claimed file's bytes with `write` (which must leave nothing under
/// the key when it fails), scans them when the bucket asks for it, and marks the
/// file ready. The claim (`file.created_at`) is moved to `finishing` first: the
/// object's key is the id's, so while it is written no delete or sweep may free
/// the id for another upload to write there too. A claim gone by then fails with
/// [`claim_lost`] and writes nothing. On any later failure the row and the bytes
/// are removed, so the id is free again and nothing partial remains.
pub async fn finish_file<F, W>(
    state: &AppState,
    bucket: &Bucket,
    mut file: StoredFile,
    write: W,
) -> AppResult<StoredFile>
where
    W: FnOnce(Key) -> F,
    F: Future<Output = Result<Written, FileError>>,
{
    let key = Key::file(&file.project_id, &file.bucket_id, &file.id).map_err(file_error)?;
    if !store::mark_finishing(state.db.pool(), &file, now_millis()).await? {
        return Err(claim_lost(&file.id));
    }
    file.status = FileStatus::Finishing;
    let result = async {
        let written = write(key.clone()).await.map_err(file_error)?;
        if bucket.antivirus
            && let Some(address) = &state.config.clamd
        {
            super::antivirus::check(state, address, &key, &written).await?;
        }
        apply_written(&mut file, written);
        file.updated_at = now_millis();
        let mut tx = state.db.pool().begin().await?;
        if !store::mark_ready(&mut tx, &file).await? {
            // Only a bucket or project deleted meanwhile takes a finishing row away.
            return Err(claim_lost(&file.id));
        }
        let ready = StoredFile {
            status: FileStatus::Ready,
            chunks_uploaded: file.chunks_total,
            ..file.clone()
        };
        let event = file_event(state, bucket, &ready, "create");
        log::commit(&state.bus, tx, vec![event]).await?;
        Ok(())
    }
    .await;
    if let Err(err) = result {
        discard(state, &file, None).await;
        return Err(err);
    }
    file.status = FileStatus::Ready;
    file.chunks_uploaded = file.chunks_total;
    tracing::info!(project = %file.project_id, bucket = %file.bucket_id, file = %file.id,
        size = file.size, stored = file.stored_size, "file stored");
    Ok(file)
}

fn apply_written(file: &mut StoredFile, written: Written) {
    file.size = written.size;
    file.stored_size = written.stored_size;
    file.checksum = written.sha256;
    file.mime_type = written.mime_type;
    file.encoding = written.encoding;
}

/// Removes a file that never became ready, but only the claim `file` is (its
/// `created_at`) and only while its row is still `file.status` (and, given
/// `unchanged_before`, unchanged since then: the sweeper's view of it). The row is
/// marked `removing` first, which keeps the id taken while the bytes and chunks go,
/// so no newer upload of the id can start and lose its own to this removal; then
/// the row goes. Anything else now holding the id is left alone. True when this
/// call removed it.
pub async fn discard(state: &AppState, file: &StoredFile, unchanged_before: Option<i64>) -> bool {
    let marked = async {
        let mut conn = state.db.pool().acquire().await?;
        store::mark_removing(&mut conn, file, unchanged_before, now_millis()).await
    };
    match marked.await {
        Ok(true) => {}
        Ok(false) => return false,
        Err(err) => {
            tracing::error!(file = %file.id, error = ?err, "could not mark a failed upload for removal");
            return false;
        }
    }
    let removing = StoredFile {
        status: FileStatus::Removing,
        ..file.clone()
    };
    remove_marked(state, &removing, file.status).await
}

/// Deletes what a file marked `removing` (and still holding its id) left in the
/// store, then its row; `was` is its status before, which says what it can have:
/// an upload not yet finishing has no object, a ready file no chunks any more. A
/// failure keeps the row, and with it the id, for the sweeper to try again.
async fn remove_marked(state: &AppState, file: &StoredFile, was: FileStatus) -> bool {
    let bytes = async {
        if was != FileStatus::Uploading {
            let key = Key::file(&file.project_id, &file.bucket_id, &file.id)?;
            state.files.delete(&key).await?;
        }
        if was != FileStatus::Ready {
            let prefix = Key::upload_prefix(&file.project_id, &file.bucket_id, &file.id)?;
            state.files.delete_prefix(&prefix).await?;
        }
        Ok::<_, FileError>(())
    };
    if let Err(err) = bytes.await {
        tracing::warn!(file = %file.id, error = ?err,
            "could not remove a deleted file's bytes; the sweeper will try again");
        return false;
    }
    let row = async {
        let mut conn = state.db.pool().acquire().await?;
        store::delete_removed_file(&mut conn, file).await
    };
    match row.await {
        Ok(deleted) => deleted,
        Err(err) => {
            tracing::error!(file = %file.id, error = ?err,
                "could not remove a deleted file's row; the sweeper will try again");
            false
        }
    }
}

/// Creates a file from the spooled part of a multipart GraphQL request; `spooled`
/// is what the spooling learnt of it, when it was spooled by Nimbus itself.
pub async fn create_file(
    state: &AppState,
    access: &ScopedAccess<FilesWrite>,
    new: NewFile,
    content: std::fs::File,
    spooled: Option<&Spooled>,
) -> AppResult<Option<StoredFile>> {
    if let Some(spooled) = spooled {
        spooled.take()?;
    }
    let size = match spooled {
        Some(spooled) => Some(spooled.fingerprint.size),
        None => content.metadata().ok().map(|meta| meta.len()),
    };
    let (bucket, file) = prepare_file(state, access, new, size).await?;
    claim_file(state, &file).await?;
    let file = match spooled {
        Some(spooled) => store_spooled(state, &bucket, file, spooled, content).await?,
        None => {
            let content = OwnInput(tokio::fs::File::from_std(content));
            store_bytes(state, &bucket, file, content).await?
        }
    };
    Ok(readable_as_written(&bucket, access, file))
}

/// The file a write answers with: only one the caller may read as the write left
/// it (the write stands either way), so write permission shows nothing it does not
/// already grant.
fn readable_as_written(
    bucket: &Bucket,
    access: &ScopedAccess<FilesWrite>,
    file: StoredFile,
) -> Option<StoredFile> {
    may(bucket, &access.answered_as(), Action::Read, &file).then_some(file)
}

pub async fn get_file(
    state: &AppState,
    access: &ScopedAccess<FilesRead>,
    bucket_id: &str,
    id: &str,
) -> AppResult<StoredFile> {
    readable_file(state, access, bucket_id, id)
        .await
        .map(|(_, file)| file)
}

/// Renames a file and/or replaces its permissions; answers the file only when the
/// caller may read it as changed.
pub async fn update_file(
    state: &AppState,
    access: &ScopedAccess<FilesWrite>,
    bucket_id: &str,
    id: &str,
    name: Option<String>,
    permissions: Option<Vec<String>>,
) -> AppResult<Option<StoredFile>> {
    let bucket = visible_bucket(state, access, bucket_id).await?;
    // Checked and written over the file as read; read again when another write
    // came between (a few times at most).
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut file = find_ready_file(state, &bucket, id).await?;
        if !may(&bucket, access, Action::Update, &file) {
            return Err(denied_or_hidden(&bucket, access, &file, Action::Update));
        }
        if let Some(name) = &name {
            file.name = checked_file_name(name)?;
            check_extension(&bucket, &file.name)?;
        }
        if let Some(given) = &permissions {
            file.permissions =
                access.permissions_replacing(given, &file.permissions, |action| {
                    may(&bucket, access, action, &file)
                })?;
        }
        let read_at = file.updated_at;
        // Later than the version read, whatever the clock says.
        file.updated_at = now_millis().max(read_at.saturating_add(1));
        let mut tx = state.db.pool().begin().await?;
        if !store::update_file(&mut tx, &file, read_at).await? {
            drop(tx);
            if attempts < 3 {
                continue;
            }
            return Err(AppError::Busy { retry_after: 1 });
        }
        log::commit(
            &state.bus,
            tx,
            vec![file_event(state, &bucket, &file, "update")],
        )
        .await?;
        return Ok(readable_as_written(&bucket, access, file));
    }
}

/// A caller that may read a file but not change it is told so; one that may not
/// even read it learns nothing of it.
fn denied_or_hidden(
    bucket: &Bucket,
    access: &Access,
    file: &StoredFile,
    action: Action,
) -> AppError {
    if may(bucket, access, Action::Read, file) {
        AppError::PermissionDenied {
            reason: format!("you may not {action} this file"),
        }
    } else {
        file_not_found(&file.id)
    }
}

/// Deletes a file (complete, or an unfinished upload of the caller's).
pub async fn delete_file(
    state: &AppState,
    access: &ScopedAccess<FilesWrite>,
    bucket_id: &str,
    id: &str,
) -> AppResult<()> {
    let bucket = visible_bucket(state, access, bucket_id).await?;
    ids::validate("fileId", id).map_err(|_| file_not_found(id))?;
    let file = store::find_file(state.db.pool(), &bucket.project_id, &bucket.id, id)
        .await?
        .ok_or_else(|| file_not_found(id))?;
    let owner =
        matches!(**access, Access::Server) || access.actor() == Some(file.uploader.as_str());
    match file.status {
        FileStatus::Ready if !may(&bucket, access, Action::Delete, &file) => {
            return Err(denied_or_hidden(&bucket, access, &file, Action::Delete));
        }
        FileStatus::Uploading | FileStatus::Finishing if !owner => {
            return Err(file_not_found(id));
        }
        FileStatus::Removing => return Err(file_not_found(id)),
        FileStatus::Finishing => {
            return Err(AppError::NotAllowed(
                "this upload is being completed: delete the file once it is ready".into(),
            ));
        }
        FileStatus::Ready | FileStatus::Uploading => {}
    }
    // The row read above, and no other: were it deleted and its id claimed again
    // since, the check was of a file that is gone.
    let mut tx = state.db.pool().begin().await?;
    if !store::mark_removing(&mut tx, &file, None, now_millis()).await? {
        return Err(file_not_found(id));
    }
    // An unfinished upload was never announced: its removal is not either.
    let events = match file.status {
        FileStatus::Ready => vec![file_event(state, &bucket, &file, "delete")],
        _ => Vec::new(),
    };
    log::commit(&state.bus, tx, events).await?;
    let removing = StoredFile {
        status: FileStatus::Removing,
        ..file.clone()
    };
    remove_marked(state, &removing, file.status).await;
    super::preview::forget_cached_file(state, &file).await;
    Ok(())
}

/// The roles that may read a file of `bucket` whose own permissions are `own`.
fn file_read_roles(bucket: &Bucket, own: &[Permission]) -> Vec<String> {
    if !bucket.enabled {
        return Vec::new();
    }
    let mut read_roles: Vec<String> = bucket
        .permissions
        .iter()
        .filter(|p| p.action == Action::Read)
        .map(|p| p.role.to_string())
        .collect();
    if bucket.file_security {
        read_roles.extend(
            own.iter()
                .filter(|p| p.action == Action::Read)
                .map(|p| p.role.to_string()),
        );
    }
    read_roles.sort();
    read_roles.dedup();
    read_roles
}

/// Who may read a file as an event logged it (its JSON, whose `permissions` are
/// its own), by its bucket as it is now (`None`: deleted since, so nobody). A
/// permission that does not parse grants nothing.
pub fn file_read_roles_now(bucket: Option<&Bucket>, logged: &serde_json::Value) -> Vec<String> {
    let Some(bucket) = bucket else {
        return Vec::new();
    };
    let own = crate::auth::permissions::logged_permissions(logged, "permissions");
    file_read_roles(bucket, &own)
}

/// Bucket `id` of `project_id` as it is now, if it exists.
pub async fn bucket_now(state: &AppState, project_id: &str, id: &str) -> AppResult<Option<Bucket>> {
    if ids::validate("bucketId", id).is_err() {
        return Ok(None);
    }
    Ok(store::find_bucket(state.db.pool(), project_id, id).await?)
}

/// The event subscribers see of a change to a file (`files`, `buckets.B.files`,
/// `buckets.B.files.F`): those who may read it — through the bucket, or with
/// `fileSecurity` through the file's own permissions — logged with the change.
fn file_event(state: &AppState, bucket: &Bucket, file: &StoredFile, action: &str) -> BusMessage {
    let read_roles = file_read_roles(bucket, &file.permissions);
    BusMessage::Event(crate::bus::Event {
        channels: vec![
            "files".into(),
            format!("buckets.{}.files", bucket.id),
            format!("buckets.{}.files.{}", bucket.id, file.id),
        ],
        read_roles,
        key_scope: FilesRead::NAME.into(),
        ..crate::bus::Event::change(
            &file.project_id,
            &format!("buckets.{}.files.{}", bucket.id, file.id),
            "buckets.*.files.*",
            action,
            super::schema::file_value(state, file)
                .into_json()
                .unwrap_or_default(),
        )
    })
}

//! Resumable uploads: a file announced with its size (`createFileUpload`) receives
//! its bytes in fixed-size chunks over HTTP, each with a `Content-Range`, strictly
//! in order and only from the caller that started it. A broken upload resumes from
//! the last chunk received, on any replica sharing the store.
//!
//! In a local store the chunks are written in place into one file per upload, and
//! hashed as they arrive: completing a file stored as sent is a rename. In an
//! encrypted bucket each chunk is also sealed as it is written, with a key of its
//! own for every attempt (ADR 26), so completing it is a rename too; a file to
//! compress is read once more. Each chunk costs one statement to record it besides
//! the reads that authorise it. In S3 each chunk is an object of its own, streamed
//! in order through the bucket's pipeline into the file when the last one arrives. Either way the file exists for everyone else only once complete.
//! Uploads left unfinished are swept after `NIMBUS_UPLOAD_EXPIRY`.

use std::num::NonZeroUsize;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use lru::LruCache;
use tokio_util::io::StreamReader;

use crate::AppState;
use crate::auth::ScopedAccess;
use crate::auth::scopes::FilesWrite;
use crate::db::{ids, now_millis};
use crate::error::{AppError, AppResult, codes};
use crate::files::{
    Assembly, ByteStream, ChunkSeal, Compression, Digest, Encoding, FileError, Key, OwnInput,
    WriteOptions,
};

use super::service::{self, Access, NewFile, claim_lost, file_error};
use super::{FileStatus, StoredFile, store};

/// The byte range a chunk says it carries: `Content-Range: bytes START-END/TOTAL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub start: u64,
    /// Inclusive, as in the header.
    pub end: u64,
    pub total: u64,
}

impl ContentRange {
    pub fn parse(header: &str) -> AppResult<ContentRange> {
        let invalid = || AppError::Invalid {
            code: codes::UPLOAD_CHUNK_INVALID,
            field: "Content-Range".into(),
            reason: "expected `bytes START-END/TOTAL`, e.g. `bytes 0-5242879/10485760`".into(),
        };
        let rest = header.trim().strip_prefix("bytes ").ok_or_else(invalid)?;
        let (range, total) = rest.split_once('/').ok_or_else(invalid)?;
        let (start, end) = range.split_once('-').ok_or_else(invalid)?;
        let number = |s: &str| s.trim().parse::<u64>().map_err(|_| invalid());
        let parsed = ContentRange {
            start: number(start)?,
            end: number(end)?,
            total: number(total)?,
        };
        if parsed.end < parsed.start || parsed.end >= parsed.total {
            return Err(invalid());
        }
        Ok(parsed)
    }

    pub fn byte_count(&self) -> u64 {
        self.end - self.start + 1
    }
}

fn chunk_error(reason: String) -> AppError {
    AppError::Invalid {
        code: codes::UPLOAD_CHUNK_INVALID,
        field: "Content-Range".into(),
        reason,
    }
}

fn upload_not_found(id: &str) -> AppError {
    AppError::NotFound {
        what: "upload",
        id: id.chars().take(64).collect(),
    }
}

/// Announces a file of `size` bytes whose chunks will follow.
pub async fn start(
    state: &AppState,
    access: &ScopedAccess<FilesWrite>,
    new: NewFile,
    size: i64,
) -> AppResult<StoredFile> {
    if access.actor().is_none() {
        return Err(AppError::PermissionDenied {
            reason: "resumable uploads need a signed-in user or an API key; guests upload in one request (`createFile`)".into(),
        });
    }
    if size < 1 {
        return Err(AppError::invalid("size", "at least 1 byte"));
    }
    let size = size as u64;
    let (bucket, mut file) = service::prepare_file(state, access, new, Some(size)).await?;
    // Chunks written in place into an encrypted bucket are sealed as they arrive,
    // under the salt chosen now: the row carries it from the start, and with it the
    // way every chunk of this upload is stored, whatever the bucket's settings
    // become before it completes.
    if state.files.assembles_in_place()
        && bucket.encryption
        && bucket.compression == Compression::None
    {
        file.encoding.salt = Some(crate::files::new_salt());
    }
    let chunk_size = state.config.upload_chunk_size;
    file.chunk_size = chunk_size;
    file.chunks_total = u32::try_from(size.div_ceil(chunk_size))
        .map_err(|_| AppError::invalid("size", "too many chunks"))?;
    service::claim_file(state, &file).await?;
    if let Err(err) = check_pending(state, &file).await {
        service::discard(state, &file, None).await;
        return Err(err);
    }
    tracing::info!(project = %file.project_id, bucket = %file.bucket_id, file = %file.id,
        size, chunks = file.chunks_total, "resumable upload started");
    Ok(file)
}

/// Refuses a new upload when its uploader's unfinished ones already hold as many
/// uploads or bytes as `NIMBUS_UPLOAD_MAX_PENDING` and
/// `NIMBUS_UPLOAD_MAX_PENDING_BYTES` allow: their chunks stay on disk until they
/// finish or expire, so starting uploads and never finishing them must not fill it.
/// Asked after `file` is claimed and counting it: of uploads started at once, the
/// last to claim sees all the others, so together they never exceed the limits
/// (each one over them is refused and its claim discarded).
async fn check_pending(state: &AppState, file: &StoredFile) -> AppResult<()> {
    let config = &state.config;
    let pending = store::pending_upload_sizes(
        state.db.pool(),
        &file.project_id,
        &file.uploader,
        config.upload_max_pending + 1,
    )
    .await?;
    let bytes = pending.iter().fold(0u64, |sum, s| sum.saturating_add(*s));
    if pending.len() as u64 > config.upload_max_pending || bytes > config.upload_max_pending_bytes {
        return Err(AppError::Invalid {
            code: codes::TOO_MANY_PENDING_UPLOADS,
            field: "size".into(),
            reason: format!(
                "unfinished uploads may be {} at most, announcing {} bytes in all: finish or delete some first",
                config.upload_max_pending, config.upload_max_pending_bytes
            ),
        });
    }
    Ok(())
}

/// An unfinished upload of the caller's (or, for a server, anyone's), possibly
/// finishing.
async fn own_upload(
    state: &AppState,
    access: &ScopedAccess<FilesWrite>,
    bucket_id: &str,
    file_id: &str,
) -> AppResult<(super::Bucket, StoredFile)> {
    ids::validate("fileId", file_id).map_err(|_| upload_not_found(file_id))?;
    ids::validate("bucketId", bucket_id).map_err(|_| upload_not_found(file_id))?;
    let pool = state.db.pool();
    let bucket = store::find_bucket(pool, access.project(), bucket_id)
        .await?
        .ok_or_else(|| upload_not_found(file_id))?;
    let file = store::find_file(pool, &bucket.project_id, &bucket.id, file_id)
        .await?
        .ok_or_else(|| upload_not_found(file_id))?;
    // Ownership first: to anyone else a complete file is as missing as an
    // unknown one, so this cannot tell which files exist.
    let owner =
        matches!(**access, Access::Server) || access.actor() == Some(file.uploader.as_str());
    if !owner
        || (matches!(**access, Access::Client { .. }) && !bucket.enabled)
        || file.status == FileStatus::Removing
    {
        return Err(upload_not_found(file_id));
    }
    if file.status == FileStatus::Ready {
        return Err(AppError::Invalid {
            code: codes::UPLOAD_COMPLETE,
            field: "fileId".into(),
            reason: "this file is complete; it takes no more chunks".into(),
        });
    }
    Ok((bucket, file))
}

/// Where an upload stands (for a client resuming it).
pub async fn status(
    state: &AppState,
    access: &ScopedAccess<FilesWrite>,
    bucket_id: &str,
    file_id: &str,
) -> AppResult<StoredFile> {
    own_upload(state, access, bucket_id, file_id)
        .await
        .map(|(_, file)| file)
}

/// Receives one chunk; the last one completes the file.
pub async fn receive_chunk(
    state: &AppState,
    access: &ScopedAccess<FilesWrite>,
    bucket_id: &str,
    file_id: &str,
    range: ContentRange,
    body: ByteStream,
) -> AppResult<StoredFile> {
    let (bucket, file) = own_upload(state, access, bucket_id, file_id).await?;
    if file.status == FileStatus::Finishing {
        return Err(delivered_first());
    }
    // Checked again for every chunk, not only when the upload started.
    service::check_upload_allowed(&bucket, access, &file)?;
    if file.chunks_uploaded == file.chunks_total {
        // Every chunk was recorded, but the file was never completed: the
        // request of the last one broke off in between (its server died, or
        // the database went away). The client sending it again completes it
        // from what was received; this body is not needed.
        drop(body);
        return complete_received(state, &bucket, file).await;
    }
    if range.total != file.size {
        return Err(chunk_error(format!(
            "this upload is {} bytes, not {}",
            file.size, range.total
        )));
    }
    let expected_start = u64::from(file.chunks_uploaded) * file.chunk_size;
    if range.start != expected_start {
        let aligned = range.start.is_multiple_of(file.chunk_size);
        return Err(AppError::Invalid {
            code: if aligned {
                codes::UPLOAD_CHUNK_OUT_OF_ORDER
            } else {
                codes::UPLOAD_CHUNK_INVALID
            },
            field: "Content-Range".into(),
            reason: format!(
                "the next chunk starts at byte {expected_start} ({} of {} received)",
                file.chunks_uploaded, file.chunks_total
            ),
        });
    }
    let expected_end = (range.start + file.chunk_size).min(file.size) - 1;
    if range.end != expected_end {
        return Err(chunk_error(format!(
            "chunks are {} bytes (the last one less): this one must end at byte {expected_end}",
            file.chunk_size
        )));
    }
    if !state.files.assembles_in_place() {
        return receive_as_object(state, &bucket, file, range, body).await;
    }
    let (assembly, running) = open_assembly(state, &file).await?;
    if in_place(state, &file, &running).await? {
        receive_in_place(state, &bucket, file, range, body, assembly, running).await
    } else {
        drop(assembly);
        receive_as_object(state, &bucket, file, range, body).await
    }
}

/// The upload's one file in a local store, locked for this request, with the
/// running hash this process kept of it.
async fn open_assembly(
    state: &AppState,
    file: &StoredFile,
) -> AppResult<(Assembly, RunningDigest)> {
    let prefix =
        Key::upload_prefix(&file.project_id, &file.bucket_id, &file.id).map_err(file_error)?;
    let assembly = state
        .files
        .open_assembly(&prefix)
        .await
        .map_err(file_error)?;
    let running = RunningDigest::of(&assembly, file);
    Ok((assembly, running))
}

/// Whether the upload's chunks go into its one file (a local store): yes, unless its
/// first chunks were kept as objects of their own (by an earlier version), which the
/// rest then follow. An upload whose previous chunk this process wrote in place is
/// known without asking the database.
async fn in_place(state: &AppState, file: &StoredFile, running: &RunningDigest) -> AppResult<bool> {
    let Some(previous) = file.chunks_uploaded.checked_sub(1) else {
        return Ok(true);
    };
    if running.knows(file.chunks_uploaded) {
        return Ok(true);
    }
    // Chunks written in place keep no row of their own (earlier versions kept one
    // naming the assembly); an object has one.
    let key = store::chunk_object_key(state.db.pool(), file, previous).await?;
    Ok(key.is_none_or(|key| crate::files::is_assembly_key(&key)))
}

fn delivered_first() -> AppError {
    AppError::Invalid {
        code: codes::UPLOAD_CHUNK_OUT_OF_ORDER,
        field: "Content-Range".into(),
        reason: "another request delivered this chunk first; ask where the upload stands".into(),
    }
}

/// Why a step bound to the upload's claim matched no row: another request
/// delivered the chunk first, or the upload is gone (deleted or swept, its id
/// perhaps claimed again since, by an upload this request must leave alone).
async fn step_refused(state: &AppState, file: &StoredFile) -> AppError {
    match store::find_file(state.db.pool(), &file.project_id, &file.bucket_id, &file.id).await {
        Ok(Some(current)) if same_claim(&current, file) => delivered_first(),
        Ok(_) => claim_lost(&file.id),
        Err(err) => err.into(),
    }
}

/// Whether `current`, as read now, is still the upload `file` was read as.
fn same_claim(current: &StoredFile, file: &StoredFile) -> bool {
    current.created_at == file.created_at && current.status != FileStatus::Removing
}

/// The chunk's body did not have the announced length.
fn wrong_length(error: FileError, got: Option<u64>, range: &ContentRange) -> AppError {
    match (error, got) {
        (FileError::TooLarge { .. }, _) => chunk_error(format!(
            "the body is longer than the {} bytes the Content-Range announces",
            range.byte_count()
        )),
        (_, Some(got)) => chunk_error(format!(
            "the body has {got} bytes; the Content-Range announces {}",
            range.byte_count()
        )),
        (error, None) => file_error(error),
    }
}

/// A local store: the chunk is written straight into its place in the upload's one
/// file, hashed on the way (the running hash is kept between chunks) and, for an
/// upload that carries a salt, sealed, so completing it is a rename. The file's
/// lock keeps two requests from writing the same upload at once, and the row is read
/// again under it, so a chunk is written only where nothing recorded lies.
async fn receive_in_place(
    state: &AppState,
    bucket: &super::Bucket,
    mut file: StoredFile,
    range: ContentRange,
    body: ByteStream,
    mut assembly: Assembly,
    running: RunningDigest,
) -> AppResult<StoredFile> {
    let current = store::find_file(state.db.pool(), &file.project_id, &file.bucket_id, &file.id)
        .await?
        .filter(|current| same_claim(current, &file))
        .ok_or_else(|| claim_lost(&file.id))?;
    if current.status != FileStatus::Uploading || current.chunks_uploaded != file.chunks_uploaded {
        return Err(delivered_first());
    }
    let index = file.chunks_uploaded;
    let digest = if index == 0 {
        Some(Digest::default())
    } else {
        running.take(index)
    };
    // The salt comes from the row as read under the lock: it was fixed when the
    // upload started.
    let seal = current.encoding.salt.clone().map(|salt| ChunkSeal {
        secret: state.secret.clone(),
        salt,
        chunk_size: file.chunk_size,
        index,
        last: index + 1 == file.chunks_total,
    });
    file.encoding = current.encoding.clone();
    let written = assembly
        .write(range.start, body, range.byte_count(), digest, seal.as_ref())
        .await;
    let cut_at = crate::files::stored_offset(range.start, seal.as_ref());
    let digest = match written {
        Ok((size, digest)) if size == range.byte_count() => digest,
        Ok((size, _)) => {
            assembly.cut(cut_at).await;
            return Err(wrong_length(FileError::Unreadable, Some(size), &range));
        }
        Err(error) => {
            assembly.cut(cut_at).await;
            return Err(wrong_length(error, None, &range));
        }
    };
    if !store::advance_upload(state.db.pool(), &file, index, now_millis()).await? {
        return Err(step_refused(state, &file).await);
    }
    file.chunks_uploaded = index + 1;
    if file.chunks_uploaded < file.chunks_total {
        if let Some(digest) = digest {
            running.keep(file.chunks_uploaded, digest);
        }
        return Ok(file);
    }
    running.forget();
    complete_in_place(state, bucket, file, assembly, digest).await
}

/// Completes an upload whose every chunk was received but whose completion never
/// ran, from its assembly (hashed again) or its chunk objects.
async fn complete_received(
    state: &AppState,
    bucket: &super::Bucket,
    file: StoredFile,
) -> AppResult<StoredFile> {
    tracing::info!(project = %file.project_id, bucket = %file.bucket_id, file = %file.id,
        "completing an upload whose last chunk's request broke off");
    if !state.files.assembles_in_place() {
        return complete(state, bucket, file).await;
    }
    let (assembly, running) = open_assembly(state, &file).await?;
    let in_place = in_place(state, &file, &running).await?;
    running.forget();
    if in_place {
        complete_in_place(state, bucket, file, assembly, None).await
    } else {
        drop(assembly);
        complete(state, bucket, file).await
    }
}

/// Publishes an upload's assembly as its file: a rename, once hashed (`digest`,
/// the running hash, or none to hash it again).
async fn complete_in_place(
    state: &AppState,
    bucket: &super::Bucket,
    file: StoredFile,
    assembly: Assembly,
    digest: Option<Digest>,
) -> AppResult<StoredFile> {
    let options = service::write_options(state, bucket);
    let size = file.size;
    let sealed = file
        .encoding
        .salt
        .clone()
        .map(|salt| (salt, file.chunk_size));
    let upload = file.clone();
    service::finish_file(state, bucket, file, |key| async move {
        let sealed = sealed.as_ref().map(|(salt, chunk)| (salt.as_str(), *chunk));
        let written = state
            .files
            .publish_assembly(assembly, &key, size, digest, &options, sealed)
            .await?;
        forget_upload(state, &upload).await;
        Ok(written)
    })
    .await
}

/// Another store (S3): each chunk is an object of its own, assembled at the end.
async fn receive_as_object(
    state: &AppState,
    bucket: &super::Bucket,
    mut file: StoredFile,
    range: ContentRange,
    body: ByteStream,
) -> AppResult<StoredFile> {
    let index = file.chunks_uploaded;
    let key = Key::chunk(
        &file.project_id,
        &file.bucket_id,
        &file.id,
        index,
        &ids::generate(),
    )
    .map_err(file_error)?;
    let plain = WriteOptions {
        max_size: range.byte_count(),
        compression: Compression::None,
        encrypt: false,
        secret: String::new(),
    };
    let written = match state
        .files
        .write(&key, StreamReader::new(body), &plain)
        .await
    {
        Ok(written) if written.size == range.byte_count() => written,
        Ok(written) => {
            let _ = state.files.delete(&key).await;
            return Err(wrong_length(
                FileError::Unreadable,
                Some(written.size),
                &range,
            ));
        }
        Err(error) => return Err(wrong_length(error, None, &range)),
    };
    let chunk = store::Chunk {
        index,
        object_key: key.as_str().to_string(),
        size: written.size,
    };
    let recorded = store::record_chunk(state.db.pool(), &file, &chunk, now_millis()).await;
    match recorded {
        Ok(true) => {}
        Ok(false) => {
            // The object's key is this request's own (its nonce): deleting it
            // touches no other upload of the id.
            let _ = state.files.delete(&key).await;
            return Err(step_refused(state, &file).await);
        }
        Err(err) => {
            let _ = state.files.delete(&key).await;
            return Err(err.into());
        }
    }
    file.chunks_uploaded = index + 1;
    if file.chunks_uploaded < file.chunks_total {
        return Ok(file);
    }
    complete(state, bucket, file).await
}

/// Every chunk row of `file`, in order; a store failure unless there are all.
async fn check_chunk_rows(
    state: &AppState,
    file: &StoredFile,
) -> Result<Vec<store::Chunk>, FileError> {
    let chunks = store::chunks(state.db.pool(), file)
        .await
        .map_err(|err| FileError::Store(err.into()))?;
    let complete = chunks.len() == file.chunks_total as usize
        && chunks
            .iter()
            .enumerate()
            .all(|(i, c)| c.index as usize == i);
    if !complete {
        return Err(FileError::Store(anyhow::anyhow!(
            "upload {} has {} chunk rows for {} chunks",
            file.id,
            chunks.len(),
            file.chunks_total
        )));
    }
    Ok(chunks)
}

/// Streams the chunk objects, in order, into the file and forgets them.
async fn complete(
    state: &AppState,
    bucket: &super::Bucket,
    file: StoredFile,
) -> AppResult<StoredFile> {
    let options = service::write_options(state, bucket);
    let upload = file.clone();
    service::finish_file(state, bucket, file, |key| async move {
        // Read once the row is finishing: the chunk rows of its id are its own.
        let chunks = check_chunk_rows(state, &upload).await?;
        let files = state.files.clone();
        let secret = state.secret.clone();
        let plain = Encoding {
            compression: Compression::None,
            salt: None,
        };
        let stream = async_stream::try_stream! {
            for chunk in chunks {
                let key = Key::from_stored(&chunk.object_key).map_err(std::io::Error::other)?;
                let mut part = files
                    .read(&key, &plain, &secret)
                    .await
                    .map_err(|err| std::io::Error::other(chunk_unreadable(err, &key)))?;
                while let Some(bytes) = part.next().await {
                    yield bytes?;
                }
            }
        };
        // The chunks are the server's own: failing to read them is not the client's
        // upload breaking off, and what the store said is for the log alone.
        let reader = OwnInput(StreamReader::new(Box::pin(stream) as ByteStream));
        let written = state.files.write(&key, reader, &options).await?;
        forget_upload(state, &upload).await;
        Ok(written)
    })
    .await
}

/// A chunk that cannot be read back: a missing one is said so in the log (to the
/// client it is a failure of the server's like any other).
fn chunk_unreadable(err: FileError, key: &Key) -> FileError {
    match err {
        FileError::NotFound => FileError::Store(anyhow::anyhow!(
            "the chunk object {} of an upload is missing",
            key.as_str()
        )),
        other => other,
    }
}

/// Removes what an upload kept on the way once its file is written: its chunk rows
/// and objects. Its row, finishing, still holds the id, so they are its own.
async fn forget_upload(state: &AppState, stored: &StoredFile) {
    if let Err(err) = store::forget_chunks(state.db.pool(), stored).await {
        tracing::warn!(file = %stored.id, error = ?err, "could not forget the chunk rows of a completed upload");
    }
    match Key::upload_prefix(&stored.project_id, &stored.bucket_id, &stored.id) {
        Ok(prefix) => {
            if let Err(err) = state.files.delete_prefix(&prefix).await {
                tracing::warn!(file = %stored.id, error = ?err, "could not remove the chunks of a completed upload");
            }
        }
        Err(err) => {
            tracing::warn!(file = %stored.id, error = ?err, "no upload key for a completed upload")
        }
    }
}

/// Running hashes of the uploads this process receives, each valid up to a chunk
/// count. A hash is only a shortcut: one missing (another replica took a chunk, the
/// server restarted, the entry was evicted) is recomputed from the bytes when the
/// upload completes. Entries are told apart by the assembly's path (which names
/// the data directory) and the upload's creation time, so a new upload reusing an
/// id never continues an old one's hash.
static RUNNING: LazyLock<Mutex<LruCache<UploadIdentity, (u32, Digest)>>> = LazyLock::new(|| {
    Mutex::new(LruCache::new(
        NonZeroUsize::new(RUNNING_UPLOADS).expect("a positive capacity"),
    ))
});

/// An upload's assembly path and creation time.
type UploadIdentity = (String, i64);

/// Uploads whose running hash is kept at most; each entry is about 8 KiB.
const RUNNING_UPLOADS: usize = 256;

/// The running hash of one upload.
struct RunningDigest {
    key: UploadIdentity,
}

impl RunningDigest {
    fn of(assembly: &Assembly, file: &StoredFile) -> Self {
        RunningDigest {
            key: (assembly.describe(), file.created_at),
        }
    }

    /// Whether this process wrote the chunks before `index` and still has their hash.
    fn knows(&self, index: u32) -> bool {
        let running = RUNNING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        running
            .peek(&self.key)
            .is_some_and(|(next, _)| *next == index)
    }

    /// The hash of the chunks before `index`, when it is known.
    fn take(&self, index: u32) -> Option<Digest> {
        let mut running = RUNNING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match running.pop(&self.key) {
            Some((next, digest)) if next == index => Some(digest),
            _ => None,
        }
    }

    fn keep(self, next: u32, digest: Digest) {
        let mut running = RUNNING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        running.put(self.key, (next, digest));
    }

    fn forget(&self) {
        let mut running = RUNNING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        running.pop(&self.key);
    }
}

/// Removes uploads that stopped receiving chunks more than `NIMBUS_UPLOAD_EXPIRY`
/// ago, for as long as the server runs.
pub async fn sweep_forever(state: AppState) {
    let every = Duration::from_secs((state.config.upload_expiry_secs / 4).clamp(15, 900));
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let horizons = SweepHorizons::at(&state, now_millis());
        match store::stale_files(
            state.db.pool(),
            horizons.uploads,
            horizons.abandoned,
            SWEEP_BATCH,
        )
        .await
        {
            Ok(stale) => {
                remove_stale(&state, stale, horizons).await;
            }
            Err(err) => tracing::warn!(error = %err, "could not look for unfinished uploads"),
        }
    }
}

/// Rows the sweeper looks at in one round.
const SWEEP_BATCH: i64 = 100;

/// How long a file may stay finishing or being removed before the sweeper takes
/// it for abandoned (its request failed, or its server stopped), whatever the
/// upload expiry: a write or a removal still running when its row is swept could
/// land after another upload has claimed the id.
const ABANDONED_AFTER_MILLIS: i64 = 3600 * 1000;

/// What the sweeper takes for left behind: rows unchanged since these times.
#[derive(Debug, Clone, Copy)]
struct SweepHorizons {
    /// Unfinished uploads.
    uploads: i64,
    /// Files finishing or being removed.
    abandoned: i64,
}

impl SweepHorizons {
    fn at(state: &AppState, now: i64) -> Self {
        let uploads = now - (state.config.upload_expiry_secs as i64) * 1000;
        SweepHorizons {
            uploads,
            abandoned: uploads.min(now - ABANDONED_AFTER_MILLIS),
        }
    }
}

/// Removes the files the sweeper found left behind, each only as it found it (the
/// same claim, unchanged since its horizon): an upload that received a chunk, or
/// an id deleted and claimed again, since it looked is left alone. Answers how many
/// were removed.
async fn remove_stale(state: &AppState, stale: Vec<StoredFile>, horizons: SweepHorizons) -> usize {
    let mut removed = 0;
    for file in stale {
        let horizon = match file.status {
            FileStatus::Uploading => horizons.uploads,
            _ => horizons.abandoned,
        };
        if service::discard(state, &file, Some(horizon)).await {
            tracing::info!(project = %file.project_id, bucket = %file.bucket_id,
                file = %file.id, status = file.status.as_str(), "removed a file left behind");
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::services::storage::Bucket;

    const PROJECT: &str = crate::services::projects::DEFAULT_PROJECT;

    /// A server's state over a fresh SQLite database and a local store, with a
    /// bucket `b` and uploads kept `expiry_secs`.
    async fn state_with_bucket(dir: &std::path::Path, expiry_secs: u64) -> AppState {
        let mut config = Config::with_data_dir(dir);
        config.upload_expiry_secs = expiry_secs;
        let state = AppState::open(config).await.unwrap();
        crate::services::projects::service::ensure_default_project(&state)
            .await
            .unwrap();
        let bucket = Bucket {
            project_id: PROJECT.into(),
            id: "b".into(),
            name: "b".into(),
            enabled: true,
            file_security: false,
            permissions: Vec::new(),
            maximum_file_size: 1 << 20,
            allowed_file_extensions: Vec::new(),
            compression: Compression::None,
            encryption: false,
            antivirus: false,
            transformations: true,
            created_at: 0,
            updated_at: 0,
        };
        let mut conn = state.db.pool().acquire().await.unwrap();
        store::insert_bucket(&mut conn, &bucket).await.unwrap();
        state
    }

    /// An upload of `id` claimed at `created_at` and last changed at `updated_at`.
    fn upload(id: &str, created_at: i64, updated_at: i64) -> StoredFile {
        StoredFile {
            project_id: PROJECT.into(),
            bucket_id: "b".into(),
            id: id.into(),
            name: "f.bin".into(),
            status: FileStatus::Uploading,
            uploader: "user:u".into(),
            size: 10,
            stored_size: 0,
            mime_type: "application/octet-stream".into(),
            checksum: String::new(),
            encoding: Encoding::plain(),
            chunk_size: 65_536,
            chunks_total: 1,
            chunks_uploaded: 0,
            permissions: Vec::new(),
            created_at,
            updated_at,
        }
    }

    /// Claims `file`'s id and keeps a chunk of it in the store: the chunk's key.
    async fn claimed_with_a_chunk(state: &AppState, file: &StoredFile) -> Key {
        let mut conn = state.db.pool().acquire().await.unwrap();
        store::insert_file(&mut conn, file).await.unwrap();
        let key = Key::chunk(PROJECT, "b", &file.id, 0, &ids::generate()).unwrap();
        let plain = WriteOptions {
            max_size: 1 << 20,
            compression: Compression::None,
            encrypt: false,
            secret: String::new(),
        };
        state
            .files
            .write(&key, &b"0123456789"[..], &plain)
            .await
            .unwrap();
        key
    }

    async fn kept(state: &AppState, key: &Key) -> bool {
        state
            .files
            .read(key, &Encoding::plain(), &state.secret)
            .await
            .is_ok()
    }

    async fn row(state: &AppState, id: &str) -> Option<StoredFile> {
        store::find_file(state.db.pool(), PROJECT, "b", id)
            .await
            .unwrap()
    }

    /// What the sweeper finds left behind at `now`.
    async fn found(state: &AppState, now: i64) -> (Vec<StoredFile>, SweepHorizons) {
        let horizons = SweepHorizons::at(state, now);
        let stale = store::stale_files(
            state.db.pool(),
            horizons.uploads,
            horizons.abandoned,
            SWEEP_BATCH,
        )
        .await
        .unwrap();
        (stale, horizons)
    }

    #[tokio::test]
    async fn the_sweeper_removes_an_upload_left_behind_with_its_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_with_bucket(dir.path(), 60).await;
        let left = upload("left", 1_000, 1_000);
        let chunk = claimed_with_a_chunk(&state, &left).await;
        let (stale, horizons) = found(&state, now_millis()).await;
        assert_eq!(stale.len(), 1);
        assert_eq!(remove_stale(&state, stale, horizons).await, 1);
        assert!(row(&state, "left").await.is_none());
        assert!(!kept(&state, &chunk).await);
    }

    #[tokio::test]
    async fn the_sweeper_leaves_alone_an_id_claimed_again_after_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_with_bucket(dir.path(), 60).await;
        let old = upload("avatar", 1_000, 1_000);
        claimed_with_a_chunk(&state, &old).await;
        let (stale, horizons) = found(&state, now_millis()).await;
        assert_eq!(stale.len(), 1);

        // Before the sweeper acts, the upload is deleted and its id claimed again,
        // by an upload as stale by the clock.
        assert!(service::discard(&state, &old, None).await);
        let newer = upload("avatar", 2_000, 2_000);
        let chunk = claimed_with_a_chunk(&state, &newer).await;

        assert_eq!(remove_stale(&state, stale, horizons).await, 0);
        let standing = row(&state, "avatar").await.expect("the newer claim stands");
        assert_eq!(standing.created_at, 2_000);
        assert_eq!(standing.status, FileStatus::Uploading);
        assert!(
            kept(&state, &chunk).await,
            "the newer claim's chunk is kept"
        );
    }

    #[tokio::test]
    async fn the_sweeper_leaves_alone_an_upload_that_received_a_chunk_after_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_with_bucket(dir.path(), 60).await;
        let slow = upload("slow", 1_000, 1_000);
        let chunk = claimed_with_a_chunk(&state, &slow).await;
        let (stale, horizons) = found(&state, now_millis()).await;
        assert_eq!(stale.len(), 1);
        assert!(
            store::advance_upload(state.db.pool(), &slow, 0, now_millis())
                .await
                .unwrap()
        );
        assert_eq!(remove_stale(&state, stale, horizons).await, 0);
        assert_eq!(row(&state, "slow").await.unwrap().chunks_uploaded, 1);
        assert!(kept(&state, &chunk).await);
    }

    #[tokio::test]
    async fn a_file_finishing_is_taken_for_abandoned_only_an_hour_on() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_with_bucket(dir.path(), 60).await;
        let now = now_millis();
        let minutes_ago = now - 5 * 60 * 1000;
        let finishing = upload("finishing", minutes_ago, minutes_ago);
        claimed_with_a_chunk(&state, &finishing).await;
        assert!(
            store::mark_finishing(state.db.pool(), &finishing, minutes_ago)
                .await
                .unwrap()
        );
        let idle = upload("idle", minutes_ago, minutes_ago);
        claimed_with_a_chunk(&state, &idle).await;
        let (stale, _) = found(&state, now).await;
        let ids: Vec<&str> = stale.iter().map(|file| file.id.as_str()).collect();
        assert_eq!(
            ids,
            ["idle"],
            "an upload idle past the expiry is; a write is not"
        );
        let (stale, horizons) = found(&state, now + ABANDONED_AFTER_MILLIS).await;
        assert_eq!(stale.len(), 2);
        assert_eq!(remove_stale(&state, stale, horizons).await, 2);
        assert!(row(&state, "finishing").await.is_none());
    }
}

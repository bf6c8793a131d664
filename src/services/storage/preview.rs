//! Serving image previews: a preview is rendered once per file content and set of
//! parameters, on the blocking pool and a few at a time (decoding is CPU- and
//! memory-heavy; see [`Turns`]), and kept on local disk under
//! `DATA_DIR/cache/previews`, keyed by the file's checksum and the canonical
//! parameters, so later requests read it back. A file's cached previews go when
//! the file (or its bucket) does, and the least recently written files' previews
//! go when the cache passes `NIMBUS_PREVIEW_CACHE_BYTES` ([`CacheBudget`]). Each
//! client address may have `NIMBUS_PREVIEW_RENDERS_PER_MINUTE` rendered (not read
//! from the cache). The previews of an encrypted file are kept
//! sealed (AES-256-GCM under a key derived from the server secret, bound to their
//! name), so the cache holds no more plaintext than the store does.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use futures_util::TryStreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::AppState;
use crate::auth::rate_limit::Limit;
use crate::auth::sealing::Sealer;
use crate::error::{AppError, AppResult, codes};
use crate::files::Key;

use super::StoredFile;
use super::render::{self, OutputFormat, PreviewError, PreviewParams};
use super::service::file_error;

/// Largest original a preview reads into memory; larger images are refused.
pub const MAX_SOURCE_BYTES: u64 = 64 * 1024 * 1024;
/// Most previews kept per file: past it, the least recently written goes, so asking
/// for ever new sizes cannot fill the disk.
pub const MAX_CACHED_PER_FILE: usize = 32;

/// A rendered preview: in the cache, or (when it could not be cached) in memory.
pub struct Preview {
    pub body: PreviewBody,
    pub mime_type: &'static str,
}

pub enum PreviewBody {
    /// Opened: the cache may remove it after, and the open file stays readable.
    Cached(tokio::fs::File),
    Fresh(Vec<u8>),
}

/// Turns to render previews: a few at once, a bounded queue waiting (holding no
/// image yet), and a refusal past that, so a burst of previews of large images
/// costs at most `slots` decoded images of memory.
pub struct Turns {
    running: Arc<Semaphore>,
    /// Most requests waiting for a turn.
    queue: usize,
    waiting: AtomicUsize,
}

/// A turn to render; the next waiting request gets it when this is dropped.
pub struct Turn(#[allow(dead_code)] OwnedSemaphorePermit);

impl Turn {
    /// Runs `work` on the blocking pool, holding the turn until `work` returns. A
    /// blocking task cannot be stopped: a client that goes away mid-render must not
    /// give its turn to the next request while its render still runs.
    pub async fn run<T: Send + 'static>(
        self,
        what: &'static str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> AppResult<T> {
        tokio::task::spawn_blocking(move || {
            let _turn = self;
            work()
        })
        .await
        .map_err(|err| AppError::Internal(anyhow::anyhow!("{what} task failed: {err}")))
    }
}

/// The disk this replica's preview cache may take. What it holds is counted as
/// previews are written; the first write on a replica, and any that passes the
/// budget, walks the cache to measure it and removes the previews of the files
/// least recently previewed anew until a quarter of the budget is free. Between
/// walks the count only grows (files deleted since are found by the next walk).
pub struct CacheBudget {
    max_bytes: u64,
    used: AtomicU64,
    measured: AtomicBool,
    sweeping: AtomicBool,
}

impl CacheBudget {
    pub fn new(max_bytes: u64) -> Self {
        CacheBudget {
            max_bytes,
            used: AtomicU64::new(0),
            measured: AtomicBool::new(false),
            sweeping: AtomicBool::new(false),
        }
    }

    /// Whether previews are kept at all.
    fn keeps(&self) -> bool {
        self.max_bytes > 0
    }

    /// Counts `bytes` written to the cache under `root`; walks it, in the
    /// background, when it has not been measured or may be over the budget.
    fn wrote(self: &Arc<Self>, root: PathBuf, bytes: u64) {
        let used = self.used.fetch_add(bytes, Ordering::AcqRel) + bytes;
        let measured = self.measured.load(Ordering::Acquire);
        if (measured && used <= self.max_bytes) || self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let budget = self.clone();
        tokio::task::spawn_blocking(move || {
            let kept = sweep(&root, budget.max_bytes);
            budget.used.store(kept, Ordering::Release);
            budget.measured.store(true, Ordering::Release);
            budget.sweeping.store(false, Ordering::Release);
        });
    }
}

/// Measures the preview cache under `root` (`PROJECT/BUCKET/FILE/previews`) and,
/// past `max_bytes`, removes whole files' previews, those written longest ago
/// first, until three quarters of `max_bytes` remain. Answers the bytes kept.
fn sweep(root: &std::path::Path, max_bytes: u64) -> u64 {
    let dirs_in = |path: &std::path::Path| -> Vec<PathBuf> {
        std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .map(|entry| entry.path())
            .collect()
    };
    // Each file's directory, with when a preview of it was last written and how
    // many bytes its previews take.
    let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    for project in dirs_in(root) {
        for bucket in dirs_in(&project) {
            for file in dirs_in(&bucket) {
                let mut newest = SystemTime::UNIX_EPOCH;
                let mut bytes = 0u64;
                for entry in std::fs::read_dir(&file).into_iter().flatten().flatten() {
                    let Ok(meta) = entry.metadata() else { continue };
                    bytes += meta.len();
                    if let Ok(modified) = meta.modified() {
                        newest = newest.max(modified);
                    }
                }
                files.push((newest, bytes, file));
            }
        }
    }
    let mut total: u64 = files.iter().map(|(_, bytes, _)| bytes).sum();
    if total <= max_bytes {
        return total;
    }
    let target = max_bytes / 4 * 3;
    files.sort();
    let mut removed = 0usize;
    for (_, bytes, path) in &files {
        if total <= target {
            break;
        }
        if std::fs::remove_dir_all(path).is_ok() {
            total -= bytes;
            removed += 1;
        }
    }
    tracing::info!(
        removed,
        kept_bytes = total,
        "the preview cache passed its budget; the previews of the files least recently previewed were removed"
    );
    metrics::counter!("nimbus_preview_cache_evictions_total").increment(removed as u64);
    total
}

/// Seconds a refused preview is told to wait before asking again.
pub const RETRY_AFTER_SECS: u64 = 1;

impl Turns {
    pub fn new(slots: usize, queue: usize) -> Self {
        Turns {
            running: Arc::new(Semaphore::new(slots.max(1))),
            queue,
            waiting: AtomicUsize::new(0),
        }
    }

    /// A turn now, or after the requests ahead in the queue; `PREVIEWS_BUSY` when
    /// the queue is full.
    pub async fn take(&self) -> AppResult<Turn> {
        if let Ok(permit) = self.running.clone().try_acquire_owned() {
            return Ok(Turn(permit));
        }
        let busy = || AppError::Busy {
            retry_after: RETRY_AFTER_SECS,
        };
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("nimbus_previews_refused_total").increment(1);
            return Err(busy());
        }
        // Counted out even when the request is cancelled while it waits.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&self.waiting);
        self.running
            .clone()
            .acquire_owned()
            .await
            .map(Turn)
            .map_err(|_| busy())
    }
}

fn file_dir(state: &AppState, project_id: &str, bucket_id: &str, file_id: &str) -> PathBuf {
    // Ids are validated ([a-zA-Z0-9._-], no leading dot), so they are safe path parts.
    state
        .config
        .preview_cache_dir()
        .join(project_id)
        .join(bucket_id)
        .join(file_id)
}

pub fn preview_error(err: PreviewError) -> AppError {
    match &err {
        PreviewError::InvalidParam { name, .. } => AppError::Invalid {
            code: err.code(),
            field: (*name).to_string(),
            reason: err.to_string(),
        },
        // The parameters asked for something the encoder cannot make (a size a
        // format cannot hold): the client's to change, told as such, and logged in
        // case it is ours.
        PreviewError::Encode(reason) => {
            tracing::warn!(%reason, "a preview could not be encoded");
            AppError::Invalid {
                code: err.code(),
                field: "file".into(),
                reason: err.to_string(),
            }
        }
        _ => AppError::Invalid {
            code: err.code(),
            field: "file".into(),
            reason: err.to_string(),
        },
    }
}

/// The preview of `file` with `params`, rendered now or read from the cache; a
/// render counts against `client`'s (an address's limit key) renders per minute.
pub async fn preview(
    state: &AppState,
    file: &StoredFile,
    params: &PreviewParams,
    client: &str,
) -> AppResult<Preview> {
    let is_image = OutputFormat::from_mime_type(&file.mime_type).is_some();
    let mut hasher = Sha256::new();
    hasher.update(file.checksum.as_bytes());
    hasher.update(b"\0");
    hasher.update(params.cache_key().as_bytes());
    let name = hex::encode(hasher.finalize());
    let dir = file_dir(state, &file.project_id, &file.bucket_id, &file.id);
    let output = params.output.unwrap_or(if is_image {
        OutputFormat::from_mime_type(&file.mime_type).unwrap_or(OutputFormat::Png)
    } else {
        OutputFormat::Png
    });
    let sealer = file
        .encoding
        .salt
        .is_some()
        .then(|| Sealer::new(&state.secret, PREVIEW_SEALING));
    let path = match sealer {
        Some(_) => dir.join(format!("{name}.{}.sealed", output.extension())),
        None => dir.join(format!("{name}.{}", output.extension())),
    };
    if let Some(sealer) = &sealer {
        if let Some(bytes) = open_sealed(sealer, &path, &name).await {
            metrics::counter!("nimbus_previews_total", "source" => "cache").increment(1);
            return Ok(Preview {
                body: PreviewBody::Fresh(bytes),
                mime_type: output.mime_type(),
            });
        }
    } else if let Ok(opened) = tokio::fs::File::open(&path).await {
        metrics::counter!("nimbus_previews_total", "source" => "cache").increment(1);
        return Ok(Preview {
            body: PreviewBody::Cached(opened),
            mime_type: output.mime_type(),
        });
    }
    count_render(state, client).await?;
    // The turn comes before the source is read: a waiting request holds no image.
    let turn = state.preview_turns.take().await?;
    let source = if is_image {
        if file.size > MAX_SOURCE_BYTES {
            return Err(AppError::Invalid {
                code: codes::IMAGE_TOO_LARGE,
                field: "file".into(),
                reason: format!("previews are made of images up to {MAX_SOURCE_BYTES} bytes"),
            });
        }
        let key = Key::file(&file.project_id, &file.bucket_id, &file.id).map_err(file_error)?;
        let stream = state
            .files
            .read(&key, &file.encoding, &state.secret)
            .await
            .map_err(file_error)?;
        // One buffer of the file's size, not the chunks and then their copy.
        let mut source = Vec::with_capacity(file.size as usize);
        stream
            .try_for_each(|chunk| {
                source.extend_from_slice(&chunk);
                std::future::ready(Ok(()))
            })
            .await
            .map_err(|err| {
                tracing::error!(file = %file.id, error = %err, "reading a file for its preview failed");
                AppError::FileUnreadable
            })?;
        source
    } else {
        Vec::new()
    };
    let mime_type = file.mime_type.clone();
    let params_owned = params.clone();
    let max_pixels = state.config.preview_max_pixels;
    let rendered = turn
        .run("preview", move || {
            render::render(source, &mime_type, &params_owned, max_pixels)
        })
        .await?
        .map_err(preview_error)?;
    metrics::counter!("nimbus_previews_total", "source" => "rendered").increment(1);
    if !state.preview_cache.keeps() {
        return Ok(Preview {
            body: PreviewBody::Fresh(rendered.bytes),
            mime_type: rendered.mime_type,
        });
    }
    // Sent from memory: the bytes are here already, and a cached copy may be
    // swept before it could be read back.
    let kept = match &sealer {
        Some(sealer) => {
            keep(
                state,
                &dir,
                &path,
                &sealer.seal_bytes(&rendered.bytes, name.as_bytes()),
            )
            .await
        }
        None => keep(state, &dir, &path, &rendered.bytes).await,
    };
    if let Err(err) = kept {
        tracing::warn!(error = %err, "could not cache a preview");
    }
    Ok(Preview {
        body: PreviewBody::Fresh(rendered.bytes),
        mime_type: rendered.mime_type,
    })
}

/// Counts one render (a preview, an avatar drawn) against `client`'s renders per
/// minute: they share the render slots, so they share the client's allowance.
pub async fn count_render(state: &AppState, client: &str) -> AppResult<()> {
    state
        .rate_limiter
        .hit(
            &format!("preview-renders:{client}"),
            Limit::per_minute(state.config.preview_renders_per_minute),
        )
        .await
}

/// The purpose the cached previews of encrypted files are sealed for.
const PREVIEW_SEALING: &str = "preview-cache";

/// The cached preview at `path`, opened; `None` when there is none or it does not
/// open (written under another server secret, or damaged), so it is rendered again.
async fn open_sealed(sealer: &Sealer, path: &PathBuf, name: &str) -> Option<Vec<u8>> {
    let sealed = tokio::fs::read(path).await.ok()?;
    match sealer.open_bytes(&sealed, name.as_bytes()) {
        Ok(bytes) => Some(bytes),
        Err(_) => {
            tracing::warn!(path = %path.display(), "a cached preview does not open; rendering it again");
            None
        }
    }
}

/// Writes a preview under a temporary name and renames it into place, so a reader
/// never sees half of one.
async fn keep(
    state: &AppState,
    dir: &PathBuf,
    path: &PathBuf,
    bytes: &[u8],
) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    make_room(dir).await?;
    let temporary = dir.join(format!(".{}.partial", crate::db::ids::generate()));
    let written = async {
        let mut out = tokio::fs::File::create(&temporary).await?;
        out.write_all(bytes).await?;
        out.sync_all().await?;
        tokio::fs::rename(&temporary, path).await
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&temporary).await;
    } else {
        state
            .preview_cache
            .wrote(state.config.preview_cache_dir(), bytes.len() as u64);
    }
    written
}

/// Removes the oldest previews of a file's directory until one more fits under
/// [`MAX_CACHED_PER_FILE`].
async fn make_room(dir: &PathBuf) -> std::io::Result<()> {
    let mut kept = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let written = entry.metadata().await?.modified()?;
        kept.push((written, entry.path()));
    }
    if kept.len() < MAX_CACHED_PER_FILE {
        return Ok(());
    }
    kept.sort();
    for (_, path) in kept.iter().take(kept.len() + 1 - MAX_CACHED_PER_FILE) {
        let _ = tokio::fs::remove_file(path).await;
    }
    Ok(())
}

/// Forgets the cached previews of a file.
pub async fn forget_cached_file(state: &AppState, file: &StoredFile) {
    let dir = file_dir(state, &file.project_id, &file.bucket_id, &file.id);
    let _ = tokio::fs::remove_dir_all(dir).await;
}

/// Forgets the cached previews of every file of a bucket.
pub async fn forget_cached_bucket(state: &AppState, project_id: &str, bucket_id: &str) {
    let dir = state
        .config
        .preview_cache_dir()
        .join(project_id)
        .join(bucket_id);
    let _ = tokio::fs::remove_dir_all(dir).await;
}

/// Forgets the cached previews of every file of a project.
pub async fn forget_cached_project(state: &AppState, project_id: &str) {
    let dir = state.config.preview_cache_dir().join(project_id);
    let _ = tokio::fs::remove_dir_all(dir).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_turn_stays_taken_until_its_work_ends_even_when_its_request_is_dropped() {
        let turns = Turns::new(1, 0);
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started, has_started) = tokio::sync::oneshot::channel();
        let turn = turns.take().await.expect("the one turn is free");
        let request = tokio::spawn(turn.run("test", move || {
            let _ = started.send(());
            released.recv().ok();
        }));
        has_started.await.expect("the work started");
        // The client goes away: its request's future is dropped mid-render.
        request.abort();
        assert!(request.await.unwrap_err().is_cancelled());
        assert!(
            matches!(turns.take().await, Err(AppError::Busy { .. })),
            "the render still runs, so its turn is still taken"
        );
        release.send(()).expect("the work is waiting");
        let again = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                if let Ok(turn) = turns.take().await {
                    return turn;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(again.is_ok(), "the turn comes back once the render ends");
    }
}

#[cfg(test)]
mod sweep_tests {
    use std::time::{Duration, SystemTime};

    use super::sweep;

    fn preview(root: &std::path::Path, file: &str, bytes: usize, age_secs: u64) {
        let dir = root.join("p").join("b").join(file);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.png");
        std::fs::write(&path, vec![0u8; bytes]).unwrap();
        let written = SystemTime::now() - Duration::from_secs(age_secs);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(written)
            .unwrap();
    }

    #[test]
    fn the_files_previewed_longest_ago_go_first_until_a_quarter_is_free() {
        let root = tempfile::tempdir().unwrap();
        preview(root.path(), "oldest", 400, 300);
        preview(root.path(), "older", 400, 200);
        preview(root.path(), "newest", 400, 10);
        assert_eq!(
            sweep(root.path(), 2000),
            1200,
            "within the budget: nothing goes"
        );
        let kept = sweep(root.path(), 1000);
        assert_eq!(kept, 400);
        let left = |name: &str| root.path().join("p/b").join(name).exists();
        assert!(!left("oldest") && !left("older") && left("newest"));
    }
}

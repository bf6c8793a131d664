//! Streaming one object into the store with bounded memory, all or nothing.
//!
//! Objects are written straight to their final key, not to a temporary key that is
//! renamed afterwards, because both backends already publish an object atomically:
//! - Objects smaller than one part go out as a single `put`. S3 makes a PUT visible only
//!   once it has fully arrived; `LocalFileSystem::put` writes a staging file beside the
//!   target (`<name>#<n>`) and renames it into place.
//! - Larger objects use a multipart upload. S3 shows nothing under the key until
//!   CompleteMultipartUpload, which publishes the whole object at once;
//!   `LocalFileSystem` writes the parts into a `<name>#<n>` staging file (hidden from
//!   listings and reads) and renames it on completion.
//!
//! On S3 a rename would be a second full copy of the object, so writing in place is both
//! cheaper and no less safe. What a failed write must do is abort the multipart upload:
//! S3 keeps (and bills) the parts of an upload nobody aborts, and the local backend
//! keeps its staging file. `Upload::abort` does that, and dropping an unfinished
//! `Upload` (the request future was cancelled) aborts it in the background.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, PutPayload};
use tokio::task::JoinSet;

/// How an upload is cut into parts.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tuning {
    /// Bytes per part; also the most buffered before the first request. Every part but
    /// the last has exactly this size (some S3-compatible services require equal parts).
    pub part_size: usize,
    /// Parts uploading at once, on top of the one being filled.
    pub in_flight: usize,
}

pub(super) struct Upload {
    store: Arc<dyn ObjectStore>,
    path: Path,
    tuning: Tuning,
    buffer: Vec<u8>,
    multipart: Option<Multipart>,
    written: u64,
}

struct Multipart {
    upload: Box<dyn MultipartUpload>,
    parts: JoinSet<object_store::Result<()>>,
}

impl Upload {
    pub(super) fn new(store: Arc<dyn ObjectStore>, path: Path, tuning: Tuning) -> Self {
        Upload {
            store,
            path,
            tuning,
            buffer: Vec::new(),
            multipart: None,
            written: 0,
        }
    }

    /// Bytes handed to the store so far.
    pub(super) fn written(&self) -> u64 {
        self.written
    }

    pub(super) async fn write(&mut self, mut data: &[u8]) -> object_store::Result<()> {
        self.written += data.len() as u64;
        while !data.is_empty() {
            let room = self.tuning.part_size - self.buffer.len();
            let take = room.min(data.len());
            self.grow_buffer(take);
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() == self.tuning.part_size {
                let part = Bytes::from(std::mem::take(&mut self.buffer));
                self.send_part(part).await?;
            }
        }
        Ok(())
    }

    /// Publishes the object. On failure the upload is left for `abort`.
    pub(super) async fn finish(&mut self) -> object_store::Result<()> {
        let rest = Bytes::from(std::mem::take(&mut self.buffer));
        if self.multipart.is_none() {
            self.store
                .put(&self.path, PutPayload::from_bytes(rest))
                .await?;
            return Ok(());
        }
        if !rest.is_empty() {
            self.send_part(rest).await?;
        }
        let Some(multipart) = self.multipart.as_mut() else {
            return Ok(());
        };
        multipart.wait_for(0).await?;
        multipart.upload.complete().await?;
        self.multipart = None;
        Ok(())
    }

    /// Discards whatever was uploaded. Failures are only logged: the write has already
    /// failed, and a leftover S3 upload is the bucket lifecycle rule's to collect.
    pub(super) async fn abort(&mut self) {
        self.buffer = Vec::new();
        if let Some(mut multipart) = self.multipart.take() {
            multipart.parts.shutdown().await;
            if let Err(error) = multipart.upload.abort().await {
                tracing::warn!(%error, path = %self.path, "could not abort a multipart upload");
            }
        }
    }

    /// Grows the part buffer geometrically but never past one part, so small objects
    /// cost little and large ones exactly one part's worth.
    fn grow_buffer(&mut self, additional: usize) {
        let needed = self.buffer.len() + additional;
        if needed <= self.buffer.capacity() {
            return;
        }
        let target = (self.buffer.capacity() * 2)
            .max(needed)
            .max(64 * 1024)
            .min(self.tuning.part_size);
        self.buffer.reserve_exact(target - self.buffer.len());
    }

    async fn send_part(&mut self, part: Bytes) -> object_store::Result<()> {
        if self.multipart.is_none() {
            let upload = self.store.put_multipart(&self.path).await?;
            self.multipart = Some(Multipart {
                upload,
                parts: JoinSet::new(),
            });
        }
        let Some(multipart) = self.multipart.as_mut() else {
            return Ok(());
        };
        multipart
            .wait_for(self.tuning.in_flight.saturating_sub(1))
            .await?;
        let request = multipart.upload.put_part(PutPayload::from_bytes(part));
        multipart.parts.spawn(request);
        Ok(())
    }
}

impl Multipart {
    /// Waits until at most `in_flight` parts are still uploading, failing on the first
    /// part that failed.
    async fn wait_for(&mut self, in_flight: usize) -> object_store::Result<()> {
        while self.parts.len() > in_flight {
            match self.parts.join_next().await {
                Some(Ok(result)) => result?,
                Some(Err(source)) => return Err(object_store::Error::JoinError { source }),
                None => break,
            }
        }
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let Some(mut multipart) = self.multipart.take() else {
            return;
        };
        // Dropping the JoinSet cancels the part uploads; the abort itself needs a runtime.
        multipart.parts.abort_all();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let path = self.path.clone();
            runtime.spawn(async move {
                if let Err(error) = multipart.upload.abort().await {
                    tracing::warn!(%error, %path, "could not abort a cancelled multipart upload");
                }
            });
        }
    }
}

//! Writing incoming bytes to a local file in one pass: the bytes are handed, in
//! batches of about 1 MiB, to a blocking task that hashes them (SHA-256) and writes
//! them with one `writev` per batch, while the request's task goes on receiving. The
//! receiving side never waits on the disk for each network chunk, and no byte is
//! copied on the way (the batches are the network's own buffers).
//!
//! What the pass learns (size, SHA-256, the first bytes for MIME sniffing) is a
//! [`Digest`], which a resumable upload keeps between its chunks.
//!
//! Memory is bounded: one batch being filled and one being written. Dropping an
//! unfinished writer lets the batch being written finish, and writes nothing more.

use std::io::{self, IoSlice, Seek as _, SeekFrom, Write as _};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::task::JoinHandle;

use super::mime;

/// Bytes gathered before they are written.
const BATCH: usize = 1024 * 1024;

/// What one pass over a file's original bytes learnt about them.
#[derive(Clone)]
pub struct Digest {
    hasher: Sha256,
    size: u64,
    head: Vec<u8>,
}

impl Default for Digest {
    fn default() -> Self {
        Digest {
            hasher: Sha256::new(),
            size: 0,
            head: Vec::with_capacity(mime::SNIFF_LEN),
        }
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Digest").field("size", &self.size).finish()
    }
}

impl Digest {
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.size += data.len() as u64;
        if self.head.len() < mime::SNIFF_LEN {
            let take = (mime::SNIFF_LEN - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
        }
    }

    /// Original bytes seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The size, lower-case hex SHA-256 and sniffed MIME type of all the bytes seen.
    pub fn finish(self) -> Fingerprint {
        Fingerprint {
            size: self.size,
            sha256: hex::encode(self.hasher.finalize()),
            mime_type: super::sniff_mime(&self.head),
        }
    }
}

/// The facts about a file's original bytes that its row keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub size: u64,
    pub sha256: String,
    pub mime_type: String,
}

/// Writes bytes into a file from `offset` on, hashing them into a `Digest` when given
/// one. Each batch is written by one blocking task while the next one fills, so no
/// thread is held while the sender is slow.
pub struct SpoolWriter {
    /// The file and digest, while no batch is being written.
    idle: Option<(std::fs::File, Option<Digest>)>,
    writing: Option<JoinHandle<io::Result<(std::fs::File, Option<Digest>)>>>,
    batch: Vec<Bytes>,
    batched: usize,
}

impl SpoolWriter {
    pub fn new(mut file: std::fs::File, offset: u64, digest: Option<Digest>) -> io::Result<Self> {
        file.seek(SeekFrom::Start(offset))?;
        Ok(SpoolWriter {
            idle: Some((file, digest)),
            writing: None,
            batch: Vec::new(),
            batched: 0,
        })
    }

    /// Queues `bytes`; waits only when a full batch is ready and the previous one is
    /// still being written.
    pub async fn push(&mut self, bytes: Bytes) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.batched += bytes.len();
        self.batch.push(bytes);
        if self.batched >= BATCH {
            self.dispatch().await?;
        }
        Ok(())
    }

    /// Writes what is left and answers the file (positioned after the last byte
    /// written) and the digest.
    pub async fn finish(mut self) -> io::Result<(std::fs::File, Option<Digest>)> {
        self.dispatch().await?;
        self.settle().await
    }

    /// Waits for the batch being written, if any.
    async fn settle(&mut self) -> io::Result<(std::fs::File, Option<Digest>)> {
        if let Some(writing) = self.writing.take() {
            return writing.await.map_err(io::Error::other)?;
        }
        self.idle
            .take()
            .ok_or_else(|| io::Error::other("the file writer failed earlier"))
    }

    async fn dispatch(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let (mut file, mut digest) = self.settle().await?;
        let batch = std::mem::take(&mut self.batch);
        self.batched = 0;
        self.writing = Some(tokio::task::spawn_blocking(move || {
            if let Some(digest) = digest.as_mut() {
                for bytes in &batch {
                    digest.update(bytes);
                }
            }
            write_all_vectored(&mut file, &batch)?;
            Ok((file, digest))
        }));
        Ok(())
    }
}

/// `write_all` for a list of buffers, one `writev` per call as far as the system
/// takes them.
fn write_all_vectored(file: &mut std::fs::File, buffers: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = buffers.iter().map(|b| IoSlice::new(b)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

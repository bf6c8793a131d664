//! Writing incoming bytes to a local file in one pass: the bytes are handed, in
//! batches of about 1 MiB, to two blocking tasks, one hashing them (SHA-256), the
//! other writing them with one `writev` per batch, while the request's task goes on
//! receiving. The
//! receiving side never waits on the disk for each network chunk, and no byte is
//! copied on the way (the batches are the network's own buffers).
//!
//! What the pass learns (size, SHA-256, the first bytes for MIME sniffing) is a
//! [`Digest`], which a resumable upload keeps between its chunks.
//!
//! Bytes bound for an encrypted bucket are sealed on the way, by the task that
//! writes them (a resumable upload's chunk with `crypto::ChunkSealer`, a multipart
//! upload's file with `crypto::Sealer`): the bytes are hashed as sent and written
//! sealed, still in one pass, AES-GCM and SHA-256 each on a thread of its own.
//!
//! Memory is bounded: one batch being filled and one being written and hashed.
//! Dropping an unfinished writer lets the batch in hand finish, and writes nothing
//! more.

use std::io::{self, IoSlice, Seek as _, SeekFrom, Write as _};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::task::JoinHandle;

use super::crypto::{self, ChunkSealer, Sealer};
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
/// one. Each batch is written by one blocking task and hashed by another, side by
/// side, while the next batch fills; no thread is held while the sender is slow.
pub struct SpoolWriter {
    /// The file, while no batch is being written.
    file: Option<Sink>,
    writing: Option<JoinHandle<io::Result<Sink>>>,
    /// The digest, while no batch is being hashed.
    digest: Option<Digest>,
    hashing: Option<JoinHandle<Digest>>,
    batch: Vec<Bytes>,
    batched: usize,
}

impl SpoolWriter {
    pub fn new(mut file: std::fs::File, offset: u64, digest: Option<Digest>) -> io::Result<Self> {
        file.seek(SeekFrom::Start(offset))?;
        Ok(SpoolWriter {
            file: Some(Sink { file, sealer: None }),
            writing: None,
            digest,
            hashing: None,
            batch: Vec::new(),
            batched: 0,
        })
    }

    /// Seals what is written as one chunk of a resumable upload (the original bytes
    /// are still hashed).
    pub(super) fn sealing(mut self, sealer: ChunkSealer) -> Self {
        if let Some(sink) = self.file.as_mut() {
            sink.sealer = Some(Seal::Chunk(sealer));
        }
        self
    }

    /// Seals what is written as a whole file (`crypto`'s version 1) under the key of
    /// `salt` (as `Encoding::salt` keeps it), so the file can be stored as it is;
    /// the original bytes are still hashed. `None` for a salt `new_salt` did not make.
    pub fn sealing_file(mut self, secret: &str, salt: &str) -> Option<Self> {
        let salt = crypto::parse_salt(salt)?;
        if let Some(sink) = self.file.as_mut() {
            sink.sealer = Some(Seal::Whole(Sealer::new(secret, &salt)));
        }
        Some(self)
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
        self.settle().await?;
        let mut sink = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("the file writer failed earlier"))?;
        if sink.sealer.is_some() {
            sink = tokio::task::spawn_blocking(move || {
                sink.finish()?;
                Ok::<_, io::Error>(sink)
            })
            .await
            .map_err(io::Error::other)??;
        }
        Ok((sink.file, self.digest.take()))
    }

    /// Waits for the batch being written and hashed, if any.
    async fn settle(&mut self) -> io::Result<()> {
        if let Some(hashing) = self.hashing.take() {
            self.digest = Some(hashing.await.map_err(io::Error::other)?);
        }
        if let Some(writing) = self.writing.take() {
            self.file = Some(writing.await.map_err(io::Error::other)??);
        }
        Ok(())
    }

    async fn dispatch(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.settle().await?;
        let mut sink = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("the file writer failed earlier"))?;
        let batch = std::mem::take(&mut self.batch);
        self.batched = 0;
        if let Some(mut digest) = self.digest.take() {
            let hashed = batch.clone();
            self.hashing = Some(tokio::task::spawn_blocking(move || {
                for bytes in &hashed {
                    digest.update(bytes);
                }
                digest
            }));
        }
        self.writing = Some(tokio::task::spawn_blocking(move || {
            sink.write(&batch)?;
            Ok(sink)
        }));
        Ok(())
    }
}

/// The file being written, and the sealer the bytes go through first, if any.
struct Sink {
    file: std::fs::File,
    sealer: Option<Seal>,
}

/// How the bytes are sealed on their way to the file.
enum Seal {
    Chunk(ChunkSealer),
    Whole(Sealer),
}

impl Seal {
    fn push(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Seal::Chunk(sealer) => sealer.push(data),
            Seal::Whole(sealer) => sealer.push(data),
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        match self {
            Seal::Chunk(sealer) => sealer.finish(),
            Seal::Whole(sealer) => sealer.finish(),
        }
    }

    /// Writes the sealed bytes that are ready, and forgets them.
    fn write_ready(&mut self, file: &mut std::fs::File) -> io::Result<()> {
        match self {
            Seal::Chunk(sealer) => {
                file.write_all(sealer.ready())?;
                sealer.consume();
            }
            Seal::Whole(sealer) => {
                file.write_all(sealer.ready())?;
                sealer.consume();
            }
        }
        Ok(())
    }
}

impl Sink {
    fn write(&mut self, batch: &[Bytes]) -> io::Result<()> {
        let Some(sealer) = self.sealer.as_mut() else {
            return write_all_vectored(&mut self.file, batch);
        };
        for bytes in batch {
            sealer.push(bytes)?;
        }
        sealer.write_ready(&mut self.file)
    }

    fn finish(&mut self) -> io::Result<()> {
        if let Some(mut sealer) = self.sealer.take() {
            sealer.finish()?;
            sealer.write_ready(&mut self.file)?;
        }
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

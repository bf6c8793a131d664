//! The transformations between a file's original bytes and its stored bytes:
//! compression first (encrypted data does not compress), then encryption; reading
//! undoes them in reverse. Everything works on bounded chunks.

use std::io;

use async_compression::Level;
use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use async_compression::tokio::write::{GzipEncoder, ZstdEncoder};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
use tokio::io::AsyncWriteExt as _;
use tokio_util::io::{ReaderStream, StreamReader};

use super::crypto::{Opener, SALT, Sealer};
use super::{ByteStream, Compression};

/// Largest chunk handed to readers: as large as a local file's reads, so a plain
/// download passes them on whole (one frame, one write each) instead of in slices.
pub(super) const CHUNK: usize = 512 * 1024;

/// Original bytes in, stored bytes out.
pub(super) struct Encoder {
    compressor: Compressor,
    sealer: Option<Sealer>,
    /// Stored bytes ready for the store; cleared on every call.
    out: Vec<u8>,
    /// Whether the sealer's ready bytes were handed out (and are written by the
    /// next call): the header is ready before the first call.
    handed_out: bool,
}

enum Compressor {
    None,
    Gzip(GzipEncoder<Vec<u8>>),
    Zstd(ZstdEncoder<Vec<u8>>),
}

impl Encoder {
    pub(super) fn new(compression: Compression, seal: Option<(&str, &[u8; SALT])>) -> Self {
        let compressor = match compression {
            Compression::None => Compressor::None,
            Compression::Gzip => Compressor::Gzip(GzipEncoder::new(Vec::new())),
            // The frame checksum lets a corrupted unencrypted object fail instead of
            // decoding to wrong bytes.
            Compression::Zstd => Compressor::Zstd(ZstdEncoder::with_quality_and_params(
                Vec::new(),
                Level::Default,
                &[async_compression::zstd::CParameter::checksum_flag(true)],
            )),
        };
        Encoder {
            compressor,
            sealer: seal.map(|(secret, salt)| Sealer::new(secret, salt)),
            out: Vec::new(),
            handed_out: false,
        }
    }

    /// Feeds original bytes; returns the stored bytes that are ready.
    pub(super) async fn push(&mut self, data: &[u8]) -> io::Result<&[u8]> {
        let Encoder {
            compressor,
            sealer,
            out,
            handed_out,
        } = self;
        out.clear();
        if let Some(sealer) = sealer.as_mut()
            && std::mem::replace(handed_out, true)
        {
            sealer.consume();
        }
        match compressor {
            Compressor::None => seal(sealer, out, data)?,
            Compressor::Gzip(encoder) => {
                encoder.write_all(data).await?;
                drain(encoder.get_mut(), sealer, out)?;
            }
            Compressor::Zstd(encoder) => {
                encoder.write_all(data).await?;
                drain(encoder.get_mut(), sealer, out)?;
            }
        }
        Ok(self.ready())
    }

    /// Flushes everything still held back; returns the last stored bytes.
    pub(super) async fn finish(&mut self) -> io::Result<&[u8]> {
        let Encoder {
            compressor,
            sealer,
            out,
            handed_out,
        } = self;
        out.clear();
        if let Some(sealer) = sealer.as_mut()
            && std::mem::replace(handed_out, true)
        {
            sealer.consume();
        }
        match compressor {
            Compressor::None => {}
            Compressor::Gzip(encoder) => {
                encoder.shutdown().await?;
                drain(encoder.get_mut(), sealer, out)?;
            }
            Compressor::Zstd(encoder) => {
                encoder.shutdown().await?;
                drain(encoder.get_mut(), sealer, out)?;
            }
        }
        if let Some(sealer) = sealer.as_mut() {
            sealer.finish()?;
        }
        Ok(self.ready())
    }

    /// The stored bytes the last call made ready: sealed in the sealer's own buffer
    /// (no copy), else in `out`.
    fn ready(&self) -> &[u8] {
        match &self.sealer {
            Some(sealer) => sealer.ready(),
            None => &self.out,
        }
    }
}

/// Moves what the compressor produced on, keeping its buffer's allocation.
fn drain(
    compressed: &mut Vec<u8>,
    sealer: &mut Option<Sealer>,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let result = seal(sealer, out, compressed);
    compressed.clear();
    result
}

fn seal(sealer: &mut Option<Sealer>, out: &mut Vec<u8>, data: &[u8]) -> io::Result<()> {
    match sealer {
        Some(sealer) => sealer.push(data),
        None => {
            out.extend_from_slice(data);
            Ok(())
        }
    }
}

/// Stored bytes in, original bytes out. `seal` is set for encrypted objects.
pub(super) fn decode(
    stored: ByteStream,
    compression: Compression,
    seal: Option<(&str, &[u8; SALT])>,
) -> ByteStream {
    let plain = match seal {
        Some((secret, salt)) => decrypt(stored, Opener::new(secret, salt)),
        None => stored,
    };
    let decompressed = match compression {
        Compression::None => return rechunk(plain),
        Compression::Gzip => {
            ReaderStream::with_capacity(GzipDecoder::new(StreamReader::new(plain)), CHUNK).boxed()
        }
        Compression::Zstd => {
            ReaderStream::with_capacity(ZstdDecoder::new(StreamReader::new(plain)), CHUNK).boxed()
        }
    };
    // Errors the decompressor raises itself (rather than passes up from the store or the
    // decryption) mean the stored bytes are corrupt.
    decompressed
        .map_err(|error| {
            if super::carries_store_error(&error) || error.kind() == io::ErrorKind::InvalidData {
                error
            } else {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("compressed file is corrupt: {error}"),
                )
            }
        })
        .boxed()
}

/// Opens sealed bytes as they are read. Every segment a read completes is opened
/// at once and handed on as one chunk, so a large read makes one chunk downstream,
/// not one per 64 KiB segment.
fn decrypt(sealed: ByteStream, opener: Opener) -> ByteStream {
    stream::try_unfold(Some((sealed, opener)), |state| async move {
        let Some((mut sealed, mut opener)) = state else {
            return Ok(None);
        };
        loop {
            if let Some(first) = opener.next_segment()? {
                let Some(second) = opener.next_segment()? else {
                    return Ok(Some((first, Some((sealed, opener)))));
                };
                let mut opened = BytesMut::with_capacity(CHUNK + first.len());
                opened.extend_from_slice(&first);
                opened.extend_from_slice(&second);
                while opened.len() < CHUNK {
                    match opener.next_segment()? {
                        Some(segment) => opened.extend_from_slice(&segment),
                        None => break,
                    }
                }
                return Ok(Some((opened.freeze(), Some((sealed, opener)))));
            }
            match sealed.try_next().await? {
                Some(chunk) => opener.push(&chunk),
                None => {
                    let last = opener.finish()?;
                    return Ok(Some((last, None)));
                }
            }
        }
    })
    .boxed()
}

/// Splits chunks larger than `CHUNK` and drops empty ones.
pub(super) fn rechunk(input: ByteStream) -> ByteStream {
    stream::try_unfold((input, Bytes::new()), |(mut input, mut rest)| async move {
        loop {
            if !rest.is_empty() {
                let chunk = rest.split_to(rest.len().min(CHUNK));
                return Ok(Some((chunk, (input, rest))));
            }
            match input.try_next().await? {
                Some(next) => rest = next,
                None => return Ok(None),
            }
        }
    })
    .boxed()
}

/// Bytes `start..end` of `input`, stopping (and dropping `input`) once `end` is reached.
pub(super) fn slice(input: ByteStream, start: u64, end: u64) -> ByteStream {
    stream::try_unfold((input, 0u64), move |(mut input, mut position)| async move {
        loop {
            if position >= end {
                return Ok(None);
            }
            let Some(chunk) = input.try_next().await? else {
                return Ok(None);
            };
            let chunk_start = position;
            position += chunk.len() as u64;
            if position <= start {
                continue;
            }
            // Both offsets fall inside this chunk, so they fit in usize.
            let from = (start.saturating_sub(chunk_start)) as usize;
            let to = (end.min(position) - chunk_start) as usize;
            return Ok(Some((chunk.slice(from..to), (input, position))));
        }
    })
    .boxed()
}

//! Encryption at rest for stored files: AES-256-GCM in the STREAM construction
//! (aead's `StreamBE32` nonces) over 64 KiB plaintext segments, so files of any size
//! are sealed and opened with bounded memory, and reordering, truncation or a swapped
//! segment all fail authentication. Segments are sealed and opened where they lie in
//! the buffer that carries them: no segment is allocated or copied on its own.
//!
//! Two layouts, told apart by the version byte after the magic:
//!
//! - version 1, a file sealed in one pass: `NBFE` ‖ 1 ‖ 7-byte random nonce prefix,
//!   then each segment's ciphertext ‖ 16-byte tag. Every segment but the last holds
//!   exactly 64 KiB of plaintext; the last (possibly empty) one is sealed with
//!   STREAM's "last" flag, which is how a cut at a segment boundary is told from a
//!   complete object. The header is the associated data of every segment.
//! - version 2, a resumable upload sealed chunk by chunk as the chunks arrive (ADR
//!   26): `NBFE` ‖ 2 ‖ chunk size (8 bytes, big-endian), then per chunk a 16-byte
//!   random seed followed by the chunk's segments. Each chunk has a key of its own,
//!   derived from the file's key material, the chunk's index and its seed, and its
//!   own STREAM counter; a seed is drawn afresh for every attempt at a chunk, so a
//!   retried chunk never seals other bytes under a key and nonce already used. Only
//!   the file's very last segment carries the "last" flag; the header is the
//!   associated data of every segment, and the index in the key keeps chunks from
//!   being moved.
//!
//! The key is HMAC-SHA256(server secret, "nimbus file key\0" ‖ salt), with a random
//! 16-byte salt per file kept by the caller, so no two files share a key and rotating
//! the server secret makes old files unreadable rather than silently wrong.
//!
//! AES-256-GCM itself is ring's (AES-NI, CLMUL and, where the CPU has them, VAES and
//! VPCLMULQDQ over several blocks at once): about a third of the CPU time per byte
//! of `aes-gcm` 0.10, which has no wide path. It is the same cipher, so the bytes
//! are the same: a test seals and opens against aead's STREAM over `aes-gcm`, as
//! files were sealed before.

use std::io;

use bytes::{Bytes, BytesMut};
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::Sha256;

/// Plaintext bytes per segment.
pub(super) const SEGMENT: usize = 64 * 1024;
const TAG: usize = 16;
const SEALED_SEGMENT: usize = SEGMENT + TAG;
const MAGIC: &[u8; 4] = b"NBFE";
const VERSION: u8 = 1;
const VERSION_CHUNKED: u8 = 2;
/// 12-byte GCM nonce less STREAM's 4-byte counter and 1-byte last flag.
const NONCE_PREFIX: usize = 7;
pub(super) const HEADER: usize = MAGIC.len() + 1 + NONCE_PREFIX;
pub(super) const SALT: usize = 16;
/// Version 2: magic, version, chunk size.
pub(super) const CHUNKED_HEADER: usize = MAGIC.len() + 1 + 8;
/// The random seed at the start of every chunk of version 2.
const SEED: usize = 16;

/// Stored bytes of `plain` bytes of one chunk of version 2 (seed and tags included).
pub(super) fn sealed_chunk_len(plain: u64) -> u64 {
    SEED as u64 + plain + plain.div_ceil(SEGMENT as u64) * TAG as u64
}

/// Where chunk `index` starts in a file of version 2 cut in chunks of `chunk_size`.
/// The first chunk starts at 0: it writes the header.
pub(super) fn sealed_chunk_offset(chunk_size: u64, index: u32) -> u64 {
    match index {
        0 => 0,
        _ => CHUNKED_HEADER as u64 + u64::from(index) * sealed_chunk_len(chunk_size),
    }
}

/// The stored size of a file of `size` bytes sealed in chunks of `chunk_size`.
pub(super) fn sealed_size(size: u64, chunk_size: u64) -> u64 {
    let full = size / chunk_size;
    let rest = size % chunk_size;
    let mut total = CHUNKED_HEADER as u64 + full * sealed_chunk_len(chunk_size);
    if rest > 0 {
        total += sealed_chunk_len(rest);
    }
    total
}

/// A fresh random per-file salt.
pub(super) fn new_salt() -> [u8; SALT] {
    let mut salt = [0u8; SALT];
    rand::rng().fill_bytes(&mut salt);
    salt
}

/// The salt as kept in `Encoding::salt`; `None` when it is not what `new_salt` makes.
pub(super) fn parse_salt(hex_salt: &str) -> Option<[u8; SALT]> {
    let bytes = hex::decode(hex_salt).ok()?;
    bytes.try_into().ok()
}

fn secret_mac(server_secret: &str) -> Hmac<Sha256> {
    <Hmac<Sha256> as hmac::Mac>::new_from_slice(server_secret.as_bytes())
        .expect("HMAC takes keys of any length")
}

/// An AES-256-GCM key.
fn aes_key(key: &[u8]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("HMAC-SHA256 makes 32 bytes"))
}

#[cfg(test)]
fn file_key(server_secret: &str, salt: &[u8; SALT]) -> [u8; 32] {
    let mut mac = secret_mac(server_secret);
    mac.update(b"nimbus file key\0");
    mac.update(salt);
    mac.finalize().into_bytes().into()
}

fn cipher(server_secret: &str, salt: &[u8; SALT]) -> LessSafeKey {
    file_cipher(secret_mac(server_secret), salt)
}

fn file_cipher(mut mac: Hmac<Sha256>, salt: &[u8; SALT]) -> LessSafeKey {
    mac.update(b"nimbus file key\0");
    mac.update(salt);
    aes_key(&mac.finalize().into_bytes())
}

/// The key of one attempt at chunk `index` of a file of version 2.
fn chunk_cipher(
    mut mac: Hmac<Sha256>,
    salt: &[u8; SALT],
    index: u32,
    seed: &[u8; SEED],
) -> LessSafeKey {
    mac.update(b"nimbus chunk key\0");
    mac.update(salt);
    mac.update(&index.to_be_bytes());
    mac.update(seed);
    aes_key(&mac.finalize().into_bytes())
}

/// A chunk's key is used for that chunk alone, so its STREAM nonces start from a
/// zero prefix.
const CHUNK_NONCE_PREFIX: [u8; NONCE_PREFIX] = [0; NONCE_PREFIX];

fn chunked_header(chunk_size: u64) -> [u8; CHUNKED_HEADER] {
    let mut header = [0u8; CHUNKED_HEADER];
    header[..MAGIC.len()].copy_from_slice(MAGIC);
    header[MAGIC.len()] = VERSION_CHUNKED;
    header[MAGIC.len() + 1..].copy_from_slice(&chunk_size.to_be_bytes());
    header
}

/// The STREAM nonce of a segment, as aead's `StreamBE32` builds it: the prefix ‖
/// the segment's counter (u32, big-endian) ‖ 1 for the last segment, else 0. The
/// segments are sealed and opened here in place rather than through aead's
/// `EncryptorBE32`/`DecryptorBE32`, which allocate and copy every segment; the bytes
/// are the same (a test checks it against them).
fn stream_nonce(prefix: &[u8; NONCE_PREFIX], counter: u32, last: bool) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..NONCE_PREFIX].copy_from_slice(prefix);
    nonce[NONCE_PREFIX..NONCE_PREFIX + 4].copy_from_slice(&counter.to_be_bytes());
    nonce[NONCE_PREFIX + 4] = u8::from(last);
    nonce
}

/// One STREAM of segments under one key: the counter advances with every segment
/// and, as in aead's STREAM, its largest value is never used for a segment that is
/// not the last.
struct Stream {
    cipher: LessSafeKey,
    prefix: [u8; NONCE_PREFIX],
    counter: u32,
}

impl Stream {
    fn new(cipher: LessSafeKey, prefix: [u8; NONCE_PREFIX]) -> Self {
        Stream {
            cipher,
            prefix,
            counter: 0,
        }
    }

    /// The nonce of the next segment, advancing the counter.
    fn next_nonce(&mut self, last: bool) -> Option<Nonce> {
        if !last && self.counter == u32::MAX {
            return None;
        }
        let nonce = stream_nonce(&self.prefix, self.counter, last);
        self.counter = self.counter.wrapping_add(1);
        // The counter never repeats under one key (each key seals one STREAM).
        Some(Nonce::assume_unique_for_key(nonce))
    }

    /// Seals `plain` where it lies; answers its tag.
    fn seal(&mut self, plain: &mut [u8], aad: &[u8], last: bool) -> io::Result<[u8; TAG]> {
        let nonce = self
            .next_nonce(last)
            .ok_or_else(|| io::Error::other("file too large to encrypt"))?;
        let tag = self
            .cipher
            .seal_in_place_separate_tag(nonce, Aad::from(aad), plain)
            .map_err(|_| io::Error::other("file too large to encrypt"))?;
        let mut bytes = [0u8; TAG];
        bytes.copy_from_slice(tag.as_ref());
        Ok(bytes)
    }

    /// Opens one sealed segment (ciphertext ‖ tag) where it lies; the plaintext is
    /// its first `len - TAG` bytes.
    fn open(&mut self, sealed: &mut [u8], aad: &[u8], last: bool) -> io::Result<()> {
        let nonce = self
            .next_nonce(last)
            .ok_or_else(|| unreadable("is corrupt"))?;
        if sealed.len() < TAG {
            return Err(unreadable("is truncated"));
        }
        self.cipher
            .open_in_place(nonce, Aad::from(aad), sealed)
            .map(|_| ())
            .map_err(|_| unreadable("does not authenticate"))
    }
}

/// Plaintext in, sealed segments out, in one buffer: each byte is copied once, into
/// the buffer, and sealed where it lies, with room left after each segment for its
/// tag. A full segment is sealed only once more bytes follow it, because the last one
/// is sealed differently.
struct Segments {
    stream: Stream,
    /// The associated data of every segment: the file's header.
    aad: Vec<u8>,
    buf: Vec<u8>,
    /// How many bytes at the start of `buf` are ready to be stored.
    ready: usize,
    /// Where the plaintext of the segment being filled starts in `buf`.
    open: usize,
    finished: bool,
}

impl Segments {
    /// `opening`: the stored bytes that come before the first segment.
    fn new(stream: Stream, aad: &[u8], opening: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(opening.len() + SEALED_SEGMENT);
        buf.extend_from_slice(opening);
        Segments {
            stream,
            aad: aad.to_vec(),
            ready: buf.len(),
            open: buf.len(),
            buf,
            finished: false,
        }
    }

    fn push(&mut self, mut data: &[u8]) -> io::Result<()> {
        if self.finished {
            return Err(unreadable("sealed twice"));
        }
        while !data.is_empty() {
            let filled = self.buf.len() - self.open;
            if filled == SEGMENT {
                self.seal_open(false)?;
                continue;
            }
            let take = (SEGMENT - filled).min(data.len());
            if self.buf.capacity() - self.buf.len() < take + TAG {
                // Room for what is at hand (up to a few segments) and its tags.
                let ahead = data.len().min(16 * SEGMENT);
                self.buf
                    .reserve(ahead + ahead.div_ceil(SEGMENT) * TAG + TAG);
            }
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Seals what is held back: as the last segment when `last` (even if empty), else
    /// only when it holds bytes.
    fn finish(&mut self, last: bool) -> io::Result<()> {
        if self.finished {
            return Err(unreadable("sealed twice"));
        }
        self.finished = true;
        if last || self.buf.len() > self.open {
            self.seal_open(last)?;
        }
        Ok(())
    }

    fn seal_open(&mut self, last: bool) -> io::Result<()> {
        let open = self.open;
        let tag = self.stream.seal(&mut self.buf[open..], &self.aad, last)?;
        self.buf.extend_from_slice(&tag);
        self.open = self.buf.len();
        self.ready = self.buf.len();
        Ok(())
    }

    /// The stored bytes ready to be written.
    fn ready(&self) -> &[u8] {
        &self.buf[..self.ready]
    }

    /// Forgets the bytes `ready` answered (they were written); the segment being
    /// filled moves to the front.
    fn consume(&mut self) {
        self.buf.drain(..self.ready);
        self.open -= self.ready;
        self.ready = 0;
    }
}

/// Seals one chunk of a resumable upload (version 2) as it arrives, with a fresh
/// seed: the chunk's stored bytes, from `sealed_chunk_offset` on, are what `ready`
/// answers after `push` and `finish`.
pub(super) struct ChunkSealer {
    segments: Segments,
    /// Whether this chunk ends the file: its last segment is sealed as the last.
    last: bool,
}

impl ChunkSealer {
    pub(super) fn new(
        server_secret: &str,
        salt: &[u8; SALT],
        chunk_size: u64,
        index: u32,
        last: bool,
    ) -> Self {
        let mut seed = [0u8; SEED];
        rand::rng().fill_bytes(&mut seed);
        let header = chunked_header(chunk_size);
        let mut opening = Vec::with_capacity(CHUNKED_HEADER + SEED);
        if index == 0 {
            opening.extend_from_slice(&header);
        }
        opening.extend_from_slice(&seed);
        let cipher = chunk_cipher(secret_mac(server_secret), salt, index, &seed);
        ChunkSealer {
            segments: Segments::new(Stream::new(cipher, CHUNK_NONCE_PREFIX), &header, &opening),
            last,
        }
    }

    /// Takes plaintext; what is ready to store is then `ready`.
    pub(super) fn push(&mut self, data: &[u8]) -> io::Result<()> {
        self.segments.push(data)
    }

    /// Seals what is held back: the last segment of the chunk, flagged as the file's
    /// last when the chunk ends the file.
    pub(super) fn finish(&mut self) -> io::Result<()> {
        self.segments.finish(self.last)
    }

    pub(super) fn ready(&self) -> &[u8] {
        self.segments.ready()
    }

    /// Forgets what `ready` answered, once it is written.
    pub(super) fn consume(&mut self) {
        self.segments.consume();
    }
}

/// The error every authentication or format failure turns into. Its kind is
/// `InvalidData`, which the store maps to `FileError::Unreadable`.
pub(super) fn unreadable(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("encrypted file {what}: wrong server secret, corrupt or truncated"),
    )
}

/// Seals a byte stream (version 1) as it is written.
pub(super) struct Sealer {
    segments: Segments,
}

impl Sealer {
    pub(super) fn new(server_secret: &str, salt: &[u8; SALT]) -> Self {
        let mut prefix = [0u8; NONCE_PREFIX];
        rand::rng().fill_bytes(&mut prefix);
        let mut header = [0u8; HEADER];
        header[..MAGIC.len()].copy_from_slice(MAGIC);
        header[MAGIC.len()] = VERSION;
        header[MAGIC.len() + 1..].copy_from_slice(&prefix);
        Sealer {
            segments: Segments::new(
                Stream::new(cipher(server_secret, salt), prefix),
                &header,
                &header,
            ),
        }
    }

    /// Takes plaintext; what is ready to store is then `ready`.
    pub(super) fn push(&mut self, data: &[u8]) -> io::Result<()> {
        self.segments.push(data)
    }

    /// Seals the last segment.
    pub(super) fn finish(&mut self) -> io::Result<()> {
        self.segments.finish(true)
    }

    pub(super) fn ready(&self) -> &[u8] {
        self.segments.ready()
    }

    /// Forgets what `ready` answered, once it is written.
    pub(super) fn consume(&mut self) {
        self.segments.consume();
    }
}

/// Opens a sealed byte stream (either version) as it is read.
pub(super) struct Opener {
    mac: Hmac<Sha256>,
    salt: [u8; SALT],
    layout: Layout,
    /// The header as read: the associated data of every segment.
    header: Vec<u8>,
    pending: BytesMut,
}

enum Layout {
    /// The header has not arrived yet.
    Waiting,
    /// Version 1: one stream over the whole file.
    Whole(Stream),
    /// Version 2: one stream per chunk, opened once the chunk's seed has arrived.
    Chunked {
        chunk_size: u64,
        index: u32,
        /// Plaintext opened so far of the current chunk.
        offset: u64,
        stream: Option<Stream>,
    },
    Finished,
}

impl Opener {
    pub(super) fn new(server_secret: &str, salt: &[u8; SALT]) -> Self {
        Opener {
            mac: secret_mac(server_secret),
            salt: *salt,
            layout: Layout::Waiting,
            header: Vec::new(),
            pending: BytesMut::new(),
        }
    }

    pub(super) fn push(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
    }

    /// The next plaintext segment, if one is buffered and is known not to be the last
    /// (more sealed bytes follow it). It is opened where it lies in the buffer.
    pub(super) fn next_segment(&mut self) -> io::Result<Option<Bytes>> {
        if !self.read_header()? {
            return Ok(None);
        }
        let sealed_len = match self.next_sealed_len()? {
            Some(len) if self.pending.len() > len => len,
            _ => return Ok(None),
        };
        let mut segment = self.pending.split_to(sealed_len);
        match &mut self.layout {
            Layout::Whole(stream) => stream.open(&mut segment, &self.header, false)?,
            Layout::Chunked {
                chunk_size,
                index,
                offset,
                stream,
            } => {
                let Some(open) = stream.as_mut() else {
                    return Err(unreadable("is corrupt"));
                };
                open.open(&mut segment, &self.header, false)?;
                *offset += (sealed_len - TAG) as u64;
                if *offset == *chunk_size {
                    *stream = None;
                    *offset = 0;
                    *index = index.saturating_add(1);
                }
            }
            Layout::Waiting | Layout::Finished => return Err(unreadable("already finished")),
        }
        segment.truncate(sealed_len - TAG);
        Ok(Some(segment.freeze()))
    }

    /// Opens what remains as the last segment once the sealed bytes have ended.
    pub(super) fn finish(&mut self) -> io::Result<Bytes> {
        if !self.read_header()? {
            return Err(unreadable("is truncated"));
        }
        let longest = self
            .next_sealed_len()?
            .ok_or_else(|| unreadable("is truncated"))?;
        // A remainder longer than one sealed segment means `next_segment` was not drained;
        // the last segment can never be that long.
        if self.pending.len() < TAG || self.pending.len() > longest {
            return Err(unreadable("is truncated"));
        }
        let mut segment = std::mem::take(&mut self.pending);
        match std::mem::replace(&mut self.layout, Layout::Finished) {
            Layout::Whole(mut stream)
            | Layout::Chunked {
                stream: Some(mut stream),
                ..
            } => stream.open(&mut segment, &self.header, true)?,
            _ => return Err(unreadable("is truncated")),
        }
        segment.truncate(segment.len() - TAG);
        Ok(segment.freeze())
    }

    /// The sealed length of the next segment, opening the next chunk of version 2
    /// when its seed has arrived; `None` while waiting for the seed.
    fn next_sealed_len(&mut self) -> io::Result<Option<usize>> {
        match &mut self.layout {
            Layout::Whole(_) => Ok(Some(SEALED_SEGMENT)),
            Layout::Chunked {
                chunk_size,
                index,
                offset,
                stream,
            } => {
                if stream.is_none() {
                    if self.pending.len() < SEED {
                        return Ok(None);
                    }
                    let mut seed = [0u8; SEED];
                    seed.copy_from_slice(&self.pending.split_to(SEED));
                    let cipher = chunk_cipher(self.mac.clone(), &self.salt, *index, &seed);
                    *stream = Some(Stream::new(cipher, CHUNK_NONCE_PREFIX));
                }
                // Both are at most a chunk, which is far below usize::MAX.
                let plain = (*chunk_size - *offset).min(SEGMENT as u64) as usize;
                Ok(Some(plain + TAG))
            }
            Layout::Waiting | Layout::Finished => Err(unreadable("already finished")),
        }
    }

    /// Parses the header once enough bytes are buffered; `false` while waiting.
    fn read_header(&mut self) -> io::Result<bool> {
        if !matches!(self.layout, Layout::Waiting) {
            return Ok(true);
        }
        if self.pending.len() < MAGIC.len() + 1 {
            return Ok(false);
        }
        if &self.pending[..MAGIC.len()] != MAGIC {
            return Err(unreadable("has an unknown format"));
        }
        match self.pending[MAGIC.len()] {
            VERSION => {
                if self.pending.len() < HEADER {
                    return Ok(false);
                }
                let header = self.pending.split_to(HEADER);
                let mut prefix = [0u8; NONCE_PREFIX];
                prefix.copy_from_slice(&header[MAGIC.len() + 1..]);
                let cipher = file_cipher(self.mac.clone(), &self.salt);
                self.layout = Layout::Whole(Stream::new(cipher, prefix));
                self.header = header.to_vec();
            }
            VERSION_CHUNKED => {
                if self.pending.len() < CHUNKED_HEADER {
                    return Ok(false);
                }
                let header = self.pending.split_to(CHUNKED_HEADER);
                let mut size = [0u8; 8];
                size.copy_from_slice(&header[MAGIC.len() + 1..]);
                let chunk_size = u64::from_be_bytes(size);
                if chunk_size == 0 || chunk_size > MAX_CHUNK {
                    return Err(unreadable("has an unknown format"));
                }
                self.layout = Layout::Chunked {
                    chunk_size,
                    index: 0,
                    offset: 0,
                    stream: None,
                };
                self.header = header.to_vec();
            }
            _ => return Err(unreadable("has an unknown format")),
        }
        Ok(true)
    }
}

/// Largest chunk a header of version 2 may declare: far above any configured chunk
/// size, and small enough that the arithmetic on it cannot overflow.
const MAX_CHUNK: u64 = 1 << 40;

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(secret: &str, salt: &[u8; SALT], chunks: &[&[u8]]) -> Vec<u8> {
        let mut sealer = Sealer::new(secret, salt);
        let mut out = Vec::new();
        for chunk in chunks {
            sealer.push(chunk).unwrap();
            out.extend_from_slice(sealer.ready());
            sealer.consume();
        }
        sealer.finish().unwrap();
        out.extend_from_slice(sealer.ready());
        out
    }

    fn open(secret: &str, salt: &[u8; SALT], sealed: &[u8], step: usize) -> io::Result<Vec<u8>> {
        let mut opener = Opener::new(secret, salt);
        let mut plain = Vec::new();
        for chunk in sealed.chunks(step.max(1)) {
            opener.push(chunk);
            while let Some(segment) = opener.next_segment()? {
                plain.extend_from_slice(&segment);
            }
        }
        plain.extend_from_slice(&opener.finish()?);
        Ok(plain)
    }

    #[test]
    fn segments_round_trip_whatever_the_chunking() {
        let salt = new_salt();
        let data: Vec<u8> = (0..3 * SEGMENT + 5).map(|i| (i % 251) as u8).collect();
        for len in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            2 * SEGMENT,
            data.len(),
        ] {
            let sealed = seal("s", &salt, &[&data[..len / 2], &data[len / 2..len]]);
            // A final full segment is sealed as the last one; only empty input gets an empty one.
            let segments = len.div_ceil(SEGMENT).max(1);
            assert_eq!(sealed.len(), HEADER + len + segments * TAG, "len {len}");
            for step in [1, 7, 4096, SEALED_SEGMENT, 1 << 20] {
                assert_eq!(open("s", &salt, &sealed, step).unwrap(), &data[..len]);
            }
        }
    }

    #[test]
    fn a_wrong_key_or_a_cut_at_a_segment_boundary_fails() {
        let salt = new_salt();
        let data = vec![7u8; 2 * SEGMENT + 10];
        let sealed = seal("s", &salt, &[&data]);
        assert!(open("other", &salt, &sealed, 1 << 20).is_err());
        assert!(open("s", &new_salt(), &sealed, 1 << 20).is_err());
        for cut in [
            0,
            HEADER - 1,
            HEADER,
            HEADER + SEALED_SEGMENT,
            HEADER + 2 * SEALED_SEGMENT,
        ] {
            assert!(
                open("s", &salt, &sealed[..cut], 1 << 20).is_err(),
                "cut {cut}"
            );
        }
    }

    /// `data` sealed chunk by chunk as a resumable upload writes it.
    fn seal_chunked(secret: &str, salt: &[u8; SALT], chunk_size: usize, data: &[u8]) -> Vec<u8> {
        let chunks: Vec<&[u8]> = data.chunks(chunk_size).collect();
        let mut out = Vec::new();
        for (index, chunk) in chunks.iter().enumerate() {
            assert_eq!(
                out.len() as u64,
                sealed_chunk_offset(chunk_size as u64, index as u32)
            );
            let last = index + 1 == chunks.len();
            let mut sealer = ChunkSealer::new(secret, salt, chunk_size as u64, index as u32, last);
            // Pushed in uneven pieces, as the network delivers them.
            for piece in chunk.chunks(10_000) {
                sealer.push(piece).unwrap();
                out.extend_from_slice(sealer.ready());
                sealer.consume();
            }
            sealer.finish().unwrap();
            out.extend_from_slice(sealer.ready());
        }
        assert_eq!(
            out.len() as u64,
            sealed_size(data.len() as u64, chunk_size as u64)
        );
        out
    }

    #[test]
    fn chunks_sealed_one_by_one_open_as_one_file() {
        let salt = new_salt();
        let data: Vec<u8> = (0..7 * SEGMENT + 77).map(|i| (i % 253) as u8).collect();
        for chunk_size in [SEGMENT, SEGMENT + 1, 2 * SEGMENT, 3 * SEGMENT - 5] {
            for len in [
                1,
                SEGMENT,
                chunk_size,
                chunk_size + 1,
                2 * chunk_size,
                data.len(),
            ] {
                let sealed = seal_chunked("s", &salt, chunk_size, &data[..len]);
                for step in [1, 4096, SEALED_SEGMENT + 3, 1 << 20] {
                    assert_eq!(
                        open("s", &salt, &sealed, step).unwrap(),
                        &data[..len],
                        "chunk {chunk_size} len {len} step {step}"
                    );
                }
                assert!(open("other", &salt, &sealed, 1 << 20).is_err());
            }
        }
    }

    #[test]
    fn a_chunk_sealed_again_uses_another_key_and_moved_or_cut_chunks_fail() {
        let salt = new_salt();
        let chunk = 2 * SEGMENT;
        let data: Vec<u8> = (0..3 * chunk).map(|i| (i % 241) as u8).collect();
        let first = seal_chunked("s", &salt, chunk, &data);
        let second = seal_chunked("s", &salt, chunk, &data);
        let region = |sealed: &[u8], index: u32| {
            let start = sealed_chunk_offset(chunk as u64, index) as usize;
            let end = sealed_chunk_offset(chunk as u64, index + 1) as usize;
            sealed[start..end].to_vec()
        };
        // The same bytes at the same place never seal alike: each attempt has its key.
        assert_ne!(region(&first, 1)[SEED..], region(&second, 1)[SEED..]);
        // Chunks 1 and 0's bodies swapped (header kept in place): no longer opens.
        let mut swapped = first.clone();
        let one = region(&first, 1);
        let zero = first[CHUNKED_HEADER..CHUNKED_HEADER + one.len()].to_vec();
        swapped[CHUNKED_HEADER..CHUNKED_HEADER + one.len()].copy_from_slice(&one);
        let at = sealed_chunk_offset(chunk as u64, 1) as usize;
        swapped[at..at + zero.len()].copy_from_slice(&zero);
        assert!(open("s", &salt, &swapped, 1 << 20).is_err());
        // A chunk of another attempt at the same place opens: it is what was sent there.
        let mut mixed = first.clone();
        mixed[at..at + one.len()].copy_from_slice(&region(&second, 1));
        assert_eq!(open("s", &salt, &mixed, 1 << 20).unwrap(), data);
        // Cut at a chunk boundary, a segment boundary or mid-segment: truncated.
        for cut in [
            sealed_chunk_offset(chunk as u64, 1) as usize,
            sealed_chunk_offset(chunk as u64, 2) as usize,
            sealed_chunk_offset(chunk as u64, 2) as usize + SEED + SEALED_SEGMENT,
            first.len() - 1,
        ] {
            assert!(
                open("s", &salt, &first[..cut], 1 << 20).is_err(),
                "cut {cut}"
            );
        }
        // One flipped bit anywhere past the header fails.
        let mut flipped = first.clone();
        flipped[at + SEED + 100] ^= 1;
        assert!(open("s", &salt, &flipped, 1 << 20).is_err());
    }

    /// The key of `file_key` as `aes-gcm` 0.10 takes it, as files were sealed before.
    fn aes_gcm_cipher(key: &[u8; 32]) -> aes_gcm::Aes256Gcm {
        use aes_gcm::KeyInit as _;
        aes_gcm::Aes256Gcm::new(key.into())
    }

    /// The segments sealed and opened in place are aead's STREAM over `aes-gcm`,
    /// byte for byte: files sealed before (through `EncryptorBE32`) open, and new ones
    /// are the same.
    #[test]
    fn in_place_segments_are_aeads_stream() {
        use aead::Payload;
        use aead::stream::{DecryptorBE32, EncryptorBE32};
        let key = file_key("s", &SALT_FOR_AEAD);
        let salt = SALT_FOR_AEAD;
        let data: Vec<u8> = (0..2 * SEGMENT + 321)
            .map(|i| (i * 7 % 256) as u8)
            .collect();
        let sealed = seal("s", &salt, &[&data[..1000], &data[1000..]]);
        let header = &sealed[..HEADER];
        let prefix: [u8; NONCE_PREFIX] = header[MAGIC.len() + 1..].try_into().unwrap();
        let mut reference = header.to_vec();
        let mut encryptor = EncryptorBE32::from_aead(aes_gcm_cipher(&key), (&prefix).into());
        let segments: Vec<&[u8]> = data.chunks(SEGMENT).collect();
        for segment in &segments[..segments.len() - 1] {
            let payload = Payload {
                msg: segment,
                aad: header,
            };
            reference.extend(encryptor.encrypt_next(payload).unwrap());
        }
        let last = Payload {
            msg: segments[segments.len() - 1],
            aad: header,
        };
        reference.extend(encryptor.encrypt_last(last).unwrap());
        assert_eq!(sealed, reference);
        // And aead's decryptor opens what is sealed here.
        let mut decryptor = DecryptorBE32::from_aead(aes_gcm_cipher(&key), (&prefix).into());
        let body = &sealed[HEADER..];
        let first = Payload {
            msg: &body[..SEALED_SEGMENT],
            aad: header,
        };
        assert_eq!(decryptor.decrypt_next(first).unwrap(), &data[..SEGMENT]);
        // A whole file sealed by aead's encryptor (as before) opens here.
        assert_eq!(open("s", &salt, &reference, 4096).unwrap(), data);
    }

    const SALT_FOR_AEAD: [u8; SALT] = [9; SALT];

    /// A chunk of version 2 is AES-256-GCM under its chunk key with a zero nonce
    /// prefix, as `aes-gcm` sealed it before: its first segment opens through aead's
    /// STREAM decryptor over `aes-gcm`.
    #[test]
    fn chunk_segments_are_aeads_stream() {
        use aead::Payload;
        use aead::stream::DecryptorBE32;
        let salt = SALT_FOR_AEAD;
        let data: Vec<u8> = (0..SEGMENT + 99).map(|i| (i * 13 % 251) as u8).collect();
        let sealed = seal_chunked("s", &salt, data.len(), &data);
        let header = &sealed[..CHUNKED_HEADER];
        let seed: [u8; SEED] = sealed[CHUNKED_HEADER..CHUNKED_HEADER + SEED]
            .try_into()
            .unwrap();
        let mut mac = secret_mac("s");
        mac.update(b"nimbus chunk key\0");
        mac.update(&salt);
        mac.update(&0u32.to_be_bytes());
        mac.update(&seed);
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        let mut decryptor =
            DecryptorBE32::from_aead(aes_gcm_cipher(&key), (&CHUNK_NONCE_PREFIX).into());
        let body = &sealed[CHUNKED_HEADER + SEED..];
        let first = Payload {
            msg: &body[..SEALED_SEGMENT],
            aad: header,
        };
        assert_eq!(decryptor.decrypt_next(first).unwrap(), &data[..SEGMENT]);
        let last = Payload {
            msg: &body[SEALED_SEGMENT..],
            aad: header,
        };
        assert_eq!(decryptor.decrypt_last(last).unwrap(), &data[SEGMENT..]);
    }

    /// The cost per MiB of what an upload pays for besides the copies: SHA-256 of
    /// the original bytes and AES-256-GCM sealing in place. Run in release:
    /// `cargo test --release --lib files::crypto::tests::primitives -- --ignored --nocapture`.
    #[test]
    #[ignore = "a timing to read, not a check"]
    fn primitives_cost_per_mib() {
        use sha2::Digest as _;
        const MIB: usize = 100;
        let data: Vec<u8> = (0..MIB << 20).map(|i| (i * 31 + i / 7) as u8).collect();
        // The upload's hash is fed in 64 KiB reads, as the network hands them.
        let timed = |name: &str, hash: &dyn Fn(&[u8]) -> Vec<u8>| {
            let started = std::time::Instant::now();
            let digest = hash(&data);
            let per_mib = started.elapsed().as_secs_f64() * 1000.0 / MIB as f64;
            println!(
                "SHA-256 ({name}): {per_mib:.3} ms/MiB, {:.0} MiB/s",
                1000.0 / per_mib
            );
            digest
        };
        let digest = timed("sha2", &|data| {
            let mut hasher = Sha256::new();
            for piece in data.chunks(64 << 10) {
                hasher.update(piece);
            }
            hasher.finalize().to_vec()
        });
        // ring has its own SHA-256 assembly; the faster one would do, as the digest
        // is the same.
        let other = timed("ring", &|data| {
            let mut context = ring::digest::Context::new(&ring::digest::SHA256);
            for piece in data.chunks(64 << 10) {
                context.update(piece);
            }
            context.finish().as_ref().to_vec()
        });
        assert_eq!(digest, other);
        let mut sealer = Sealer::new("s", &new_salt());
        let started = std::time::Instant::now();
        for piece in data.chunks(1 << 20) {
            sealer.push(piece).unwrap();
            sealer.consume();
        }
        sealer.finish().unwrap();
        let per_mib = started.elapsed().as_secs_f64() * 1000.0 / MIB as f64;
        println!("AES-256-GCM, 64 KiB segments in place: {per_mib:.3} ms/MiB");
    }
}

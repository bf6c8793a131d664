//! Encryption at rest for stored files: AES-256-GCM in the STREAM construction
//! (aead's `EncryptorBE32`) over 64 KiB plaintext segments, so files of any size are
//! sealed and opened with bounded memory, and reordering, truncation or a swapped
//! segment all fail authentication.
//!
//! Layout: `NBFE` ‖ version (1) ‖ 7-byte random nonce prefix, then each segment's
//! ciphertext ‖ 16-byte tag. Every segment but the last holds exactly 64 KiB of
//! plaintext; the last (possibly empty) one is sealed with STREAM's "last" flag, which
//! is how a cut at a segment boundary is told from a complete object. The header is the
//! associated data of every segment.
//!
//! The key is HMAC-SHA256(server secret, "nimbus file key\0" ‖ salt), with a random
//! 16-byte salt per file kept by the caller, so no two files share a key and rotating
//! the server secret makes old files unreadable rather than silently wrong.

use std::io;

use aead::stream::{DecryptorBE32, EncryptorBE32};
use aead::{KeyInit as _, Payload};
use aes_gcm::Aes256Gcm;
use bytes::{Buf as _, Bytes, BytesMut};
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use sha2::Sha256;

/// Plaintext bytes per segment.
pub(super) const SEGMENT: usize = 64 * 1024;
const TAG: usize = 16;
const SEALED_SEGMENT: usize = SEGMENT + TAG;
const MAGIC: &[u8; 4] = b"NBFE";
const VERSION: u8 = 1;
/// 12-byte GCM nonce less STREAM's 4-byte counter and 1-byte last flag.
const NONCE_PREFIX: usize = 7;
pub(super) const HEADER: usize = MAGIC.len() + 1 + NONCE_PREFIX;
pub(super) const SALT: usize = 16;

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

fn cipher(server_secret: &str, salt: &[u8; SALT]) -> Aes256Gcm {
    let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(server_secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"nimbus file key\0");
    mac.update(salt);
    let key = mac.finalize().into_bytes();
    Aes256Gcm::new(&key)
}

/// The error every authentication or format failure turns into. Its kind is
/// `InvalidData`, which the store maps to `FileError::Unreadable`.
pub(super) fn unreadable(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("encrypted file {what}: wrong server secret, corrupt or truncated"),
    )
}

/// Seals a byte stream as it is written.
pub(super) struct Sealer {
    stream: EncryptorBE32<Aes256Gcm>,
    header: [u8; HEADER],
    pending: BytesMut,
    header_sent: bool,
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
            stream: EncryptorBE32::from_aead(cipher(server_secret, salt), (&prefix).into()),
            header,
            pending: BytesMut::with_capacity(2 * SEGMENT),
            header_sent: false,
        }
    }

    /// Takes plaintext, appends whatever is ready to `out`. A full segment is only
    /// sealed once more data follows it, because the last one is sealed differently.
    pub(super) fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        self.send_header(out);
        self.pending.extend_from_slice(data);
        while self.pending.len() > SEGMENT {
            let segment = self.pending.split_to(SEGMENT);
            let sealed = self
                .stream
                .encrypt_next(Payload {
                    msg: &segment,
                    aad: &self.header,
                })
                .map_err(|_| io::Error::other("file too large to encrypt"))?;
            out.extend_from_slice(&sealed);
        }
        Ok(())
    }

    pub(super) fn finish(mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.send_header(out);
        let sealed = self
            .stream
            .encrypt_last(Payload {
                msg: &self.pending,
                aad: &self.header,
            })
            .map_err(|_| io::Error::other("file too large to encrypt"))?;
        out.extend_from_slice(&sealed);
        Ok(())
    }

    fn send_header(&mut self, out: &mut Vec<u8>) {
        if !self.header_sent {
            self.header_sent = true;
            out.extend_from_slice(&self.header);
        }
    }
}

/// Opens a sealed byte stream as it is read.
pub(super) struct Opener {
    cipher: Option<Aes256Gcm>,
    stream: Option<DecryptorBE32<Aes256Gcm>>,
    header: [u8; HEADER],
    pending: BytesMut,
}

impl Opener {
    pub(super) fn new(server_secret: &str, salt: &[u8; SALT]) -> Self {
        Opener {
            cipher: Some(cipher(server_secret, salt)),
            stream: None,
            header: [0u8; HEADER],
            pending: BytesMut::new(),
        }
    }

    pub(super) fn push(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
    }

    /// The next plaintext segment, if one is buffered and is known not to be the last
    /// (more sealed bytes follow it).
    pub(super) fn next_segment(&mut self) -> io::Result<Option<Bytes>> {
        if !self.read_header()? || self.pending.len() <= SEALED_SEGMENT {
            return Ok(None);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(unreadable("already finished"));
        };
        let plain = stream
            .decrypt_next(Payload {
                msg: &self.pending[..SEALED_SEGMENT],
                aad: &self.header,
            })
            .map_err(|_| unreadable("does not authenticate"))?;
        self.pending.advance(SEALED_SEGMENT);
        Ok(Some(Bytes::from(plain)))
    }

    /// Opens what remains as the last segment once the sealed bytes have ended.
    pub(super) fn finish(&mut self) -> io::Result<Bytes> {
        if !self.read_header()? {
            return Err(unreadable("is truncated"));
        }
        // A remainder longer than one sealed segment means `next_segment` was not drained;
        // the last segment can never be that long.
        if self.pending.len() < TAG || self.pending.len() > SEALED_SEGMENT {
            return Err(unreadable("is truncated"));
        }
        let Some(stream) = self.stream.take() else {
            return Err(unreadable("already finished"));
        };
        let plain = stream
            .decrypt_last(Payload {
                msg: &self.pending,
                aad: &self.header,
            })
            .map_err(|_| unreadable("does not authenticate"))?;
        self.pending.clear();
        Ok(Bytes::from(plain))
    }

    /// Parses the header once enough bytes are buffered; `false` while waiting.
    fn read_header(&mut self) -> io::Result<bool> {
        if self.stream.is_some() {
            return Ok(true);
        }
        if self.pending.len() < HEADER {
            return Ok(false);
        }
        let Some(cipher) = self.cipher.take() else {
            return Err(unreadable("already finished"));
        };
        let header = self.pending.split_to(HEADER);
        if &header[..MAGIC.len()] != MAGIC || header[MAGIC.len()] != VERSION {
            return Err(unreadable("has an unknown format"));
        }
        self.header.copy_from_slice(&header);
        let mut prefix = [0u8; NONCE_PREFIX];
        prefix.copy_from_slice(&header[MAGIC.len() + 1..]);
        self.stream = Some(DecryptorBE32::from_aead(cipher, (&prefix).into()));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(secret: &str, salt: &[u8; SALT], chunks: &[&[u8]]) -> Vec<u8> {
        let mut sealer = Sealer::new(secret, salt);
        let mut out = Vec::new();
        for chunk in chunks {
            sealer.push(chunk, &mut out).unwrap();
        }
        sealer.finish(&mut out).unwrap();
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
}

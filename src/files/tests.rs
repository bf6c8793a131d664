//! Tests of the file store against a local directory, and against an S3-compatible
//! service when `NIMBUS_TEST_S3_URL` names one.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::TryStreamExt as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use tokio::io::ReadBuf;

use super::codec::CHUNK;
use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const SIZES: [usize; 6] = [0, 1, 65_535, 65_536, 65_537, 1_000_000];
const ALL_COMPRESSIONS: [Compression; 3] =
    [Compression::None, Compression::Gzip, Compression::Zstd];

fn local() -> (tempfile::TempDir, FileStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::local(dir.path().join("files")).unwrap();
    (dir, store)
}

fn options(compression: Compression, encrypt: bool, max_size: u64) -> WriteOptions {
    WriteOptions {
        max_size,
        compression,
        encrypt,
        secret: SECRET.to_owned(),
    }
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    data
}

fn text(len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len + 64);
    let mut line = 0u64;
    while data.len() < len {
        data.extend_from_slice(
            format!("line {line}: the quick brown fox jumps over the lazy dog\n").as_bytes(),
        );
        line += 1;
    }
    data.truncate(len);
    data
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn key(file: &str) -> Key {
    Key::file("proj1", "bucket1", file).unwrap()
}

/// Collects a stream, checking the chunk size promise on the way.
async fn collect(stream: ByteStream) -> io::Result<Vec<u8>> {
    stream
        .try_fold(Vec::new(), |mut all, chunk| async move {
            assert!(chunk.len() <= CHUNK, "chunk of {} bytes", chunk.len());
            assert!(!chunk.is_empty(), "empty chunk");
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
}

/// Every file (not directory) under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

fn entries_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| entries.count())
        .unwrap_or(0)
}

fn stored_file(store: &FileStore, key: &Key) -> PathBuf {
    store.root().join(key.as_str())
}

/// Hands out at most `step` bytes per read, then fails with `error` if one is set.
struct Trickle {
    data: Vec<u8>,
    position: usize,
    step: usize,
    error_at_end: Option<io::ErrorKind>,
}

impl Trickle {
    fn new(data: Vec<u8>, step: usize) -> Self {
        Trickle {
            data,
            position: 0,
            step,
            error_at_end: None,
        }
    }

    fn failing(data: Vec<u8>, kind: io::ErrorKind) -> Self {
        Trickle {
            error_at_end: Some(kind),
            ..Trickle::new(data, 64 * 1024)
        }
    }
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let rest = self.data.len() - self.position;
        if rest == 0 {
            if let Some(kind) = self.error_at_end {
                return Poll::Ready(Err(io::Error::new(kind, "client went away")));
            }
            return Poll::Ready(Ok(()));
        }
        let take = rest.min(self.step).min(buf.remaining());
        let start = self.position;
        buf.put_slice(&self.data[start..start + take]);
        self.position += take;
        Poll::Ready(Ok(()))
    }
}

/// A reader of `len` pseudo-random bytes that never holds them all.
struct Generated {
    left: u64,
    state: u64,
}

impl AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let take = (buf.remaining() as u64).min(self.left) as usize;
        let mut chunk = vec![0u8; take];
        for byte in &mut chunk {
            // xorshift: cheap, incompressible enough, reproducible.
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *byte = (self.state >> 24) as u8;
        }
        buf.put_slice(&chunk);
        self.left -= take as u64;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn every_encoding_round_trips_every_size() {
    let (_dir, store) = local();
    for compression in ALL_COMPRESSIONS {
        for encrypt in [false, true] {
            for size in SIZES {
                for (kind, data) in [("random", random_bytes(size)), ("text", text(size))] {
                    let what = format!("{compression} encrypt={encrypt} {kind} {size}");
                    let key = key(&format!("f-{compression}-{encrypt}-{kind}-{size}"));
                    let written = store
                        .write(&key, &data[..], &options(compression, encrypt, size as u64))
                        .await
                        .unwrap_or_else(|error| panic!("{what}: {error}"));
                    assert_eq!(written.size, size as u64, "{what}");
                    assert_eq!(written.sha256, sha256_hex(&data), "{what}");
                    assert_eq!(written.encoding.compression, compression, "{what}");
                    assert_eq!(written.encoding.salt.is_some(), encrypt, "{what}");
                    let on_disk = std::fs::read(stored_file(&store, &key)).unwrap();
                    assert_eq!(written.stored_size, on_disk.len() as u64, "{what}");
                    if written.encoding.is_plain() {
                        assert_eq!(on_disk, data, "{what}");
                    }
                    if kind == "text" && size == 1_000_000 && compression != Compression::None {
                        assert!(
                            written.stored_size < 200_000,
                            "{what}: {}",
                            written.stored_size
                        );
                    }
                    if encrypt && compression == Compression::None && size >= 64 {
                        assert!(
                            !on_disk.windows(64).any(|window| window == &data[..64]),
                            "{what}: plaintext visible at rest"
                        );
                    }
                    let read = store.read(&key, &written.encoding, SECRET).await.unwrap();
                    assert!(collect(read).await.unwrap() == data, "{what}: read back");
                }
            }
        }
    }
}

#[tokio::test]
async fn every_file_gets_its_own_salt_and_nonce() {
    let (_dir, store) = local();
    let data = text(1000);
    let first = store
        .write(
            &key("a"),
            &data[..],
            &options(Compression::None, true, 10_000),
        )
        .await
        .unwrap();
    let second = store
        .write(
            &key("b"),
            &data[..],
            &options(Compression::None, true, 10_000),
        )
        .await
        .unwrap();
    assert_ne!(first.encoding.salt, second.encoding.salt);
    assert_eq!(first.encoding.salt.as_ref().map(String::len), Some(32));
    let a = std::fs::read(stored_file(&store, &key("a"))).unwrap();
    let b = std::fs::read(stored_file(&store, &key("b"))).unwrap();
    assert_ne!(a, b);
    // Each object opens only under its own salt.
    let swapped = store.read(&key("a"), &second.encoding, SECRET).await;
    assert!(matches!(swapped, Err(FileError::Unreadable)));
}

#[tokio::test]
async fn odd_input_chunking_changes_nothing() {
    let (_dir, store) = local();
    let data = text(300_000);
    for compression in ALL_COMPRESSIONS {
        for step in [1, 3, 8191, 65_537] {
            let input = Trickle::new(data.clone(), step);
            let written = store
                .write(&key("trickle"), input, &options(compression, true, 1 << 20))
                .await
                .unwrap();
            assert_eq!(written.sha256, sha256_hex(&data));
            assert_eq!(written.mime_type, "text/plain");
            let read = store
                .read(&key("trickle"), &written.encoding, SECRET)
                .await
                .unwrap();
            assert!(
                collect(read).await.unwrap() == data,
                "{compression} step {step}"
            );
        }
    }
}

#[tokio::test]
async fn mime_types_are_sniffed_from_the_content() {
    let (_dir, store) = local();
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0".to_vec();
    png.extend(random_bytes(20_000));
    let mut jpeg = b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01".to_vec();
    jpeg.extend(random_bytes(20_000));
    let mut garbage = random_bytes(20_000);
    garbage[0] = 0xfe;
    garbage[1] = 0x00;
    // Text whose 8 KiB head ends inside a multi-byte character.
    let mut cut = vec![b'a'; 8 * 1024 - 1];
    cut.extend_from_slice("€ and more".as_bytes());
    let cases = [
        (png, "image/png"),
        (jpeg, "image/jpeg"),
        (text(50_000), "text/plain"),
        (cut, "text/plain"),
        (garbage, "application/octet-stream"),
    ];
    for (data, expected) in cases {
        for step in [1, 100, 64 * 1024] {
            let written = store
                .write(
                    &key("mime"),
                    Trickle::new(data.clone(), step),
                    &options(Compression::Zstd, false, 1 << 20),
                )
                .await
                .unwrap();
            assert_eq!(written.mime_type, expected, "step {step}");
        }
    }
}

#[tokio::test]
async fn the_limit_passes_and_one_byte_more_leaves_nothing_behind() {
    let (dir, store) = local();
    for compression in ALL_COMPRESSIONS {
        for encrypt in [false, true] {
            // The larger size has started a multipart upload before the limit is hit.
            for limit in [0usize, 1000, 3 * 1024 * 1024 + 5] {
                let data = random_bytes(limit + 1);
                let key = key("limited");
                let options = options(compression, encrypt, limit as u64);
                let error = store.write(&key, &data[..], &options).await.unwrap_err();
                assert!(
                    matches!(error, FileError::TooLarge { limit: l } if l == limit as u64),
                    "{error:?}"
                );
                assert!(
                    files_under(dir.path()).is_empty(),
                    "{:?}",
                    files_under(dir.path())
                );
                assert_eq!(
                    entries_under(store.root()),
                    0,
                    "empty directories left behind"
                );
                let missing = store.read(&key, &Encoding::plain(), SECRET).await;
                assert!(matches!(missing, Err(FileError::NotFound)));

                let written = store.write(&key, &data[..limit], &options).await.unwrap();
                assert_eq!(written.size, limit as u64);
                store.delete(&key).await.unwrap();
                assert!(files_under(dir.path()).is_empty());
            }
        }
    }
}

#[tokio::test]
async fn an_input_error_leaves_nothing_behind() {
    let (dir, store) = local();
    for size in [10, 5 * 1024 * 1024] {
        for encrypt in [false, true] {
            let input = Trickle::failing(random_bytes(size), io::ErrorKind::ConnectionReset);
            let error = store
                .write(
                    &key("broken"),
                    input,
                    &options(Compression::Gzip, encrypt, 1 << 30),
                )
                .await
                .unwrap_err();
            match error {
                FileError::Input(error) => assert_eq!(error.kind(), io::ErrorKind::ConnectionReset),
                other => panic!("{other:?}"),
            }
            assert!(
                files_under(dir.path()).is_empty(),
                "{:?}",
                files_under(dir.path())
            );
            assert_eq!(entries_under(store.root()), 0);
        }
    }
}

#[tokio::test]
async fn a_failure_reading_the_servers_own_input_is_the_stores_not_the_clients() {
    let (dir, store) = local();
    let plain = options(Compression::Gzip, true, 1 << 30);
    // A spool file or an assembly that cannot be read.
    let own = OwnInput(Trickle::failing(
        random_bytes(100_000),
        io::ErrorKind::Other,
    ));
    let error = store.write(&key("own"), own, &plain).await.unwrap_err();
    assert!(matches!(error, FileError::Store(_)), "{error:?}");
    // Stored chunks read back, one of them failing, with the store's own error.
    let chunks = futures_util::stream::iter([
        Ok(Bytes::from_static(b"first chunk")),
        Err(io::Error::other(FileError::Store(anyhow::anyhow!(
            "the S3 service said no"
        )))),
    ]);
    let reader = OwnInput(tokio_util::io::StreamReader::new(chunks));
    let error = store
        .write(&key("chunks"), reader, &plain)
        .await
        .unwrap_err();
    match error {
        FileError::Store(cause) => assert!(format!("{cause:#}").contains("said no")),
        other => panic!("{other:?}"),
    }
    assert!(files_under(dir.path()).is_empty());
}

#[tokio::test]
async fn an_overwrite_that_fails_keeps_the_old_object() {
    let (_dir, store) = local();
    let old = text(10_000);
    let written = store
        .write(
            &key("kept"),
            &old[..],
            &options(Compression::None, false, 1 << 30),
        )
        .await
        .unwrap();
    let input = Trickle::failing(random_bytes(3 * 1024 * 1024), io::ErrorKind::BrokenPipe);
    let error = store
        .write(
            &key("kept"),
            input,
            &options(Compression::None, false, 1 << 30),
        )
        .await;
    assert!(matches!(error, Err(FileError::Input(_))));
    let read = store
        .read(&key("kept"), &written.encoding, SECRET)
        .await
        .unwrap();
    assert!(collect(read).await.unwrap() == old);
    assert_eq!(files_under(store.root()).len(), 1);
}

#[tokio::test]
async fn a_cancelled_write_leaves_no_staging_file() {
    let (dir, store) = local();
    // Writes 3 MiB (so a multipart upload is under way), then never answers again.
    struct Stalls(u64);
    impl AsyncRead for Stalls {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.0 == 0 {
                return Poll::Pending;
            }
            let take = (buf.remaining() as u64).min(self.0) as usize;
            buf.put_slice(&vec![7u8; take]);
            self.0 -= take as u64;
            Poll::Ready(Ok(()))
        }
    }
    let (key, options) = (key("cancelled"), options(Compression::None, false, 1 << 30));
    let write = store.write(&key, Stalls(3 * 1024 * 1024), &options);
    let timed_out = tokio::time::timeout(std::time::Duration::from_millis(300), write).await;
    assert!(timed_out.is_err());
    // The staging file is removed by a background task.
    for _ in 0..100 {
        if files_under(dir.path()).is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("left behind: {:?}", files_under(dir.path()));
}

#[tokio::test]
async fn a_wrong_secret_or_a_bad_salt_is_unreadable_up_front() {
    let (_dir, store) = local();
    for compression in ALL_COMPRESSIONS {
        for size in [0, 10, 200_000] {
            let written = store
                .write(
                    &key("secret"),
                    &text(size)[..],
                    &options(compression, true, 1 << 20),
                )
                .await
                .unwrap();
            let wrong = store
                .read(&key("secret"), &written.encoding, "another secret")
                .await;
            assert!(
                matches!(wrong, Err(FileError::Unreadable)),
                "{compression} {size}"
            );
            let wrong = store
                .read_range(&key("secret"), &written.encoding, "another secret", 0..1)
                .await;
            assert!(matches!(wrong, Err(FileError::Unreadable)));
            for salt in ["zz", "", "00", &"ab".repeat(17)] {
                let encoding = Encoding {
                    compression,
                    salt: Some(salt.to_owned()),
                };
                let bad = store.read(&key("secret"), &encoding, SECRET).await;
                assert!(matches!(bad, Err(FileError::Unreadable)), "salt {salt:?}");
            }
        }
    }
    // A plain object read as if it were encrypted.
    store
        .write(
            &key("plain"),
            &text(1000)[..],
            &options(Compression::None, false, 1 << 20),
        )
        .await
        .unwrap();
    let encoding = Encoding {
        compression: Compression::None,
        salt: Some("00".repeat(16)),
    };
    let read = store.read(&key("plain"), &encoding, SECRET).await;
    assert!(matches!(read, Err(FileError::Unreadable)));
}

/// Reads `key` to the end; `Ok` only when the whole stream decoded.
async fn read_fully(store: &FileStore, key: &Key, encoding: &Encoding) -> Result<Vec<u8>, String> {
    match store.read(key, encoding, SECRET).await {
        Err(error) => Err(format!("up front: {error}")),
        Ok(stream) => collect(stream)
            .await
            .map_err(|error| format!("in stream: {error}")),
    }
}

#[tokio::test]
async fn a_truncated_object_fails_instead_of_reading_short() {
    let (_dir, store) = local();
    let sealed_segment = (crypto::SEGMENT + 16) as u64;
    let header = crypto::HEADER as u64;
    for compression in ALL_COMPRESSIONS {
        for encrypt in [false, true] {
            if !encrypt && compression == Compression::None {
                continue; // nothing in a plain object can tell
            }
            let data = random_bytes(300_000);
            let written = store
                .write(
                    &key("cut"),
                    &data[..],
                    &options(compression, encrypt, 1 << 20),
                )
                .await
                .unwrap();
            let path = stored_file(&store, &key("cut"));
            let full = std::fs::read(&path).unwrap();
            let mut cuts = vec![0, 1, full.len() as u64 / 2, full.len() as u64 - 1];
            if encrypt {
                cuts.extend([header - 1, header, header + 1, header + 16]);
                let mut boundary = header + sealed_segment;
                while boundary < full.len() as u64 {
                    cuts.extend([boundary, boundary + 1, boundary - 1]);
                    boundary += sealed_segment;
                }
            }
            for cut in cuts {
                std::fs::write(&path, &full[..cut as usize]).unwrap();
                let result = read_fully(&store, &key("cut"), &written.encoding).await;
                assert!(
                    result.is_err(),
                    "{compression} encrypt={encrypt} cut at {cut}"
                );
            }
            std::fs::write(&path, &full).unwrap();
            assert!(
                read_fully(&store, &key("cut"), &written.encoding)
                    .await
                    .unwrap()
                    == data
            );
        }
    }
}

#[tokio::test]
async fn a_flipped_byte_fails() {
    let (_dir, store) = local();
    for compression in ALL_COMPRESSIONS {
        for encrypt in [false, true] {
            if !encrypt && compression == Compression::None {
                continue;
            }
            let data = text(400_000);
            let written = store
                .write(
                    &key("flip"),
                    &data[..],
                    &options(compression, encrypt, 1 << 20),
                )
                .await
                .unwrap();
            let path = stored_file(&store, &key("flip"));
            let full = std::fs::read(&path).unwrap();
            let len = full.len();
            for at in [0, 5, 20, len / 3, len / 2, len - 10, len - 1] {
                let mut flipped = full.clone();
                flipped[at] ^= 0x40;
                std::fs::write(&path, &flipped).unwrap();
                let result = read_fully(&store, &key("flip"), &written.encoding).await;
                if encrypt || at > 20 {
                    assert!(
                        result.is_err(),
                        "{compression} encrypt={encrypt} flip at {at}/{len}"
                    );
                } else {
                    // Gzip's header (flags, mtime) is not covered by its checksum.
                    assert!(result.is_err() || result.unwrap() == data);
                }
            }
            if encrypt {
                // The first segment fails the call itself; a later one fails the stream.
                let mut flipped = full.clone();
                flipped[crypto::HEADER + 3] ^= 1;
                std::fs::write(&path, &flipped).unwrap();
                let read = store.read(&key("flip"), &written.encoding, SECRET).await;
                assert!(matches!(read, Err(FileError::Unreadable)));
                if len > crypto::HEADER + 2 * (crypto::SEGMENT + 16) {
                    let mut flipped = full.clone();
                    flipped[len - 30] ^= 1;
                    std::fs::write(&path, &flipped).unwrap();
                    let stream = store
                        .read(&key("flip"), &written.encoding, SECRET)
                        .await
                        .unwrap();
                    let error = collect(stream).await.unwrap_err();
                    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
                }
            }
        }
    }
}

#[tokio::test]
async fn ranges_read_the_same_bytes_for_every_encoding() {
    let (_dir, store) = local();
    let data = random_bytes(200_000);
    let len = data.len() as u64;
    let ranges = [
        0..10,
        0..0,
        1000..1000,
        5..6,
        65_530..65_600,
        65_536..131_072,
        100_000..150_000,
        150_000..len,
        len - 1..len,
        0..len,
        190_000..300_000,
        len..len + 10,
        250_000..260_000,
        Range { start: 20, end: 10 },
    ];
    for compression in ALL_COMPRESSIONS {
        for encrypt in [false, true] {
            let written = store
                .write(
                    &key("ranged"),
                    &data[..],
                    &options(compression, encrypt, 1 << 20),
                )
                .await
                .unwrap();
            for range in ranges.clone() {
                let stream = store
                    .read_range(&key("ranged"), &written.encoding, SECRET, range.clone())
                    .await
                    .unwrap();
                let got = collect(stream).await.unwrap();
                let start = range.start.min(len) as usize;
                let end = range.end.min(len).max(range.start.min(len)) as usize;
                assert!(
                    got == data[start..end],
                    "{compression} encrypt={encrypt} {range:?}"
                );
            }
        }
    }
    let missing = store
        .read_range(&key("nope"), &Encoding::plain(), SECRET, 0..10)
        .await;
    assert!(matches!(missing, Err(FileError::NotFound)));
    let missing = store
        .read_range(&key("nope"), &Encoding::plain(), SECRET, 5..5)
        .await;
    assert!(matches!(missing, Err(FileError::NotFound)));
    let missing = store
        .read_range(
            &key("nope"),
            &Encoding {
                compression: Compression::Gzip,
                salt: None,
            },
            SECRET,
            0..10,
        )
        .await;
    assert!(matches!(missing, Err(FileError::NotFound)));
}

#[test]
fn keys_are_built_from_valid_ids_only() {
    assert_eq!(
        Key::file("p1", "b1", "f1").unwrap().as_str(),
        "projects/p1/buckets/b1/files/f1"
    );
    assert_eq!(
        Key::chunk("p1", "b1", "f1", 7, "n0nce").unwrap().as_str(),
        "projects/p1/buckets/b1/uploads/f1/7-n0nce"
    );
    assert_eq!(
        Key::upload_prefix("p1", "b1", "f1").unwrap().as_str(),
        "projects/p1/buckets/b1/uploads/f1"
    );
    assert_eq!(
        Key::bucket_prefix("p1", "b1").unwrap().as_str(),
        "projects/p1/buckets/b1"
    );
    assert_eq!(Key::project_prefix("p1").unwrap().as_str(), "projects/p1");
    let longest = "a".repeat(36);
    assert!(Key::project_prefix(&longest).is_ok());
    assert!(Key::file("P-1.x_y", "0b", "550e8400-e29b-41d4-a716-446655440000").is_ok());

    let too_long = "a".repeat(37);
    let bad = [
        "", "..", ".", "a/b", "/a", "a\0b", "\0", &too_long, ".hidden", "_x", "-x", "a b", "a\\b",
        "é", "a%2Fb", "a#1", "a\n",
    ];
    for id in bad {
        assert!(
            matches!(Key::project_prefix(id), Err(FileError::InvalidKey)),
            "{id:?}"
        );
        assert!(
            matches!(Key::bucket_prefix("p", id), Err(FileError::InvalidKey)),
            "{id:?}"
        );
        assert!(
            matches!(Key::file("p", "b", id), Err(FileError::InvalidKey)),
            "{id:?}"
        );
        assert!(matches!(
            Key::upload_prefix("p", "b", id),
            Err(FileError::InvalidKey)
        ));
        assert!(matches!(
            Key::chunk("p", "b", "f", 0, id),
            Err(FileError::InvalidKey)
        ));
        assert!(matches!(
            Key::chunk("p", "b", id, 0, "n"),
            Err(FileError::InvalidKey)
        ));
    }
}

#[tokio::test]
async fn deleting_a_prefix_removes_that_bucket_only() {
    let (_dir, store) = local();
    let options = options(Compression::Zstd, true, 1 << 20);
    let mut kept = Vec::new();
    for bucket in ["b1", "b2", "b10"] {
        for file in ["f1", "f2"] {
            let key = Key::file("p1", bucket, file).unwrap();
            let written = store.write(&key, &text(5000)[..], &options).await.unwrap();
            kept.push((bucket, key, written.encoding));
        }
        let chunk = Key::chunk("p1", bucket, "up1", 0, "n1").unwrap();
        store.write(&chunk, &b"chunk"[..], &options).await.unwrap();
    }
    // A staging file that a crashed upload left behind.
    let stale = store.root().join("projects/p1/buckets/b1/files/f3#1");
    std::fs::write(&stale, b"stale").unwrap();

    store
        .delete_prefix(&Key::bucket_prefix("p1", "b1").unwrap())
        .await
        .unwrap();
    for (bucket, key, encoding) in &kept {
        let read = store.read(key, encoding, SECRET).await;
        if *bucket == "b1" {
            assert!(matches!(read, Err(FileError::NotFound)), "{key:?}");
        } else {
            assert!(
                collect(read.unwrap()).await.unwrap() == text(5000),
                "{key:?}"
            );
        }
    }
    assert!(!store.root().join("projects/p1/buckets/b1").exists());
    assert!(store.root().join("projects/p1/buckets/b2").exists());

    // Missing things are fine.
    store
        .delete_prefix(&Key::bucket_prefix("p1", "b1").unwrap())
        .await
        .unwrap();
    store
        .delete_prefix(&Key::project_prefix("nobody").unwrap())
        .await
        .unwrap();
    store
        .delete(&Key::file("p1", "b1", "f1").unwrap())
        .await
        .unwrap();

    // Deleting the last object removes its emptied directories too.
    store
        .delete_prefix(&Key::upload_prefix("p1", "b2", "up1").unwrap())
        .await
        .unwrap();
    assert!(!store.root().join("projects/p1/buckets/b2/uploads").exists());
    for file in ["f1", "f2"] {
        store
            .delete(&Key::file("p1", "b2", file).unwrap())
            .await
            .unwrap();
    }
    assert!(!store.root().join("projects/p1/buckets/b2").exists());

    store
        .delete_prefix(&Key::project_prefix("p1").unwrap())
        .await
        .unwrap();
    assert!(files_under(store.root()).is_empty());
    assert_eq!(entries_under(store.root()), 0);
}

#[tokio::test]
async fn the_local_store_checks_and_describes_itself() {
    let (dir, store) = local();
    store.check().await.unwrap();
    assert_eq!(store.kind(), "local");
    assert_eq!(
        store.describe(),
        dir.path().join("files").display().to_string()
    );
    assert_eq!(store.root(), dir.path().join("files"));
    assert!(files_under(dir.path()).is_empty());
    assert!(format!("{store:?}").contains("local"));
}

#[test]
fn s3_urls_are_checked() {
    let store = FileStore::from_url(
        "s3://my-bucket/some/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1&allow_http=true",
    )
    .unwrap();
    assert_eq!(store.kind(), "s3");
    assert_eq!(
        store.describe(),
        "s3://my-bucket/some/prefix at http://127.0.0.1:9000"
    );
    let store = FileStore::from_url("s3://my-bucket?region=eu-west-1").unwrap();
    assert_eq!(store.describe(), "s3://my-bucket");

    let cases = [
        ("http://bucket/x", "s3://"),
        ("s3://", "no bucket"),
        ("s3:///prefix", "no bucket"),
        ("not a url", "not a URL"),
        ("s3://bucket?colour=blue", "unknown parameter \"colour\""),
        ("s3://bucket?allow_http=maybe", "allow_http"),
        ("s3://bucket?endpoint=ftp://x", "endpoint"),
        ("s3://bucket?endpoint=nonsense", "endpoint"),
        ("s3://bucket?region=", "region"),
        ("s3://bucket:9000", "endpoint"),
        ("s3://bucket/a//b", "prefix"),
    ];
    for (url, expected) in cases {
        let error = FileStore::from_url(url).unwrap_err().to_string();
        assert!(error.contains(expected), "{url}: {error}");
    }
    for url in [
        "s3://AKIDEXAMPLE:hunter2secret@bucket/x",
        "s3://bucket?endpoint=http://AKIDEXAMPLE:hunter2secret@127.0.0.1:9000",
    ] {
        let error = format!("{:#}", FileStore::from_url(url).unwrap_err());
        assert!(error.contains("credentials"), "{error}");
        assert!(
            !error.contains("hunter2secret") && !error.contains("AKIDEXAMPLE"),
            "{error}"
        );
    }
}

#[test]
fn compression_names_round_trip() {
    for compression in ALL_COMPRESSIONS {
        assert_eq!(compression.as_str().parse::<Compression>(), Ok(compression));
        assert_eq!(compression.to_string(), compression.as_str());
    }
    assert!("brotli".parse::<Compression>().is_err());
    assert!("GZIP".parse::<Compression>().is_err());
}

#[test]
fn write_options_never_print_the_secret() {
    let debug = format!("{:?}", options(Compression::Gzip, true, 1));
    assert!(!debug.contains(SECRET), "{debug}");
}

#[test]
fn full_storage_is_recognised_anywhere_in_the_chain() {
    for errno in [ENOSPC, EFBIG, EDQUOT] {
        let store = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(io::Error::from_raw_os_error(errno)),
        };
        assert!(matches!(store_error(store), FileError::Full), "{errno}");
        let wrapped = io::Error::other(object_store::Error::Generic {
            store: "S3",
            source: Box::new(io::Error::from_raw_os_error(errno)),
        });
        assert!(matches!(read_error(wrapped), FileError::Full), "{errno}");
    }
    let kind = io::Error::new(io::ErrorKind::StorageFull, "disk full");
    assert!(matches!(io_error(kind), FileError::Full));
    let nested = io::Error::other(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
    assert!(matches!(io_error(nested), FileError::Full));

    let other = object_store::Error::Generic {
        store: "S3",
        source: Box::new(io::Error::from_raw_os_error(13)),
    };
    assert!(matches!(store_error(other), FileError::Store(_)));
    let missing = object_store::Error::NotFound {
        path: "x".into(),
        source: Box::new(io::Error::from(io::ErrorKind::NotFound)),
    };
    assert!(matches!(
        read_error(io::Error::other(missing)),
        FileError::NotFound
    ));
    let corrupt = io::Error::new(io::ErrorKind::InvalidData, "bad");
    assert!(matches!(read_error(corrupt), FileError::Unreadable));
}

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Run alone, so other tests do not move the numbers:
/// `cargo test --lib -- --ignored --test-threads=1 memory`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measures process RSS; run alone"]
async fn memory_stays_bounded_for_a_100_mib_file() {
    const SIZE: u64 = 100 * 1024 * 1024;
    let (_dir, store) = local();
    for (compression, encrypt) in [
        (Compression::None, false),
        (Compression::Gzip, true),
        (Compression::Zstd, true),
    ] {
        let before = rss();
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
        let sampler = {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    peak.fetch_max(rss(), std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            })
        };
        let input = Generated {
            left: SIZE,
            state: 0x9e37_79b9_7f4a_7c15,
        };
        let written = store
            .write(&key("big"), input, &options(compression, encrypt, SIZE))
            .await
            .unwrap();
        let after_write = peak.load(std::sync::atomic::Ordering::Relaxed);
        let mut stream = store
            .read(&key("big"), &written.encoding, SECRET)
            .await
            .unwrap();
        let mut hasher = Sha256::new();
        let mut read = 0u64;
        while let Some(chunk) = stream.try_next().await.unwrap() {
            read += chunk.len() as u64;
            hasher.update(&chunk);
        }
        sampler.abort();
        let after_read = peak.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(read, SIZE);
        assert_eq!(hex::encode(hasher.finalize()), written.sha256);
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        println!(
            "{compression} encrypt={encrypt}: RSS before {:.1} MiB, peak during write +{:.1} MiB, during read +{:.1} MiB",
            mib(before),
            mib(after_write.saturating_sub(before)),
            mib(after_read.saturating_sub(before)),
        );
        assert!(after_read.saturating_sub(before) < 24 * 1024 * 1024);
        store.delete(&key("big")).await.unwrap();
    }
}

/// Lists the multipart uploads still open in the bucket, straight over HTTP (the test
/// server does not check signatures, and object_store has no call for it).
async fn open_multipart_uploads(endpoint: &str, bucket: &str) -> Option<usize> {
    use tokio::io::AsyncWriteExt as _;
    let endpoint = url::Url::parse(endpoint).ok()?;
    if endpoint.scheme() != "http" {
        return None;
    }
    let host = endpoint.host_str()?;
    let port = endpoint.port().unwrap_or(80);
    let mut socket = tokio::net::TcpStream::connect((host, port)).await.ok()?;
    let request = format!(
        "GET /{bucket}?uploads HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    socket.read_to_string(&mut response).await.ok()?;
    if !response.starts_with("HTTP/1.1 200") && !response.starts_with("HTTP/1.0 200") {
        return None;
    }
    Some(response.matches("<UploadId>").count())
}

/// Runs against the S3-compatible service in `NIMBUS_TEST_S3_URL`, e.g.
/// `s3://nimbus-test?endpoint=http://127.0.0.1:5055&region=us-east-1&allow_http=true`
/// with `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` set and the bucket created.
#[tokio::test]
async fn s3_round_trips_and_leaves_nothing_on_failure() {
    let Ok(url) = std::env::var("NIMBUS_TEST_S3_URL") else {
        println!("skipped: set NIMBUS_TEST_S3_URL to run the S3 test");
        return;
    };
    let store = FileStore::from_url(&url).unwrap();
    store.check().await.unwrap();
    let project = format!("t{}", hex::encode(rand::random::<[u8; 6]>()));
    let key = |file: &str| Key::file(&project, "b1", file).unwrap();
    let big = 12 * 1024 * 1024;

    for (compression, encrypt) in [
        (Compression::None, false),
        (Compression::Gzip, false),
        (Compression::Zstd, true),
        (Compression::None, true),
    ] {
        for size in [0, 100_000, big] {
            let data = random_bytes(size);
            let name = format!("f-{compression}-{encrypt}-{size}");
            let written = store
                .write(
                    &key(&name),
                    &data[..],
                    &options(compression, encrypt, 1 << 30),
                )
                .await
                .unwrap();
            assert_eq!(written.sha256, sha256_hex(&data));
            let read = store
                .read(&key(&name), &written.encoding, SECRET)
                .await
                .unwrap();
            assert!(collect(read).await.unwrap() == data, "{name}");
            if size > 0 {
                let range = (size as u64 / 3)..(size as u64 / 3 + 70_000).min(size as u64);
                let stream = store
                    .read_range(&key(&name), &written.encoding, SECRET, range.clone())
                    .await
                    .unwrap();
                let got = collect(stream).await.unwrap();
                assert!(
                    got == data[range.start as usize..range.end as usize],
                    "{name} {range:?}"
                );
                let past = store
                    .read_range(
                        &key(&name),
                        &written.encoding,
                        SECRET,
                        size as u64 + 5..size as u64 + 10,
                    )
                    .await
                    .unwrap();
                assert!(collect(past).await.unwrap().is_empty());
            }
            if encrypt {
                let wrong = store.read(&key(&name), &written.encoding, "wrong").await;
                assert!(matches!(wrong, Err(FileError::Unreadable)));
            }
        }
    }

    // Past the limit after two parts went up: no object, no open upload.
    let limit = big as u64 - 1;
    let error = store
        .write(
            &key("too-big"),
            &random_bytes(big)[..],
            &options(Compression::None, false, limit),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, FileError::TooLarge { .. }), "{error:?}");
    let missing = store
        .read(&key("too-big"), &Encoding::plain(), SECRET)
        .await;
    assert!(matches!(missing, Err(FileError::NotFound)));
    let input = Trickle::failing(random_bytes(big), io::ErrorKind::ConnectionReset);
    let error = store
        .write(
            &key("broken"),
            input,
            &options(Compression::Zstd, true, 1 << 30),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, FileError::Input(_)), "{error:?}");
    let parsed = url::Url::parse(&url).unwrap();
    let bucket = parsed.host_str().unwrap();
    if let Some(endpoint) = parsed
        .query_pairs()
        .find(|(name, _)| name == "endpoint")
        .map(|(_, value)| value.into_owned())
    {
        match open_multipart_uploads(&endpoint, bucket).await {
            Some(open) => assert_eq!(open, 0, "multipart uploads left open"),
            None => println!("could not list multipart uploads at {endpoint}"),
        }
    }

    store
        .write(
            &Key::file(&project, "b2", "kept").unwrap(),
            &b"kept"[..],
            &options(Compression::None, false, 100),
        )
        .await
        .unwrap();
    store
        .delete_prefix(&Key::bucket_prefix(&project, "b1").unwrap())
        .await
        .unwrap();
    let gone = store
        .read(&key("f-none-false-100000"), &Encoding::plain(), SECRET)
        .await;
    assert!(matches!(gone, Err(FileError::NotFound)));
    let kept = store
        .read(
            &Key::file(&project, "b2", "kept").unwrap(),
            &Encoding::plain(),
            SECRET,
        )
        .await
        .unwrap();
    assert_eq!(collect(kept).await.unwrap(), b"kept");
    store
        .delete_prefix(&Key::project_prefix(&project).unwrap())
        .await
        .unwrap();
    store.delete(&key("never-there")).await.unwrap();
}

#[tokio::test]
async fn a_spool_writer_writes_and_hashes_every_byte_from_its_offset_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool");
    let data = random_bytes(3 * 1024 * 1024 + 17);
    std::fs::write(&path, b"keep").unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut writer = SpoolWriter::new(file, 4, Some(Digest::default())).unwrap();
    for piece in data.chunks(100_003) {
        writer.push(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    let (_, digest) = writer.finish().await.unwrap();
    let fingerprint = digest.unwrap().finish();
    assert_eq!(fingerprint.size, data.len() as u64);
    assert_eq!(fingerprint.sha256, sha256_hex(&data));
    let written = std::fs::read(&path).unwrap();
    assert_eq!(&written[..4], b"keep", "the bytes before the offset stay");
    assert!(written[4..] == data[..], "every byte in order");
}

#[tokio::test]
async fn a_spool_sealed_as_it_is_written_is_adopted_or_opened_on_the_way() {
    let (dir, store) = local();
    let data = random_bytes(1_000_003);
    let spool = dir.path().join("spool");
    let salt = new_salt();
    let file = std::fs::File::create(&spool).unwrap();
    let mut writer = SpoolWriter::new(file, 0, Some(Digest::default()))
        .unwrap()
        .sealing_file(SECRET, &salt)
        .unwrap();
    for piece in data.chunks(77_777) {
        writer.push(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    let (_, digest) = writer.finish().await.unwrap();
    let fingerprint = digest.unwrap().finish();
    assert_eq!(
        fingerprint.sha256,
        sha256_hex(&data),
        "the original bytes are hashed"
    );
    assert_eq!(fingerprint.size, data.len() as u64);
    // An encrypted bucket stores the spool file as it is.
    let sealed = options(Compression::None, true, u64::MAX);
    let written = store
        .adopt(&key("a"), &spool, &fingerprint, Some(&salt), &sealed)
        .await
        .unwrap()
        .expect("adopted");
    assert_eq!(written.encoding.salt.as_deref(), Some(salt.as_str()));
    assert_eq!(
        written.stored_size,
        std::fs::metadata(&spool).unwrap().len()
    );
    assert_eq!(
        read_fully(&store, &key("a"), &written.encoding)
            .await
            .unwrap(),
        data
    );
    // Where it cannot be linked (S3), it is copied as it is.
    let spooled = tokio::fs::File::open(&spool).await.unwrap();
    let copied = store
        .write_sealed(&key("d"), spooled, &fingerprint, &salt, &sealed)
        .await
        .unwrap();
    assert_eq!(copied, written);
    assert_eq!(
        std::fs::read(stored_file(&store, &key("d"))).unwrap(),
        std::fs::read(&spool).unwrap()
    );
    assert_eq!(
        read_fully(&store, &key("d"), &copied.encoding)
            .await
            .unwrap(),
        data
    );
    // Buckets that store it otherwise open it on the way.
    for other in [
        options(Compression::None, false, u64::MAX),
        options(Compression::Gzip, true, u64::MAX),
    ] {
        let adopted = store
            .adopt(&key("b"), &spool, &fingerprint, Some(&salt), &other)
            .await
            .unwrap();
        assert!(adopted.is_none(), "{other:?}");
        let plain = unsealed(tokio::fs::File::open(&spool).await.unwrap(), SECRET, &salt).unwrap();
        let written = store
            .write_known(&key("b"), plain, &other, Some(&fingerprint))
            .await
            .unwrap();
        assert_eq!(written.size, data.len() as u64);
        assert_eq!(
            read_fully(&store, &key("b"), &written.encoding)
                .await
                .unwrap(),
            data
        );
    }
    // Another secret does not open it.
    let plain = unsealed(
        tokio::fs::File::open(&spool).await.unwrap(),
        "another",
        &salt,
    )
    .unwrap();
    let failed = store
        .write_known(
            &key("c"),
            plain,
            &options(Compression::None, false, u64::MAX),
            Some(&fingerprint),
        )
        .await;
    assert!(failed.is_err());
}

//! File bytes at rest for Nimbus Storage: where they live (a local directory, or any
//! S3-compatible service through `object_store`) and how they are transformed on the way
//! in and out: the size limit enforced while streaming, the SHA-256 of the original
//! bytes, the MIME type sniffed from the content, optional gzip/zstd compression and
//! optional AES-256-GCM encryption at rest.
//!
//! Everything streams in bounded chunks: no operation holds a whole file in memory.
//! A write either publishes the complete object under its key or leaves nothing there
//! (see `upload`). Object keys are derived from validated ids only (see `key`).
//!
//! How an object was stored (`Encoding`) is not recorded in the object itself: the
//! caller keeps it in its database row and hands it back to `read`.

mod codec;
mod crypto;
mod key;
mod mime;
mod spool;
mod upload;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{GetOptions, GetRange, GetResult, GetResultPayload, ObjectStore};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncSeekExt as _};
use tokio_util::io::ReaderStream;

pub use key::Key;
pub use mime::sniff_mime;
pub use spool::{Digest, Fingerprint, SpoolWriter};

use codec::Encoder;
use upload::{Tuning, Upload};

/// A file's original bytes, in chunks of at most 64 KiB.
pub type ByteStream = futures_util::stream::BoxStream<'static, io::Result<Bytes>>;

/// Input is read in pieces of this size: large enough that reading a spooled file
/// costs one blocking-pool round trip per piece, not one per 64 KiB.
const READ_CHUNK: usize = 512 * 1024;

/// Local files are read for downloads in pieces of this size, one piece ahead.
const FILE_READ_CHUNK: usize = 512 * 1024;

/// The file of a resumable upload's received bytes, under its upload prefix.
const ASSEMBLY: &str = "assembly";

/// Where uploaded files live.
#[derive(Clone)]
pub struct FileStore {
    store: Arc<dyn ObjectStore>,
    kind: &'static str,
    description: String,
    /// The directory of a local store.
    root: Option<PathBuf>,
    /// The same store as `store`, when it is local: it maps keys to paths.
    local: Option<Arc<LocalFileSystem>>,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("kind", &self.kind)
            .field("location", &self.description)
            .finish()
    }
}

impl FileStore {
    /// A store in the directory `root`, created when missing.
    pub fn local(root: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).with_context(|| {
            format!(
                "cannot create the file storage directory {}",
                root.display()
            )
        })?;
        // Automatic cleanup removes directories emptied by a delete, so deleted buckets
        // and projects leave no trees of empty directories behind.
        let store = LocalFileSystem::new_with_prefix(&root)
            .with_context(|| format!("cannot use {} for file storage", root.display()))?
            .with_automatic_cleanup(true);
        let local = Arc::new(store);
        Ok(FileStore {
            store: local.clone(),
            kind: "local",
            description: root.display().to_string(),
            root: Some(root),
            local: Some(local),
        })
    }

    /// An S3-compatible store:
    /// `s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION&allow_http=true|false]`.
    /// Credentials and other settings come from the usual `AWS_*` environment variables;
    /// the URL's parameters win over them.
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|error| anyhow::anyhow!("the file storage URL is not a URL: {error}"))?;
        anyhow::ensure!(
            parsed.scheme() == "s3",
            "the file storage URL must start with s3:// (found {}://)",
            parsed.scheme()
        );
        anyhow::ensure!(
            parsed.username().is_empty() && parsed.password().is_none(),
            "the file storage URL must not contain credentials; \
             set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead"
        );
        anyhow::ensure!(
            parsed.port().is_none(),
            "the file storage URL names a bucket, not a server: put the address in ?endpoint="
        );
        let bucket = parsed.host_str().unwrap_or_default();
        anyhow::ensure!(
            !bucket.is_empty(),
            "the file storage URL has no bucket (expected s3://BUCKET[/PREFIX])"
        );
        anyhow::ensure!(
            parsed.fragment().is_none(),
            "the file storage URL must not have a #fragment"
        );
        let prefix = parsed.path().trim_matches('/');
        let prefix = if prefix.is_empty() {
            None
        } else {
            Some(ObjectPath::parse(prefix).map_err(|_| {
                anyhow::anyhow!("the file storage URL has an invalid prefix {prefix:?}")
            })?)
        };

        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let mut endpoint_shown = None;
        for (name, value) in parsed.query_pairs() {
            match &*name {
                "endpoint" => {
                    let endpoint = url::Url::parse(&value).map_err(|_| {
                        anyhow::anyhow!("the file storage URL's endpoint is not a URL")
                    })?;
                    anyhow::ensure!(
                        matches!(endpoint.scheme(), "http" | "https"),
                        "the file storage URL's endpoint must be http:// or https://"
                    );
                    anyhow::ensure!(
                        endpoint.username().is_empty() && endpoint.password().is_none(),
                        "the file storage URL's endpoint must not contain credentials"
                    );
                    endpoint_shown = Some(value.trim_end_matches('/').to_owned());
                    builder = builder.with_endpoint(value.trim_end_matches('/'));
                }
                "region" => {
                    anyhow::ensure!(!value.is_empty(), "the file storage URL's region is empty");
                    builder = builder.with_region(&*value);
                }
                "allow_http" => {
                    let allow = match &*value {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            anyhow::bail!("the file storage URL's allow_http must be true or false")
                        }
                    };
                    builder = builder.with_allow_http(allow);
                }
                other => anyhow::bail!(
                    "the file storage URL has an unknown parameter {other:?} \
                     (known: endpoint, region, allow_http)"
                ),
            }
        }
        let s3 = builder
            .build()
            .context("cannot configure the S3 file storage")?;

        let mut description = format!("s3://{bucket}");
        let store: Arc<dyn ObjectStore> = match prefix {
            Some(prefix) => {
                description.push('/');
                description.push_str(prefix.as_ref());
                Arc::new(PrefixStore::new(s3, prefix))
            }
            None => Arc::new(s3),
        };
        if let Some(endpoint) = endpoint_shown {
            description.push_str(&format!(" at {endpoint}"));
        }
        Ok(FileStore {
            store,
            kind: "s3",
            description,
            root: None,
            local: None,
        })
    }

    /// The directory of a local store; empty for other kinds.
    pub fn root(&self) -> &Path {
        self.root.as_deref().unwrap_or(Path::new(""))
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Where the files are, for logs: a directory or `s3://bucket/prefix`.
    pub fn describe(&self) -> String {
        self.description.clone()
    }

    /// Writes, reads back and removes a probe object.
    pub async fn check(&self) -> anyhow::Result<()> {
        let probe = ObjectPath::from(format!(
            ".health-{}",
            hex::encode(rand::random::<[u8; 8]>())
        ));
        self.store
            .put(&probe, Bytes::from_static(b"ok").into())
            .await
            .context("file storage is not writable")?;
        let read = async { self.store.get(&probe).await?.bytes().await }.await;
        let _ = self.store.delete(&probe).await;
        anyhow::ensure!(
            read.context("file storage is not readable")? == b"ok"[..],
            "file storage returned other bytes"
        );
        Ok(())
    }

    /// Streams `input` into `key`, applying `options`. Fails with `TooLarge` as soon as
    /// more than `options.max_size` bytes have been read; on any failure nothing is left
    /// under `key` (nor any staging data).
    pub async fn write(
        &self,
        key: &Key,
        input: impl AsyncRead + Unpin + Send,
        options: &WriteOptions,
    ) -> Result<Written, FileError> {
        self.write_known(key, input, options, None).await
    }

    /// `write`, for input whose fingerprint is already `known` (it was hashed as it
    /// was spooled): it is not hashed again.
    pub async fn write_known(
        &self,
        key: &Key,
        mut input: impl AsyncRead + Unpin + Send,
        options: &WriteOptions,
        known: Option<&Fingerprint>,
    ) -> Result<Written, FileError> {
        let salt = options.encrypt.then(crypto::new_salt);
        let mut encoder = Encoder::new(
            options.compression,
            salt.as_ref().map(|salt| (options.secret.as_str(), salt)),
        );
        let mut upload = Upload::new(self.store.clone(), key.to_path(), self.tuning(options));

        let hashed = known.is_none();
        let mut result = pump(&mut input, options, &mut encoder, &mut upload, hashed).await;
        if result.is_ok()
            && let Err(error) = upload.finish().await
        {
            result = Err(store_error(error));
        }
        let (size, digest) = match result {
            Ok(done) => done,
            Err(error) => {
                upload.abort().await;
                self.remove_empty_dirs(key).await;
                return Err(error);
            }
        };
        let fingerprint = match known {
            Some(known) if known.size == size => known.clone(),
            Some(_) => {
                // The spooled file changed under us: keep nothing.
                let _ = self.delete(key).await;
                return Err(FileError::Store(anyhow::anyhow!(
                    "a spooled file's size changed while it was stored"
                )));
            }
            None => digest.finish(),
        };
        Ok(Written {
            size,
            stored_size: upload.written(),
            sha256: fingerprint.sha256,
            mime_type: fingerprint.mime_type,
            encoding: Encoding {
                compression: options.compression,
                salt: salt.map(hex::encode),
            },
        })
    }

    /// Publishes the local file `spooled` (written and fingerprinted by a
    /// `SpoolWriter`, and sealed under `salt` when given) under `key` without
    /// copying it: a hard link beside the target, renamed into place, so the object
    /// appears whole or not at all. Answers `None` when that cannot be done (not a
    /// local store, another file system, the file is not what `options` store):
    /// the caller then streams the file with `write_known`.
    pub async fn adopt(
        &self,
        key: &Key,
        spooled: &Path,
        fingerprint: &Fingerprint,
        salt: Option<&str>,
        options: &WriteOptions,
    ) -> Result<Option<Written>, FileError> {
        let stored_as_spooled = match salt {
            None => options.is_plain(),
            Some(salt) => {
                options.encrypt
                    && options.compression == Compression::None
                    && crypto::parse_salt(salt).is_some()
            }
        };
        if !stored_as_spooled || fingerprint.size > options.max_size {
            return Ok(None);
        }
        let Some(target) = self.local_path(key) else {
            return Ok(None);
        };
        let spooled = spooled.to_path_buf();
        let linked = tokio::task::spawn_blocking(move || {
            let stored_size = std::fs::metadata(&spooled)?.len();
            Ok::<_, io::Error>(publish_link(&spooled, &target)?.then_some(stored_size))
        })
        .await
        .map_err(|join| FileError::Store(anyhow::Error::new(join)))?;
        match linked {
            Ok(Some(stored_size)) => {
                let mut written = Written::plain(fingerprint.clone());
                if let Some(salt) = salt {
                    written.stored_size = stored_size;
                    written.encoding.salt = Some(salt.to_string());
                }
                Ok(Some(written))
            }
            Ok(None) => Ok(None),
            Err(error) => {
                self.remove_empty_dirs(key).await;
                Err(io_error(error))
            }
        }
    }

    /// Stores the local file `spooled`, sealed under `salt` as it was spooled
    /// (`SpoolWriter::sealing_file`), as it is: its bytes are copied into `key`
    /// without being opened or sealed again (an S3 store, where `adopt` cannot link
    /// it). The caller has checked that `options` encrypt and do not compress.
    pub async fn write_sealed(
        &self,
        key: &Key,
        mut spooled: impl AsyncRead + Unpin + Send,
        fingerprint: &Fingerprint,
        salt: &str,
        options: &WriteOptions,
    ) -> Result<Written, FileError> {
        if fingerprint.size > options.max_size {
            return Err(FileError::TooLarge {
                limit: options.max_size,
            });
        }
        let mut upload = Upload::new(self.store.clone(), key.to_path(), self.tuning(options));
        let copied = async {
            let mut buffer = vec![0u8; READ_CHUNK];
            loop {
                let read = spooled.read(&mut buffer).await.map_err(input_error)?;
                if read == 0 {
                    break;
                }
                upload.write(&buffer[..read]).await.map_err(store_error)?;
            }
            upload.finish().await.map_err(store_error)
        }
        .await;
        if let Err(error) = copied {
            upload.abort().await;
            self.remove_empty_dirs(key).await;
            return Err(error);
        }
        let mut written = Written::plain(fingerprint.clone());
        written.stored_size = upload.written();
        written.encoding.salt = Some(salt.to_string());
        Ok(written)
    }

    /// Where `key` lives on disk, for a local store.
    fn local_path(&self, key: &Key) -> Option<PathBuf> {
        self.local.as_ref()?.path_to_filesystem(&key.to_path()).ok()
    }

    /// Whether a resumable upload's chunks are written into one file in place (a
    /// local store), rather than kept as objects of their own (S3).
    pub fn assembles_in_place(&self) -> bool {
        self.local.is_some()
    }

    /// The file of `upload`'s received bytes (a local store only), locked for the
    /// caller alone: `Busy` when another request still holds it after
    /// [`ASSEMBLY_LOCK_WAIT`]. The wait lets a client's retry through while the
    /// request it gave up on is still ending on the server.
    pub async fn open_assembly(&self, upload: &Key) -> Result<Assembly, FileError> {
        let key = Key::from_stored(&format!("{}/{ASSEMBLY}", upload.as_str()))?;
        let path = self
            .local_path(&key)
            .ok_or_else(|| FileError::Store(anyhow::anyhow!("not a local file store")))?;
        let give_up = tokio::time::Instant::now() + ASSEMBLY_LOCK_WAIT;
        loop {
            if let Some(file) = try_lock_assembly(path.clone()).await? {
                return Ok(Assembly { file, path, key });
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(FileError::Busy);
            }
            tokio::time::sleep(ASSEMBLY_LOCK_POLL).await;
        }
    }

    /// Publishes the `size` bytes of a complete assembly under `key`. A plain file,
    /// or one sealed chunk by chunk as it arrived (`sealed`: its salt and chunk size),
    /// is renamed into place (its `digest` taken, or recomputed when the chunks
    /// arrived at another process); otherwise it is streamed through `options`'
    /// transforms. On failure nothing is left under `key`; the assembly is the
    /// caller's to remove.
    pub async fn publish_assembly(
        &self,
        assembly: Assembly,
        key: &Key,
        size: u64,
        digest: Option<Digest>,
        options: &WriteOptions,
        sealed: Option<(&str, u64)>,
    ) -> Result<Written, FileError> {
        let Assembly { file, path, .. } = assembly;
        let digest = digest.filter(|digest| digest.size() == size);
        let sealed = match sealed {
            Some((salt, chunk_size)) => Some((
                crypto::parse_salt(salt).ok_or(FileError::Unreadable)?,
                salt.to_string(),
                chunk_size,
            )),
            None => None,
        };
        if options.is_plain() || sealed.is_some() {
            let target = self
                .local_path(key)
                .ok_or_else(|| FileError::Store(anyhow::anyhow!("not a local file store")))?;
            let secret = options.secret.clone();
            let opened = sealed.as_ref().map(|(salt, _, chunk)| (*salt, *chunk));
            let published = tokio::task::spawn_blocking(move || {
                let stored_size = match opened {
                    Some((_, chunk_size)) => crypto::sealed_size(size, chunk_size),
                    None => size,
                };
                file.set_len(stored_size)?;
                let fingerprint = match (digest, opened) {
                    (Some(digest), _) => digest.finish(),
                    (None, None) => rehash(&file, size)?,
                    (None, Some((salt, _))) => rehash_sealed(&file, stored_size, &secret, &salt)?,
                };
                if fingerprint.size != size {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "an upload's bytes do not add up to its size",
                    ));
                }
                if let Some(dir) = target.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::rename(&path, &target)?;
                Ok::<_, io::Error>((fingerprint, stored_size))
            })
            .await
            .map_err(|join| FileError::Store(anyhow::Error::new(join)))?;
            return match published {
                Ok((fingerprint, stored_size)) => {
                    let mut written = Written::plain(fingerprint);
                    if let Some((_, salt, _)) = sealed {
                        written.stored_size = stored_size;
                        written.encoding.salt = Some(salt);
                    }
                    Ok(written)
                }
                Err(error) => {
                    self.remove_empty_dirs(key).await;
                    Err(io_error(error))
                }
            };
        }
        let mut file = tokio::fs::File::from_std(file);
        file.seek(io::SeekFrom::Start(0)).await.map_err(io_error)?;
        let known = digest.map(Digest::finish);
        self.write_known(key, OwnInput(file.take(size)), options, known.as_ref())
            .await
    }

    /// The original bytes of `key`. Fails before returning the stream when the object is
    /// missing or does not decode (for encrypted objects: its first segment does not
    /// authenticate); later corruption ends the stream with an `io::Error`.
    pub async fn read(
        &self,
        key: &Key,
        encoding: &Encoding,
        secret: &str,
    ) -> Result<ByteStream, FileError> {
        let salt = match &encoding.salt {
            Some(salt) => Some(crypto::parse_salt(salt).ok_or(FileError::Unreadable)?),
            None => None,
        };
        let result = self.store.get(&key.to_path()).await.map_err(store_error)?;
        let decoded = codec::decode(
            stored_stream(result),
            encoding.compression,
            salt.as_ref().map(|salt| (secret, salt)),
        );
        prime(decoded).await
    }

    /// Bytes `range` (original offsets, end exclusive) of the original content; a range
    /// reaching past the end is cut short. Plain objects are read with a ranged GET,
    /// compressed or encrypted ones are decoded from the start.
    pub async fn read_range(
        &self,
        key: &Key,
        encoding: &Encoding,
        secret: &str,
        range: Range<u64>,
    ) -> Result<ByteStream, FileError> {
        if !encoding.is_plain() {
            let decoded = self.read(key, encoding, secret).await?;
            if range.start >= range.end {
                return Ok(empty());
            }
            return Ok(codec::slice(decoded, range.start, range.end));
        }
        let path = key.to_path();
        if range.start >= range.end {
            self.store.head(&path).await.map_err(store_error)?;
            return Ok(empty());
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            ..GetOptions::default()
        };
        match self.store.get_opts(&path, options).await {
            Ok(result) => prime(codec::rechunk(stored_stream(result))).await,
            Err(object_store::Error::NotFound { .. }) => Err(FileError::NotFound),
            Err(error) => {
                // Backends refuse a range starting at or past the end in their own ways;
                // that is an empty answer, anything else is the error it looks like.
                let meta = self.store.head(&path).await.map_err(store_error)?;
                if range.start >= meta.size {
                    Ok(empty())
                } else {
                    Err(store_error(error))
                }
            }
        }
    }

    /// Deletes `key`; a missing object is not an error.
    pub async fn delete(&self, key: &Key) -> Result<(), FileError> {
        match self.store.delete(&key.to_path()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(store_error(error)),
        }
    }

    /// Deletes every object under `prefix` (a bucket, a project, an upload); nothing
    /// there is not an error.
    pub async fn delete_prefix(&self, prefix: &Key) -> Result<(), FileError> {
        let path = prefix.to_path();
        let locations = self
            .store
            .list(Some(&path))
            .map_ok(|meta| meta.location)
            .boxed();
        let mut deleted = self.store.delete_stream(locations);
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(store_error(error)),
            }
        }
        drop(deleted);
        if let Some(root) = &self.root {
            // Listings skip staging files of uploads that crashed mid-way; whatever is
            // left under the prefix belongs to it all the same.
            let dir = root.join(prefix.as_str());
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error(error)),
            }
            self.remove_empty_dirs(prefix).await;
        }
        Ok(())
    }

    fn tuning(&self, options: &WriteOptions) -> Tuning {
        if self.root.is_some() {
            Tuning {
                part_size: 1024 * 1024,
                in_flight: 2,
            }
        } else {
            // S3 wants parts of at least 5 MiB and at most 10,000 of them: grow the parts
            // when the size limit allows objects larger than 10,000 small parts.
            let for_limit = options.max_size.div_ceil(9_000);
            let part_size = usize::try_from(for_limit)
                .unwrap_or(usize::MAX)
                .clamp(5 * 1024 * 1024, 512 * 1024 * 1024);
            Tuning {
                part_size,
                in_flight: 1,
            }
        }
    }

    /// Removes the directories above `key` that a failed write or a prefix delete left
    /// empty (a local store creates them on demand).
    async fn remove_empty_dirs(&self, key: &Key) {
        let Some(root) = &self.root else {
            return;
        };
        let full = root.join(key.as_str());
        let mut dir = full.parent();
        while let Some(current) = dir {
            if current == root.as_path() || !current.starts_with(root) {
                break;
            }
            if tokio::fs::remove_dir(current).await.is_err() {
                break;
            }
            dir = current.parent();
        }
    }
}

/// Whether a chunk's recorded key is an upload's one file (`FileStore::open_assembly`)
/// rather than an object of its own.
pub fn is_assembly_key(stored: &str) -> bool {
    stored
        .rsplit_once('/')
        .is_some_and(|(_, name)| name == ASSEMBLY)
}

/// Reads all of `input` through `encoder` into `upload`, returning the original size
/// and, when `hashed`, its digest.
async fn pump(
    input: &mut (impl AsyncRead + Unpin + Send),
    options: &WriteOptions,
    encoder: &mut Encoder,
    upload: &mut Upload,
    hashed: bool,
) -> Result<(u64, Digest), FileError> {
    let mut buffer = vec![0u8; READ_CHUNK];
    let mut size = 0u64;
    let mut digest = Digest::default();
    loop {
        let read = input.read(&mut buffer).await.map_err(input_error)?;
        if read == 0 {
            break;
        }
        size += read as u64;
        if size > options.max_size {
            return Err(FileError::TooLarge {
                limit: options.max_size,
            });
        }
        let data = &buffer[..read];
        if hashed {
            digest.update(data);
        }
        let stored = encoder.push(data).await.map_err(io_error)?;
        upload.write(stored).await.map_err(store_error)?;
    }
    let stored = encoder.finish().await.map_err(io_error)?;
    upload.write(stored).await.map_err(store_error)?;
    Ok((size, digest))
}

/// Links `spooled` to a staging name beside `target` and renames it into place.
/// `Ok(false)` when the two are on different file systems (or links are not
/// supported there).
fn publish_link(spooled: &Path, target: &Path) -> io::Result<bool> {
    let Some(dir) = target.parent() else {
        return Ok(false);
    };
    std::fs::create_dir_all(dir)?;
    // `<name>#<digits>` is the local store's own staging name: hidden from listings.
    let mut staging = target.as_os_str().to_owned();
    staging.push(format!("#{}", rand::random::<u32>()));
    let staging = PathBuf::from(staging);
    if let Err(error) = std::fs::hard_link(spooled, &staging) {
        return match error.kind() {
            io::ErrorKind::CrossesDevices | io::ErrorKind::Unsupported => Ok(false),
            _ if error.raw_os_error() == Some(EPERM) => Ok(false),
            _ => Err(error),
        };
    }
    if let Err(error) = std::fs::rename(&staging, target) {
        let _ = std::fs::remove_file(&staging);
        return Err(error);
    }
    Ok(true)
}

/// The fingerprint of the first `size` bytes of `file`, read from the start.
fn rehash(file: &std::fs::File, size: u64) -> io::Result<Fingerprint> {
    use std::os::unix::fs::FileExt as _;
    let mut digest = Digest::default();
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut offset = 0u64;
    while offset < size {
        let want = buffer.len().min((size - offset) as usize);
        let read = file.read_at(&mut buffer[..want], offset)?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        digest.update(&buffer[..read]);
        offset += read as u64;
    }
    Ok(digest.finish())
}

/// The fingerprint of the original bytes of `file`, a resumable upload sealed chunk by
/// chunk (`stored_size` bytes of it), opened from the start.
fn rehash_sealed(
    file: &std::fs::File,
    stored_size: u64,
    secret: &str,
    salt: &[u8; crypto::SALT],
) -> io::Result<Fingerprint> {
    use std::os::unix::fs::FileExt as _;
    let mut opener = crypto::Opener::new(secret, salt);
    let mut digest = Digest::default();
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut offset = 0u64;
    while offset < stored_size {
        let want = buffer.len().min((stored_size - offset) as usize);
        let read = file.read_at(&mut buffer[..want], offset)?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        opener.push(&buffer[..read]);
        while let Some(segment) = opener.next_segment()? {
            digest.update(&segment);
        }
        offset += read as u64;
    }
    digest.update(&opener.finish()?);
    Ok(digest.finish())
}

/// How long a chunk waits for the request holding its upload to let go.
const ASSEMBLY_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
const ASSEMBLY_LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Opens (creating) the assembly at `path` and takes its lock: `None` while
/// another request holds it.
async fn try_lock_assembly(path: PathBuf) -> Result<Option<std::fs::File>, FileError> {
    tokio::task::spawn_blocking(move || {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(error)) => Err(error),
        }
    })
    .await
    .map_err(|join| FileError::Store(anyhow::Error::new(join)))?
    .map_err(io_error)
}

/// The received bytes of one resumable upload in a local store, locked against
/// other requests for as long as it is held.
pub struct Assembly {
    file: std::fs::File,
    path: PathBuf,
    key: Key,
}

impl fmt::Debug for Assembly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Assembly").field("key", &self.key).finish()
    }
}

impl Assembly {
    /// Where the chunks are, as recorded with each chunk.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The file's path: it tells apart uploads of different data directories.
    pub fn describe(&self) -> String {
        self.path.display().to_string()
    }

    /// Drops whatever lies past `length` (a chunk that failed part-way), so a full
    /// disk gets its space back; a failure is only logged, since the retried chunk
    /// overwrites those bytes anyway.
    pub async fn cut(&self, length: u64) {
        let file = match self.file.try_clone() {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(%error, "could not cut an upload back");
                return;
            }
        };
        match tokio::task::spawn_blocking(move || file.set_len(length)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "could not cut an upload back"),
            Err(error) => tracing::warn!(%error, "could not cut an upload back"),
        }
    }

    /// Writes `input` from original offset `offset` on, up to `limit` bytes
    /// (`TooLarge` past it), hashing it into `digest` when given, and sealing it
    /// when `seal` says how. Answers the bytes written and the digest. A chunk cut
    /// short leaves bytes past what is recorded, which the retried chunk overwrites.
    pub async fn write(
        &mut self,
        offset: u64,
        mut input: ByteStream,
        limit: u64,
        digest: Option<Digest>,
        seal: Option<&ChunkSeal>,
    ) -> Result<(u64, Option<Digest>), FileError> {
        let file = self.file.try_clone().map_err(io_error)?;
        let mut writer =
            SpoolWriter::new(file, stored_offset(offset, seal), digest).map_err(io_error)?;
        if let Some(seal) = seal {
            let salt = crypto::parse_salt(&seal.salt).ok_or(FileError::Unreadable)?;
            writer = writer.sealing(crypto::ChunkSealer::new(
                &seal.secret,
                &salt,
                seal.chunk_size,
                seal.index,
                seal.last,
            ));
        }
        let mut size = 0u64;
        while let Some(bytes) = input.next().await {
            let bytes = bytes.map_err(FileError::Input)?;
            size += bytes.len() as u64;
            if size > limit {
                return Err(FileError::TooLarge { limit });
            }
            writer.push(bytes).await.map_err(io_error)?;
        }
        let (_, digest) = writer.finish().await.map_err(io_error)?;
        Ok((size, digest))
    }
}

/// How one chunk of a resumable upload is sealed as it is written into its place
/// (an encrypted bucket in a local store; see `crypto`'s version 2).
#[derive(Clone)]
pub struct ChunkSeal {
    pub secret: String,
    /// The upload's salt, as kept in `Encoding::salt`.
    pub salt: String,
    pub chunk_size: u64,
    pub index: u32,
    /// Whether this chunk ends the file.
    pub last: bool,
}

impl fmt::Debug for ChunkSeal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkSeal")
            .field("index", &self.index)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

/// The original bytes of a local file sealed as a whole (`crypto`'s version 1)
/// under `salt`, as it is read.
pub fn unsealed(
    file: tokio::fs::File,
    secret: &str,
    salt: &str,
) -> Result<impl AsyncRead + Unpin + Send + use<>, FileError> {
    let salt = crypto::parse_salt(salt).ok_or(FileError::Unreadable)?;
    let sealed = ReaderStream::with_capacity(file, READ_CHUNK).boxed();
    let plain = codec::decode(sealed, Compression::None, Some((secret, &salt)));
    Ok(tokio_util::io::StreamReader::new(plain))
}

/// A fresh salt for a file, in the form `Encoding::salt` keeps.
pub fn new_salt() -> String {
    hex::encode(crypto::new_salt())
}

/// Where the chunk starting at original offset `offset` lies in an assembly.
pub fn stored_offset(offset: u64, seal: Option<&ChunkSeal>) -> u64 {
    match seal {
        Some(seal) => crypto::sealed_chunk_offset(seal.chunk_size, seal.index),
        None => offset,
    }
}

/// The stored bytes of a GET. Local files are read in `FILE_READ_CHUNK`-sized pieces
/// instead of object_store's 8 KiB ones, which would cost a blocking-pool round trip
/// every 8 KiB.
fn stored_stream(result: GetResult) -> ByteStream {
    let range = result.range.clone();
    match result.payload {
        GetResultPayload::File(file, _) => local_stream(Arc::new(file), range),
        GetResultPayload::Stream(stored) => stored.map_err(io::Error::other).boxed(),
    }
}

/// Bytes `range` of a local file, read one piece ahead of the reader: while a piece
/// is on its way out, the next is being read on the blocking pool, straight into the
/// buffer that goes out (no copy through another buffer). No thread waits on a slow
/// reader: a piece is read only when the one before it is taken, so at most two are
/// held. The buffers are recycled (see [`Pieces`]).
fn local_stream(file: Arc<std::fs::File>, range: Range<u64>) -> ByteStream {
    let end = range.end;
    let pieces = Pieces::default();
    let first = read_ahead(&file, &pieces, range.start, end);
    stream::try_unfold(
        (file, pieces, range.start, first),
        move |(file, pieces, offset, ahead)| async move {
            let Some(reading) = ahead else {
                return Ok(None);
            };
            let piece = reading.await.map_err(io::Error::other)??;
            let next = offset + piece.len() as u64;
            let ahead = read_ahead(&file, &pieces, next, end);
            Ok(Some((piece, (file, pieces, next, ahead))))
        },
    )
    .boxed()
}

/// Starts reading the piece at `offset` (none at or past `end`).
fn read_ahead(
    file: &Arc<std::fs::File>,
    pieces: &Pieces,
    offset: u64,
    end: u64,
) -> Option<tokio::task::JoinHandle<io::Result<Bytes>>> {
    if offset >= end {
        return None;
    }
    let file = file.clone();
    let mut piece = pieces.take();
    Some(tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt as _;
        // Both are at most FILE_READ_CHUNK here.
        let want = (end - offset).min(FILE_READ_CHUNK as u64) as usize;
        piece.buffer.resize(want, 0);
        file.read_exact_at(&mut piece.buffer, offset)?;
        Ok(Bytes::from_owner(piece))
    }))
}

/// The read buffers of one download, handed back once the piece in each has been
/// sent (when the response lets go of its `Bytes`) and read into again. A fresh
/// buffer per piece cost its zeroing and, whenever the allocator had given its pages
/// back to the system meanwhile (`main.rs`), a page fault per 4 KiB: as much as the
/// copy from the page cache itself. At most `KEPT` wait here; the
/// others (and all of them once the download's stream is dropped) are freed.
#[derive(Default)]
struct Pieces(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

/// Buffers kept for reuse by one download: one being sent and one read ahead.
const KEPT: usize = 2;

impl Pieces {
    fn take(&self) -> Piece {
        let buffer = self
            .0
            .lock()
            .ok()
            .and_then(|mut kept| kept.pop())
            .unwrap_or_else(|| Vec::with_capacity(FILE_READ_CHUNK));
        Piece {
            buffer,
            home: Arc::downgrade(&self.0),
        }
    }
}

/// One piece of a download, going back to its download's [`Pieces`] when dropped.
struct Piece {
    buffer: Vec<u8>,
    home: std::sync::Weak<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        if let Some(home) = self.home.upgrade()
            && let Ok(mut kept) = home.lock()
            && kept.len() < KEPT
        {
            kept.push(std::mem::take(&mut self.buffer));
        }
    }
}

/// Waits for the first chunk so that a missing, undecryptable or corrupt object fails
/// the call instead of the response body.
async fn prime(mut decoded: ByteStream) -> Result<ByteStream, FileError> {
    match decoded.next().await {
        None => Ok(empty()),
        Some(Err(error)) => Err(read_error(error)),
        Some(Ok(first)) => Ok(stream::once(async move { Ok(first) })
            .chain(decoded)
            .boxed()),
    }
}

fn empty() -> ByteStream {
    stream::empty().boxed()
}

/// What a caller needs to know to write one file.
#[derive(Clone)]
pub struct WriteOptions {
    /// Largest accepted original size, in bytes.
    pub max_size: u64,
    pub compression: Compression,
    /// Encrypt at rest under a key derived from `secret` and a fresh salt.
    pub encrypt: bool,
    /// The server secret.
    pub secret: String,
}

impl fmt::Debug for WriteOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteOptions")
            .field("max_size", &self.max_size)
            .field("compression", &self.compression)
            .field("encrypt", &self.encrypt)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A compression name other than `none`, `gzip` or `zstd`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression {0:?} (expected none, gzip or zstd)")]
pub struct UnknownCompression(pub String);

impl FromStr for Compression {
    type Err = UnknownCompression;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            other => Err(UnknownCompression(other.to_owned())),
        }
    }
}

/// How an object is stored, kept by the caller in its database row and handed back to
/// `read`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoding {
    pub compression: Compression,
    /// Hex of the per-file key salt; `Some` means the object is encrypted.
    pub salt: Option<String>,
}

impl Encoding {
    /// Stored as sent: no compression, no encryption.
    pub fn plain() -> Self {
        Encoding {
            compression: Compression::None,
            salt: None,
        }
    }

    pub fn is_plain(&self) -> bool {
        self.compression == Compression::None && self.salt.is_none()
    }
}

impl WriteOptions {
    /// Whether objects are stored as sent.
    pub fn is_plain(&self) -> bool {
        self.compression == Compression::None && !self.encrypt
    }
}

/// What `write` stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// Original bytes.
    pub size: u64,
    /// Bytes in the store (after compression and encryption).
    pub stored_size: u64,
    /// Lowercase hex SHA-256 of the original bytes.
    pub sha256: String,
    pub mime_type: String,
    pub encoding: Encoding,
}

impl Written {
    /// A file stored as sent.
    fn plain(fingerprint: Fingerprint) -> Self {
        Written {
            size: fingerprint.size,
            stored_size: fingerprint.size,
            sha256: fingerprint.sha256,
            mime_type: fingerprint.mime_type,
            encoding: Encoding::plain(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("no such file in storage")]
    NotFound,
    #[error("invalid file storage key")]
    InvalidKey,
    /// Another request is writing the same upload.
    #[error("another request is writing this upload")]
    Busy,
    /// Wrong server secret, corrupt or truncated object.
    #[error("the stored file cannot be read: wrong server secret, corrupt or truncated")]
    Unreadable,
    /// No space left, or a quota or file size limit of the storage was hit.
    #[error("file storage is full")]
    Full,
    /// Reading the input failed (the client went away).
    #[error("reading the upload failed: {0}")]
    Input(io::Error),
    /// Anything else from the store: worth logging, not worth showing to clients.
    #[error("file storage failed: {0:#}")]
    Store(anyhow::Error),
}

impl FileError {
    /// An I/O error while writing, recognising full storage.
    pub fn from_io(error: io::Error) -> FileError {
        io_error(error)
    }
}

/// Maps an `object_store` error, recognising missing objects and full storage.
fn store_error(error: object_store::Error) -> FileError {
    if matches!(error, object_store::Error::NotFound { .. }) {
        FileError::NotFound
    } else if is_full(&error) {
        FileError::Full
    } else {
        FileError::Store(anyhow::Error::new(error))
    }
}

/// Maps an I/O error raised while writing (compression) or deleting.
fn io_error(error: io::Error) -> FileError {
    if is_full(&error) {
        FileError::Full
    } else {
        FileError::Store(anyhow::Error::new(error))
    }
}

/// Maps an error from a decoded stream: store errors travel inside `io::Error::other`,
/// and `InvalidData`/`UnexpectedEof` come from decryption or decompression.
fn read_error(error: io::Error) -> FileError {
    if carries_store_error(&error) {
        if let Some(inner) = error.into_inner()
            && let Ok(store) = inner.downcast::<object_store::Error>()
        {
            return store_error(*store);
        }
        return FileError::Store(anyhow::anyhow!("file storage failed"));
    }
    match error.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => FileError::Unreadable,
        _ => io_error(error),
    }
}

fn carries_store_error(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<object_store::Error>())
}

fn carries_file_error(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<FileError>())
}

/// Maps a failure to read a write's input. The input is the client's unless it
/// says otherwise: its breaking off is `Input`, whose cause the client is told.
/// The server's own input ([`OwnInput`]: a spool file, an upload's assembly or
/// chunks) fails as the store failure it is, logged and never shown.
fn input_error(error: io::Error) -> FileError {
    if carries_file_error(&error) {
        return match error
            .into_inner()
            .map(|inner| inner.downcast::<FileError>())
        {
            Some(Ok(failure)) => *failure,
            _ => FileError::Store(anyhow::anyhow!("reading stored input failed")),
        };
    }
    if carries_store_error(&error) {
        return read_error(error);
    }
    FileError::Input(error)
}

/// Input the server reads from its own disk or store, not from a client: a
/// failure to read it is carried as the [`FileError`] it is, so a write reports
/// it as the server's (logged, never shown) rather than as the client's upload
/// breaking off. Errors that already carry one pass as they are.
pub struct OwnInput<R>(pub R);

impl<R: AsyncRead + Unpin> AsyncRead for OwnInput<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0)
            .poll_read(cx, buf)
            .map_err(|error| {
                if carries_file_error(&error) {
                    error
                } else {
                    io::Error::other(read_error(error))
                }
            })
    }
}

/// Linux's errno values for "operation not permitted" (links refused), "no space
/// left", "file too large" and "quota exceeded".
const EPERM: i32 = 1;
const ENOSPC: i32 = 28;
const EFBIG: i32 = 27;
const EDQUOT: i32 = 122;

/// Whether any error in the chain says the storage is full.
fn is_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(io) = current.downcast_ref::<io::Error>() {
            if matches!(
                io.kind(),
                io::ErrorKind::StorageFull
                    | io::ErrorKind::QuotaExceeded
                    | io::ErrorKind::FileTooLarge
            ) || matches!(io.raw_os_error(), Some(ENOSPC | EFBIG | EDQUOT))
            {
                return true;
            }
            // `io::Error::source` skips the error it wraps and goes to that error's source.
            if let Some(inner) = io.get_ref()
                && is_full(inner)
            {
                return true;
            }
        }
        next = current.source();
    }
    false
}

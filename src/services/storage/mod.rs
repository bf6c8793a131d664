//! Storage: buckets and their files. A bucket sets the rules for its files (size
//! and extension limits, compression, encryption at rest, antivirus, permissions);
//! a file's bytes live in the [`FileStore`](crate::files::FileStore) under a key
//! derived from its ids, and its metadata and permissions in the database. Bytes
//! travel over plain HTTP endpoints (`http::storage`), never through GraphQL.

pub mod antivirus;
pub mod preview;
pub mod render;
pub mod schema;
pub mod service;
pub mod store;
pub mod tokens;
pub mod upload;

use crate::auth::permissions::Permission;
use crate::files::{Compression, Encoding};

pub use schema::register;

/// A container of files with its rules.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub project_id: String,
    pub id: String,
    pub name: String,
    pub enabled: bool,
    /// Whether each file's own permissions count beside the bucket's.
    pub file_security: bool,
    pub permissions: Vec<Permission>,
    /// Largest file accepted, in bytes.
    pub maximum_file_size: u64,
    /// Lower-case extensions without the dot; empty allows any.
    pub allowed_file_extensions: Vec<String>,
    pub compression: Compression,
    pub encryption: bool,
    pub antivirus: bool,
    /// Whether clients may have its images transformed into previews (API keys
    /// and the console may either way).
    pub transformations: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Where a file is in its life. Its row holds its id from the upload's start to the
/// end of its removal, and a claim of the id is told from the next by its
/// `created_at`: every step after the claim names both, so a step of an upload
/// deleted (or swept) meanwhile matches no row, whoever claimed the id since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    /// Its bytes are still arriving.
    Uploading,
    /// Its bytes are being written to the file's object: neither a delete nor the
    /// sweeper touches it, so nothing else can take the id and write there too.
    Finishing,
    /// Complete: listed and served.
    Ready,
    /// Being removed: served to no one, its id still taken until its bytes are gone,
    /// so no new upload of the id writes where they are being deleted.
    Removing,
}

impl FileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Uploading => "uploading",
            FileStatus::Finishing => "finishing",
            FileStatus::Ready => "ready",
            FileStatus::Removing => "removing",
        }
    }

    pub fn parse(stored: &str) -> Option<FileStatus> {
        [
            FileStatus::Uploading,
            FileStatus::Finishing,
            FileStatus::Ready,
            FileStatus::Removing,
        ]
        .into_iter()
        .find(|status| status.as_str() == stored)
    }
}

/// A file's metadata.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub project_id: String,
    pub bucket_id: String,
    pub id: String,
    pub name: String,
    pub status: FileStatus,
    /// Who may send the chunks of a resumable upload: `user:ID` or `key:ID`.
    pub uploader: String,
    /// Original size in bytes (while uploading: the announced size).
    pub size: u64,
    /// Bytes at rest, after compression and encryption.
    pub stored_size: u64,
    /// Sniffed from the content, never taken from the client.
    pub mime_type: String,
    /// SHA-256 of the original bytes, lower-case hex.
    pub checksum: String,
    pub encoding: Encoding,
    pub chunk_size: u64,
    pub chunks_total: u32,
    pub chunks_uploaded: u32,
    pub permissions: Vec<Permission>,
    pub created_at: i64,
    pub updated_at: i64,
}

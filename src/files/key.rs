//! Object keys. A key is only ever assembled from validated ids, so nothing a client
//! sends can name a path outside its project, climb directories or smuggle separators.

use std::fmt;

use super::FileError;

/// Longest id accepted in a key segment (a UUID with dashes is 36 characters).
const MAX_ID_LEN: usize = 36;

/// Where an object (or a group of objects) lives inside the store, e.g.
/// `projects/P/buckets/B/files/F`. Prefixes carry no trailing slash.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key(String);

impl Key {
    /// `projects/P/buckets/B/files/F`: the stored bytes of one file.
    pub fn file(project: &str, bucket: &str, file: &str) -> Result<Key, FileError> {
        Ok(Key(format!(
            "projects/{}/buckets/{}/files/{}",
            id(project)?,
            id(bucket)?,
            id(file)?
        )))
    }

    /// `projects/P/buckets/B/uploads/F/<index>-<nonce>`: one chunk of a resumable upload.
    /// The nonce keeps a retried chunk from overwriting the one being read.
    pub fn chunk(
        project: &str,
        bucket: &str,
        file: &str,
        index: u32,
        nonce: &str,
    ) -> Result<Key, FileError> {
        Ok(Key(format!(
            "projects/{}/buckets/{}/uploads/{}/{index}-{}",
            id(project)?,
            id(bucket)?,
            id(file)?,
            id(nonce)?
        )))
    }

    /// Everything uploaded so far for one resumable upload.
    pub fn upload_prefix(project: &str, bucket: &str, file: &str) -> Result<Key, FileError> {
        Ok(Key(format!(
            "projects/{}/buckets/{}/uploads/{}",
            id(project)?,
            id(bucket)?,
            id(file)?
        )))
    }

    /// Everything stored for one bucket (files and pending uploads).
    pub fn bucket_prefix(project: &str, bucket: &str) -> Result<Key, FileError> {
        Ok(Key(format!(
            "projects/{}/buckets/{}",
            id(project)?,
            id(bucket)?
        )))
    }

    /// Everything stored for one project.
    pub fn project_prefix(project: &str) -> Result<Key, FileError> {
        Ok(Key(format!("projects/{}", id(project)?)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key read back from the database, where [`Key::as_str`] put it: every
    /// segment must still pass the id rule (a chunk's `<index>-<nonce>` does).
    pub fn from_stored(stored: &str) -> Result<Key, FileError> {
        if !stored.starts_with("projects/") || stored.split('/').any(|part| id(part).is_err()) {
            return Err(FileError::InvalidKey);
        }
        Ok(Key(stored.to_string()))
    }

    pub(super) fn to_path(&self) -> object_store::path::Path {
        // Every segment is a validated id, so no part needs escaping.
        object_store::path::Path::from(self.0.as_str())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.0)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 1–36 characters of `[a-zA-Z0-9._-]`, not starting with `.`, `_` or `-`: this rules out
/// `.`/`..`, hidden names, separators, NUL and anything a file system treats specially.
fn id(value: &str) -> Result<&str, FileError> {
    let bytes = value.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= MAX_ID_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(value)
    } else {
        Err(FileError::InvalidKey)
    }
}

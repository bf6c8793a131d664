//! File storage. Local directory under the data dir for now; its health check
//! proves the directory is writable. Paths are always derived from ids, never
//! from user input.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Where uploaded files live.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    /// A store in `root`, created when missing.
    pub fn local(root: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).with_context(|| {
            format!(
                "cannot create the file storage directory {}",
                root.display()
            )
        })?;
        Ok(FileStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn kind(&self) -> &'static str {
        "local"
    }

    /// Writes, reads back and removes a probe file.
    pub async fn check(&self) -> anyhow::Result<()> {
        let probe = self
            .root
            .join(format!(".health-{}", crate::db::ids::generate()));
        tokio::fs::write(&probe, b"ok")
            .await
            .context("file storage is not writable")?;
        let read = tokio::fs::read(&probe).await;
        let _ = tokio::fs::remove_file(&probe).await;
        anyhow::ensure!(
            read.context("file storage is not readable")? == b"ok",
            "file storage returned other bytes"
        );
        Ok(())
    }
}

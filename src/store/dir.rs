//! The directory store: keys are files under a root folder, written by rename.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sha2::Digest;

use super::{BlobStore, StoreError, checked, io_err};

/// The directory store.
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// A store rooted at the folder `root` (created on the first write). No I/O.
    pub fn new(root: PathBuf) -> Self {
        DirStore { root }
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join(checked(key)?))
    }
}

/// Calls `visit` with every entry under `root` (depth first) and whether it is a folder
/// (symlinks are not followed); a folder is entered when `visit` returns true. A missing
/// folder is empty.
///
/// Errors: a folder that cannot be read.
fn walk(
    root: &Path,
    mut visit: impl FnMut(&std::fs::DirEntry, bool) -> bool,
) -> Result<(), StoreError> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&dir)(e)),
        };
        for entry in entries.flatten() {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if visit(&entry, is_dir) && is_dir {
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}

fn version_of(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Url(format!("store task failed: {e}"))))
}

#[async_trait]
impl BlobStore for DirStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        let dst = self.path(key)?;
        let src = path.to_path_buf();
        blocking(move || {
            let dir = dst.parent().unwrap_or(Path::new("/")).to_path_buf();
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            // The umask applied to 0666: a web server serving the folder can read it.
            let tmp = tempfile::Builder::new()
                .prefix(".incoming-")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
                .tempfile_in(&dir)
                .map_err(io_err(&dir))?;
            std::fs::copy(&src, tmp.path()).map_err(io_err(&src))?;
            tmp.as_file().sync_all().map_err(io_err(&dst))?;
            tmp.persist(&dst).map_err(|e| StoreError::Io {
                path: dst.display().to_string(),
                source: e.error,
            })?;
            Ok(())
        })
        .await
    }

    async fn get_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        let src = self.path(key)?;
        let dst = path.to_path_buf();
        let key = key.to_string();
        blocking(move || match std::fs::copy(&src, &dst) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !src.exists() => {
                Err(StoreError::NotFound(key))
            }
            Err(e) => Err(io_err(&src)(e)),
        })
        .await
    }

    async fn get_bytes(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, StoreError> {
        let path = self.path(key)?;
        blocking(move || match std::fs::read(&path) {
            Ok(bytes) => {
                let version = version_of(&bytes);
                Ok(Some((bytes, version)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        })
        .await
    }

    async fn put_bytes_if(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<&str>,
    ) -> Result<String, StoreError> {
        let path = self.path(key)?;
        let bytes = bytes.to_vec();
        let expected = expected.map(str::to_string);
        let key = key.to_string();
        blocking(move || {
            let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            let lock = dir.join(format!(".{}.lock", key.replace('/', "_")));
            // A lock older than a minute was left by a crash.
            if let Ok(meta) = std::fs::metadata(&lock)
                && meta
                    .modified()
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age.as_secs() > 60)
            {
                let _ = std::fs::remove_file(&lock);
            }
            let _held = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
                .map_err(|_| StoreError::Conflict(key.clone()))?;
            let result = (|| {
                let current = match std::fs::read(&path) {
                    Ok(b) => Some(version_of(&b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(io_err(&path)(e)),
                };
                if current != expected {
                    return Err(StoreError::Conflict(key.clone()));
                }
                crate::util::fs::write_atomic(&path, &bytes).map_err(|e| StoreError::Io {
                    path: path.display().to_string(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                Ok(version_of(&bytes))
            })();
            let _ = std::fs::remove_file(&lock);
            result
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            let mut out = Vec::new();
            walk(&root, |entry, is_dir| {
                // gitsync's own files (locks, half-written files) are not keys.
                if entry.file_name().to_string_lossy().starts_with('.') {
                    return false;
                }
                if !is_dir && let Ok(rel) = entry.path().strip_prefix(&root) {
                    let key = rel.to_string_lossy().replace('\\', "/");
                    if key.starts_with(&prefix) {
                        out.push(key);
                    }
                }
                is_dir
            })?;
            out.sort();
            Ok(out)
        })
        .await
    }

    /// Removes `.incoming-*` (a [`BlobStore::put_file`]) and `.tmp-*` (a small write) files
    /// older than `age` anywhere under the root.
    async fn clean_stale(&self, age: std::time::Duration) -> Result<usize, StoreError> {
        let root = self.root.clone();
        blocking(move || {
            let mut removed = 0;
            walk(&root, |entry, is_dir| {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !is_dir
                    && (name.starts_with(".incoming-") || name.starts_with(".tmp-"))
                    && entry
                        .metadata()
                        .ok()
                        .and_then(|m| m.modified().ok())
                        .and_then(|m| m.elapsed().ok())
                        .is_some_and(|elapsed| elapsed > age)
                    && std::fs::remove_file(entry.path()).is_ok()
                {
                    removed += 1;
                }
                is_dir
            })?;
            Ok(removed)
        })
        .await
    }

    async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let bytes = bytes.to_vec();
        blocking(move || {
            let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            crate::util::fs::write_atomic(&path, &bytes).map_err(|e| StoreError::Io {
                path: path.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            })
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }
}

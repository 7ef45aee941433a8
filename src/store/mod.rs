//! Where objects travel: an S3 bucket (`s3://bucket/prefix`, through the AWS SDK) or a
//! directory (`file:///path`, for removable media or a static web server). One small
//! trait, two implementations, used by partition sync (`manifest`, `b/<sha256>`) and by
//! the S3 mirror (`info/refs`, `objects/pack/pack-<hex>.pack`).
//!
//! The store never sees routing metadata. A conditional write (S3 `If-Match` /
//! `If-None-Match: *`, a lock file for directories) keeps two writers from overwriting each
//! other's object silently.

mod dir;
mod s3;

use std::path::{Path, PathBuf};

use async_trait::async_trait;

pub use dir::DirStore;
pub use s3::S3Store;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL is not `s3://bucket[/prefix]` or `file:///path`.
    #[error("store {0:?}: use s3://bucket/prefix or file:///path")]
    Url(String),
    /// The object does not exist.
    #[error("object {0} not found in the store")]
    NotFound(String),
    /// A conditional write lost: someone else wrote the object meanwhile.
    #[error("object {0} was changed by someone else meanwhile (another producer?)")]
    Conflict(String),
    /// An I/O error of the directory store or a local file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An S3 call failed.
    #[error("S3 {operation} failed: {message}")]
    S3 {
        /// The API operation.
        operation: &'static str,
        /// The error and its causes.
        message: String,
    },
}

pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Stores opaque objects by key.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// The store's URL, for messages.
    fn describe(&self) -> String;
    /// Uploads the file at `path` as `key`, streaming (multipart above 256 MiB on S3).
    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError>;
    /// Downloads `key` into the file at `path`, streaming.
    ///
    /// Errors: [`StoreError::NotFound`] when it does not exist.
    async fn get_file(&self, key: &str, path: &Path) -> Result<(), StoreError>;
    /// A small object and its version (S3 ETag, or a content hash), or `None`.
    async fn get_bytes(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, StoreError>;
    /// Writes a small object only if its version is still `expected` (`None`: only if it
    /// does not exist). Returns the new version.
    ///
    /// Errors: [`StoreError::Conflict`] when the condition fails.
    async fn put_bytes_if(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<&str>,
    ) -> Result<String, StoreError>;
    /// Every key starting with `prefix` (all pages).
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Writes a small object unconditionally.
    async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// Deletes `key` (absent is fine).
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Removes what writes killed half-way left behind, when older than `age` (so that a
    /// write under way elsewhere is never touched). Returns how many were removed. Stores
    /// whose writes leave nothing (S3: a PUT is whole or absent) do nothing.
    ///
    /// Errors: the store cannot be listed.
    async fn clean_stale(&self, age: std::time::Duration) -> Result<usize, StoreError> {
        let _ = age;
        Ok(0)
    }
}

/// Where S3 is, when not AWS itself.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Endpoint override (an AWS-compatible server).
    pub endpoint_url: Option<String>,
    /// Region; the SDK's chain when `None`.
    pub region: Option<String>,
}

/// Opens the store at `url`. No network call.
///
/// Errors: [`StoreError::Url`] for anything but `s3://` and `file://` URLs.
pub async fn open(url: &str, s3: &S3Options) -> Result<Box<dyn BlobStore>, StoreError> {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(StoreError::Url(url.to_string()));
        }
        return Ok(Box::new(DirStore::new(PathBuf::from(path))));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreError::Url(url.to_string()));
        }
        let sdk = crate::util::aws::sdk_config(s3.region.clone(), s3.endpoint_url.as_deref()).await;
        return Ok(Box::new(S3Store::new(
            &sdk,
            bucket,
            prefix,
            s3.endpoint_url.is_some(),
        )));
    }
    Err(StoreError::Url(url.to_string()))
}

/// A key made only of `[A-Za-z0-9._-]` segments separated by `/`.
pub(crate) fn checked(key: &str) -> Result<&str, StoreError> {
    let ok = !key.is_empty()
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    if ok {
        Ok(key)
    } else {
        Err(StoreError::Url(format!("bad key {key:?}")))
    }
}

//! Where partition objects travel: an S3 bucket (`s3://bucket/prefix`, through the AWS SDK)
//! or a directory (`file:///path`, for removable media). One small trait, two
//! implementations.
//!
//! Keys are opaque (`manifest`, `b/<sha256>`); the store never sees routing metadata. A
//! conditional write (S3 `If-Match` / `If-None-Match: *`, a lock file for directories)
//! keeps two producers from overwriting each other's manifest silently.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sha2::Digest;

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

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
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
    /// Uploads the file at `path` as `key`, streaming (multipart above 64 MiB on S3).
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
    /// Deletes `key` (absent is fine).
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
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
        return Ok(Box::new(DirStore {
            root: PathBuf::from(path),
        }));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreError::Url(url.to_string()));
        }
        let aws = crate::config::AwsConfig {
            region: s3.region.clone(),
            endpoint_url: s3.endpoint_url.clone(),
            ..Default::default()
        };
        let sdk = crate::backend::aws::sdk_config(&aws).await;
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
fn checked(key: &str) -> Result<&str, StoreError> {
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

/// The directory store.
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join(checked(key)?))
    }
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
            let tmp = tempfile::Builder::new()
                .prefix(".incoming-")
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
                crate::backend::local::write_atomic(&path, &bytes).map_err(|e| StoreError::Io {
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
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&dir)(e)),
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    if entry.file_name().to_string_lossy().starts_with('.') {
                        continue;
                    }
                    if path.is_dir() {
                        stack.push(path);
                    } else if let Ok(rel) = path.strip_prefix(&root) {
                        let key = rel.to_string_lossy().replace('\\', "/");
                        if key.starts_with(&prefix) {
                            out.push(key);
                        }
                    }
                }
            }
            out.sort();
            Ok(out)
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

/// The S3 store.
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

/// Objects above this size are uploaded in parts.
const MULTIPART_ABOVE: u64 = 64 << 20;
/// The size of each part.
const PART_SIZE: u64 = 16 << 20;

fn s3_err<E: std::error::Error>(operation: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::S3 {
        operation,
        message: aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
    }
}

impl S3Store {
    /// A store in `bucket` under `prefix`, with the SDK configuration `sdk`;
    /// `path_style` for AWS-compatible servers reached by IP address. No network call.
    pub fn new(sdk: &aws_config::SdkConfig, bucket: &str, prefix: &str, path_style: bool) -> Self {
        let conf = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(path_style)
            .build();
        let prefix = prefix.trim_matches('/');
        S3Store {
            client: aws_sdk_s3::Client::from_conf(conf),
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        }
    }

    fn key(&self, key: &str) -> Result<String, StoreError> {
        Ok(format!("{}{}", self.prefix, checked(key)?))
    }

    async fn put_multipart(&self, key: &str, path: &Path, size: u64) -> Result<(), StoreError> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(s3_err("CreateMultipartUpload"))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        let result: Result<(), StoreError> = async {
            while offset < size {
                let length = PART_SIZE.min(size - offset);
                let body = aws_sdk_s3::primitives::ByteStream::read_from()
                    .path(path)
                    .offset(offset)
                    .length(aws_sdk_s3::primitives::Length::Exact(length))
                    .build()
                    .await
                    .map_err(|e| StoreError::Io {
                        path: path.display().to_string(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                let part = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(body)
                    .send()
                    .await
                    .map_err(s3_err("UploadPart"))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(part.e_tag().map(str::to_string))
                        .build(),
                );
                offset += length;
                number += 1;
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(s3_err("CompleteMultipartUpload"))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

#[async_trait]
impl BlobStore for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        let full = self.key(key)?;
        let size = std::fs::metadata(path).map_err(io_err(path))?.len();
        if size > MULTIPART_ABOVE {
            return self.put_multipart(&full, path, size).await;
        }
        let body = aws_sdk_s3::primitives::ByteStream::from_path(path)
            .await
            .map_err(|e| StoreError::Io {
                path: path.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            })?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .body(body)
            .send()
            .await
            .map_err(s3_err("PutObject"))?;
        Ok(())
    }

    async fn get_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        let full = self.key(key)?;
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(StoreError::NotFound(key.to_string()));
            }
            Err(e) => return Err(s3_err("GetObject")(e)),
        };
        let mut reader = out.body.into_async_read();
        let mut file = tokio::fs::File::create(path).await.map_err(io_err(path))?;
        tokio::io::copy(&mut reader, &mut file)
            .await
            .map_err(io_err(path))?;
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(io_err(path))?;
        Ok(())
    }

    async fn get_bytes(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, StoreError> {
        let full = self.key(key)?;
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(out) => {
                let etag = out.e_tag().unwrap_or_default().to_string();
                let bytes = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| StoreError::S3 {
                        operation: "GetObject",
                        message: e.to_string(),
                    })?
                    .into_bytes()
                    .to_vec();
                Ok(Some((bytes, etag)))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(s3_err("GetObject")(e)),
        }
    }

    async fn put_bytes_if(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<&str>,
    ) -> Result<String, StoreError> {
        let full = self.key(key)?;
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .body(bytes.to_vec().into());
        request = match expected {
            Some(etag) => request.if_match(etag),
            None => request.if_none_match("*"),
        };
        match request.send().await {
            Ok(out) => Ok(out.e_tag().unwrap_or_default().to_string()),
            Err(e)
                if e.raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 412 | 409)) =>
            {
                Err(StoreError::Conflict(key.to_string()))
            }
            Err(e) => Err(s3_err("PutObject")(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let full = format!("{}{prefix}", self.prefix);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(full)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(s3_err("ListObjectsV2"))?;
            for object in page.contents() {
                if let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) {
                    out.push(key.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(key)?)
            .send()
            .await
            .map_err(s3_err("DeleteObject"))?;
        Ok(())
    }
}

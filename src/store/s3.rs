//! The S3 store, through the AWS SDK: uploads streamed from disk (one `PutObject` up to
//! 256 MiB, else a multipart upload with 4 parts of 16 MiB in flight), conditional writes.

use std::path::Path;

use async_trait::async_trait;

use super::{BlobStore, StoreError, checked, io_err};

/// The S3 store.
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    multipart_above: u64,
}

/// Objects above this size are uploaded in parts; below it one `PutObject` is fastest (a
/// multipart upload costs two more requests, and a server such as moto copies the parts
/// again to complete it). S3 takes up to 5 GiB in one PUT.
const MULTIPART_ABOVE: u64 = 256 << 20;
/// The size of each part.
const PART_SIZE: u64 = 16 << 20;
/// Parts in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// How much of a file an upload reads at a time, in bytes (the SDK's default is 4 KiB,
/// which makes a 100 MB upload 25,600 writes to the connection).
const READ_BUFFER: usize = 1 << 20;

fn s3_err<E>(operation: &'static str) -> impl Fn(E) -> StoreError
where
    E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata,
{
    move |e| StoreError::S3 {
        operation,
        message: crate::util::aws::one_line(&e),
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
            multipart_above: MULTIPART_ABOVE,
        }
    }

    /// The same store, uploading files above `bytes` in parts (default 256 MiB).
    pub fn multipart_above(mut self, bytes: u64) -> Self {
        self.multipart_above = bytes;
        self
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
        let result: Result<(), StoreError> = async {
            // Up to PARTS_IN_FLIGHT parts at once, each streamed from its range of the file.
            let mut parts = Vec::new();
            let mut running = tokio::task::JoinSet::new();
            let mut offset = 0;
            let mut number = 1;
            while offset < size || !running.is_empty() {
                while offset < size && running.len() < PARTS_IN_FLIGHT {
                    let length = PART_SIZE.min(size - offset);
                    let request = self
                        .client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(&upload_id)
                        .part_number(number);
                    let path = path.to_path_buf();
                    let at = offset;
                    running.spawn(async move {
                        let body = aws_sdk_s3::primitives::ByteStream::read_from()
                            .path(&path)
                            .buffer_size(READ_BUFFER)
                            .offset(at)
                            .length(aws_sdk_s3::primitives::Length::Exact(length))
                            .build()
                            .await
                            .map_err(|e| StoreError::Io {
                                path: path.display().to_string(),
                                source: std::io::Error::other(e.to_string()),
                            })?;
                        let part = request
                            .body(body)
                            .send()
                            .await
                            .map_err(s3_err("UploadPart"))?;
                        Ok::<_, StoreError>(
                            CompletedPart::builder()
                                .part_number(number)
                                .set_e_tag(part.e_tag().map(str::to_string))
                                .build(),
                        )
                    });
                    offset += length;
                    number += 1;
                }
                match running.join_next().await {
                    Some(Ok(part)) => parts.push(part?),
                    Some(Err(join)) => {
                        return Err(StoreError::S3 {
                            operation: "UploadPart",
                            message: join.to_string(),
                        });
                    }
                    None => {}
                }
            }
            parts.sort_by_key(|p| p.part_number());
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
        if size > self.multipart_above {
            return self.put_multipart(&full, path, size).await;
        }
        let body = aws_sdk_s3::primitives::ByteStream::read_from()
            .path(path)
            .buffer_size(READ_BUFFER)
            .build()
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

    async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(key)?)
            .body(bytes.to_vec().into())
            .send()
            .await
            .map_err(s3_err("PutObject"))?;
        Ok(())
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

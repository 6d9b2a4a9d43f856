//! Blobs in an S3-compatible bucket (the distributed shape).
//!
//! A staging object is a multipart upload: every full part (`part_size_bytes`)
//! is uploaded as soon as it is filled; what is left at the end of a request
//! that does not complete the upload is kept as a small "tail" object and
//! prepended to the next append (S3 needs 5 MiB in all parts but the last).
//! Sealing uploads the remainder as the last part and completes the multipart
//! upload — or, for objects smaller than one part, writes them with one PUT.
//! Promotion is a server-side copy to `blobs/<hash>`, then a delete.
//!
//! A failed append leaves parts the state does not list; the next append
//! overwrites those part numbers, and completion lists only the parts in the
//! state, so S3 drops any others.

use super::{
    Appender, BlobError, BlobResult, BlobStore, ObjectKey, ObjectRead, PartialState, S3Part,
    S3Partial, UploadId,
};
use crate::config::S3Config;
use crate::hash::BlobHash;
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// An S3 bucket (with an optional key prefix).
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    client: Client,
    bucket: String,
    prefix: String,
    part_size: u64,
}

fn err<E: std::error::Error + Send + Sync + 'static>(
    op: &'static str,
    key: &str,
    e: E,
) -> BlobError {
    BlobError {
        backend: "s3",
        op,
        key: key.to_owned(),
        message: DisplayErrorContext(e).to_string(),
    }
}

/// A 404 from the server (missing key), whatever the operation's error type says.
fn is_not_found<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool
where
    R: std::fmt::Debug,
{
    match e {
        SdkError::ServiceError(se) => {
            matches!(
                se.err().code(),
                Some("NoSuchKey" | "NotFound" | "NoSuchUpload")
            ) || format!("{:?}", se.raw()).contains("StatusCode(404)")
        }
        _ => false,
    }
}

impl S3BlobStore {
    /// Builds a client from configuration (static keys, or the standard AWS
    /// credential chain when none are set) and checks that the bucket answers.
    pub async fn connect(cfg: &S3Config) -> Result<Self, String> {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(u64::from(cfg.timeout_secs)))
            .build();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(cfg.region.clone()))
            .timeout_config(timeouts);
        if !cfg.access_key_id.is_empty() {
            let token =
                (!cfg.session_token.is_empty()).then(|| cfg.session_token.expose().to_owned());
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                cfg.access_key_id.expose(),
                cfg.secret_access_key.expose(),
                token,
                None,
                "natter-config",
            ));
        }
        if !cfg.endpoint.is_empty() {
            loader = loader.endpoint_url(&cfg.endpoint);
        }
        let shared = loader.load().await;
        let conf = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.path_style)
            // Checksums only where S3 requires them: many S3-compatible servers
            // do not accept the newer trailing-checksum encodings. Integrity is
            // ours to check anyway (SHA-256 of every blob).
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        let store = Self {
            client: Client::from_conf(conf),
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.clone(),
            part_size: cfg.part_size_bytes,
        };
        store
            .client
            .head_bucket()
            .bucket(&store.bucket)
            .send()
            .await
            .map_err(|e| {
                let why = match &e {
                    SdkError::ServiceError(se) => format!(
                        "the server answered {} ({})",
                        se.raw().status().as_u16(),
                        se.err().code().unwrap_or("no error code")
                    ),
                    SdkError::TimeoutError(_) => "timed out".to_owned(),
                    _ => DisplayErrorContext(&e).to_string(),
                };
                format!(
                    "media.s3: bucket {:?} at {:?} is not usable: {why}",
                    store.bucket, cfg.endpoint
                )
            })?;
        Ok(store)
    }

    fn key(&self, key: &ObjectKey) -> String {
        format!("{}{}", self.prefix, key.path())
    }

    /// The tail written when the staging object reached `len` bytes. Each tail
    /// has its own key, so writing a new one never clobbers the tail that the
    /// stored state still names (if saving the new state fails, the old one
    /// stays valid); stale tails go when the upload is promoted or discarded.
    fn tail_key(&self, id: &UploadId, len: u64) -> String {
        format!("{}staging/{id}.tail-{len}", self.prefix)
    }

    async fn delete_tails(&self, id: &UploadId) -> BlobResult<()> {
        let prefix = format!("{}staging/{id}.tail-", self.prefix);
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .send()
            .await
            .map_err(|e| err("list tails", &prefix, e))?;
        for obj in page.contents() {
            if let Some(k) = obj.key() {
                self.delete_key(k).await?;
            }
        }
        Ok(())
    }

    async fn put_bytes(&self, key: &str, data: Bytes) -> BlobResult<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(data.len() as i64)
            .body(SdkBody::from(data))
            .send()
            .await
            .map_err(|e| err("put", key, e))?;
        Ok(())
    }

    async fn delete_key(&self, key: &str) -> BlobResult<()> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(err("delete", key, e)),
        }
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    fn backend(&self) -> &'static str {
        "s3"
    }

    async fn begin(&self, _id: &UploadId) -> BlobResult<PartialState> {
        // Nothing exists until the first part or tail is written.
        Ok(PartialState {
            len: 0,
            sealed: false,
            s3: Some(S3Partial::default()),
        })
    }

    async fn append(&self, id: &UploadId, state: &PartialState) -> BlobResult<Box<dyn Appender>> {
        let partial = state.s3.clone().unwrap_or_default();
        let mut buf = BytesMut::with_capacity(self.part_size as usize);
        if partial.tail > 0 {
            let key = self.tail_key(id, state.len);
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| err("get tail", &key, e))?;
            let data = out
                .body
                .collect()
                .await
                .map_err(|e| err("read tail", &key, e))?
                .into_bytes();
            if data.len() as u64 != partial.tail {
                return Err(BlobError {
                    backend: "s3",
                    op: "read tail",
                    key,
                    message: format!("tail is {} bytes, expected {}", data.len(), partial.tail),
                });
            }
            buf.extend_from_slice(&data);
        }
        Ok(Box::new(S3Appender {
            store: self.clone(),
            id: id.clone(),
            key: self.key(&ObjectKey::Staging(id.clone())),
            partial,
            buf,
            len: state.len,
            in_flight: None,
            created_multipart: false,
        }))
    }

    async fn promote(&self, id: &UploadId, hash: &BlobHash) -> BlobResult<()> {
        let from = self.key(&ObjectKey::Staging(id.clone()));
        let to = self.key(&ObjectKey::Blob(*hash));
        // Keys are hex, '/', and the validated prefix: nothing to escape.
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(&to)
            .copy_source(format!("{}/{from}", self.bucket))
            .send()
            .await
            .map_err(|e| err("copy", &to, e))?;
        self.delete_key(&from).await?;
        self.delete_tails(id).await
    }

    async fn discard(&self, id: &UploadId, state: Option<&PartialState>) -> BlobResult<()> {
        let staging = self.key(&ObjectKey::Staging(id.clone()));
        if let Some(mpu) = state
            .and_then(|s| s.s3.as_ref())
            .and_then(|p| p.multipart_id.as_deref())
        {
            match self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&staging)
                .upload_id(mpu)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                // Some servers answer 403 for an upload id they no longer know
                // (already aborted). A multipart upload left over only wastes
                // space until the bucket's AbortIncompleteMultipartUpload rule
                // (see docs/media.md), so the rest of the discard goes on.
                Err(e) => {
                    tracing::warn!(error = %DisplayErrorContext(e), key = %staging, "media: could not abort a multipart upload")
                }
            }
        }
        self.delete_tails(id).await?;
        self.delete_key(&staging).await
    }

    async fn put(&self, key: &ObjectKey, data: Bytes) -> BlobResult<()> {
        // A single PUT is atomic in S3: readers see the old object or the new one.
        self.put_bytes(&self.key(key), data).await
    }

    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> BlobResult<Option<ObjectRead>> {
        let k = self.key(key);
        let mut req = self.client.get_object().bucket(&self.bucket).key(&k);
        if let Some(r) = &range {
            if r.start == r.end {
                // An empty range cannot be asked of S3; check the object exists.
                return Ok(self.size(key).await?.map(|size| ObjectRead {
                    size,
                    body: Box::pin(futures_util::stream::empty()),
                }));
            }
            req = req.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        let out = match req.send().await {
            Ok(o) => o,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(err("get", &k, e)),
        };
        let size = match out.content_range() {
            // "bytes a-b/size"
            Some(cr) => cr.rsplit('/').next().and_then(|s| s.parse().ok()),
            None => out.content_length().and_then(|l| u64::try_from(l).ok()),
        }
        .ok_or_else(|| BlobError {
            backend: "s3",
            op: "get",
            key: k.clone(),
            message: "response has no usable size".into(),
        })?;
        let body = futures_util::stream::unfold((out.body, k), |(mut body, k)| async move {
            match body.next().await {
                Some(Ok(b)) => Some((Ok(b), (body, k))),
                Some(Err(e)) => {
                    let e = err("read", &k, e);
                    Some((Err(e), (body, k)))
                }
                None => None,
            }
        });
        Ok(Some(ObjectRead {
            size,
            body: Box::pin(body),
        }))
    }

    async fn size(&self, key: &ObjectKey) -> BlobResult<Option<u64>> {
        let k = self.key(key);
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&k)
            .send()
            .await
        {
            Ok(o) => Ok(Some(o.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(err("head", &k, e)),
        }
    }

    async fn delete(&self, key: &ObjectKey) -> BlobResult<()> {
        self.delete_key(&self.key(key)).await
    }

    async fn list_staging(&self, older_than: SystemTime) -> BlobResult<Vec<UploadId>> {
        let prefix = format!("{}staging/", self.prefix);
        let cutoff = older_than
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| err("list", &prefix, e))?;
            for obj in page.contents() {
                let Some(name) = obj.key().and_then(|k| k.strip_prefix(&prefix)) else {
                    continue;
                };
                let old = obj.last_modified().is_some_and(|t| t.secs() < cutoff);
                let name = name.split_once(".tail-").map_or(name, |(id, _)| id);
                if let (true, Ok(id)) = (old, name.parse::<UploadId>())
                    && !out.contains(&id)
                {
                    out.push(id);
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated().unwrap_or(false) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    fn local_path(&self, _key: &ObjectKey) -> Option<PathBuf> {
        None
    }
}

/// Appends to one multipart staging object.
struct S3Appender {
    store: S3BlobStore,
    id: UploadId,
    key: String,
    partial: S3Partial,
    /// Bytes not yet in a part (starts with the old tail).
    buf: BytesMut,
    len: u64,
    /// The part upload in flight (one at a time, overlapping the next fill).
    in_flight: Option<tokio::task::JoinHandle<BlobResult<S3Part>>>,
    /// This appender started the multipart upload: no saved state names it, so
    /// if the append fails it must be aborted here or its parts would linger.
    created_multipart: bool,
}

impl S3Appender {
    async fn wait(&mut self) -> BlobResult<()> {
        if let Some(task) = self.in_flight.take() {
            let part = task.await.unwrap_or_else(|e| {
                Err(BlobError {
                    backend: "s3",
                    op: "upload part",
                    key: self.key.clone(),
                    message: format!("task failed: {e}"),
                })
            })?;
            self.partial.parts.push(part);
        }
        Ok(())
    }

    async fn multipart_id(&mut self) -> BlobResult<String> {
        if let Some(id) = &self.partial.multipart_id {
            return Ok(id.clone());
        }
        let out = self
            .store
            .client
            .create_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .send()
            .await
            .map_err(|e| err("create multipart", &self.key, e))?;
        let id = out.upload_id().ok_or_else(|| BlobError {
            backend: "s3",
            op: "create multipart",
            key: self.key.clone(),
            message: "no upload id in the response".into(),
        })?;
        self.partial.multipart_id = Some(id.to_owned());
        self.created_multipart = true;
        Ok(id.to_owned())
    }

    /// Starts uploading `data` as the next part.
    async fn send_part(&mut self, data: Bytes) -> BlobResult<()> {
        self.wait().await?;
        let mpu = self.multipart_id().await?;
        let number = i32::try_from(self.partial.parts.len() + 1).unwrap_or(i32::MAX);
        if number > 10_000 {
            return Err(BlobError {
                backend: "s3",
                op: "upload part",
                key: self.key.clone(),
                message: "more than 10000 parts; raise media.s3.part_size_bytes".into(),
            });
        }
        let client = self.store.client.clone();
        let bucket = self.store.bucket.clone();
        let key = self.key.clone();
        self.in_flight = Some(tokio::spawn(async move {
            let size = data.len() as u64;
            let out = client
                .upload_part()
                .bucket(&bucket)
                .key(&key)
                .upload_id(&mpu)
                .part_number(number)
                .content_length(size as i64)
                .body(SdkBody::from(data))
                .send()
                .await
                .map_err(|e| err("upload part", &key, e))?;
            let etag = out.e_tag().unwrap_or_default().to_owned();
            Ok(S3Part { number, etag, size })
        }));
        Ok(())
    }
}

#[async_trait]
impl Appender for S3Appender {
    async fn write(&mut self, chunk: Bytes) -> BlobResult<()> {
        self.len += chunk.len() as u64;
        self.buf.extend_from_slice(&chunk);
        let part = self.store.part_size as usize;
        while self.buf.len() >= part {
            let data = self.buf.split_to(part).freeze();
            self.send_part(data).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, seal: bool) -> BlobResult<PartialState> {
        match self.finish_inner(seal).await {
            Ok(state) => Ok(state),
            Err(e) => {
                self.abort_own_multipart().await;
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) {
        // Parts of an older multipart upload that the saved state does not list
        // are overwritten by the next append or dropped at completion.
        let _ = self.wait().await;
        self.abort_own_multipart().await;
    }
}

impl S3Appender {
    async fn abort_own_multipart(&mut self) {
        if !self.created_multipart {
            return;
        }
        if let Some(mpu) = self.partial.multipart_id.take() {
            let r = self
                .store
                .client
                .abort_multipart_upload()
                .bucket(&self.store.bucket)
                .key(&self.key)
                .upload_id(mpu)
                .send()
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %DisplayErrorContext(e), key = %self.key, "media: could not abort a multipart upload");
            }
        }
    }

    async fn finish_inner(&mut self, seal: bool) -> BlobResult<PartialState> {
        self.wait().await?;
        let rest = self.buf.split().freeze();
        if seal {
            if self.partial.multipart_id.is_none() {
                // Smaller than one part: a single PUT.
                self.store.put_bytes(&self.key, rest).await?;
            } else {
                if !rest.is_empty() || self.partial.parts.is_empty() {
                    self.send_part(rest).await?;
                    self.wait().await?;
                }
                let parts = self
                    .partial
                    .parts
                    .iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.number)
                            .e_tag(&p.etag)
                            .build()
                    })
                    .collect();
                let mpu = self.partial.multipart_id.clone().unwrap_or_default();
                self.store
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.store.bucket)
                    .key(&self.key)
                    .upload_id(&mpu)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| err("complete multipart", &self.key, e))?;
                self.partial.multipart_id = None;
            }
            self.partial.tail = 0;
        } else {
            self.partial.tail = rest.len() as u64;
            if !rest.is_empty() {
                let tail_key = self.store.tail_key(&self.id, self.len);
                self.store.put_bytes(&tail_key, rest).await?;
            }
        }
        Ok(PartialState {
            len: self.len,
            sealed: seal,
            s3: Some(self.partial.clone()),
        })
    }
}

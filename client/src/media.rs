//! Media for the SDK: resumable uploads (TUS 1.0) and downloads with progress.
//!
//! Uploads hash the file first (SHA-256, the blob's id) and claim that hash, so
//! the server verifies the bytes end to end. They go in chunks, each with an
//! `Upload-Checksum`; the upload URL is remembered in a small state file keyed
//! by the hash, so an interrupted upload (lost network, killed process)
//! continues from the server's offset on the next run instead of starting over.
//! Downloads go through the signed URL from `/info`, resume a partial file with
//! `Range`, and check the hash of what arrived.

use crate::Account;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Bytes per PATCH: small enough that a lost chunk costs little on a phone
/// network, large enough to keep the request overhead negligible.
pub const DEFAULT_CHUNK: u64 = 8 * 1024 * 1024;

/// Retries of one chunk before giving up (with the offset saved for next time).
const MAX_ATTEMPTS: u32 = 5;

/// A media error, with what the server said when it said something.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The account's credentials could not be refreshed.
    #[error("credentials: {0}")]
    Credentials(#[from] crate::Error),
    /// Local file trouble.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The network failed (after retries).
    #[error("network: {0}")]
    Network(String),
    /// The server refused, with its error code and message.
    #[error("server refused ({status} {code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// Explanation.
        message: String,
    },
    /// The server's answer made no sense.
    #[error("unexpected response: {0}")]
    Protocol(String),
    /// The downloaded bytes do not have the hash asked for.
    #[error("downloaded content has SHA-256 {actual}, not {expected}")]
    HashMismatch {
        /// Asked for.
        expected: String,
        /// Got.
        actual: String,
    },
}

/// Progress callbacks get (done, total) in bytes.
pub trait Progress: Send + Sync {
    /// Called as bytes move.
    fn update(&self, done: u64, total: u64);
    /// A message for the user (resuming, retrying).
    fn note(&self, _msg: &str) {}
}

impl<F: Fn(u64, u64) + Send + Sync> Progress for F {
    fn update(&self, done: u64, total: u64) {
        self(done, total)
    }
}

/// What the server says about a blob (`GET /v1/media/{hash}/info`).
#[derive(Debug, Clone, Deserialize)]
pub struct MediaInfo {
    /// SHA-256, hex.
    pub hash: String,
    /// Bytes.
    pub size: u64,
    /// Sniffed type.
    pub content_type: String,
    /// Stored as sent (encrypted).
    pub opaque: bool,
    /// Image width.
    pub width: Option<u32>,
    /// Image height.
    pub height: Option<u32>,
    /// Thumbnail.
    pub thumbnail: Thumbnail,
    /// Inline preview.
    pub preview: Option<Preview>,
    /// Signed download URL.
    pub url: String,
    /// When `url` expires (Unix seconds).
    pub url_expires_at: i64,
    /// When the blob expires unless referenced (Unix seconds).
    pub expires_at: Option<i64>,
}

/// Thumbnail part of [`MediaInfo`].
#[derive(Debug, Clone, Deserialize)]
pub struct Thumbnail {
    /// `created` or `none`.
    pub status: String,
    /// Width.
    pub width: Option<u32>,
    /// Height.
    pub height: Option<u32>,
    /// Signed URL.
    pub url: Option<String>,
    /// Why none.
    pub reason: Option<String>,
}

/// Inline preview part of [`MediaInfo`].
#[derive(Debug, Clone, Deserialize)]
pub struct Preview {
    /// `image/jpeg`.
    pub content_type: String,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// JPEG, base64.
    pub data_base64: String,
}

impl Preview {
    /// The JPEG bytes.
    pub fn jpeg(&self) -> Option<Vec<u8>> {
        B64.decode(&self.data_base64).ok()
    }
}

/// The outcome of an upload.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// The stored blob.
    pub info: MediaInfo,
    /// Bytes that were already on the server from an earlier, interrupted run.
    pub resumed_from: u64,
}

/// The server's view of a resumable upload.
enum Remote {
    /// Bytes received so far.
    At(u64),
    /// Stored as this hash.
    Done(String),
    /// Unknown, expired or not ours.
    Gone,
}

/// Talks to the media API of one server as one account (its access token is
/// refreshed as needed, so long uploads outlive it).
#[derive(Clone)]
pub struct MediaClient {
    http: reqwest::Client,
    base: String,
    account: Account,
    state_dir: PathBuf,
    chunk: u64,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorObject,
}

#[derive(Deserialize)]
struct ErrorObject {
    code: String,
    message: String,
}

async fn refused(r: reqwest::Response) -> MediaError {
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(e) => MediaError::Refused {
            status,
            code: e.error.code,
            message: e.error.message,
        },
        Err(_) => MediaError::Refused {
            status,
            code: String::new(),
            message: String::from_utf8_lossy(&body).chars().take(200).collect(),
        },
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MediaError + '_ {
    move |source| MediaError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn net(e: reqwest::Error) -> MediaError {
    MediaError::Network(e.to_string())
}

/// Whether a failure is worth retrying (network trouble, busy server).
fn retryable(e: &MediaError) -> bool {
    match e {
        MediaError::Network(_) => true,
        MediaError::Refused { status, .. } => matches!(status, 409 | 423 | 460 | 500..=599),
        _ => false,
    }
}

/// SHA-256 of a file, hex.
pub async fn hash_file(path: &Path, progress: &dyn Progress) -> Result<(String, u64), MediaError> {
    let mut f = tokio::fs::File::open(path).await.map_err(io(path))?;
    let total = f.metadata().await.map_err(io(path))?.len();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = f.read(&mut buf).await.map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
        progress.update(done, total);
    }
    Ok((hex::encode(h.finalize()), total))
}

impl MediaClient {
    /// A client for the account's server; resumable-upload state (the URL of
    /// each unfinished upload) is kept under `state_dir`.
    pub fn new(account: Account, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            base: account.api().base().trim_end_matches('/').to_owned(),
            account,
            state_dir: state_dir.into(),
            chunk: DEFAULT_CHUNK,
        }
    }

    async fn token(&self) -> Result<String, MediaError> {
        Ok(self.account.token().await?)
    }

    /// Bytes per PATCH.
    pub fn with_chunk_size(mut self, bytes: u64) -> Self {
        self.chunk = bytes.max(1);
        self
    }

    fn state_file(&self, hash: &str) -> PathBuf {
        self.state_dir.join(format!("upload-{hash}.url"))
    }

    /// Blob metadata with fresh signed URLs.
    pub async fn info(&self, hash: &str) -> Result<MediaInfo, MediaError> {
        let r = self
            .http
            .get(format!("{}/v1/media/{hash}/info", self.base))
            .bearer_auth(self.token().await?)
            .send()
            .await
            .map_err(net)?;
        if !r.status().is_success() {
            return Err(refused(r).await);
        }
        r.json()
            .await
            .map_err(|e| MediaError::Protocol(e.to_string()))
    }

    /// Uploads a file resumably. `opaque` stores it as sent (for encrypted files).
    pub async fn upload(
        &self,
        path: &Path,
        opaque: bool,
        progress: &dyn Progress,
    ) -> Result<Uploaded, MediaError> {
        progress.note("hashing");
        let (hash, total) = hash_file(path, &|_, _| {}).await?;
        let state = self.state_file(&hash);
        let mut url = tokio::fs::read_to_string(&state)
            .await
            .ok()
            .map(|s| s.trim().to_owned());
        let mut offset = None;
        if let Some(u) = &url {
            match self.head(u).await {
                Ok(Remote::At(o)) => {
                    progress.note(&format!("resuming at byte {o} of {total}"));
                    offset = Some(o);
                }
                // Finished just before the last run stopped.
                Ok(Remote::Done(h)) => {
                    let _ = tokio::fs::remove_file(&state).await;
                    let info = self.info(&h).await?;
                    return Ok(Uploaded {
                        resumed_from: total,
                        info,
                    });
                }
                // Expired, or not ours any more: start over.
                Ok(Remote::Gone) | Err(_) => url = None,
            }
        }
        let url = match url {
            Some(u) => u,
            None => {
                let u = self.create(&hash, total, opaque).await?;
                tokio::fs::create_dir_all(&self.state_dir)
                    .await
                    .map_err(io(&self.state_dir))?;
                tokio::fs::write(&state, &u).await.map_err(io(&state))?;
                offset = Some(0);
                u
            }
        };
        let resumed_from = offset.unwrap_or(0);
        let mut offset = resumed_from;
        progress.update(offset, total);
        let mut file = tokio::fs::File::open(path).await.map_err(io(path))?;
        let mut done_hash = None;
        if total == 0 {
            done_hash = Some(hash.clone());
        }
        let mut attempts = 0;
        while done_hash.is_none() {
            let len = self.chunk.min(total - offset);
            let mut buf = vec![0u8; len as usize];
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(io(path))?;
            file.read_exact(&mut buf).await.map_err(io(path))?;
            match self.patch(&url, offset, buf).await {
                Ok((new_offset, h)) => {
                    attempts = 0;
                    offset = new_offset;
                    progress.update(offset, total);
                    done_hash = h;
                    if done_hash.is_none() && offset >= total {
                        return Err(MediaError::Protocol(
                            "upload complete but no Natter-Media-Hash".into(),
                        ));
                    }
                }
                Err(e) if retryable(&e) && attempts < MAX_ATTEMPTS => {
                    attempts += 1;
                    progress.note(&format!("{e}; retrying ({attempts}/{MAX_ATTEMPTS})"));
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempts))).await;
                    // Ask the server where it is: a broken PATCH may have kept some bytes.
                    match self.head(&url).await {
                        Ok(Remote::At(o)) => {
                            offset = o;
                            progress.update(offset, total);
                        }
                        Ok(Remote::Done(h)) => done_hash = Some(h),
                        Ok(Remote::Gone) | Err(_) => {}
                    }
                }
                Err(e) => {
                    if !retryable(&e) {
                        // The server will never take this file: forget the upload.
                        let _ = tokio::fs::remove_file(&state).await;
                    }
                    return Err(e);
                }
            }
        }
        let _ = tokio::fs::remove_file(&state).await;
        let stored = done_hash.unwrap_or(hash);
        let info = self.info(&stored).await?;
        Ok(Uploaded { info, resumed_from })
    }

    async fn create(&self, hash: &str, total: u64, opaque: bool) -> Result<String, MediaError> {
        let mut meta = format!("sha256 {}", B64.encode(hash));
        if opaque {
            meta.push_str(",opaque");
        }
        let r = self
            .http
            .post(format!("{}/v1/media/uploads", self.base))
            .bearer_auth(self.token().await?)
            .header("tus-resumable", "1.0.0")
            .header("upload-length", total.to_string())
            .header("upload-metadata", meta)
            .send()
            .await
            .map_err(net)?;
        if r.status().as_u16() != 201 {
            return Err(refused(r).await);
        }
        r.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| MediaError::Protocol("creation without Location".into()))
    }

    /// Where the server is with an upload.
    async fn head(&self, url: &str) -> Result<Remote, MediaError> {
        let r = self
            .http
            .head(url)
            .bearer_auth(self.token().await?)
            .header("tus-resumable", "1.0.0")
            .send()
            .await
            .map_err(net)?;
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if r.status().as_u16() != 200 {
            return Ok(Remote::Gone);
        }
        if let Some(h) = header("natter-media-hash") {
            return Ok(Remote::Done(h));
        }
        Ok(header("upload-offset")
            .and_then(|v| v.parse().ok())
            .map_or(Remote::Gone, Remote::At))
    }

    async fn patch(
        &self,
        url: &str,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<(u64, Option<String>), MediaError> {
        let sum = B64.encode(Sha256::digest(&data));
        let r = self
            .http
            .patch(url)
            .bearer_auth(self.token().await?)
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", offset.to_string())
            .header("upload-checksum", format!("sha256 {sum}"))
            .header("content-type", "application/offset+octet-stream")
            .body(data)
            .send()
            .await
            .map_err(net)?;
        if r.status().as_u16() != 204 {
            return Err(refused(r).await);
        }
        let h = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let new_offset = h("upload-offset")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| MediaError::Protocol("PATCH without Upload-Offset".into()))?;
        Ok((new_offset, h("natter-media-hash")))
    }

    /// Downloads a blob to `out` through its signed URL, resuming a partial
    /// file, and checks its hash. Returns the blob's info.
    pub async fn download(
        &self,
        hash: &str,
        out: &Path,
        progress: &dyn Progress,
    ) -> Result<MediaInfo, MediaError> {
        let info = self.info(hash).await?;
        let have = tokio::fs::metadata(out).await.map(|m| m.len()).unwrap_or(0);
        let have = if have <= info.size { have } else { 0 };
        let mut req = self.http.get(&info.url);
        if have > 0 && have < info.size {
            progress.note(&format!("resuming at byte {have}"));
            req = req.header("range", format!("bytes={have}-"));
        }
        let mut r = if have == info.size && info.size > 0 {
            None
        } else {
            let r = req.send().await.map_err(net)?;
            if !r.status().is_success() {
                return Err(refused(r).await);
            }
            Some(r)
        };
        let append = r.as_ref().is_some_and(|r| r.status().as_u16() == 206);
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append && r.is_some())
            .open(out)
            .await
            .map_err(io(out))?;
        let mut done = if append || r.is_none() { have } else { 0 };
        progress.update(done, info.size);
        if let Some(r) = r.as_mut() {
            while let Some(chunk) = r.chunk().await.map_err(net)? {
                file.write_all(&chunk).await.map_err(io(out))?;
                done += chunk.len() as u64;
                progress.update(done, info.size);
            }
        }
        file.flush().await.map_err(io(out))?;
        drop(file);
        let (actual, _) = hash_file(out, &|_, _| {}).await?;
        if actual != info.hash {
            // Start clean next time rather than resume a bad file.
            let _ = tokio::fs::remove_file(out).await;
            return Err(MediaError::HashMismatch {
                expected: info.hash.clone(),
                actual,
            });
        }
        Ok(info)
    }
}

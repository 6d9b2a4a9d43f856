//! Blobs as files under one directory (the embedded default).
//!
//! Staging files are appended in large batches on the blocking pool, one batch
//! in flight while the next is filled, so hashing and network reads overlap
//! the writes. `finish` fsyncs; `promote` is a rename (atomic on one
//! filesystem) followed by an fsync of the directory, so a blob that was
//! reported stored survives a crash.

use super::{
    Appender, BlobError, BlobResult, BlobStore, ObjectKey, ObjectRead, PartialState, UploadId,
};
use crate::hash::BlobHash;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use std::io::{Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Bytes gathered before one write to the staging file.
const WRITE_BATCH: usize = 4 << 20;
/// Read size when serving files.
const READ_CHUNK: usize = 512 << 10;

/// Files under a root directory.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

fn err(op: &'static str, key: &Path, e: impl std::fmt::Display) -> BlobError {
    BlobError {
        backend: "fs",
        op,
        key: key.display().to_string(),
        message: e.to_string(),
    }
}

impl FsBlobStore {
    /// Uses (and creates) `root`.
    pub fn new(root: impl Into<PathBuf>) -> BlobResult<Self> {
        let root = root.into();
        for sub in ["blobs", "thumbs", "staging"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(|e| err("create directory", &dir, e))?;
        }
        Ok(Self { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.path())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("blocking task failed: {e}"))))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[async_trait]
impl BlobStore for FsBlobStore {
    fn backend(&self) -> &'static str {
        "fs"
    }

    async fn begin(&self, id: &UploadId) -> BlobResult<PartialState> {
        let path = self.path(&ObjectKey::Staging(id.clone()));
        let p = path.clone();
        blocking(move || std::fs::File::create(&p).map(|_| ()))
            .await
            .map_err(|e| err("create staging file", &path, e))?;
        Ok(PartialState::default())
    }

    async fn append(&self, id: &UploadId, state: &PartialState) -> BlobResult<Box<dyn Appender>> {
        let path = self.path(&ObjectKey::Staging(id.clone()));
        let len = state.len;
        let p = path.clone();
        let file = blocking(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(&p)?;
            // Bytes past the last finished state belong to an append that was
            // abandoned (dropped, failed checksum): cut them off.
            f.set_len(len)?;
            f.seek(SeekFrom::Start(len))?;
            Ok(f)
        })
        .await
        .map_err(|e| err("open staging file", &path, e))?;
        Ok(Box::new(FsAppender {
            path,
            file: Some(file),
            in_flight: None,
            batch: Vec::new(),
            batch_len: 0,
            len,
        }))
    }

    /// The stale writer holds an open file: whatever it still writes lands in
    /// that file, even after a rename (into `blobs/`, by the PATCH that took
    /// over and finished), and would change a stored blob under its hash. So the
    /// kept bytes move to a new file under the staging name, and the stale
    /// writer is left writing into an unlinked one.
    async fn take_over(&self, id: &UploadId, state: &PartialState) -> BlobResult<()> {
        let path = self.path(&ObjectKey::Staging(id.clone()));
        let fresh = path.with_extension("takeover");
        let (p, f, len) = (path.clone(), fresh.clone(), state.len);
        blocking(move || {
            let mut from = std::fs::File::open(&p)?;
            let mut to = std::fs::File::create(&f)?;
            let copied = std::io::copy(&mut std::io::Read::take(&mut from, len), &mut to)?;
            if copied != len {
                return Err(std::io::Error::other(format!(
                    "staging file holds {copied} of its {len} recorded bytes"
                )));
            }
            to.sync_data()?;
            std::fs::rename(&f, &p)?;
            sync_dir(p.parent().unwrap_or(Path::new(".")))
        })
        .await
        .map_err(|e| err("take over staging file", &path, e))
    }

    async fn promote(&self, id: &UploadId, hash: &BlobHash) -> BlobResult<()> {
        let from = self.path(&ObjectKey::Staging(id.clone()));
        let to = self.path(&ObjectKey::Blob(*hash));
        let (f, t) = (from.clone(), to.clone());
        blocking(move || {
            let dir = t.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            std::fs::rename(&f, &t)?;
            sync_dir(dir)
        })
        .await
        .map_err(|e| err("promote", &to, e))
    }

    async fn discard(&self, id: &UploadId, _state: Option<&PartialState>) -> BlobResult<()> {
        self.delete(&ObjectKey::Staging(id.clone())).await
    }

    async fn put(&self, key: &ObjectKey, data: Bytes) -> BlobResult<()> {
        let path = self.path(key);
        let tmp = self
            .root
            .join("staging")
            .join(format!("put-{}", UploadId::random()));
        let p = path.clone();
        blocking(move || {
            let dir = p.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&data)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &p)?;
                sync_dir(dir)
            };
            let r = write();
            if r.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            r
        })
        .await
        .map_err(|e| err("put", &path, e))
    }

    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> BlobResult<Option<ObjectRead>> {
        let path = self.path(key);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err("open", &path, e)),
        };
        let size = file
            .metadata()
            .await
            .map_err(|e| err("stat", &path, e))?
            .len();
        let range = range.unwrap_or(0..size);
        if range.start > range.end || range.end > size {
            return Err(err(
                "read",
                &path,
                format!("range {range:?} outside {size} bytes"),
            ));
        }
        file.seek(SeekFrom::Start(range.start))
            .await
            .map_err(|e| err("seek", &path, e))?;
        let reader = file.take(range.end - range.start);
        let key_text = path.display().to_string();
        let body = tokio_util::io::ReaderStream::with_capacity(reader, READ_CHUNK).map(move |r| {
            r.map_err(|e| BlobError {
                backend: "fs",
                op: "read",
                key: key_text.clone(),
                message: e.to_string(),
            })
        });
        Ok(Some(ObjectRead {
            size,
            body: Box::pin(body),
        }))
    }

    async fn size(&self, key: &ObjectKey) -> BlobResult<Option<u64>> {
        let path = self.path(key);
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err("stat", &path, e)),
        }
    }

    async fn delete(&self, key: &ObjectKey) -> BlobResult<()> {
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err("delete", &path, e)),
        }
    }

    async fn list_staging(&self, older_than: SystemTime) -> BlobResult<Vec<UploadId>> {
        let dir = self.root.join("staging");
        let d = dir.clone();
        blocking(move || {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(&d)? {
                let entry = entry?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let modified = entry.metadata()?.modified()?;
                if modified >= older_than {
                    continue;
                }
                if let Ok(id) = name.parse::<UploadId>() {
                    out.push(id);
                } else if name.starts_with("put-") {
                    // A thumbnail write that crashed before its rename.
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| err("list", &dir, e))
    }

    fn local_path(&self, key: &ObjectKey) -> Option<PathBuf> {
        Some(self.path(key))
    }
}

/// Appends to one staging file.
struct FsAppender {
    path: PathBuf,
    /// The file, when no write is in flight.
    file: Option<std::fs::File>,
    /// The write in flight, which hands the file back.
    in_flight: Option<tokio::task::JoinHandle<std::io::Result<std::fs::File>>>,
    /// Chunks gathered for the next write (kept as received: no copy).
    batch: Vec<Bytes>,
    batch_len: usize,
    len: u64,
}

/// Writes all of `bufs` with vectored writes (at most `IOV_MAX` slices each).
fn write_all_bufs(file: &mut std::fs::File, bufs: &[Bytes]) -> std::io::Result<()> {
    const IOV_MAX: usize = 1024;
    let mut slices: Vec<std::io::IoSlice<'_>> =
        bufs.iter().map(|b| std::io::IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = rest.len().min(IOV_MAX);
        let written = file.write_vectored(&rest[..n])?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        std::io::IoSlice::advance_slices(&mut rest, written);
    }
    Ok(())
}

impl FsAppender {
    async fn wait(&mut self) -> BlobResult<()> {
        if let Some(task) = self.in_flight.take() {
            let file = task
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(format!("write task failed: {e}"))))
                .map_err(|e| err("write", &self.path, e))?;
            self.file = Some(file);
        }
        Ok(())
    }

    /// Starts writing the batch; the previous write must have finished.
    async fn flush_batch(&mut self) -> BlobResult<()> {
        self.wait().await?;
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_len = 0;
        let Some(mut file) = self.file.take() else {
            return Err(err(
                "write",
                &self.path,
                "staging file lost after a failed write",
            ));
        };
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            write_all_bufs(&mut file, &batch)?;
            Ok(file)
        }));
        Ok(())
    }
}

#[async_trait]
impl Appender for FsAppender {
    async fn write(&mut self, chunk: Bytes) -> BlobResult<()> {
        self.len += chunk.len() as u64;
        self.batch_len += chunk.len();
        self.batch.push(chunk);
        if self.batch_len >= WRITE_BATCH {
            self.flush_batch().await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, seal: bool) -> BlobResult<PartialState> {
        self.flush_batch().await?;
        self.wait().await?;
        if let Some(file) = self.file.take() {
            blocking(move || file.sync_data())
                .await
                .map_err(|e| err("fsync", &self.path, e))?;
        }
        Ok(PartialState {
            len: self.len,
            sealed: seal,
            s3: None,
        })
    }

    async fn abort(mut self: Box<Self>) {
        // The next append truncates to the last finished length.
        let _ = self.wait().await;
    }
}

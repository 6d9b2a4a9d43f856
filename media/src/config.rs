//! `[media]` settings. Every limit is explicit here, with its default.

use natter_common::Secret;
use natter_common::ratelimit::Quota;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

const MIB: u64 = 1024 * 1024;

/// The media service's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Where blob bytes live: `fs` (files under the data dir) or `s3`.
    pub backend: BackendKind,
    /// `[media.fs]`: the local-filesystem backend.
    pub fs: FsConfig,
    /// `[media.s3]`: the S3 backend.
    pub s3: S3Config,
    /// Largest blob accepted, in bytes (simple and resumable uploads).
    pub max_upload_bytes: u64,
    /// Bytes of live blobs one user may have uploaded, counting open resumable
    /// uploads at their declared length. 0 = unlimited.
    pub quota_bytes_per_user: u64,
    /// Sniffed types accepted. `application/octet-stream` covers unrecognised
    /// bytes (documents of unknown kinds).
    pub allowed_types: Vec<String>,
    /// Accept opaque (end-to-end-encrypted) uploads: stored as they are with a
    /// client-claimed hash, typed `application/octet-stream`, never thumbnailed.
    pub allow_opaque: bool,
    /// Images whose header declares more pixels (width × height) are refused
    /// before decoding (decompression bombs).
    pub max_image_pixels: u64,
    /// Long side of thumbnails, in pixels.
    pub thumbnail_px: u32,
    /// JPEG quality of thumbnails (1–100).
    pub thumbnail_quality: u8,
    /// Long side of the inline preview returned in upload responses (≤ 32).
    pub preview_px: u32,
    /// JPEG quality of previews.
    pub preview_quality: u8,
    /// Images decoded at once; 0 = number of CPUs. This counts decodes; their
    /// memory is bounded by `decode_memory_bytes`.
    pub thumbnail_concurrency: usize,
    /// Memory all image decodes of the process may hold together. Each one
    /// reserves its pixels (the header's, canvas or largest frame) ×
    /// `thumb::DECODE_BYTES_PER_PIXEL` (12) plus the file's length before it
    /// reads the file, and waits while the budget is taken; one that needs more
    /// than the whole budget is refused. At least `max_image_pixels` × 12, so
    /// the pixel limit stays the limit for any image's pixels.
    pub decode_memory_bytes: u64,
    /// Make first-frame thumbnails of videos when ffmpeg is available.
    pub video_thumbnails: bool,
    /// The ffmpeg program (looked up in `PATH` unless absolute).
    pub ffmpeg_path: String,
    /// Longest an ffmpeg run may take.
    pub ffmpeg_timeout_secs: u32,
    /// ffmpeg processes running at once, process-wide (at least 1).
    pub ffmpeg_concurrency: usize,
    /// Longest a video waits for one of those to be free; after that it is
    /// stored without a thumbnail and the response says why. 0 = no wait.
    pub ffmpeg_queue_secs: u32,
    /// HMAC key for signed download URLs. Empty: generated once under
    /// `<data-dir>/secrets/media-url-key` (set it explicitly when several nodes
    /// serve media).
    pub signing_key: Secret,
    /// Keys still accepted for signed URLs during a rotation.
    #[serde(deserialize_with = "natter_common::config::comma_list")]
    pub previous_signing_keys: Vec<Secret>,
    /// Lifetime of a signed URL handed out by the server.
    pub signed_url_ttl_secs: u32,
    /// A blob expires this long after its last reference (upload, message, or
    /// the release of a profile reference); profile references hold it.
    pub retention_secs: u64,
    /// How often the garbage collector runs.
    pub gc_interval_secs: u32,
    /// Resumable uploads expire this long after their last PATCH.
    pub upload_expiry_secs: u32,
    /// Resumable uploads one user may have open.
    pub max_open_uploads_per_user: u32,
    /// A PATCH holds its upload this long at most; a crashed node's hold lapses then.
    pub upload_lease_secs: u32,
    /// Upload requests (simple uploads and resumable creations) per user.
    pub limit_uploads_per_user: Quota,
}

/// Blob backend choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Local files.
    Fs,
    /// An S3-compatible object store.
    S3,
}

/// `[media.fs]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FsConfig {
    /// Directory for blobs; empty = `<data-dir>/media`.
    pub dir: PathBuf,
}

/// `[media.s3]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL (`http://127.0.0.1:9000`, `https://s3.eu-west-1.amazonaws.com`);
    /// empty = the AWS endpoint for `region`.
    pub endpoint: String,
    /// Region name.
    pub region: String,
    /// Bucket (must exist).
    pub bucket: String,
    /// Key prefix inside the bucket (e.g. `natter/`); empty for none.
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most self-hosted
    /// S3-compatible servers need.
    pub path_style: bool,
    /// Access key id; empty = the standard AWS credential chain (environment,
    /// profile files, web identity, ECS/EC2 metadata).
    pub access_key_id: Secret,
    /// Secret access key (with `access_key_id`).
    pub secret_access_key: Secret,
    /// Session token for temporary credentials (optional).
    pub session_token: Secret,
    /// Multipart part size in bytes (S3 needs at least 5 MiB for all but the last part).
    pub part_size_bytes: u64,
    /// Per-request timeout.
    pub timeout_secs: u32,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: String::new(),
            prefix: String::new(),
            path_style: true,
            access_key_id: Secret::default(),
            secret_access_key: Secret::default(),
            session_token: Secret::default(),
            part_size_bytes: 8 * MIB,
            timeout_secs: 60,
        }
    }
}

/// The default allow-list: photos, videos, voice notes and common documents.
/// HTML, SVG, XML and executables are left out on purpose.
pub const DEFAULT_ALLOWED_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/heic",
    "image/avif",
    "video/mp4",
    "video/quicktime",
    "video/3gpp",
    "video/webm",
    "video/x-matroska",
    "audio/ogg",
    "audio/mpeg",
    "audio/mp4",
    "audio/aac",
    "audio/amr",
    "audio/wav",
    "audio/flac",
    "application/pdf",
    "application/zip",
    "application/gzip",
    "application/x-7z-compressed",
    "text/plain",
    "application/octet-stream",
];

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            backend: BackendKind::Fs,
            fs: FsConfig::default(),
            s3: S3Config::default(),
            max_upload_bytes: 100 * MIB,
            quota_bytes_per_user: 10 * 1024 * MIB,
            allowed_types: DEFAULT_ALLOWED_TYPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            allow_opaque: true,
            max_image_pixels: 100_000_000,
            thumbnail_px: 320,
            thumbnail_quality: 80,
            preview_px: 32,
            preview_quality: 50,
            thumbnail_concurrency: 0,
            // A 100-megapixel image (the default pixel limit, 1.2 GB) and its
            // file fit; 12-megapixel photos (about 150 MB each) decode a dozen
            // at once, more than `thumbnail_concurrency` lets run on most hosts.
            decode_memory_bytes: 2 * 1024 * MIB,
            video_thumbnails: true,
            ffmpeg_path: "ffmpeg".into(),
            ffmpeg_timeout_secs: 30,
            ffmpeg_concurrency: 2,
            ffmpeg_queue_secs: 30,
            signing_key: Secret::default(),
            previous_signing_keys: Vec::new(),
            signed_url_ttl_secs: 24 * 3600,
            retention_secs: 30 * 24 * 3600,
            gc_interval_secs: 600,
            upload_expiry_secs: 24 * 3600,
            max_open_uploads_per_user: 20,
            upload_lease_secs: 900,
            limit_uploads_per_user: Quota::new(600, 3600),
        }
    }
}

/// S3 refuses single copies above 5 GiB; blobs are moved into place by copy.
const MAX_UPLOAD_CEILING: u64 = 5 * 1024 * MIB;
/// The decode budget is counted in KiB by a `u32`-sized semaphore request.
const MAX_DECODE_MEMORY: u64 = 4 * 1024 * 1024 * MIB - 1024;

impl MediaConfig {
    /// Checks values that types alone cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_upload_bytes == 0 || self.max_upload_bytes > MAX_UPLOAD_CEILING {
            return Err("media.max_upload_bytes: must be within 1..=5368709120 (5 GiB)".into());
        }
        if self.quota_bytes_per_user != 0 && self.quota_bytes_per_user < self.max_upload_bytes {
            return Err("media.quota_bytes_per_user: must be 0 (unlimited) or at least media.max_upload_bytes".into());
        }
        if self.allowed_types.is_empty() && !self.allow_opaque {
            return Err("media.allowed_types: empty and media.allow_opaque = false would refuse every upload".into());
        }
        for t in &self.allowed_types {
            let ok = t.split_once('/').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && t.bytes().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || b"/.+-".contains(&c)
                    })
            });
            if !ok {
                return Err(format!(
                    "media.allowed_types: {t:?} is not a lowercase type/subtype"
                ));
            }
        }
        if self.max_image_pixels == 0 {
            return Err("media.max_image_pixels: must be positive".into());
        }
        if !(16..=2048).contains(&self.thumbnail_px) {
            return Err("media.thumbnail_px: must be within 16..=2048".into());
        }
        if !(1..=32).contains(&self.preview_px) {
            return Err("media.preview_px: must be within 1..=32".into());
        }
        for (key, q) in [
            ("thumbnail_quality", self.thumbnail_quality),
            ("preview_quality", self.preview_quality),
        ] {
            if !(1..=100).contains(&q) {
                return Err(format!("media.{key}: must be within 1..=100"));
            }
        }
        if self.video_thumbnails && self.ffmpeg_path.is_empty() {
            return Err(
                "media.ffmpeg_path: must not be empty when media.video_thumbnails = true".into(),
            );
        }
        if self.ffmpeg_timeout_secs == 0 {
            return Err("media.ffmpeg_timeout_secs: must be positive".into());
        }
        if self.ffmpeg_concurrency == 0 {
            return Err("media.ffmpeg_concurrency: must be at least 1".into());
        }
        if self.ffmpeg_queue_secs > 3600 {
            return Err("media.ffmpeg_queue_secs: must be within 0..=3600".into());
        }
        let one_image = self
            .max_image_pixels
            .saturating_mul(crate::thumb::DECODE_BYTES_PER_PIXEL);
        if self.decode_memory_bytes < one_image {
            return Err(format!(
                "media.decode_memory_bytes: must be at least media.max_image_pixels × {} = {one_image} bytes, so an image within the pixel limit can be decoded",
                crate::thumb::DECODE_BYTES_PER_PIXEL
            ));
        }
        if self.decode_memory_bytes > MAX_DECODE_MEMORY {
            return Err("media.decode_memory_bytes: must be at most 4 TiB".into());
        }
        if !(60..=7 * 24 * 3600).contains(&self.signed_url_ttl_secs) {
            return Err("media.signed_url_ttl_secs: must be within 60..=604800 (7 days)".into());
        }
        if self.retention_secs < 3600 {
            return Err("media.retention_secs: must be at least 3600".into());
        }
        if self.gc_interval_secs == 0 {
            return Err("media.gc_interval_secs: must be positive".into());
        }
        if self.upload_expiry_secs < 60 {
            return Err("media.upload_expiry_secs: must be at least 60".into());
        }
        if self.max_open_uploads_per_user == 0 {
            return Err("media.max_open_uploads_per_user: must be at least 1".into());
        }
        if self.upload_lease_secs < 10 {
            return Err("media.upload_lease_secs: must be at least 10".into());
        }
        if self.limit_uploads_per_user.count == 0 || self.limit_uploads_per_user.period_secs == 0 {
            return Err(
                "media.limit_uploads_per_user: count and period_secs must be positive".into(),
            );
        }
        if self.backend == BackendKind::S3 {
            self.s3.validate()?;
        }
        Ok(())
    }

    /// Defaults for tests: a small upload limit and quota, a fast GC.
    pub fn for_tests() -> Self {
        Self {
            max_upload_bytes: 16 * MIB,
            quota_bytes_per_user: 64 * MIB,
            thumbnail_concurrency: 2,
            gc_interval_secs: 3600,
            ..Self::default()
        }
    }
}

impl S3Config {
    fn validate(&self) -> Result<(), String> {
        if self.bucket.is_empty() {
            return Err("media.s3.bucket: required when media.backend = \"s3\"".into());
        }
        if !(self.endpoint.is_empty()
            || self.endpoint.starts_with("http://")
            || self.endpoint.starts_with("https://"))
        {
            return Err(
                "media.s3.endpoint: must be an http:// or https:// URL (or empty for AWS)".into(),
            );
        }
        if self.region.is_empty() {
            return Err("media.s3.region: must not be empty".into());
        }
        if self.access_key_id.is_empty() != self.secret_access_key.is_empty() {
            return Err("media.s3.secret_access_key: set both access_key_id and secret_access_key, or neither (standard AWS chain)".into());
        }
        if self.part_size_bytes < 5 * MIB || self.part_size_bytes > 512 * MIB {
            return Err("media.s3.part_size_bytes: must be within 5 MiB..=512 MiB".into());
        }
        if self.prefix.starts_with('/') || self.prefix.contains("..") {
            return Err("media.s3.prefix: must not start with / or contain ..".into());
        }
        if self.timeout_secs == 0 {
            return Err("media.s3.timeout_secs: must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        MediaConfig::default().validate().unwrap();
        MediaConfig::for_tests().validate().unwrap();
        assert_eq!(MediaConfig::default().max_upload_bytes, 100 * MIB);
        assert_eq!(MediaConfig::default().retention_secs, 30 * 24 * 3600);
        assert_eq!(MediaConfig::default().ffmpeg_concurrency, 2);
        // The defaults' largest image and largest file fit the decode budget.
        let d = MediaConfig::default();
        assert!(
            d.max_image_pixels * crate::thumb::DECODE_BYTES_PER_PIXEL + d.max_upload_bytes
                <= d.decode_memory_bytes
        );
        let exact = MediaConfig {
            decode_memory_bytes: 1_200_000_000,
            ..MediaConfig::default()
        };
        exact.validate().unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let cases: Vec<(MediaConfig, &str)> = vec![
            (
                MediaConfig {
                    max_upload_bytes: 0,
                    ..MediaConfig::default()
                },
                "media.max_upload_bytes",
            ),
            (
                MediaConfig {
                    quota_bytes_per_user: 1,
                    ..MediaConfig::default()
                },
                "media.quota_bytes_per_user",
            ),
            (
                MediaConfig {
                    allowed_types: vec!["Image/JPEG".into()],
                    ..MediaConfig::default()
                },
                "media.allowed_types",
            ),
            (
                MediaConfig {
                    preview_px: 64,
                    ..MediaConfig::default()
                },
                "media.preview_px",
            ),
            (
                MediaConfig {
                    ffmpeg_concurrency: 0,
                    ..MediaConfig::default()
                },
                "media.ffmpeg_concurrency",
            ),
            (
                MediaConfig {
                    ffmpeg_queue_secs: 3601,
                    ..MediaConfig::default()
                },
                "media.ffmpeg_queue_secs",
            ),
            (
                // Below one image at the pixel limit (100 M × 12 bytes).
                MediaConfig {
                    decode_memory_bytes: 1_199_999_999,
                    ..MediaConfig::default()
                },
                "media.decode_memory_bytes",
            ),
            (
                MediaConfig {
                    backend: BackendKind::S3,
                    ..MediaConfig::default()
                },
                "media.s3.bucket",
            ),
            (
                MediaConfig {
                    backend: BackendKind::S3,
                    s3: S3Config {
                        bucket: "b".into(),
                        part_size_bytes: 1024,
                        ..S3Config::default()
                    },
                    ..MediaConfig::default()
                },
                "media.s3.part_size_bytes",
            ),
            (
                MediaConfig {
                    backend: BackendKind::S3,
                    s3: S3Config {
                        bucket: "b".into(),
                        access_key_id: Secret::new("k"),
                        ..S3Config::default()
                    },
                    ..MediaConfig::default()
                },
                "media.s3.secret_access_key",
            ),
        ];
        for (cfg, key) in cases {
            let err = cfg.validate().unwrap_err();
            assert!(err.starts_with(key), "{err}");
        }
    }

    #[test]
    fn backend_is_a_tagged_choice_and_unknown_keys_are_refused() {
        let cfg: MediaConfig = serde_json::from_value(serde_json::json!({
            "backend": "s3",
            "s3": {"bucket": "media", "endpoint": "http://127.0.0.1:9000", "access_key_id": "a", "secret_access_key": "b"}
        }))
        .unwrap();
        assert_eq!(cfg.backend, BackendKind::S3);
        cfg.validate().unwrap();
        assert!(
            serde_json::from_value::<MediaConfig>(serde_json::json!({"backend": "ftp"})).is_err()
        );
        assert!(
            serde_json::from_value::<MediaConfig>(serde_json::json!({"max_upload_byte": 1}))
                .is_err()
        );
        // Secrets never print.
        assert!(!format!("{cfg:?}").contains("\"b\""));
    }
}

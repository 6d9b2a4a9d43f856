//! Natter media: a content-addressed blob store. Uploads (streaming, or
//! resumable with TUS 1.0) are hashed while they stream; the SHA-256 is the
//! blob's id, which chat messages carry. Images get a 320-pixel thumbnail and
//! a tiny inline preview; videos a first-frame thumbnail when ffmpeg is
//! available. Downloads by hash with a token or a signed expiring URL. Bytes
//! live on the local filesystem or in S3; metadata in SQLite or PostgreSQL.
//! A blob expires a configurable time after its last reference.
//!
//! Layers: pure parts (`hash`, `sniff`, `header`, `thumb`, `tus`, `range`,
//! `sign`), limits (`budget`) | storage traits (`store` for metadata, `blob` for bytes) | the
//! engine (`engine`) | axum handlers (`api`). Wiring is in [`service`].

pub mod api;
pub mod blob;
pub mod budget;
pub mod config;
pub mod engine;
pub mod error;
pub mod hash;
pub mod header;
mod jpeg_dc;
pub mod range;
pub mod service;
pub mod sign;
pub mod sniff;
pub mod store;
pub mod thumb;
pub mod tus;
pub mod video;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_upload;

pub use api::openapi;
pub use config::MediaConfig;
pub use error::MediaError;
pub use hash::BlobHash;

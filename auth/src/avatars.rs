//! Keeping avatar media alive. A profile's avatar is a media hash; media deletes
//! blobs nobody references, so when a profile starts using a blob it must hold a
//! reference, and release it when it stops. auth does not depend on the media
//! service: the binary, when it runs both in one process, hands auth an
//! [`AvatarRefs`] over the media engine. Without one (auth running alone), apps
//! add the reference themselves over media's REST API, as docs/media.md says.

/// Why an avatar could not be held.
#[derive(Debug, thiserror::Error)]
pub enum AvatarRefError {
    /// No uploaded blob has this hash.
    #[error("no uploaded media has this hash")]
    UnknownMedia,
    /// The blob was uploaded by someone else (an avatar holds its blob, so
    /// it must be one the user uploaded and is charged for).
    #[error("this media was uploaded by another user")]
    NotYours,
    /// The media store failed.
    #[error("media store: {0}")]
    Failed(String),
}

/// References from profiles to their avatar blobs.
#[async_trait::async_trait]
pub trait AvatarRefs: Send + Sync + 'static {
    /// `user_id`'s profile now uses `hash`: keep the blob.
    async fn hold(&self, user_id: &str, hash: &str) -> Result<(), AvatarRefError>;
    /// `user_id`'s profile no longer uses `hash`. Best effort: a failure only
    /// delays the blob's collection, so it is logged, not returned.
    async fn release(&self, user_id: &str, hash: &str);
}

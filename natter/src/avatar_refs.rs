//! Wiring between two services that do not know each other: when auth and media
//! run in one process, auth's profile avatars hold media references through the
//! media engine (see `natter_auth::avatars`).

use natter_auth::{AvatarRefError, AvatarRefs};
use natter_media::BlobHash;
use natter_media::engine::{Media, RefKind};
use natter_media::error::MediaError;
use natter_media::store::RefAdded;
use std::sync::Arc;

/// [`AvatarRefs`] over the in-process media engine. The reference is a `profile`
/// reference with the user's id, created by the user, so it is the same one an
/// app would add over media's REST API.
pub(crate) struct MediaAvatarRefs(pub(crate) Arc<Media>);

#[async_trait::async_trait]
impl AvatarRefs for MediaAvatarRefs {
    async fn hold(&self, user_id: &str, hash: &str) -> Result<(), AvatarRefError> {
        let hash = hash
            .parse::<BlobHash>()
            .map_err(|_| AvatarRefError::UnknownMedia)?;
        match self
            .0
            .add_reference(&hash, RefKind::Profile, user_id, user_id)
            .await
        {
            Ok(RefAdded::Added | RefAdded::Exists) => Ok(()),
            Ok(RefAdded::NoBlob) => Err(AvatarRefError::UnknownMedia),
            Err(MediaError::NotAnOwner) => Err(AvatarRefError::NotYours),
            Err(e) => Err(AvatarRefError::Failed(e.to_string())),
        }
    }

    async fn release(&self, user_id: &str, hash: &str) {
        let Ok(hash) = hash.parse::<BlobHash>() else {
            return;
        };
        if let Err(e) = self
            .0
            .remove_reference(&hash, RefKind::Profile, user_id)
            .await
        {
            tracing::warn!(%user_id, error = %e, "avatar reference not released; the blob lives until it is");
        }
    }
}

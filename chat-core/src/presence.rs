//! Presence: who may see whom (the privacy rule), announcements on
//! online/offline transitions, and snapshots for new subscriptions.

use crate::hub::Outbound;
use crate::state::ChatState;
use crate::store::MessageStore;
use natter_common::UnixMillis;
use natter_proto::{Presence, PresencePrivacy, PresenceState, ServerFrame, UserId};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The privacy rule: may `viewer` see `user`'s presence?
pub fn visible(
    privacy: PresencePrivacy,
    user: &UserId,
    viewer: &UserId,
    viewer_is_contact: bool,
) -> bool {
    user == viewer
        || match privacy {
            PresencePrivacy::Everyone => true,
            PresencePrivacy::Contacts => viewer_is_contact,
            PresencePrivacy::Nobody => false,
        }
}

pub(crate) async fn may_see(
    store: &dyn MessageStore,
    privacy: PresencePrivacy,
    user: &UserId,
    viewer: &UserId,
) -> bool {
    let contact = privacy == PresencePrivacy::Contacts
        && store.is_contact(user, viewer).await.unwrap_or(false);
    visible(privacy, user, viewer, contact)
}

/// What `viewer` may know of `user` now.
pub(crate) async fn current(
    st: &ChatState,
    user: &UserId,
    viewer: &UserId,
) -> Result<(PresenceState, Option<UnixMillis>), String> {
    let inner = &st.0;
    let (privacy, stored_seen) = inner
        .store
        .presence(user)
        .await
        .map_err(|e| e.to_string())?;
    if !may_see(&*inner.store, privacy, user, viewer).await {
        return Ok((PresenceState::Hidden, None));
    }
    if inner.hub.is_online(user) || inner.cluster.online_elsewhere(user).await {
        return Ok((PresenceState::Online, None));
    }
    let seen = inner.hub.last_seen(user).or(stored_seen);
    Ok((PresenceState::Offline, seen))
}

/// Tells `user`'s subscribers, on every node, that they came online or went offline.
pub(crate) fn announce(st: &ChatState, user: &UserId, online: bool, last_seen: Option<UnixMillis>) {
    st.0.cluster.presence(user, online, last_seen);
    announce_local(st, user, online, last_seen);
}

/// Tells `user`'s subscribers on this node.
pub(crate) fn announce_local(
    st: &ChatState,
    user: &UserId,
    online: bool,
    last_seen: Option<UnixMillis>,
) {
    let subscribers = st.0.hub.subscribers(user);
    if subscribers.is_empty() {
        return;
    }
    let st = st.clone();
    let user = user.clone();
    tokio::spawn(async move {
        let privacy = match st.0.store.presence(&user).await {
            Ok((p, _)) => p,
            Err(e) => {
                tracing::warn!(error = %e, "presence lookup failed");
                return;
            }
        };
        let state = if online {
            PresenceState::Online
        } else {
            PresenceState::Offline
        };
        let json = presence_frame(&user, state, if online { None } else { last_seen });
        for (viewer, tx) in subscribers {
            if may_see(&*st.0.store, privacy, &user, &viewer).await {
                let _ = tx.try_send(Outbound::Frame(json.clone()));
            }
        }
    });
}

/// Sends the current presence of each of `users` to a new subscriber.
pub(crate) fn snapshot(
    st: &ChatState,
    viewer: &UserId,
    users: Vec<UserId>,
    tx: mpsc::Sender<Outbound>,
) {
    let st = st.clone();
    let viewer = viewer.clone();
    tokio::spawn(async move {
        for u in users {
            match current(&st, &u, &viewer).await {
                Ok((state, seen)) => {
                    let _ = tx.try_send(Outbound::Frame(presence_frame(&u, state, seen)));
                }
                Err(e) => tracing::warn!(error = %e, "presence snapshot failed"),
            }
        }
    });
}

/// Presence frame for a user as `viewer` may see it.
pub(crate) fn presence_frame(
    user: &UserId,
    state: PresenceState,
    last_seen: Option<i64>,
) -> Arc<str> {
    Arc::from(
        ServerFrame::Presence(Presence {
            user: user.clone(),
            state,
            last_seen,
        })
        .to_json(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privacy_rule() {
        let (a, b) = (UserId::new("a"), UserId::new("b"));
        assert!(visible(PresencePrivacy::Everyone, &a, &b, false));
        assert!(!visible(PresencePrivacy::Contacts, &a, &b, false));
        assert!(visible(PresencePrivacy::Contacts, &a, &b, true));
        assert!(!visible(PresencePrivacy::Nobody, &a, &b, true));
        assert!(
            visible(PresencePrivacy::Nobody, &a, &a, false),
            "one always sees oneself"
        );
    }
}

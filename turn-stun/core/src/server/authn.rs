//! Authentication of requests (RFC 8489 §9.2.4), the unknown-attribute check
//! and the peer policy check.

use std::net::SocketAddr;
use std::time::Instant;

use super::*;

impl Server {
    // ---- authentication ----

    /// RFC 8489 §9.2.4. Answers and returns `None` when the request is not authenticated.
    pub(super) fn authenticate(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        reply: &ReplyTo,
    ) -> Option<Authed> {
        let client = reply.five_tuple.client.ip();
        if msg.integrity_kind().is_none() {
            self.stats.challenges += 1;
            self.challenge(now, reply, ErrorCode::UNAUTHENTICATED);
            return None;
        }
        let (username, nonce) = match (
            msg.get(AttributeType::USERNAME),
            msg.get(AttributeType::REALM),
            msg.get(AttributeType::NONCE),
        ) {
            (
                Ok(Some(Attribute::Username(u))),
                Ok(Some(Attribute::Realm(_))),
                Ok(Some(Attribute::Nonce(n))),
            ) => (u, n),
            _ => {
                self.fail(AuthFailure::MissingAttributes);
                self.reply_error(reply, ErrorCode::BAD_REQUEST, None, |_| {});
                return None;
            }
        };
        let unix = self.unix_secs(now);
        if self.nonces.check(nonce, unix, client).is_err() {
            // Expired, forged or from before a restart (another key): all answered
            // 438 with a fresh nonce, so an honest client simply retries.
            self.fail(AuthFailure::StaleNonce);
            self.challenge(now, reply, ErrorCode::STALE_NONCE);
            return None;
        }
        let key = match self.config.credentials.key_for(username, unix) {
            Ok(key) => key,
            Err(e) => {
                self.fail(match e {
                    AuthError::UnknownUser => AuthFailure::UnknownUser,
                    AuthError::Expired { .. } => AuthFailure::ExpiredCredentials,
                    AuthError::NoCredentialsConfigured => AuthFailure::NoCredentialsConfigured,
                });
                self.challenge(now, reply, ErrorCode::UNAUTHENTICATED);
                return None;
            }
        };
        match msg.verify_integrity(&key.0) {
            Ok(kind) => Some(Authed {
                username: username.to_owned(),
                key,
                kind,
            }),
            Err(_) => {
                self.fail(AuthFailure::BadIntegrity);
                self.challenge(now, reply, ErrorCode::UNAUTHENTICATED);
                None
            }
        }
    }

    /// Authenticates a request that must refer to the 5-tuple's allocation and be
    /// made with the credentials that created it.
    pub(super) fn authenticate_on_allocation(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        reply: &ReplyTo,
    ) -> Option<(Authed, AllocationId)> {
        let auth = self.authenticate(now, msg, reply)?;
        let key = Some((&auth.key, auth.kind));
        if !self.check_unknown(msg, reply, key) {
            return None;
        }
        let Some(&id) = self.by_five_tuple.get(&reply.five_tuple) else {
            self.count(Refusal::AllocationMismatch);
            self.reply_error(reply, ErrorCode::ALLOCATION_MISMATCH, key, |_| {});
            return None;
        };
        if self.allocations[&id].username != auth.username {
            self.fail(AuthFailure::WrongCredentials);
            self.reply_error(reply, ErrorCode::WRONG_CREDENTIALS, key, |_| {});
            return None;
        }
        Some((auth, id))
    }

    /// Sends 401/438 with REALM and a fresh NONCE (unless the source is over its
    /// rate: see [`Server::reply`]).
    pub(super) fn challenge(&mut self, now: Instant, reply: &ReplyTo, code: ErrorCode<'static>) {
        let source = reply.five_tuple.client.ip().to_canonical();
        let nonce = self.nonces.issue(self.unix_secs(now), source);
        let realm = self.config.credentials.realm().to_owned();
        self.reply_error(reply, code, None, |b| {
            b.add(&Attribute::Realm(&realm))
                .add(&Attribute::Nonce(&nonce));
        });
    }

    pub(super) fn check_unknown(
        &mut self,
        msg: &Message<'_>,
        reply: &ReplyTo,
        key: Option<(&LongTermKey, IntegrityKind)>,
    ) -> bool {
        let unknown = msg.unknown_required(known_attribute);
        if unknown.is_empty() {
            return true;
        }
        self.count(Refusal::BadRequest);
        self.reply_error(reply, ErrorCode::UNKNOWN_ATTRIBUTE, key, |b| {
            b.add(&Attribute::UnknownAttributes(unknown));
        });
        false
    }

    /// Policy and family checks for a peer of allocation `id`; counts the refusal.
    pub(super) fn check_peer(
        &mut self,
        id: AllocationId,
        peer: SocketAddr,
    ) -> Result<(), ErrorCode<'static>> {
        if !family_matches(peer, self.allocations[&id].family) {
            self.count(Refusal::BadRequest);
            return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
        }
        match self.config.policy.check(peer) {
            Ok(()) => Ok(()),
            Err(PeerRefusal::OwnAddress(_)) => {
                self.count(Refusal::OwnAddress);
                Err(ErrorCode::FORBIDDEN)
            }
            Err(PeerRefusal::Denied { .. }) => {
                self.count(Refusal::PeerDenied);
                Err(ErrorCode::FORBIDDEN)
            }
        }
    }
}

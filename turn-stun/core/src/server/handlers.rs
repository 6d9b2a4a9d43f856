//! Request handlers of [`Server`]: Allocate, Refresh, CreatePermission,
//! ChannelBind, Send and ChannelData (RFC 8656), and Binding (RFC 8489).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::*;

impl Server {
    // ---- request handlers ----

    pub(super) fn on_binding(&mut self, msg: &Message<'_>, reply: ReplyTo) {
        let unknown =
            msg.unknown_required(|t| known_attribute(t) || t == AttributeType::FINGERPRINT.0);
        if !unknown.is_empty() {
            self.count(Refusal::BadRequest);
            self.reply_error(&reply, ErrorCode::UNKNOWN_ATTRIBUTE, None, |b| {
                b.add(&Attribute::UnknownAttributes(unknown));
            });
            return;
        }
        self.stats.binding_requests += 1;
        let client = reply.five_tuple.client;
        self.reply(&reply, Class::Success, None, |b| {
            b.add(&Attribute::XorMappedAddress(client));
            // For RFC 3489-era clients that only read MAPPED-ADDRESS.
            b.add(&Attribute::MappedAddress(client));
        });
    }

    pub(super) fn on_allocate(&mut self, now: Instant, msg: &Message<'_>, reply: ReplyTo) {
        let Some(auth) = self.authenticate(now, msg, &reply) else {
            return;
        };
        let key = Some((&auth.key, auth.kind));
        if !self.check_unknown(msg, &reply, key) {
            return;
        }
        let ft = reply.five_tuple;
        if let Some(&id) = self.by_five_tuple.get(&ft) {
            let alloc = &self.allocations[&id];
            if alloc.allocate_tid == reply.tid {
                // A retransmission of the request that created it: answer it again.
                let alloc = self
                    .allocations
                    .remove(&id)
                    .expect("present: looked up above");
                self.send_allocate_success(&reply, &alloc, auth.kind, None);
                self.allocations.insert(id, alloc);
            } else {
                self.count(Refusal::AllocationMismatch);
                self.reply_error(&reply, ErrorCode::ALLOCATION_MISMATCH, key, |_| {});
            }
            return;
        }
        if self.pending.values().any(|p| p.five_tuple == ft) {
            return; // still binding the relay for a retransmitted request
        }
        if let Some(alternate) = self.config.alternate_server {
            self.count(Refusal::Redirected);
            self.reply_error(&reply, ErrorCode::TRY_ALTERNATE, key, |b| {
                b.add(&Attribute::AlternateServer(alternate));
            });
            return;
        }
        if self.draining {
            // After authentication, like the redirect: an unauthenticated client
            // gets its 401 first and then learns the server cannot serve it.
            self.count(Refusal::Draining);
            self.reply_error(&reply, ErrorCode::INSUFFICIENT_CAPACITY, key, |_| {});
            return;
        }
        match self.allocate_params(msg) {
            Err(code) => {
                self.count(if code.code == 400 {
                    Refusal::BadRequest
                } else {
                    Refusal::Unsupported
                });
                self.reply_error(&reply, code, key, |_| {});
            }
            Ok(params) => self.start_allocation(now, reply, auth, params),
        }
    }

    pub(super) fn start_allocation(
        &mut self,
        now: Instant,
        reply: ReplyTo,
        auth: Authed,
        params: AllocateParams,
    ) {
        let key = Some((&auth.key, auth.kind));
        let quotas = self.config.quotas;
        // An EVEN-PORT reservation holds a second relay port for up to 30 s: it
        // counts like an allocation, or Allocate(R) + Refresh(0) in a loop would
        // drain the port range without ever meeting a quota.
        let ports = 1 + usize::from(matches!(params.port, PortChoice::Even { reserve: true }));
        let live = self.allocations.len() + self.pending.len() + self.reservations.len();
        if live + ports > quotas.allocations_total as usize {
            self.count(Refusal::TotalQuota);
            self.reply_error(&reply, ErrorCode::INSUFFICIENT_CAPACITY, key, |_| {});
            return;
        }
        let account = self
            .config
            .credentials
            .account_of(&auth.username)
            .to_owned();
        let user_live = self.account_usage(&account) as usize;
        if user_live + ports > quotas.allocations_per_user as usize {
            self.count(Refusal::UserQuota);
            self.reply_error(&reply, ErrorCode::ALLOCATION_QUOTA_REACHED, key, |_| {});
            return;
        }
        let id = AllocationId(self.next_id);
        self.next_id += 1;
        let (family, port, reserve) = match params.port {
            PortChoice::Token(token) => match self.take_reservation(&token) {
                Some(r) if r.expires > now => (r.family, PortRequest::Reserved(r.id), None),
                Some(r) => {
                    self.events.push_back(Event::ReservationReleased(r.id));
                    self.count(Refusal::RelayUnavailable);
                    self.reply_error(&reply, ErrorCode::INSUFFICIENT_CAPACITY, key, |_| {});
                    return;
                }
                None => {
                    self.count(Refusal::RelayUnavailable);
                    self.reply_error(&reply, ErrorCode::INSUFFICIENT_CAPACITY, key, |_| {});
                    return;
                }
            },
            PortChoice::Even { reserve: true } => {
                let rid = ReservationId(id.0);
                let token = self.reservation_token(id);
                (
                    params.family,
                    PortRequest::Even {
                        reserve_next: Some(rid),
                    },
                    Some((rid, token)),
                )
            }
            PortChoice::Even { reserve: false } => (
                params.family,
                PortRequest::Even { reserve_next: None },
                None,
            ),
            PortChoice::Any => (params.family, PortRequest::Any, None),
        };
        if !self.family_available(family) {
            self.count(Refusal::Unsupported);
            if let PortRequest::Reserved(rid) = port {
                self.events.push_back(Event::ReservationReleased(rid));
            }
            self.reply_error(&reply, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED, key, |_| {});
            return;
        }
        self.pending.insert(
            id,
            Pending {
                five_tuple: reply.five_tuple,
                username: auth.username,
                account,
                key: auth.key,
                kind: auth.kind,
                tid: reply.tid,
                fingerprint: reply.fingerprint,
                family,
                lifetime: self.lifetime(params.lifetime),
                reserve,
                refused_additional: params.additional,
            },
        );
        self.events.push_back(Event::RelayRequested(RelayRequest {
            allocation: id,
            family,
            port,
        }));
    }

    pub(super) fn allocate_params(
        &self,
        msg: &Message<'_>,
    ) -> Result<AllocateParams, ErrorCode<'static>> {
        let bad = |_| ErrorCode::BAD_REQUEST;
        match msg.get(AttributeType::REQUESTED_TRANSPORT).map_err(bad)? {
            Some(Attribute::RequestedTransport(TRANSPORT_UDP)) => {}
            Some(_) => return Err(ErrorCode::UNSUPPORTED_TRANSPORT),
            None => return Err(ErrorCode::BAD_REQUEST),
        }
        let requested = match msg
            .get(AttributeType::REQUESTED_ADDRESS_FAMILY)
            .map_err(bad)?
        {
            Some(Attribute::RequestedAddressFamily(f)) => Some(f),
            _ => None,
        };
        let additional = match msg
            .get(AttributeType::ADDITIONAL_ADDRESS_FAMILY)
            .map_err(bad)?
        {
            Some(Attribute::AdditionalAddressFamily(Family::V6)) => Some(Family::V6),
            Some(_) => return Err(ErrorCode::BAD_REQUEST), // §7.2: only IPv6 may be additional
            None => None,
        };
        let even = match msg.get(AttributeType::EVEN_PORT).map_err(bad)? {
            Some(Attribute::EvenPort(reserve)) => Some(reserve),
            _ => None,
        };
        let token = match msg.get(AttributeType::RESERVATION_TOKEN).map_err(bad)? {
            Some(Attribute::ReservationToken(t)) => Some(t),
            _ => None,
        };
        // §7.2: these combinations are contradictory.
        if (token.is_some() && (even.is_some() || requested.is_some() || additional.is_some()))
            || (requested.is_some() && additional.is_some())
        {
            return Err(ErrorCode::BAD_REQUEST);
        }
        let lifetime = match msg.get(AttributeType::LIFETIME).map_err(bad)? {
            Some(Attribute::Lifetime(secs)) => Some(secs),
            _ => None,
        };
        let port = match (token, even) {
            (Some(t), _) => PortChoice::Token(t),
            (None, Some(reserve)) => PortChoice::Even { reserve },
            (None, None) => PortChoice::Any,
        };
        // Dual allocation is not offered: IPv4 is allocated and the IPv6 half refused
        // with ADDRESS-ERROR-CODE, which RFC 8656 §7.2 allows.
        Ok(AllocateParams {
            family: requested.unwrap_or(Family::V4),
            port,
            lifetime,
            additional,
        })
    }

    pub(super) fn on_refresh(&mut self, now: Instant, msg: &Message<'_>, reply: ReplyTo) {
        let Some((auth, id)) = self.authenticate_on_allocation(now, msg, &reply) else {
            return;
        };
        let key = Some((&auth.key, auth.kind));
        let requested = match msg.get(AttributeType::LIFETIME) {
            Ok(Some(Attribute::Lifetime(secs))) => Some(secs),
            Ok(_) => None,
            Err(_) => {
                self.count(Refusal::BadRequest);
                self.reply_error(&reply, ErrorCode::BAD_REQUEST, key, |_| {});
                return;
            }
        };
        if let Ok(Some(Attribute::RequestedAddressFamily(f))) =
            msg.get(AttributeType::REQUESTED_ADDRESS_FAMILY)
            && f != self.allocations[&id].family
        {
            self.count(Refusal::BadRequest);
            self.reply_error(&reply, ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH, key, |_| {});
            return;
        }
        if requested == Some(0) {
            self.close_allocation(id, CloseReason::Deleted);
            self.reply(&reply, Class::Success, key, |b| {
                b.add(&Attribute::Lifetime(0));
            });
            return;
        }
        let lifetime = self.lifetime(requested);
        let alloc = self
            .allocations
            .get_mut(&id)
            .expect("present: authenticate_on_allocation found it");
        alloc.expires = now + lifetime;
        alloc.lifetime = lifetime;
        let secs = lifetime.as_secs() as u32;
        self.reply(&reply, Class::Success, key, |b| {
            b.add(&Attribute::Lifetime(secs));
        });
    }

    pub(super) fn on_create_permission(&mut self, now: Instant, msg: &Message<'_>, reply: ReplyTo) {
        let Some((auth, id)) = self.authenticate_on_allocation(now, msg, &reply) else {
            return;
        };
        let key = Some((&auth.key, auth.kind));
        let peers: Vec<SocketAddr> = match msg.get_all(AttributeType::XOR_PEER_ADDRESS) {
            Ok(list) if !list.is_empty() => list
                .into_iter()
                .filter_map(|a| match a {
                    Attribute::XorPeerAddress(p) => Some(p),
                    _ => None,
                })
                .collect(),
            _ => {
                self.count(Refusal::BadRequest);
                self.reply_error(&reply, ErrorCode::BAD_REQUEST, key, |_| {});
                return;
            }
        };
        for peer in &peers {
            if let Err(code) = self.check_peer(id, *peer) {
                self.reply_error(&reply, code, key, |_| {});
                return;
            }
        }
        let max = self.config.quotas.permissions_per_allocation as usize;
        let alloc = self
            .allocations
            .get_mut(&id)
            .expect("present: authenticate_on_allocation found it");
        let ips: Vec<IpAddr> = peers.iter().map(|p| p.ip()).collect();
        if alloc.live_permissions(now) + alloc.new_permissions(ips.iter(), now) > max {
            self.count(Refusal::PermissionQuota);
            self.reply_error(&reply, ErrorCode::INSUFFICIENT_CAPACITY, key, |_| {});
            return;
        }
        for ip in ips {
            alloc.install_permission(ip, now);
        }
        self.reply(&reply, Class::Success, key, |_| {});
    }

    pub(super) fn on_channel_bind(&mut self, now: Instant, msg: &Message<'_>, reply: ReplyTo) {
        let Some((auth, id)) = self.authenticate_on_allocation(now, msg, &reply) else {
            return;
        };
        let key = Some((&auth.key, auth.kind));
        let number = match msg.get(AttributeType::CHANNEL_NUMBER) {
            Ok(Some(Attribute::ChannelNumber(n))) if (CHANNEL_MIN..=CHANNEL_MAX).contains(&n) => n,
            _ => {
                self.count(Refusal::BadRequest);
                self.reply_error(&reply, ErrorCode::BAD_REQUEST, key, |_| {});
                return;
            }
        };
        let peer = match msg.get(AttributeType::XOR_PEER_ADDRESS) {
            Ok(Some(Attribute::XorPeerAddress(p))) => p,
            _ => {
                self.count(Refusal::BadRequest);
                self.reply_error(&reply, ErrorCode::BAD_REQUEST, key, |_| {});
                return;
            }
        };
        if let Err(code) = self.check_peer(id, peer) {
            self.reply_error(&reply, code, key, |_| {});
            return;
        }
        let quotas = self.config.quotas;
        let alloc = self
            .allocations
            .get_mut(&id)
            .expect("present: authenticate_on_allocation found it");
        match alloc.check_bind(number, peer, now) {
            BindCheck::Conflict => {
                self.count(Refusal::BadRequest);
                self.reply_error(&reply, ErrorCode::BAD_REQUEST, key, |_| {});
                return;
            }
            BindCheck::New
                if alloc.live_channels(now) >= quotas.channels_per_allocation as usize =>
            {
                self.count(Refusal::ChannelQuota);
                self.reply_error(&reply, ErrorCode::INSUFFICIENT_CAPACITY, key, |_| {});
                return;
            }
            BindCheck::New | BindCheck::Refresh => {}
        }
        if alloc.live_permissions(now) + alloc.new_permissions(std::iter::once(&peer.ip()), now)
            > quotas.permissions_per_allocation as usize
        {
            self.count(Refusal::PermissionQuota);
            self.reply_error(&reply, ErrorCode::INSUFFICIENT_CAPACITY, key, |_| {});
            return;
        }
        alloc.bind_channel(number, peer, now);
        self.reply(&reply, Class::Success, key, |_| {});
    }

    pub(super) fn on_send(&mut self, now: Instant, msg: &Message<'_>, ft: FiveTuple) {
        let Some(&id) = self.by_five_tuple.get(&ft) else {
            return;
        };
        let (Ok(Some(Attribute::XorPeerAddress(peer))), Ok(Some(Attribute::Data(data)))) = (
            msg.get(AttributeType::XOR_PEER_ADDRESS),
            msg.get(AttributeType::DATA),
        ) else {
            self.count(Refusal::BadRequest);
            return;
        };
        // A permission covers an IP on every port (RFC 8656 §9), so a permission
        // for one of our own IPs on another port would otherwise let a Send
        // reach our own listener. (Channels name a port and are checked when
        // bound.) Found by the turn_lifecycle fuzz target.
        if self.config.policy.is_own(peer) {
            self.count(Refusal::OwnAddress);
            return;
        }
        self.relay_to_peer(now, id, peer, data);
    }

    pub(super) fn relay_channel_data(&mut self, now: Instant, ft: FiveTuple, cd: ChannelData<'_>) {
        let Some(&id) = self.by_five_tuple.get(&ft) else {
            return;
        };
        let Some(peer) = self
            .allocations
            .get(&id)
            .and_then(|a| a.channel_peer(cd.channel, now))
        else {
            self.count(Refusal::NoPermission);
            return;
        };
        self.relay_to_peer(now, id, peer, cd.data);
    }

    pub(super) fn relay_to_peer(
        &mut self,
        now: Instant,
        id: AllocationId,
        peer: SocketAddr,
        data: &[u8],
    ) {
        let Some(alloc) = self.allocations.get_mut(&id) else {
            return;
        };
        if alloc.expires <= now {
            return;
        }
        if !family_matches(peer, alloc.family) || !alloc.has_permission(peer.ip(), now) {
            self.stats.refusals[Refusal::NoPermission as usize] += 1;
            return;
        }
        if !alloc.to_peer.take(data.len() as u64, now) {
            self.stats.refusals[Refusal::Bandwidth as usize] += 1;
            return;
        }
        self.stats.packets_to_peer += 1;
        self.stats.bytes_to_peer += data.len() as u64;
        self.transmits.push_back(Transmit {
            destination: Destination::Peer {
                allocation: id,
                peer,
            },
            payload: data.to_vec(),
        });
    }
}

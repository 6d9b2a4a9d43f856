//! The server's public vocabulary: 5-tuples, ids, events, transmits, limits,
//! configuration and counters.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::auth::Credentials;
use crate::codec::{ChannelDataError, DecodeError, Family};
use crate::policy::PeerPolicy;

/// How a client reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Plain UDP.
    Udp,
    /// Plain TCP.
    Tcp,
    /// TLS over TCP (TURNS).
    Tls,
}

impl Transport {
    /// Stream transports need ChannelData padded to 4 bytes (RFC 8656 §12.5).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// A short name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// The 5-tuple identifying a client's connection to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// Transport protocol.
    pub transport: Transport,
    /// The client's address as seen by the server.
    pub client: SocketAddr,
    /// The server address it reached.
    pub server: SocketAddr,
}

/// Identifies an allocation (and its relay socket in the driver).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocationId(pub u64);

/// Identifies a port reserved by EVEN-PORT with the R bit (RFC 8656 §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReservationId(pub u64);

/// Where a [`Transmit`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Back to a client over the 5-tuple.
    Client(FiveTuple),
    /// Out of an allocation's relay socket to a peer.
    Peer {
        /// Whose relay socket sends it.
        allocation: AllocationId,
        /// The peer.
        peer: SocketAddr,
    },
}

/// Bytes for the driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub destination: Destination,
    /// Payload: a STUN message, ChannelData frame, or relayed application data.
    pub payload: Vec<u8>,
}

/// Which port a relay socket should get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRequest {
    /// Any free port in the range.
    Any,
    /// An even port (EVEN-PORT); with `reserve_next`, also bind port + 1 and keep it
    /// under that reservation until it is claimed or released.
    Even {
        /// Reservation to hold the next-higher port under.
        reserve_next: Option<ReservationId>,
    },
    /// The socket held under this reservation (RESERVATION-TOKEN).
    Reserved(ReservationId),
}

/// A relay socket the driver must bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayRequest {
    /// The allocation being created.
    pub allocation: AllocationId,
    /// Address family of the relay socket.
    pub family: Family,
    /// Port constraints.
    pub port: PortRequest,
}

/// Why an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Its lifetime ran out.
    Expired,
    /// The client deleted it (Refresh with LIFETIME 0).
    Deleted,
    /// The stream connection it belonged to closed.
    ConnectionClosed,
}

/// Things the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Bind a relay socket, then call [`Server::handle_relay_bound`].
    RelayRequested(RelayRequest),
    /// An allocation exists; `relay` is the bound local address.
    AllocationCreated {
        /// Its id.
        allocation: AllocationId,
        /// Client connection.
        five_tuple: FiveTuple,
        /// The relay socket's local address.
        relay: SocketAddr,
        /// The authenticated username.
        username: String,
    },
    /// An allocation is gone: close its relay socket (and, on streams, the connection).
    AllocationClosed {
        /// Its id.
        allocation: AllocationId,
        /// Client connection.
        five_tuple: FiveTuple,
        /// Why.
        reason: CloseReason,
    },
    /// A reserved port was not claimed in time (or the allocation that asked for it
    /// failed): close the socket held for it.
    ReservationReleased(ReservationId),
}

/// Why an input was dropped without an answer. The driver may log these at debug
/// level; they are normal on the open internet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Not STUN.
    #[error("malformed STUN message: {0}")]
    Stun(#[from] DecodeError),
    /// Not ChannelData.
    #[error("malformed ChannelData: {0}")]
    ChannelData(#[from] ChannelDataError),
    /// Neither STUN nor ChannelData.
    #[error("{0} bytes that are neither STUN nor ChannelData")]
    Unrecognized(usize),
}

/// Limits; every one is enforced and none defaults to unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Live allocations per username (486 Allocation Quota Reached beyond it).
    pub allocations_per_user: u32,
    /// Live allocations on the server (508 Insufficient Capacity beyond it).
    pub allocations_total: u32,
    /// Live permissions per allocation (508 beyond it).
    pub permissions_per_allocation: u32,
    /// Live channel bindings per allocation (508 beyond it).
    pub channels_per_allocation: u32,
    /// Relayed bytes per second per allocation, each direction; excess is dropped.
    pub bandwidth_bytes_per_sec: u64,
    /// Sustained rate of answers to unauthenticated requests (401/438 challenges,
    /// Binding, 400/420) per source (IPv4 address or IPv6 /64); beyond it requests
    /// are dropped unanswered, so the server cannot be used to reflect traffic.
    pub unauthenticated_per_source_per_sec: u32,
    /// Burst of unauthenticated answers per source.
    pub unauthenticated_burst: u32,
    /// Sources the limiter remembers per generation (memory bound; see `limiter`).
    pub unauthenticated_sources: u32,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas {
            allocations_per_user: 64,
            allocations_total: 10_000,
            permissions_per_allocation: 64,
            channels_per_allocation: 64,
            bandwidth_bytes_per_sec: 1_250_000,
            unauthenticated_per_source_per_sec: 50,
            unauthenticated_burst: 200,
            unauthenticated_sources: 65_536,
        }
    }
}

/// A pairing of the monotonic clock with Unix time, so the core can check REST
/// username expiry and nonce age from the `Instant`s it is given.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    /// A monotonic instant.
    pub at: Instant,
    /// Unix seconds at that instant.
    pub unix_secs: u64,
}

/// Everything the core needs; the driver fills it from its configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Who can authenticate, and the realm.
    pub credentials: Credentials,
    /// Secret key for stateless nonces and reservation tokens; random per process.
    pub nonce_key: [u8; 32],
    /// How long a nonce stays valid (then 438 Stale Nonce).
    pub nonce_lifetime_secs: u64,
    /// Lifetime given when the client asks for less (RFC 8656: 600 s).
    pub default_lifetime_secs: u32,
    /// Upper bound on a requested lifetime (RFC 8656 recommends 3600 s).
    pub max_lifetime_secs: u32,
    /// Peer address policy.
    pub policy: PeerPolicy,
    /// Limits.
    pub quotas: Quotas,
    /// Advertised instead of the relay socket's IP, for NAT: the first of the
    /// relay socket's family is used (so at most one per family is meaningful).
    pub external_ips: Vec<IpAddr>,
    /// Address families the driver can bind relay sockets for.
    pub relay_ipv4: bool,
    /// See `relay_ipv4`.
    pub relay_ipv6: bool,
    /// When set, Allocate requests are answered with 300 Try Alternate pointing here
    /// (after authentication, so the redirect is integrity-protected).
    pub alternate_server: Option<SocketAddr>,
    /// Unix time reference.
    pub clock: WallClock,
}

/// Counters for metrics; the driver samples them with [`Server::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Allocations created since start.
    pub allocations_created: u64,
    /// Allocations closed since start.
    pub allocations_closed: u64,
    /// Packets relayed client → peer.
    pub packets_to_peer: u64,
    /// Payload bytes relayed client → peer.
    pub bytes_to_peer: u64,
    /// Packets relayed peer → client.
    pub packets_to_client: u64,
    /// Payload bytes relayed peer → client.
    pub bytes_to_client: u64,
    /// Binding requests answered.
    pub binding_requests: u64,
    /// 401 challenges to requests without credentials (the normal first round trip).
    pub challenges: u64,
    /// Inputs that failed to decode.
    pub malformed: u64,
    /// Authentication failures, indexed by [`AuthFailure`].
    pub auth_failures: [u64; AuthFailure::ALL.len()],
    /// Refusals, indexed by [`Refusal`].
    pub refusals: [u64; Refusal::ALL.len()],
}

/// Why authentication failed (metrics label values from [`AuthFailure::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Username not known (or not a REST username).
    UnknownUser,
    /// REST username past its expiry.
    ExpiredCredentials,
    /// MESSAGE-INTEGRITY did not match (wrong password).
    BadIntegrity,
    /// NONCE expired or not ours: 438.
    StaleNonce,
    /// MESSAGE-INTEGRITY without USERNAME, REALM or NONCE: 400.
    MissingAttributes,
    /// The server has no credentials configured.
    NoCredentialsConfigured,
    /// A request on an allocation with a username other than its creator's: 441.
    WrongCredentials,
}

impl AuthFailure {
    /// Every variant, in index order.
    pub const ALL: [AuthFailure; 7] = [
        AuthFailure::UnknownUser,
        AuthFailure::ExpiredCredentials,
        AuthFailure::BadIntegrity,
        AuthFailure::StaleNonce,
        AuthFailure::MissingAttributes,
        AuthFailure::NoCredentialsConfigured,
        AuthFailure::WrongCredentials,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::ExpiredCredentials => "expired_credentials",
            AuthFailure::BadIntegrity => "bad_integrity",
            AuthFailure::StaleNonce => "stale_nonce",
            AuthFailure::MissingAttributes => "missing_attributes",
            AuthFailure::NoCredentialsConfigured => "no_credentials_configured",
            AuthFailure::WrongCredentials => "wrong_credentials",
        }
    }
}

/// Why a request or packet was refused (metrics label values from [`Refusal::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Peer in a denied range.
    PeerDenied,
    /// Peer is one of our own listening addresses.
    OwnAddress,
    /// Per-user allocation quota.
    UserQuota,
    /// Server-wide allocation quota.
    TotalQuota,
    /// Per-allocation permission quota.
    PermissionQuota,
    /// Per-allocation channel quota.
    ChannelQuota,
    /// Packet dropped by the bandwidth limit.
    Bandwidth,
    /// Packet dropped for lack of a permission.
    NoPermission,
    /// 401/438 answer suppressed by the per-source rate limit.
    RateLimited,
    /// REQUESTED-TRANSPORT other than UDP (or address family not available).
    Unsupported,
    /// The driver could not bind a relay socket.
    RelayUnavailable,
    /// Request on a 5-tuple without (or with another) allocation: 437.
    AllocationMismatch,
    /// Malformed or inconsistent request: 400/420.
    BadRequest,
    /// Redirected with 300 Try Alternate.
    Redirected,
    /// New allocation refused with 508 while the server drains (shutting down).
    Draining,
}

impl Refusal {
    /// Every variant, in index order.
    pub const ALL: [Refusal; 15] = [
        Refusal::PeerDenied,
        Refusal::OwnAddress,
        Refusal::UserQuota,
        Refusal::TotalQuota,
        Refusal::PermissionQuota,
        Refusal::ChannelQuota,
        Refusal::Bandwidth,
        Refusal::NoPermission,
        Refusal::RateLimited,
        Refusal::Unsupported,
        Refusal::RelayUnavailable,
        Refusal::AllocationMismatch,
        Refusal::BadRequest,
        Refusal::Redirected,
        Refusal::Draining,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PeerDenied => "peer_denied",
            Refusal::OwnAddress => "own_address",
            Refusal::UserQuota => "user_quota",
            Refusal::TotalQuota => "total_quota",
            Refusal::PermissionQuota => "permission_quota",
            Refusal::ChannelQuota => "channel_quota",
            Refusal::Bandwidth => "bandwidth",
            Refusal::NoPermission => "no_permission",
            Refusal::RateLimited => "rate_limited",
            Refusal::Unsupported => "unsupported",
            Refusal::RelayUnavailable => "relay_unavailable",
            Refusal::AllocationMismatch => "allocation_mismatch",
            Refusal::BadRequest => "bad_request",
            Refusal::Redirected => "redirected",
            Refusal::Draining => "draining",
        }
    }
}

//! Which metric families the live test expects to move, and which cannot in
//! one embedded `natter serve` (shared by `metrics.rs` and `metrics_registry.rs`).

#![allow(dead_code)]

/// Every series this run moves. The scenario's checks (see `expectations`)
/// must name exactly these families.
pub(crate) const MOVED: &[&str] = &[
    // common
    "http_requests_total",
    "http_request_duration_seconds",
    // auth
    "auth_codes_sent_total",
    "auth_sms_provider_total",
    "auth_code_checks_total",
    "auth_registrations_total",
    "auth_token_refreshes_total",
    "auth_prekeys_exhausted_total",
    "auth_accounts_deleted_total",
    // chat
    "chat_ws_opened_total",
    "chat_ws_closed_total",
    "chat_ws_connections",
    "chat_messages_stored_total",
    "chat_queue_entries_total",
    "chat_commit_batch_ops",
    "chat_commit_duration_seconds",
    "chat_commit_finish_seconds",
    "chat_push_total",
    // media
    "media_uploads_total",
    "media_upload_seconds",
    "media_stored_bytes_total",
    "media_deduplicated_total",
    "media_resumable_created_total",
    "media_thumbnail_seconds",
    "media_images_refused_total",
    "media_downloads_total",
    "media_download_bytes_total",
    // signaling
    "signaling_offers_total",
    "signaling_live_calls",
    "signaling_voip_pushes_total",
    "signaling_calls_ended_total",
    // turn
    "natter_turn_allocations",
    "natter_turn_stream_connections",
    "natter_turn_allocations_created_total",
    "natter_turn_allocations_closed_total",
    "natter_turn_relayed_packets_total",
    "natter_turn_relayed_bytes_total",
    "natter_turn_binding_requests_total",
    "natter_turn_challenges_total",
    "natter_turn_malformed_total",
    "natter_turn_auth_failures_total",
    "natter_turn_refusals_total",
];

/// What a series that this run cannot move must still show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Still {
    /// An error or overload path: absent or zero, before and after (a healthy
    /// run that moved it found a real problem).
    Zero,
    /// Registered at start-up with zero (the media collector runs at once and
    /// every `media.gc_interval_secs`, here 1 s): present and zero at the end.
    PresentZero,
    /// Moves only under sustained load; whatever it shows is fine.
    Unconstrained,
}

/// Series registered in the code that a single-node embedded run cannot move,
/// with why.
pub(crate) const NOT_MOVABLE: &[(&str, Still, &str)] = &[
    (
        "http_connections_open",
        Still::Unconstrained,
        "a gauge of open TCP connections: at a scrape it counts whatever the clients' keep-alive pools hold (tests/adversarial.rs checks the caps it reflects)",
    ),
    (
        "http_connections_refused_total",
        Still::Zero,
        "only past http.max_connections_per_ip from one address (tests/adversarial.rs)",
    ),
    (
        "http_body_stalls_total",
        Still::Zero,
        "only when a request body sends nothing for http.body_idle_timeout_secs (tests/adversarial.rs)",
    ),
    (
        "chat_rest_limited_total",
        Still::Zero,
        "only past chat.limit_group_writes changes by one account (chat-core/tests/account_limits.rs)",
    ),
    (
        "signaling_offers_limited_total",
        Still::Zero,
        "only past signaling.offers_per_pair offers to one callee (tests/adversarial.rs)",
    ),
    (
        "chat_ws_refused_total",
        Still::Zero,
        "only past chat.max_unauthenticated_per_ip sockets from one address (tests/adversarial.rs)",
    ),
    (
        "chat_ws_preauth_floods_total",
        Still::Zero,
        "only when a socket sends more than 8 frames before auth (chat-core/tests/gateway.rs)",
    ),
    (
        "auth_prekey_claims_limited_total",
        Still::Zero,
        "only past 10 claims of one account's prekeys by one caller (auth/tests/accounts.rs)",
    ),
    (
        "chat_outbound_overflows_total",
        Still::Zero,
        "only when one commit hands a socket more entries than its queue holds (chat-core/tests/gateway.rs makes it happen)",
    ),
    (
        "natter_part_failures_total",
        Still::Zero,
        "only when a long-running part dies, which ends the process (tests/hardening.rs stops each one)",
    ),
    (
        "chat_commit_errors_total",
        Still::Zero,
        "only when a chat commit fails (database error)",
    ),
    (
        "chat_slow_consumer_total",
        Still::Zero,
        "only when a socket's outbound queue (chat.outbound_queue, 1024 frames by default) fills because the client stopped reading",
    ),
    (
        "chat_wal_catch_up_seconds",
        Still::Unconstrained,
        "only when the SQLite WAL holds >= 256 frames between two 200 ms checkpoint ticks: sustained load",
    ),
    (
        "chat_redis_errors_total",
        Still::Zero,
        "distributed shape only (Redis)",
    ),
    (
        "chat_bus_messages_total",
        Still::Zero,
        "distributed shape only (Redis bus between nodes)",
    ),
    (
        "chat_bus_to_silent_node_total",
        Still::Zero,
        "distributed shape only (a node with a late Redis heartbeat)",
    ),
    (
        "chat_bus_shed_total",
        Still::Zero,
        "distributed shape only (bus backlog past redis.shed_ephemeral_at_jobs; chat-core/src/cluster/jobs.rs tests the bound)",
    ),
    (
        "chat_bus_dropped_rounds_total",
        Still::Zero,
        "distributed shape only (Redis outage over 10 s)",
    ),
    (
        "media_gc_blobs_deleted_total",
        Still::PresentZero,
        "needs a blob unreferenced for media.retention_secs (at least 1 h)",
    ),
    (
        "media_gc_bytes_deleted_total",
        Still::PresentZero,
        "needs a blob unreferenced for media.retention_secs (at least 1 h)",
    ),
    (
        "media_gc_uploads_expired_total",
        Still::PresentZero,
        "needs a resumable upload idle for media.upload_expiry_secs (at least 60 s)",
    ),
    (
        "media_gc_staging_removed_total",
        Still::PresentZero,
        "needs a crash leftover older than upload expiry + lease + 1 h",
    ),
    (
        "natter_turn_dropped_total",
        Still::Zero,
        "only when a relay send fails or a TCP/TLS client stops reading (backlog, write timeout)",
    ),
    (
        "natter_turn_tls_reloads_total",
        Still::Zero,
        "only with turn.tls_listen and a certificate file that changes",
    ),
    (
        "chat_push_provider_total",
        Still::Zero,
        "only with chat.push.backend = \"providers\" (natter/tests/push_providers.rs moves it against FCM and APNs fakes)",
    ),
    (
        "chat_push_provider_retries_total",
        Still::Zero,
        "only with chat.push.backend = \"providers\" and a provider answering 429 or 5xx (natter/tests/push_providers.rs)",
    ),
    (
        "natter_turn_draining",
        Still::PresentZero,
        "1 only between SIGTERM and the end of TURN's drain (tests/turn_drain.rs)",
    ),
];

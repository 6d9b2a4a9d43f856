//! `[redis]`: the distributed shape's connection registry and frame bus.

use natter_common::Secret;
use serde::{Deserialize, Serialize};

/// Redis for chat-core's connection registry and cross-node delivery. Empty
/// `url` (the default) is the embedded shape: everything stays in process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]`, or `rediss://…` for TLS (the
    /// server certificate is checked against the system's CAs; `SSL_CERT_FILE`
    /// names another bundle); empty: embedded (no Redis).
    pub url: Secret,
    /// Prefix of every key and channel, so deployments (and tests) can share a server.
    pub key_prefix: String,
    /// This node's name on the bus; empty: a random one at start-up (a pod
    /// restarted under the same name must not inherit the old one's sockets).
    pub node_id: String,
    /// How often a node refreshes its heartbeat (and checks Redis kept its state).
    pub heartbeat_ms: u64,
    /// A node silent this long counts as gone: its registry entries are ignored.
    pub node_ttl_ms: u64,
    /// How long a user's registry entry lives without a reconnect or a rebuild.
    pub entry_ttl_secs: u64,
    /// How often every node rewrites its sockets' entries even when nothing
    /// went wrong (refreshes their TTL, repairs anything lost).
    pub rebuild_secs: u64,
    /// Ephemeral frames (typing, presence, call signaling) bound for other
    /// nodes are dropped while this many bus jobs wait (Redis stalled or slow).
    pub shed_ephemeral_at_jobs: usize,
    /// Queue entries waiting for the bus at most; past it new ones are not
    /// forwarded (they stay stored and reach the device at its next entry or
    /// reconnect).
    pub max_waiting_entries: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: Secret::default(),
            key_prefix: "natter:".into(),
            node_id: String::new(),
            heartbeat_ms: 2_000,
            node_ttl_ms: 10_000,
            entry_ttl_secs: 86_400,
            rebuild_secs: 600,
            shed_ephemeral_at_jobs: 10_000,
            max_waiting_entries: 500_000,
        }
    }
}

impl RedisConfig {
    /// Whether Redis is configured (the distributed shape).
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// Checks what types cannot; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        let url = self.url.expose();
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err("redis.url: must start with redis:// or rediss:// (TLS)".into());
        }
        if self.heartbeat_ms < 50 || self.node_ttl_ms < 2 * self.heartbeat_ms {
            return Err(
                "redis.node_ttl_ms: must be at least twice redis.heartbeat_ms (>= 50)".into(),
            );
        }
        if self.shed_ephemeral_at_jobs == 0
            || self.max_waiting_entries < self.shed_ephemeral_at_jobs
        {
            return Err("redis.max_waiting_entries: must be at least redis.shed_ephemeral_at_jobs (>= 1), so ephemeral frames are shed first".into());
        }
        if self.entry_ttl_secs < 2 * self.rebuild_secs.max(1) {
            return Err("redis.entry_ttl_secs: must be at least twice redis.rebuild_secs".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_by_default_and_checked_when_set() {
        let c = RedisConfig::default();
        assert!(!c.enabled());
        c.validate().unwrap();
        let ok = RedisConfig {
            url: Secret::new("redis://127.0.0.1:6379/0"),
            ..RedisConfig::default()
        };
        ok.validate().unwrap();
        RedisConfig {
            url: Secret::new("rediss://:pw@redis.internal:6380/0"),
            ..ok.clone()
        }
        .validate()
        .unwrap();
        for (bad, key) in [
            (
                RedisConfig {
                    url: Secret::new("http://x"),
                    ..ok.clone()
                },
                "redis.url",
            ),
            (
                RedisConfig {
                    node_ttl_ms: ok.heartbeat_ms,
                    ..ok.clone()
                },
                "redis.node_ttl_ms",
            ),
            (
                RedisConfig {
                    entry_ttl_secs: ok.rebuild_secs,
                    ..ok.clone()
                },
                "redis.entry_ttl_secs",
            ),
        ] {
            let err = bad.validate().unwrap_err();
            assert!(err.starts_with(key), "{err}");
        }
    }
}

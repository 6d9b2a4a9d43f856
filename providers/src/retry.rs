//! When to try again: exponential backoff with jitter, and the provider's
//! `Retry-After` when it sends one (delta-seconds or an HTTP date).

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// Retry settings shared by the provider clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Requests per hand-over, the first included (1 = no retry).
    pub attempts: u32,
    /// First backoff; doubled per failure, with jitter (half to all of it).
    pub backoff_ms: u64,
    /// A `Retry-After` longer than this ends the hand-over instead of
    /// waiting: a wake-up that late is worth less than the queue it holds.
    pub max_retry_after_secs: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 4,
            backoff_ms: 250,
            max_retry_after_secs: 60,
        }
    }
}

/// Why no further attempt is made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GiveUp {
    /// Out of attempts.
    #[error("{0} attempts made")]
    Exhausted(u32),
    /// The provider asked for a longer wait than allowed.
    #[error("the provider asked to wait {asked} s (more than {max} s)")]
    WaitTooLong {
        /// Seconds asked.
        asked: u64,
        /// `max_retry_after_secs`.
        max: u64,
    },
}

impl RetryConfig {
    /// Checks the settings; `key` names the section in errors.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if self.attempts == 0 || self.attempts > 20 {
            return Err(format!("{key}.attempts: 1 to 20"));
        }
        if self.backoff_ms == 0 || self.backoff_ms > 60_000 {
            return Err(format!("{key}.backoff_ms: 1 to 60000"));
        }
        Ok(())
    }

    /// The wait before the next attempt, after `failed` attempts failed in a
    /// way worth retrying. `retry_after` is the provider's own wish, which
    /// wins over the backoff when longer. `jitter` in 0..1000 scales the
    /// backoff between half and all of it (callers pass a random number; tests
    /// a fixed one).
    pub fn wait(
        &self,
        failed: u32,
        retry_after: Option<Duration>,
        jitter: u32,
    ) -> Result<Duration, GiveUp> {
        if failed >= self.attempts {
            return Err(GiveUp::Exhausted(failed));
        }
        if let Some(asked) = retry_after
            && asked.as_secs() > self.max_retry_after_secs
        {
            return Err(GiveUp::WaitTooLong {
                asked: asked.as_secs(),
                max: self.max_retry_after_secs,
            });
        }
        let full = self
            .backoff_ms
            .saturating_mul(1 << failed.saturating_sub(1).min(16));
        let backoff = Duration::from_millis(full / 2 + full * u64::from(jitter.min(999)) / 2000);
        Ok(retry_after.map_or(backoff, |r| r.max(backoff)))
    }
}

/// A `Retry-After` value: delta-seconds, or an HTTP date (a date in the past
/// means now). Garbage is ignored (`None`), falling back to the backoff.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The `Retry-After` header of a response, parsed.
pub fn retry_after_of(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
}

/// A jitter draw for [`RetryConfig::wait`].
pub fn jitter() -> u32 {
    natter_common::random::below(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_stops() {
        let r = RetryConfig {
            attempts: 4,
            backoff_ms: 100,
            max_retry_after_secs: 60,
        };
        assert_eq!(r.wait(1, None, 0).unwrap(), Duration::from_millis(50));
        assert_eq!(r.wait(1, None, 999).unwrap(), Duration::from_millis(99));
        assert_eq!(r.wait(2, None, 0).unwrap(), Duration::from_millis(100));
        assert_eq!(r.wait(3, None, 0).unwrap(), Duration::from_millis(200));
        assert_eq!(r.wait(4, None, 0), Err(GiveUp::Exhausted(4)));
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_capped() {
        let r = RetryConfig::default();
        assert_eq!(
            r.wait(1, Some(Duration::from_secs(2)), 0).unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(
            r.wait(1, Some(Duration::ZERO), 0).unwrap(),
            Duration::from_millis(125),
            "a shorter Retry-After does not undercut the backoff"
        );
        assert_eq!(
            r.wait(1, Some(Duration::from_secs(61)), 0),
            Err(GiveUp::WaitTooLong { asked: 61, max: 60 })
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn bad_settings_are_named() {
        let r = RetryConfig {
            attempts: 0,
            ..RetryConfig::default()
        };
        assert!(
            r.validate("chat.push.retry")
                .unwrap_err()
                .starts_with("chat.push.retry.attempts")
        );
    }
}

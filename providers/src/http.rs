//! The HTTP client the provider clients share, and secrets that come inline
//! (environment) or from a file (a mounted Kubernetes Secret).

use natter_common::Secret;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Connection settings for a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Per-request timeout (connect included).
    pub timeout_ms: u64,
    /// Extra root certificates (PEM) trusted besides the system's: for an
    /// egress proxy that inspects TLS, and for the tests' local fakes.
    pub ca_file: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 10_000,
            ca_file: String::new(),
        }
    }
}

/// Builds a client. `http2_only` speaks HTTP/2 without trying HTTP/1.1
/// (APNs accepts nothing else); otherwise ALPN picks, and HTTP/2 is offered.
/// Requests to one host share one connection: HTTP/2 multiplexes them.
pub fn client(cfg: &HttpConfig, what: &str, http2_only: bool) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_millis(cfg.timeout_ms))
        .connect_timeout(Duration::from_millis(cfg.timeout_ms.min(5_000)))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_while_idle(true)
        .user_agent(concat!("natter/", env!("CARGO_PKG_VERSION")));
    if http2_only {
        b = b.http2_prior_knowledge();
    }
    if !cfg.ca_file.is_empty() {
        let pem = std::fs::read(&cfg.ca_file)
            .map_err(|e| format!("{what}.ca_file: {}: {e}", cfg.ca_file))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{what}.ca_file: {}: not PEM certificates: {e}", cfg.ca_file))?;
        if certs.is_empty() {
            return Err(format!(
                "{what}.ca_file: {}: no certificate in it",
                cfg.ca_file
            ));
        }
        b = b.tls_certs_merge(certs);
    }
    b.build()
        .map_err(|e| format!("{what}: cannot build the HTTP client: {e}"))
}

/// A secret given inline (`inline`, usually from the environment) or as a
/// file path (`file`): exactly one may be set. `key` names the settings.
pub fn secret_from(key: &str, inline: &Secret, file: &str) -> Result<Option<Secret>, String> {
    match (inline.is_empty(), file.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Err(format!(
            "{key}: set either the value or the _file setting, not both"
        )),
        (false, true) => Ok(Some(inline.clone())),
        (true, false) => {
            let text =
                std::fs::read_to_string(file).map_err(|e| format!("{key}_file: {file}: {e}"))?;
            if text.trim().is_empty() {
                return Err(format!("{key}_file: {file}: empty"));
            }
            Ok(Some(Secret::new(text)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_comes_from_one_place() {
        let dir =
            std::env::temp_dir().join(format!("natter-secret-{}", natter_common::random::token()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("s");
        std::fs::write(&f, "abc\n").unwrap();
        let f = f.to_str().unwrap();
        assert_eq!(secret_from("k", &Secret::default(), "").unwrap(), None);
        assert_eq!(
            secret_from("k", &Secret::default(), f)
                .unwrap()
                .unwrap()
                .expose(),
            "abc\n"
        );
        assert!(
            secret_from("k", &Secret::new("x"), f)
                .unwrap_err()
                .contains("not both")
        );
        assert!(
            secret_from("k", &Secret::default(), "/nonexistent/x")
                .unwrap_err()
                .starts_with("k_file")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_ca_file_is_named() {
        let cfg = HttpConfig {
            ca_file: "/nonexistent.pem".into(),
            ..HttpConfig::default()
        };
        assert!(
            client(&cfg, "chat.push.fcm", false)
                .unwrap_err()
                .starts_with("chat.push.fcm.ca_file")
        );
    }
}

//! The one typed configuration of the `natter` binary: every service's section
//! under one struct. Defaults are in code; a TOML file (`--config`) and
//! `NATTER_<SECTION>__<KEY>` environment variables override them.

use natter_auth::AuthConfig;
use natter_common::config::{ConfigError, TokensConfig};
use natter_common::db::DatabaseConfig;
use natter_common::http::HttpConfig;
use natter_common::telemetry::LogConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything `natter` can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    /// Where embedded state lives: SQLite file, media, generated secrets, outboxes.
    pub(crate) data_dir: PathBuf,
    /// HTTP listener (API and WebSocket).
    pub(crate) http: HttpConfig,
    /// SQLite (default) or PostgreSQL.
    pub(crate) database: DatabaseConfig,
    /// Log format and filter.
    pub(crate) log: LogConfig,
    /// Access-token keys and lifetime.
    pub(crate) tokens: TokensConfig,
    /// Registration, accounts, devices, keys.
    pub(crate) auth: AuthConfig,
    /// Media uploads, thumbnails, downloads and lifecycle.
    pub(crate) media: natter_media::MediaConfig,
    /// Chat: WebSocket gateway, message pipeline, groups, presence, push.
    pub(crate) chat: natter_chat::ChatConfig,
    /// Calls: ring timeout, ICE server URLs, TURN credential lifetime.
    pub(crate) signaling: natter_signaling::SignalingConfig,
    /// The STUN/TURN server (its `auth_secret` also signs the credentials
    /// signaling hands out).
    pub(crate) turn: natter_turn::TurnConfig,
    /// Redis for chat's connection registry and cross-node frames (distributed
    /// shape); empty URL: everything in process.
    pub(crate) redis: natter_chat::RedisConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./natter-data"),
            http: HttpConfig::default(),
            database: DatabaseConfig::default(),
            log: LogConfig::default(),
            tokens: TokensConfig::default(),
            auth: AuthConfig::default(),
            media: natter_media::MediaConfig::default(),
            chat: natter_chat::ChatConfig::default(),
            signaling: natter_signaling::SignalingConfig::default(),
            turn: natter_turn::TurnConfig::default(),
            redis: natter_chat::RedisConfig::default(),
        }
    }
}

/// Top-level keys, and so the environment prefixes (`NATTER_<KEY>…`) read.
const SECTIONS: &[&str] = &[
    "data_dir",
    "http",
    "database",
    "log",
    "tokens",
    "auth",
    "media",
    "chat",
    "redis",
    "signaling",
    "turn",
];

/// Quote characters in a row the TOML writer can count (its counter is a `u8`).
const QUOTE_RUN_LIMIT: usize = 255;

/// The first key (dotted) whose string value has a run of `QUOTE_RUN_LIMIT`
/// or more `'` or `"` characters.
fn long_quote_run(v: &toml::Value, key: &str) -> Option<String> {
    let join = |k: &str| {
        if key.is_empty() {
            k.to_owned()
        } else {
            format!("{key}.{k}")
        }
    };
    match v {
        toml::Value::String(s) => {
            let mut run = (0u8, 0usize);
            for b in s.bytes() {
                run = match b {
                    b'\'' | b'"' if b == run.0 => (b, run.1 + 1),
                    b'\'' | b'"' => (b, 1),
                    _ => (0, 0),
                };
                if run.1 >= QUOTE_RUN_LIMIT {
                    return Some(key.to_owned());
                }
            }
            None
        }
        toml::Value::Table(t) => t.iter().find_map(|(k, v)| long_quote_run(v, &join(k))),
        toml::Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, v)| long_quote_run(v, &format!("{key}[{i}]"))),
        _ => None,
    }
}

impl Config {
    /// Loads defaults, then `file`, then the environment; validates.
    pub(crate) fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let cfg: Config = natter_common::config::load(file, SECTIONS)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML document over the defaults (no environment) and validates:
    /// the file half of [`Config::load`]. Used by the fuzz target and its tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = natter_common::config::from_toml_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The configuration as TOML (`natter config print`; secrets redacted).
    ///
    /// The TOML writer counts runs of quote characters in a `u8`: a value
    /// with 256 quotes in a row makes it panic (debug builds) or pick its
    /// quoting from a wrapped count (found by the `config_parse` fuzz target).
    /// Such a value is refused here, naming its key, before the writer sees it.
    pub(crate) fn to_toml(&self) -> Result<String, ConfigError> {
        let value = toml::Value::try_from(self)
            .map_err(|e| ConfigError(format!("cannot print the configuration: {e}")))?;
        if let Some(key) = long_quote_run(&value, "") {
            return Err(ConfigError(format!(
                "{key}: holds {QUOTE_RUN_LIMIT} or more quote characters in a row, which cannot be printed as TOML"
            )));
        }
        toml::to_string_pretty(self)
            .map_err(|e| ConfigError(format!("cannot print the configuration: {e}")))
    }

    /// Checks what types cannot; errors name the key.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError("data_dir: must not be empty".into()));
        }
        if self.tokens.access_ttl_secs < 30 || self.tokens.access_ttl_secs > 24 * 3600 {
            return Err(ConfigError(
                "tokens.access_ttl_secs: must be within 30..=86400".into(),
            ));
        }
        let url = self.database.url.expose();
        if !(url.is_empty()
            || url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError(
                "database.url: must start with sqlite:, postgres:// or postgresql:// (or be empty for SQLite in the data dir)".into(),
            ));
        }
        self.auth.validate().map_err(ConfigError)?;
        self.media.validate().map_err(ConfigError)?;
        self.chat.validate().map_err(ConfigError)?;
        self.signaling.validate().map_err(ConfigError)?;
        self.turn.validate().map_err(ConfigError)?;
        self.redis.validate().map_err(ConfigError)?;
        if self.redis.enabled()
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            // Several nodes must share one queue: a node's SQLite file is its own.
            return Err(ConfigError(
                "redis.url: the distributed shape needs database.url = postgres://… (SQLite is one node's file)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail closures return figment::Error by design.
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.http.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.data_dir, PathBuf::from("./natter-data"));
        assert!(c.database.url.is_empty());
    }

    #[test]
    fn wrong_values_name_their_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("NATTER_HTTP__LISTEN", "not-an-address");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("http.listen"), "{err}");
            assert!(err.contains("NATTER_HTTP__LISTEN"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("NATTER_AUTH__MAX_CODE_ATTEMPTS", "many");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("auth.max_code_attempts"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("NATTER_DATABASE__URL", "mysql://x");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("database.url"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn misspelt_keys_are_refused_and_unrelated_env_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("NATTER_HTTP__LISTN", "127.0.0.1:1");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("listn"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("NATTER_TEST_POSTGRES_URL", "postgres://x");
            Config::load(None).unwrap();
            Ok(())
        });
    }

    #[test]
    fn file_then_env_override() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "natter.toml",
                "data_dir = \"/srv/natter\"\n[http]\nlisten = \"127.0.0.1:9000\"\n[auth]\ncode_ttl_secs = 300\n",
            )?;
            jail.set_env("NATTER_HTTP__LISTEN", "127.0.0.1:9001");
            jail.set_env("NATTER_DATA_DIR", "/tmp/nd");
            let c = Config::load(Some(Path::new("natter.toml"))).unwrap();
            assert_eq!(c.http.listen.to_string(), "127.0.0.1:9001");
            assert_eq!(c.auth.code_ttl_secs, 300);
            assert_eq!(c.data_dir, PathBuf::from("/tmp/nd"));
            Ok(())
        });
    }

    #[test]
    fn provider_settings_come_from_the_environment_as_text() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("NATTER_CHAT__PUSH__BACKEND", "providers");
            jail.set_env(
                "NATTER_CHAT__PUSH__APNS__KEY_FILE",
                "/etc/natter/AuthKey.p8",
            );
            // All digits: the environment hands these over as integers.
            jail.set_env("NATTER_CHAT__PUSH__APNS__KEY_ID", "1234567890");
            jail.set_env("NATTER_CHAT__PUSH__APNS__TEAM_ID", "DEF456GHIJ");
            jail.set_env("NATTER_CHAT__PUSH__APNS__BUNDLE_ID", "org.example.natter");
            jail.set_env(
                "NATTER_CHAT__PUSH__FCM__HTTP__CA_FILE",
                "/etc/ssl/proxy.pem",
            );
            jail.set_env("NATTER_AUTH__SMS__BACKEND", "twilio");
            jail.set_env(
                "NATTER_AUTH__SMS__TWILIO__ACCOUNT_SID",
                "AC0123456789abcdef0123456789abcdef",
            );
            jail.set_env("NATTER_AUTH__SMS__TWILIO__FROM", "+15005550006");
            let c = Config::load(None).unwrap();
            assert_eq!(c.chat.push.apns.key_id, "1234567890");
            assert_eq!(c.chat.push.apns.team_id, "DEF456GHIJ");
            assert_eq!(c.chat.push.fcm.http.ca_file, "/etc/ssl/proxy.pem");
            assert_eq!(c.auth.sms.twilio.from, "+15005550006");
            jail.set_env("NATTER_CHAT__PUSH__APNS__TOKEN_REFRESH_SECS", "7200");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("chat.push.apns.token_refresh_secs"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_production_file_in_the_docs_is_valid() {
        let doc = include_str!("../../docs/configuration.md");
        let start = doc.find("## A production file, one box").unwrap();
        let block = &doc[start..];
        let toml_start = block.find("```toml\n").unwrap() + "```toml\n".len();
        let toml_end = block[toml_start..].find("```").unwrap();
        let c = Config::from_toml_str(&block[toml_start..toml_start + toml_end]).unwrap();
        assert_eq!(c.chat.push.apns.bundle_id, "org.example.natter");
        assert_eq!(c.auth.sms.twilio.from, "+15550100");
    }

    #[test]
    fn media_section_is_read_and_checked() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("NATTER_MEDIA__MAX_UPLOAD_BYTES", "1048576");
            jail.set_env("NATTER_MEDIA__S3__BUCKET", "natter-media");
            let c = Config::load(None).unwrap();
            assert_eq!(c.media.max_upload_bytes, 1_048_576);
            assert_eq!(c.media.s3.bucket, "natter-media");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("NATTER_MEDIA__BACKEND", "s3");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("media.s3.bucket"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("NATTER_MEDIA__MAX_UPLOAD_BYTES", "lots");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("media.max_upload_bytes"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn signaling_and_turn_sections_are_read() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "NATTER_SIGNALING__TURN_URLS",
                "turn:turn.example:3478?transport=udp,turn:turn.example:3478?transport=tcp",
            );
            jail.set_env("NATTER_SIGNALING__RING_TIMEOUT_SECS", "30");
            jail.set_env("NATTER_TURN__AUTH_SECRET", "s3cret");
            jail.set_env("NATTER_TURN__LISTEN", "127.0.0.1:3479");
            let c = Config::load(None).unwrap();
            assert_eq!(c.signaling.turn_urls.0.len(), 2);
            assert_eq!(c.signaling.ring_timeout_secs, 30);
            assert_eq!(c.turn.auth_secret.expose(), "s3cret");
            assert_eq!(c.turn.listen.to_string(), "127.0.0.1:3479");
            assert!(!toml::to_string(&c).unwrap().contains("s3cret"));
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("NATTER_SIGNALING__TURN_URLS", "http://nope");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("signaling.turn_urls"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn redis_section_is_read_and_needs_postgres() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None).unwrap();
            assert!(!c.redis.enabled(), "embedded by default");
            jail.set_env("NATTER_REDIS__URL", "redis://127.0.0.1:6379/0");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.contains("redis.url") && err.contains("postgres"),
                "{err}"
            );
            jail.set_env("NATTER_DATABASE__URL", "postgres://db/natter");
            jail.set_env("NATTER_REDIS__KEY_PREFIX", "t1:");
            let c = Config::load(None).unwrap();
            assert!(c.redis.enabled());
            assert_eq!(c.redis.key_prefix, "t1:");
            jail.set_env("NATTER_REDIS__URL", "http://nope");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("redis.url"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn printed_config_hides_secrets() {
        let mut c = Config::default();
        c.tokens.signing_key = natter_common::Secret::new("super-secret-key");
        c.database.url = natter_common::Secret::new("postgres://u:pw@h/db");
        c.redis.url = natter_common::Secret::new("redis://:redispw@h:6379");
        let printed = toml::to_string(&c).unwrap();
        assert!(!printed.contains("super-secret-key"));
        assert!(!printed.contains("pw@h"));
        assert!(!printed.contains("redispw"));
        assert!(printed.contains("[redacted]"));
    }

    #[test]
    fn a_value_the_toml_writer_cannot_count_is_refused_by_name() {
        let c = Config {
            data_dir: format!("./{}", "'".repeat(300)).into(),
            ..Config::default()
        };
        let e = c.to_toml().unwrap_err();
        assert!(e.0.starts_with("data_dir:"), "{}", e.0);
        let fine = Config {
            data_dir: format!("./{}", "'".repeat(254)).into(),
            ..Config::default()
        };
        assert!(fine.to_toml().is_ok());
    }
}

//! `[auth]` settings. Every limit is explicit here, with its default.

use crate::secrets::Argon2Params;
use natter_common::Secret;
use natter_common::ratelimit::Quota;
use serde::{Deserialize, Serialize};

/// The auth service's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// How one-time codes reach phones.
    pub sms: SmsConfig,
    /// Lifetime of a registration session (from creation).
    pub session_ttl_secs: u32,
    /// Lifetime of one code (from sending).
    pub code_ttl_secs: u32,
    /// Wrong codes allowed per session before it is burned.
    pub max_code_attempts: u32,
    /// Waits before each further code in a session: after the 1st send wait the
    /// 1st value, after the 2nd the 2nd, and the last value from then on.
    pub resend_waits_secs: Vec<u32>,
    /// Code sends per session, in all.
    pub max_sends_per_session: u32,
    /// New sessions and code sends per phone number.
    pub limit_per_number: Quota,
    /// New sessions and code sends per client IP.
    pub limit_per_ip: Quota,
    /// Code sends per number prefix (country code + 4 digits), against SMS pumping.
    pub limit_per_prefix: Quota,
    /// Code checks per client IP, and (a bucket of their own) registration
    /// attempts, which carry PIN and TOTP guesses; on top of the per-session
    /// and per-account attempt caps.
    pub limit_verify_per_ip: Quota,
    /// Link-code redemptions per client IP.
    pub limit_link_per_ip: Quota,
    /// Refresh-token uses per client IP.
    pub limit_refresh_per_ip: Quota,
    /// Prekey-bundle fetches per caller (each claims a one-time prekey).
    pub limit_key_fetch_per_user: Quota,
    /// One-time prekeys one caller may claim from one account; past it the
    /// bundle comes with the signed prekey only (X3DH still works), so a
    /// stranger cannot drain a user's one-time prekeys.
    pub limit_prekey_claims_per_pair: Quota,
    /// One-time prekeys all callers together may claim from one account.
    pub limit_prekey_claims_per_target: Quota,
    /// Phone-number lookups per caller (contact discovery).
    pub limit_lookup_per_user: Quota,
    /// argon2id cost for codes, PINs.
    pub argon2: Argon2Params,
    /// Refresh-token lifetime (each use issues a new one with a fresh lifetime).
    pub refresh_ttl_secs: u32,
    /// Linked devices per account, besides the primary.
    pub max_linked_devices: u32,
    /// Lifetime of a device-link code.
    pub link_code_ttl_secs: u32,
    /// Wrong registration-lock PINs or second-factor codes before a lockout.
    pub second_factor_max_failures: u32,
    /// Lockout length after too many wrong PINs / TOTP codes.
    pub second_factor_lockout_secs: u32,
    /// One-time prekeys stored per device (and per upload).
    pub max_one_time_prekeys: u32,
    /// Issuer name shown in authenticator apps.
    pub totp_issuer: String,
    /// Largest JSON body accepted.
    pub max_body_bytes: usize,
    /// Numbers whose code is `test_code` and is never sent: accounts for app
    /// store review, synthetic monitoring and the chart's `helm test`
    /// (comma-separated in `NATTER_AUTH__TEST_NUMBERS`). Every limit still
    /// applies to them. Empty: none.
    #[serde(deserialize_with = "number_list")]
    pub test_numbers: Vec<String>,
    /// The fixed six-digit code of `test_numbers`. Anyone who knows it can
    /// register those numbers, so it is a secret: never logged, redacted by
    /// `config print`.
    pub test_code: Secret,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            sms: SmsConfig::default(),
            session_ttl_secs: 3600,
            code_ttl_secs: 600,
            max_code_attempts: 5,
            resend_waits_secs: vec![60, 120, 300, 600],
            max_sends_per_session: 8,
            limit_per_number: Quota::new(6, 3600),
            limit_per_ip: Quota::new(20, 3600),
            limit_per_prefix: Quota::new(100, 3600),
            limit_verify_per_ip: Quota::new(60, 3600),
            limit_link_per_ip: Quota::new(20, 3600),
            limit_refresh_per_ip: Quota::new(600, 3600),
            limit_key_fetch_per_user: Quota::new(600, 3600),
            limit_prekey_claims_per_pair: Quota::new(10, 3600),
            limit_prekey_claims_per_target: Quota::new(200, 3600),
            limit_lookup_per_user: Quota::new(300, 3600),
            argon2: Argon2Params::default(),
            refresh_ttl_secs: 60 * 24 * 3600,
            max_linked_devices: 4,
            link_code_ttl_secs: 600,
            second_factor_max_failures: 10,
            second_factor_lockout_secs: 24 * 3600,
            max_one_time_prekeys: 100,
            totp_issuer: "Natter".into(),
            max_body_bytes: 64 * 1024,
            test_numbers: Vec::new(),
            test_code: Secret::default(),
        }
    }
}

impl AuthConfig {
    /// Checks values that types alone cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.resend_waits_secs.is_empty() {
            return Err("auth.resend_waits_secs: needs at least one value".into());
        }
        if self.max_code_attempts == 0 {
            return Err("auth.max_code_attempts: must be at least 1".into());
        }
        if self.code_ttl_secs == 0 || self.session_ttl_secs < self.code_ttl_secs {
            return Err("auth.session_ttl_secs: must be at least auth.code_ttl_secs (> 0)".into());
        }
        if self.max_one_time_prekeys == 0 || self.max_one_time_prekeys > 1000 {
            return Err("auth.max_one_time_prekeys: must be within 1..=1000".into());
        }
        for (key, q) in [
            ("limit_per_number", self.limit_per_number),
            ("limit_per_ip", self.limit_per_ip),
            ("limit_per_prefix", self.limit_per_prefix),
            ("limit_verify_per_ip", self.limit_verify_per_ip),
            ("limit_link_per_ip", self.limit_link_per_ip),
            ("limit_refresh_per_ip", self.limit_refresh_per_ip),
            ("limit_key_fetch_per_user", self.limit_key_fetch_per_user),
            (
                "limit_prekey_claims_per_pair",
                self.limit_prekey_claims_per_pair,
            ),
            (
                "limit_prekey_claims_per_target",
                self.limit_prekey_claims_per_target,
            ),
            ("limit_lookup_per_user", self.limit_lookup_per_user),
        ] {
            if q.count == 0 || q.period_secs == 0 {
                return Err(format!(
                    "auth.{key}: count and period_secs must be positive"
                ));
            }
        }
        crate::secrets::SecretHasher::new(self.argon2).map_err(|e| format!("auth.argon2: {e}"))?;
        self.validate_test_numbers()?;
        self.sms.validate()
    }

    fn validate_test_numbers(&self) -> Result<(), String> {
        if self.test_numbers.is_empty() {
            return Ok(());
        }
        let code = self.test_code.expose();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(
                "auth.test_code: must be six digits when auth.test_numbers is set \
                 (an environment value is read as a number: a leading 0 is lost)"
                    .into(),
            );
        }
        for n in &self.test_numbers {
            crate::phone::parse(n).map_err(|e| format!("auth.test_numbers: {n:?}: {e}"))?;
        }
        Ok(())
    }

    /// Whether `number` (E.164, as sessions store it) is one of `test_numbers`.
    pub fn is_test_number(&self, number: &str) -> bool {
        self.test_numbers
            .iter()
            .any(|n| crate::phone::parse(n).is_ok_and(|p| p.as_str() == number))
    }

    /// Defaults with cheap argon2 (tests run hundreds of hashes).
    pub fn for_tests() -> Self {
        Self {
            argon2: Argon2Params {
                memory_kib: 256,
                iterations: 1,
                parallelism: 1,
                ..Argon2Params::default()
            },
            ..Self::default()
        }
    }
}

/// `[auth.sms]`: where codes go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    /// `outbox` (append to `<data-dir>/outbox/sms.jsonl`), `webhook` or `twilio`.
    pub backend: SmsBackend,
    /// Webhook URL (POST).
    pub webhook_url: String,
    /// Value of the `Authorization` header sent to the webhook (e.g. `Bearer …`).
    pub webhook_authorization: Secret,
    /// Request body; `{to}`, `{code}`, `{transport}` and `{text}` are replaced
    /// (JSON-escaped when the content type is JSON).
    pub webhook_body_template: String,
    /// Content type of the webhook body.
    pub webhook_content_type: String,
    /// The message text; `{code}` is replaced.
    pub text_template: String,
    /// Attempts per message (1 = no retry).
    pub webhook_attempts: u32,
    /// Per-attempt timeout.
    pub webhook_timeout_ms: u64,
    /// `[auth.sms.twilio]`: the `twilio` backend's account and numbers.
    pub twilio: natter_providers::twilio::TwilioConfig,
}

/// SMS sender choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmsBackend {
    /// A JSON-lines file (embedded default, and for QA).
    Outbox,
    /// An HTTP provider.
    Webhook,
    /// Twilio's Messages (SMS) and Calls (voice) APIs.
    Twilio,
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            backend: SmsBackend::Outbox,
            webhook_url: String::new(),
            webhook_authorization: Secret::default(),
            webhook_body_template: r#"{"to":"{to}","channel":"{transport}","text":"{text}"}"#
                .into(),
            webhook_content_type: "application/json".into(),
            text_template: "Your Natter code is {code}. Do not share it.".into(),
            webhook_attempts: 3,
            webhook_timeout_ms: 5_000,
            twilio: Default::default(),
        }
    }
}

impl SmsConfig {
    fn validate(&self) -> Result<(), String> {
        if self.backend == SmsBackend::Webhook {
            if !(self.webhook_url.starts_with("http://")
                || self.webhook_url.starts_with("https://"))
            {
                return Err("auth.sms.webhook_url: must be an http:// or https:// URL when backend = \"webhook\"".into());
            }
            if self.webhook_attempts == 0 {
                return Err("auth.sms.webhook_attempts: must be at least 1".into());
            }
        }
        if self.backend == SmsBackend::Twilio {
            self.twilio.validate("auth.sms.twilio")?;
        }
        if !self.text_template.contains("{code}") {
            return Err("auth.sms.text_template: must contain {code}".into());
        }
        Ok(())
    }
}

/// A list of numbers from a list, or from one comma-separated value: the
/// environment's form, where a lone `+15550100` may arrive as an integer.
fn number_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of phone numbers, or one comma-separated string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(v.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(vec![format!("+{v}")])
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(vec![format!("+{}", v.unsigned_abs())])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(n) = seq.next_element::<String>()? {
                out.push(n);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

//! Configuration pieces shared by services, and the loader: defaults in code, then
//! a TOML file, then `NATTER_<SECTION>__<KEY>` environment variables. Errors name
//! the key and where its value came from.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use std::path::Path;

/// `[tokens]`: access-token signing, shared by every service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokensConfig {
    /// HMAC key for access tokens. Empty: generated once under `<data-dir>/secrets/`.
    pub signing_key: crate::Secret,
    /// Keys still accepted for verification during a rotation.
    #[serde(deserialize_with = "comma_list")]
    pub previous_keys: Vec<crate::Secret>,
    /// Access-token lifetime.
    pub access_ttl_secs: u32,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            signing_key: crate::Secret::default(),
            previous_keys: Vec::new(),
            access_ttl_secs: 900,
        }
    }
}

/// A configuration error, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// Loads `T` from its defaults, an optional TOML file, and the environment.
///
/// Only variables whose first segment names one of `sections` (or `top_level`
/// keys) are read, so unrelated `NATTER_*` variables do not break start-up while
/// a misspelt key inside a known section still does.
pub fn load<T>(file: Option<&Path>, sections: &'static [&'static str]) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError(format!(
                "config file {} not found",
                path.display()
            )));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(Env::prefixed("NATTER_").split("__").filter(move |key| {
        let first = key.as_str().split('.').next().unwrap_or_default();
        sections.iter().any(|s| s.eq_ignore_ascii_case(first))
    }));
    figment.extract::<T>().map_err(|e| {
        let msgs: Vec<String> = e.into_iter().map(describe).collect();
        ConfigError(msgs.join("; "))
    })
}

/// Parses `T` from its defaults overlaid with a TOML document (no environment):
/// what `load` does with a file, for callers that hold the text (fuzzing, tests).
pub fn from_toml_str<T>(text: &str) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    Figment::from(Serialized::defaults(T::default()))
        .merge(Toml::string(text))
        .extract::<T>()
        .map_err(|e| {
            let msgs: Vec<String> = e.into_iter().map(describe).collect();
            ConfigError(msgs.join("; "))
        })
}

fn describe(e: figment::Error) -> String {
    let key = if e.path.is_empty() {
        String::from("(top level)")
    } else {
        e.path.join(".")
    };
    let source = match &e.metadata {
        // Name the exact variable, not just "NATTER_ environment variable(s)".
        Some(md) if md.name.contains("environment") && !e.path.is_empty() => {
            format!(" (from environment variable {})", env_var_name(&e.path))
        }
        Some(md) => match &md.source {
            Some(src) => format!(" (from {} {src})", md.name),
            None => format!(" (from {})", md.name),
        },
        None => String::new(),
    };
    format!("{key}: {}{source}", e.kind)
}

/// `["http", "listen"]` -> `NATTER_HTTP__LISTEN`.
pub fn env_var_name(path: &[String]) -> String {
    let parts: Vec<String> = path.iter().map(|p| p.to_ascii_uppercase()).collect();
    format!("NATTER_{}", parts.join("__"))
}

/// A string setting that the environment may have turned into a number or a
/// boolean (`NATTER_…=1234567890` arrives as an integer): taken back as text.
pub fn scalar_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Str(String),
        Int(i128),
        Float(f64),
        Bool(bool),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::Str(s) => s,
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Bool(b) => b.to_string(),
    })
}

/// An E.164 number setting: `+15550100` may arrive from the environment as
/// the integer 15550100; its `+` is put back.
pub fn e164_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = scalar_string(d)?;
    Ok(if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        format!("+{s}")
    } else {
        s
    })
}

/// Deserializes a list from either a list or a comma-separated string (the form
/// environment variables take).
pub fn comma_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr + Deserialize<'de>,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString<T> {
        List(Vec<T>),
        Str(String),
    }
    match ListOrString::<T>::deserialize(d)? {
        ListOrString::List(v) => Ok(v),
        ListOrString::Str(s) => s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.parse::<T>().map_err(serde::de::Error::custom))
            .collect(),
    }
}

impl std::str::FromStr for crate::Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(crate::Secret::new(s))
    }
}

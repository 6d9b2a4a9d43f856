//! Fuzz body for configuration parsing. `natter/fuzz` (outside the workspace,
//! run by `scripts/fuzz.sh`) feeds it libFuzzer input; the tests below replay the checked-in seeds
//! and proptest input on stable, so CI exercises it on every run.

use crate::config::Config;

/// Parses arbitrary bytes as a TOML configuration. Must never panic; an error
/// must name what is wrong; whatever parses must print (as `natter config print`
/// does) to TOML that parses again into the same types. (Not necessarily a valid
/// configuration: printing redacts secrets, and a redacted database URL is not a URL.)
pub(crate) fn config_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str(text) {
        Ok(cfg) => {
            let printed = match cfg.to_toml() {
                Ok(p) => p,
                // Refused with the key named (quote runs the writer cannot count).
                Err(e) => {
                    assert!(e.0.contains(':'), "an unnamed print error: {}", e.0);
                    return;
                }
            };
            if let Err(e) = natter_common::config::from_toml_str::<Config>(&printed) {
                panic!("printed configuration does not parse again: {e}\n{printed}");
            }
        }
        Err(e) => assert!(!e.0.trim().is_empty(), "an empty configuration error"),
    }
}

#[cfg(test)]
mod tests {
    use super::config_parse;
    use proptest::prelude::*;

    #[test]
    fn seeds_replay() {
        let dir = std::path::Path::new(
            &std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("fuzz/seeds/config_parse");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz seeds directory") {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            config_parse(&bytes);
            n += 1;
        }
        assert!(n >= 8, "expected the checked-in seeds, found {n}");
    }

    #[test]
    fn garbage_is_a_precise_error() {
        for (text, names) in [
            ("[http]\nlisten = 5", "http.listen"),
            (
                "[auth.argon2]\nmemory_kib = \"lots\"",
                "auth.argon2.memory_kib",
            ),
            ("[chat]\nmax_body_bytes = -1", "chat.max_body_bytes"),
            ("[nope]\nx = 1", "nope"),
            ("[http\nlisten = 1", "TOML"),
        ] {
            let err = crate::config::Config::from_toml_str(text).unwrap_err().0;
            assert!(err.contains(names), "{text:?}: {err}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            config_parse(text.as_bytes());
        }

        #[test]
        fn arbitrary_values_for_known_keys_never_panic(
            section in prop::sample::select(vec!["http", "database", "auth", "auth.argon2", "auth.sms", "chat", "chat.push", "media", "media.s3", "tokens", "log"]),
            key in "[a-z_]{1,24}",
            value in prop_oneof![
                any::<i64>().prop_map(|v| v.to_string()),
                "\"[^\"\\\\]{0,40}\"",
                Just("true".to_string()),
                Just("[]".to_string()),
                Just("{}".to_string()),
                Just("1e999".to_string()),
            ],
        ) {
            config_parse(format!("[{section}]\n{key} = {value}\n").as_bytes());
        }
    }
}

//! Fuzz target bodies (feature `fuzzing`, and compiled in tests so the seed
//! corpora in `providers/fuzz/seeds/` replay under `cargo test`). Each must
//! return without panicking for any input.

use base64::Engine;
use std::time::{Duration, UNIX_EPOCH};

/// A provider's answer: the first two bytes pick the status (100–599), the
/// rest is the body, read as each provider's answer, token answer and
/// `Retry-After` value. Classification never panics and keeps its promises:
/// a 200 is delivered, APNs' 410 and FCM's 404 mean a dead token, and a
/// `Retry-After` is never negative.
pub fn answers(data: &[u8]) {
    let (status, body) = match data {
        [a, b, rest @ ..] => (100 + u16::from_be_bytes([*a, *b]) % 500, rest),
        _ => (200, data),
    };
    let fcm = crate::fcm::classify(status, body);
    let apns = crate::apns::classify(status, body);
    let twilio = crate::twilio::classify(status, body);
    let _ = crate::fcm::parse_token_response(status, body);
    if status == 200 {
        assert_eq!(fcm, crate::fcm::Verdict::Delivered);
        assert_eq!(apns, crate::apns::Verdict::Delivered);
        assert_eq!(twilio, crate::twilio::Verdict::Sent);
    }
    if status == 404 {
        assert_eq!(fcm, crate::fcm::Verdict::Unregistered);
    }
    if status == 410 {
        assert_eq!(apns, crate::apns::Verdict::Unregistered);
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        if let Some(wait) = crate::retry::parse_retry_after(text, now) {
            // Whatever is asked, the policy caps what is waited.
            let r = crate::retry::RetryConfig::default();
            if let Ok(w) = r.wait(1, Some(wait), 500) {
                assert!(w <= Duration::from_secs(r.max_retry_after_secs));
            }
        }
    }
}

/// Key material as operators hand it over: a PEM text (a `.p8` file, the
/// `private_key` of a service-account file) and a service-account JSON.
/// Whatever PEM is accepted round-trips through its base64, and a key or file
/// is refused with an error, never a panic.
pub fn keys(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(der) = crate::pem::pkcs8_der(text) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        let again = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
        assert_eq!(crate::pem::pkcs8_der(&again).as_deref(), Ok(der.as_slice()));
    }
    let _ = crate::jwt::Es256Key::from_pem(text);
    let _ = crate::jwt::Rs256Key::from_pem(text);
    let _ = crate::fcm::ServiceAccount::parse(text);
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn replay(target: &str, f: fn(&[u8])) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            f(&data);
            for cut in (0..data.len()).step_by((data.len() / 64).max(1)) {
                f(&data[..cut]);
            }
            n += 1;
        }
        assert!(n >= 3, "{target}: only {n} seeds in {}", dir.display());
    }

    #[test]
    fn answer_seeds_replay() {
        replay("answers", super::answers);
    }

    #[test]
    fn key_seeds_replay() {
        replay("keys", super::keys);
    }
}

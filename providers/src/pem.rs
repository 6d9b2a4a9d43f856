//! The one PEM shape provider keys come in: a single `PRIVATE KEY` block
//! (PKCS#8), as in Google's service-account files and Apple's `.p8` keys.

use base64::Engine;

/// Why a PEM text is not a PKCS#8 private key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// No `-----BEGIN PRIVATE KEY-----` line.
    #[error("no \"-----BEGIN PRIVATE KEY-----\" line (a PKCS#8 key is expected{hint})")]
    NoBegin {
        /// Says what was found instead, when it is a known other shape.
        hint: &'static str,
    },
    /// The block never ends.
    #[error("no \"-----END PRIVATE KEY-----\" line")]
    NoEnd,
    /// The body is not base64.
    #[error("the key's body is not base64: {0}")]
    Base64(String),
    /// An empty body.
    #[error("the key's body is empty")]
    Empty,
}

const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const END: &str = "-----END PRIVATE KEY-----";

/// The DER bytes of the first `PRIVATE KEY` block in `text`. Lines may end in
/// `\r\n`; text outside the block is ignored.
pub fn pkcs8_der(text: &str) -> Result<Vec<u8>, PemError> {
    let Some(start) = text.find(BEGIN) else {
        let hint =
            if text.contains("BEGIN RSA PRIVATE KEY") || text.contains("BEGIN EC PRIVATE KEY") {
                "; this is a PKCS#1/SEC1 key: convert it with `openssl pkcs8 -topk8 -nocrypt`"
            } else if text.contains("BEGIN ENCRYPTED PRIVATE KEY") {
                "; this key is encrypted: provider keys are used unencrypted"
            } else {
                ""
            };
        return Err(PemError::NoBegin { hint });
    };
    let body = &text[start + BEGIN.len()..];
    let end = body.find(END).ok_or(PemError::NoEnd)?;
    let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
    if b64.is_empty() {
        return Err(PemError::Empty);
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| PemError::Base64(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_block_with_crlf_and_surrounding_text() {
        let text =
            "junk\r\n-----BEGIN PRIVATE KEY-----\r\nAAEC\r\nAw==\r\n-----END PRIVATE KEY-----\r\n";
        assert_eq!(pkcs8_der(text).unwrap(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn says_what_is_wrong() {
        assert!(matches!(
            pkcs8_der("-----BEGIN RSA PRIVATE KEY-----\nAA==\n-----END RSA PRIVATE KEY-----"),
            Err(PemError::NoBegin { hint }) if hint.contains("PKCS#1")
        ));
        assert_eq!(
            pkcs8_der("-----BEGIN PRIVATE KEY-----\nAAEC"),
            Err(PemError::NoEnd)
        );
        assert_eq!(
            pkcs8_der("-----BEGIN PRIVATE KEY-----\n\n-----END PRIVATE KEY-----"),
            Err(PemError::Empty)
        );
        assert!(matches!(
            pkcs8_der("-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----"),
            Err(PemError::Base64(_))
        ));
    }
}

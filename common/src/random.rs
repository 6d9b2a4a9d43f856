//! Randomness from the operating system, for codes, tokens and keys.

/// `N` random bytes from the OS.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // getrandom fails only when the OS has no entropy source at all; a server
    // cannot issue credentials safely without one, so stopping is correct.
    getrandom::fill(&mut b).expect("OS random source available");
    b
}

/// A uniform number in `0..bound` (rejection sampling, no modulo bias).
pub fn below(bound: u32) -> u32 {
    assert!(bound > 0, "bound must be positive");
    let zone = u32::MAX - (u32::MAX % bound);
    loop {
        let v = u32::from_le_bytes(bytes::<4>());
        if v < zone {
            return v % bound;
        }
    }
}

/// `len` random decimal digits.
pub fn digits(len: usize) -> String {
    (0..len)
        .map(|_| char::from(b'0' + below(10) as u8))
        .collect()
}

/// A random token: 32 bytes, base64url without padding (43 characters).
pub fn token() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes::<32>())
}

#[cfg(test)]
mod tests {
    #[test]
    fn digits_are_digits_and_vary() {
        let a = super::digits(6);
        assert_eq!(a.len(), 6);
        assert!(a.bytes().all(|b| b.is_ascii_digit()));
        let distinct: std::collections::HashSet<_> = (0..50).map(|_| super::digits(6)).collect();
        assert!(distinct.len() > 40);
    }

    #[test]
    fn below_stays_in_range() {
        for _ in 0..1000 {
            assert!(super::below(7) < 7);
        }
    }
}

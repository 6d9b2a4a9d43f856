//! HTTP `Range` requests (RFC 9110 §14): one byte range is served as 206;
//! several ranges or a malformed header are ignored (the whole body is sent,
//! which the RFC allows); a range wholly past the end is 416.

use std::ops::Range;

/// What to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeOutcome {
    /// The whole body (200).
    Full,
    /// These bytes (206).
    Partial(Range<u64>),
    /// Nothing fits (416).
    Unsatisfiable,
}

/// Evaluates a `Range` header value against a body of `size` bytes.
pub fn evaluate(header: Option<&str>, size: u64) -> RangeOutcome {
    let Some(value) = header else {
        return RangeOutcome::Full;
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeOutcome::Full;
    };
    if spec.contains(',') || size == 0 {
        return RangeOutcome::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeOutcome::Full;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match num(suffix) {
            Some(0) => RangeOutcome::Unsatisfiable,
            Some(n) => RangeOutcome::Partial(size.saturating_sub(n)..size),
            None => RangeOutcome::Full,
        },
        (start, "") => match num(start) {
            Some(s) if s >= size => RangeOutcome::Unsatisfiable,
            Some(s) => RangeOutcome::Partial(s..size),
            None => RangeOutcome::Full,
        },
        (start, end) => match (num(start), num(end)) {
            (Some(s), Some(e)) if s > e => RangeOutcome::Full,
            (Some(s), Some(_)) if s >= size => RangeOutcome::Unsatisfiable,
            (Some(s), Some(e)) => RangeOutcome::Partial(s..e.min(size - 1) + 1),
            _ => RangeOutcome::Full,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeOutcome::*;
    use proptest::prelude::*;

    #[test]
    fn single_ranges() {
        assert_eq!(evaluate(None, 10), Full);
        assert_eq!(evaluate(Some("bytes=0-0"), 10), Partial(0..1));
        assert_eq!(evaluate(Some("bytes=2-5"), 10), Partial(2..6));
        assert_eq!(evaluate(Some("bytes=2-"), 10), Partial(2..10));
        assert_eq!(evaluate(Some("bytes=-3"), 10), Partial(7..10));
        assert_eq!(evaluate(Some("bytes=-30"), 10), Partial(0..10));
        assert_eq!(evaluate(Some("bytes=5-100"), 10), Partial(5..10));
        assert_eq!(evaluate(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(evaluate(Some("bytes=10-12"), 10), Unsatisfiable);
        assert_eq!(evaluate(Some("bytes=-0"), 10), Unsatisfiable);
    }

    #[test]
    fn ignored_ranges() {
        for h in [
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=5-2",
            "bytes=a-b",
            "bytes=",
            "bytes=--1",
            "bytes=1",
        ] {
            assert_eq!(evaluate(Some(h), 10), Full, "{h}");
        }
        assert_eq!(evaluate(Some("bytes=0-1"), 0), Full);
    }

    proptest! {
        #[test]
        fn partial_ranges_stay_inside(h in "bytes=[0-9]{0,3}-[0-9]{0,3}", size in 0u64..2000) {
            if let Partial(r) = evaluate(Some(&h), size) {
                prop_assert!(r.start < r.end && r.end <= size);
            }
        }
    }
}

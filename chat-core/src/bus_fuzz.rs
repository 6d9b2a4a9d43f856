//! Fuzz body for what one node reads from another over Redis: batches of bus
//! records (`cluster::wire`), call events inside them (`CallEvent::from_bus`)
//! and per-account limit reports (`account_limits::decode_report`). The bus
//! is our own Redis, but a node on another version, a truncated message or a
//! stray publisher must cost a skipped record, never a panic or a misread.
//!
//! Invariants:
//! - no panic on any input;
//! - a record that decodes encodes back to a batch that decodes to the same
//!   header and frame (what a node forwards is what it read);
//! - a call record's frame decodes to a call event whose bus form decodes to
//!   the same event;
//! - a report that decodes re-encodes to one that decodes to the same node,
//!   limit and counts, and never charges an empty or non-printable account.
//!
//! Run by `natter/fuzz` target `bus_records` (`scripts/fuzz.sh`); `cargo test`
//! replays the checked-in seeds.

use crate::account_limits::decode_report;
use crate::call_event::CallEvent;
use crate::cluster::wire::{Header, push_record, records};

/// Feeds `data` to every bus decoder.
pub fn bus_payload(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_records(text);
    check_report(text);
}

fn check_records(text: &str) {
    for (header, frame) in records(text).filter_map(Result::ok) {
        let mut again = String::new();
        push_record(&mut again, &header, Some(&frame));
        let back: Vec<_> = records(&again).collect();
        assert_eq!(back.len(), 1, "one record re-encoded as {again:?}");
        let (h2, f2) = back
            .into_iter()
            .next()
            .unwrap()
            .expect("re-encoded record decodes");
        assert_eq!(h2, header, "header changed through the bus");
        assert_eq!(*f2, *frame, "frame changed through the bus");
        if let Header::Call { ev, .. } = &header
            && let Some(event) = CallEvent::from_bus(ev, &frame)
        {
            let json = event.frame_json().unwrap_or_default();
            let back = CallEvent::from_bus(event.kind(), &json).unwrap_or_else(|| {
                panic!("call event {event:?} does not decode from its bus form")
            });
            assert_eq!(back, event, "call event changed through the bus");
        }
    }
}

fn check_report(text: &str) {
    let Some(report) = decode_report(text) else {
        return;
    };
    let mut again = format!("{} {}\n", report.node, report.limit);
    for (account, n) in &report.counts {
        assert!(
            !account.is_empty() && account.bytes().all(|b| b.is_ascii_graphic()),
            "charged account {account:?}"
        );
        again.push_str(&format!("{n} {account}\n"));
    }
    let back = decode_report(&again).expect("re-encoded report decodes");
    assert_eq!((back.node, back.limit), (report.node, report.limit));
    assert_eq!(back.counts, report.counts, "counts changed through the bus");
}

#[cfg(test)]
mod tests {
    use super::bus_payload;

    /// The checked-in seeds of `natter/fuzz` target `bus_records`.
    #[test]
    fn seeds_replay() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../natter/fuzz/seeds/bus_records");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz seeds directory") {
            bus_payload(&std::fs::read(entry.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n >= 6, "expected the checked-in seeds, found {n}");
    }

    #[test]
    fn garbage_is_skipped() {
        for input in [
            &b""[..],
            b"\xff\xfe",
            b"{\"t\":\"call\",\"u\":\"a\",\"d\":1,\"ev\":\"frame\"}\n{\"type\":\"call.offer\"",
            b"node sends\r",
            b"node sends\n+5 acct\n-1 acct\n7 \n8 a b\n9 c\r",
            b"{\"t\":\"nope\"}\n\n{}\n",
        ] {
            bus_payload(input);
        }
    }
}

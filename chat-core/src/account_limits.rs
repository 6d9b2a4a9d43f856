//! Per-account limits that hold across the cluster (`chat.limit_sends_per_user`,
//! `chat.limit_group_writes`).
//!
//! Each node enforces a GCRA bucket per account in memory, as for any limit,
//! and every [`SYNC_INTERVAL`] tells the other nodes how many events it let
//! through for which accounts; they charge their own buckets with those
//! ([`KeyedLimiter::charge`]). So an account whose devices sit on several
//! nodes shares one budget instead of getting one per node. Why not a
//! counter in Redis per event: a send would wait for a Redis round trip, and
//! a Redis outage would stop sending. The cost is lag: within one interval
//! each node can let through up to a full budget before it hears of the
//! others, so an account spread over N nodes gets at most about N budgets in
//! its first interval and one budget per period after that. Reports travel
//! over Redis pub/sub and a lost one is a lost charge, never a refusal.

use natter_common::UnixMillis;
use natter_common::ratelimit::{KeyedLimiter, Quota, RetryAfter};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often a node reports the events it let through.
pub(crate) const SYNC_INTERVAL: Duration = Duration::from_millis(500);

/// Accounts a node remembers between two reports; events of further accounts
/// in the same interval go unreported (they are still limited locally).
const MAX_UNREPORTED: usize = 50_000;

/// One per-account limit (see the module docs).
#[derive(Debug)]
pub struct AccountLimit {
    /// Name in reports (`sends`, `group_writes`).
    pub(crate) name: &'static str,
    local: KeyedLimiter,
    /// Set once a cluster reports for this node: until then nothing is kept.
    shared: AtomicBool,
    /// Events let through here since the last report: account → count.
    unreported: Mutex<HashMap<String, u32>>,
}

impl AccountLimit {
    /// A limit of `quota` per account, named `name` in reports.
    pub fn new(name: &'static str, quota: Quota) -> Self {
        Self {
            name,
            local: KeyedLimiter::new(quota),
            shared: AtomicBool::new(false),
            unreported: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one event of `account`, or says how long to wait.
    pub fn check(&self, account: &str, now: UnixMillis) -> Result<(), RetryAfter> {
        self.local.check(account, now)?;
        if self.shared.load(Ordering::Relaxed) {
            let mut u = self.unreported.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = u.get_mut(account) {
                *n = n.saturating_add(1);
            } else if u.len() < MAX_UNREPORTED {
                u.insert(account.to_owned(), 1);
            }
        }
        Ok(())
    }

    /// Starts keeping counts for reports (the cluster calls this once).
    pub(crate) fn share(&self) {
        self.shared.store(true, Ordering::Relaxed);
    }

    /// The events let through since the last call.
    pub(crate) fn take_unreported(&self) -> HashMap<String, u32> {
        std::mem::take(&mut *self.unreported.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Events another node let through.
    pub(crate) fn charge(&self, account: &str, n: u32, now: UnixMillis) {
        self.local.charge(account, n, now);
    }
}

/// Most accounts in one report message (a larger set is split).
const PER_REPORT: usize = 2000;

/// Report messages: a first line `<node> <limit>`, then `<count> <account>`
/// per line.
pub(crate) fn encode_reports(node: &str, limit: &str, counts: HashMap<String, u32>) -> Vec<String> {
    let counts: Vec<(String, u32)> = counts.into_iter().collect();
    counts
        .chunks(PER_REPORT)
        .map(|chunk| {
            let mut s = format!("{node} {limit}\n");
            for (account, n) in chunk {
                s.push_str(&format!("{n} {account}\n"));
            }
            s
        })
        .collect()
}

/// A decoded report.
pub(crate) struct Report<'a> {
    /// The node that let the events through.
    pub(crate) node: &'a str,
    /// Which limit (`sends`, `group_writes`).
    pub(crate) limit: &'a str,
    /// Events per account.
    pub(crate) counts: Vec<(&'a str, u32)>,
}

/// A report; `None` for a malformed first line (lines after it that do not
/// parse are skipped). Node, limit and account ids are printable ASCII
/// without spaces (the node id's and limit's own alphabet; user ids are
/// server-made); anything else is garbage, not a name to charge.
pub(crate) fn decode_report(payload: &str) -> Option<Report<'_>> {
    fn word(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
    }
    let mut lines = payload.lines();
    let (node, limit) = lines.next()?.split_once(' ')?;
    if !word(node) || !word(limit) {
        return None;
    }
    let counts = lines
        .filter_map(|l| {
            let (n, account) = l.split_once(' ')?;
            // Digits only: u32's parser would also take a sign.
            if !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((account, n.parse().ok()?))
        })
        .filter(|(account, _)| word(account))
        .collect();
    Some(Report {
        node,
        limit,
        counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_garbage_is_skipped() {
        let mut counts = HashMap::new();
        counts.insert("ann".to_owned(), 3);
        counts.insert("ben".to_owned(), 1);
        let reports = encode_reports("node-a", "sends", counts);
        assert_eq!(reports.len(), 1);
        let mut r = decode_report(&reports[0]).unwrap();
        r.counts.sort();
        assert_eq!((r.node, r.limit), ("node-a", "sends"));
        assert_eq!(r.counts, [("ann", 3), ("ben", 1)]);
        let r = decode_report("n l\nx ann\n5\n7 \n2 cat").unwrap();
        assert_eq!(r.counts, [("cat", 2)]);
        assert!(decode_report("").is_none());
        assert!(decode_report("no-space").is_none());
    }

    #[test]
    fn large_sets_are_split() {
        let counts = (0..PER_REPORT + 1).map(|i| (format!("u{i}"), 1)).collect();
        assert_eq!(encode_reports("n", "sends", counts).len(), 2);
    }

    #[test]
    fn counts_are_kept_only_once_shared_and_charges_spend_the_budget() {
        let l = AccountLimit::new("sends", Quota::new(10, 10));
        l.check("ann", 0).unwrap();
        assert!(l.take_unreported().is_empty(), "kept while not shared");
        l.share();
        l.check("ann", 0).unwrap();
        l.check("ann", 0).unwrap();
        assert_eq!(l.take_unreported().get("ann"), Some(&2));
        assert!(l.take_unreported().is_empty());
        // Another node let 7 through: ann has none left here.
        l.charge("ann", 7, 0);
        assert!(l.check("ann", 0).is_err());
        assert!(l.take_unreported().is_empty(), "a refusal is not reported");
    }
}
